"""`focal serve`: the HTTP service (flags generated from :mod:`focal.server.settings`).

focal binds the listening socket itself and hands it to uvicorn, in this process
(``workers = 1``) or in ``workers`` spawned processes that all accept on it. The socket is made
with ``IPPROTO_TCP`` so that every accepted connection gets TCP_NODELAY: the event loop sets it
only on sockets of that protocol, and uvicorn's own ``--workers`` socket (protocol 0) never gets
it, so a keep-alive client waits out Nagle's delay (about 40-80 ms) on every answer.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from focal.errors import FocalError
from focal.server.settings import Settings, add_arguments, load

if TYPE_CHECKING:
    from focal.server.detection.host import Link

BACKLOG = 2048
RESTART_PAUSE_S = 1.0  # between restarts of a worker that died


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve /cdn-cgi/image/<options>/<source> over HTTP",
        description="Serve image variants over HTTP. Settings: defaults < --config file < "
        "FOCAL_* environment < flags (docs/configuration.md).",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def banner(settings: Settings, files: tuple[int, int] | None = None) -> str:
    """The start-up text; ``files``: the open-file limit before and after raise_file_limit."""
    from focal.server import front
    from focal.server.app import EXAMPLES

    base = f"http://{settings.host}:{settings.port}"
    workers = f" ({settings.workers} worker processes)" if settings.workers > 1 else ""
    lines = [f"focal serving {settings.root} on {base}{workers}"]
    if files is not None:
        raised = f" (raised from {files[0]})" if files[1] != files[0] else ""
        each = " per worker" if settings.workers > 1 else ""
        lines.append(
            f"open-file limit {files[1]}{raised}; at most "
            f"{front.connection_limit(settings.max_connections)} connections{each}; request head "
            f"within {settings.header_timeout_s:g} s, at most {settings.max_header_bytes} bytes"
        )
    lines.append("Try:")
    lines += [f"  {base}{example}" for example in EXAMPLES]
    lines += [f"  {base}/healthz", f"  {base}/metrics"]
    return "\n".join(lines)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (protocol IPPROTO_TCP, so accepted sockets get
    TCP_NODELAY), inheritable by worker processes."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def missing_extra(settings: Settings) -> str | None:
    """Why the chosen event loop or HTTP parser cannot run (None when it can)."""
    import importlib.util

    for name, value in (("loop", settings.loop), ("http", settings.http)):
        if value in ("uvloop", "httptools") and importlib.util.find_spec(value) is None:
            return f"{name} = {value} needs {value}, which is not installed: pip install {value}"
    return None


def front_limits(settings: Settings) -> Any:
    """The HTTP front's limits (focal.server.front), the connection limit kept below this
    process's open-file limit."""
    from focal.server import front

    return front.FrontLimits(
        header_timeout_s=settings.header_timeout_s,
        keep_alive_timeout_s=settings.keep_alive_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        max_url_bytes=settings.max_url_bytes,
        max_connections=front.connection_limit(settings.max_connections),
    )


def uvicorn_config(app: Any, settings: Settings) -> Any:
    import uvicorn

    from focal.server import front

    limits = front_limits(settings)
    return uvicorn.Config(
        app,
        loop=settings.loop,
        http=front.protocol_class(settings.http, limits),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(settings.request_timeout_s)),
        timeout_keep_alive=limits.keep_alive_timeout_s,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        server_header=False,
    )


def serve_on(sock: socket.socket, settings: Settings, link: Link | None = None) -> int:
    """Build the application and serve it on ``sock`` until told to stop (one process; ``link``:
    the supervisor's detector pool, for a worker of several)."""
    import uvicorn

    from focal.server import front, logs, memory
    from focal.server.app import create_app

    memory.tune()
    front.raise_file_limit()  # inherited from the supervisor already; a no-op then
    logs.configure(settings.log_level)
    try:
        app = create_app(settings, link=link)
    except ValueError as error:  # a malformed remote prefix or network
        print(f"focal serve: {error}", file=sys.stderr)
        return 2
    app.state.service.metrics.extra.append(front.metric_lines)
    uvicorn.Server(uvicorn_config(app, settings)).run(sockets=[sock])
    return 0


def _worker(sock: socket.socket, settings: Settings, link: Link) -> None:  # pragma: no cover
    sys.exit(serve_on(sock, settings, link))


def supervise(sock: socket.socket, settings: Settings) -> int:
    """Run ``settings.workers`` spawned processes on ``sock``, all asking this process's one
    detector pool; restart one that dies; on SIGTERM or SIGINT stop them all (each finishes its
    requests, as uvicorn does), then the pool."""
    from focal.server import logs
    from focal.server.detection.host import Link
    from focal.server.detection.start import host_detection

    context = multiprocessing.get_context("spawn")  # no fork of a process with libvips threads
    stopping = False

    def stop(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logs.configure(settings.log_level)
    host, unavailable = host_detection(settings)
    metrics_dir = tempfile.mkdtemp(prefix="focal-metrics-")  # the workers' /metrics counters

    def start() -> Any:
        conn = host.connect() if host is not None else None
        link = Link(conn=conn, unavailable=unavailable, metrics_dir=metrics_dir)
        process = context.Process(target=_worker, args=(sock, settings, link), name="focal-worker")
        process.start()
        if conn is not None:
            conn.close()  # the worker has its copy; the host sees end-of-file when it exits
        return process

    processes = [start() for _ in range(settings.workers)]
    status = 0
    while not stopping:
        time.sleep(0.2)
        for index, process in enumerate(processes):
            if process.is_alive() or stopping:
                continue
            if process.exitcode == 2:  # a settings error: every restart would fail the same way
                stopping, status = True, 2
                break
            print(f"focal serve: worker {process.pid} exited with {process.exitcode}; restarting")
            time.sleep(RESTART_PAUSE_S)
            processes[index] = start()
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + max(1, round(settings.request_timeout_s)) + 5
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5)
    if host is not None:
        host.stop()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(config=args.config, environ=os.environ, args=args)
    except FocalError as error:
        print(f"focal serve: {error.public}", file=sys.stderr)
        return 2
    if not settings.root.is_dir():
        print(f"focal serve: the root folder {settings.root} does not exist", file=sys.stderr)
        return 2
    missing = missing_extra(settings)
    if missing is not None:
        print(f"focal serve: {missing}", file=sys.stderr)
        return 2
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as error:
        print(
            f"focal serve: cannot listen on {settings.host}:{settings.port}: {error}",
            file=sys.stderr,
        )
        return 2
    from focal.server import front

    files = front.raise_file_limit()  # before the workers start: they inherit it
    print(banner(settings, files), flush=True)
    with sock:
        if settings.workers == 1:
            return serve_on(sock, settings)
        return supervise(sock, settings)
