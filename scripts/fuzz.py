"""Coverage-guided fuzzing (atheris, libFuzzer) of the two parsers that read hostile input first:
the URL options (``focal.options.parse_options``) and the image header check
(``focal.decode.read_header`` + ``check``). Any exception other than focal's own errors is a
crash: libFuzzer stops and writes the input that caused it.

    .venv/bin/python -m pip install atheris
    .venv/bin/python scripts/fuzz.py options --seconds 120
    .venv/bin/python scripts/fuzz.py header --seconds 120

Each run prints libFuzzer's counts: coverage as it grows, and at the end
``Done <runs> runs in <s> second(s)`` (exit 0), or the crash and its input (exit non-zero).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from focal import decode, options
    from focal.errors import FocalError

ROOT = Path(__file__).resolve().parents[1]


def fuzz_options(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(2048)
    try:
        options.parse_options(text)
    except FocalError as error:
        if error.status != 400:
            raise AssertionError(f"status {error.status} for {text!r}") from None


def fuzz_header(data: bytes) -> None:
    try:
        header = decode.read_header(data)
        decode.check(header, max_pixels=100_000_000, max_frames=300)
    except FocalError as error:
        if error.status not in (413, 415):
            raise AssertionError(f"status {error.status} for a {len(data)}-byte file") from None


def seeds(target: str, folder: Path) -> None:
    """A small starting corpus: real option strings, or the demo images and hostile files."""
    if target == "options":
        texts = [
            "width=256,height=256,fit=cover,gravity=face,zoom=0.5",
            "w=100,q=high,background=rgba(1,2,3,0.5),trim=1;2;3;4,gravity=0.25x0.75",
            "format=auto,dpr=2,rotate=90,flip=hv,metadata=none,anim=false,onerror=redirect",
        ]
        for i, text in enumerate(texts):
            (folder / f"seed-{i}").write_text(text)
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks import hostile

    for path in (ROOT / "src" / "focal" / "demo").iterdir():
        if path.suffix in (".jpg", ".png"):
            (folder / path.name).write_bytes(path.read_bytes()[:65536])
    for item in hostile.family():
        data = item.make()
        if len(data) < 65536:
            (folder / item.name).write_bytes(data)


TARGETS: dict[str, Callable[[bytes], None]] = {"options": fuzz_options, "header": fuzz_header}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    corpus = Path(tempfile.mkdtemp(prefix=f"focal-fuzz-{args.target}-"))
    seeds(args.target, corpus)
    argv = [sys.argv[0], f"-max_total_time={args.seconds}", "-max_len=65536", str(corpus)]
    atheris.Setup(argv, TARGETS[args.target])
    atheris.Fuzz()  # libFuzzer ends the process itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
