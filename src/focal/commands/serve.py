"""`focal serve`: the HTTP service (flags generated from :mod:`focal.server.settings`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from focal.errors import FocalError
from focal.server.settings import Settings, add_arguments, load


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve /cdn-cgi/image/<options>/<source> over HTTP",
        description="Serve image variants over HTTP. Settings: defaults < --config file < "
        "FOCAL_* environment < flags (docs/configuration.md).",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def banner(settings: Settings) -> str:
    from focal.server.app import EXAMPLES

    base = f"http://{settings.host}:{settings.port}"
    lines = [f"focal serving {settings.root} on {base}", "Try:"]
    lines += [f"  {base}{example}" for example in EXAMPLES]
    lines += [f"  {base}/healthz", f"  {base}/metrics"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(config=args.config, environ=os.environ, args=args)
    except FocalError as error:
        print(f"focal serve: {error.public}", file=sys.stderr)
        return 2
    if not settings.root.is_dir():
        print(f"focal serve: the root folder {settings.root} does not exist", file=sys.stderr)
        return 2
    import uvicorn

    from focal.server import logs, memory
    from focal.server.app import create_app

    memory.tune()
    logs.configure(settings.log_level)
    try:
        app = create_app(settings)
    except ValueError as error:  # a malformed remote prefix or network
        print(f"focal serve: {error}", file=sys.stderr)
        return 2
    print(banner(settings), flush=True)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(settings.request_timeout_s)),
        server_header=False,
    )
    uvicorn.Server(config).run()
    return 0
