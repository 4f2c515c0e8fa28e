"""The ``focal`` command: one sub-command per module under :mod:`focal.commands`.

Exit codes: 0 success; 1 some inputs failed (listed); 2 usage or option error; 3 missing model.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from focal import __version__

COMMANDS = ("transform", "detect", "models", "eval", "serve", "batch", "detector")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="focal", description=__doc__)
    parser.add_argument("--version", action="version", version=f"focal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"focal.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
