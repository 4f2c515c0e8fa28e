"""`focal transform SRC -o OUT --options ...`: one file, or a whole folder.

Exit codes: 0 all done; 1 an input failed (a folder run lists each failure and goes on);
2 usage or option error; 3 the face model is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from focal.detection import Detector
from focal.errors import FocalError, ModelMissingError, OptionError
from focal.options import Format, Options, parse_options
from focal.pipeline import Limits, Result, transform

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".avif", ".tif", ".tiff"}
SUFFIX_FORMATS = {
    ".jpg": Format.JPEG,
    ".jpeg": Format.JPEG,
    ".png": Format.PNG,
    ".webp": Format.WEBP,
    ".avif": Format.AVIF,
    ".gif": Format.GIF,
    ".json": Format.JSON,
}
FORMAT_SUFFIXES = {
    "jpeg": ".jpg",
    "baseline-jpeg": ".jpg",
    "png": ".png",
    "webp": ".webp",
    "avif": ".avif",
    "gif": ".gif",
    "json": ".json",
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "transform",
        help="transform an image or a folder of images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", type=Path, help="an image file or a folder of images")
    p.add_argument("-o", "--out", type=Path, required=True, help="output file (or folder)")
    p.add_argument(
        "--options", default="", help="Cloudflare-style options, e.g. width=256,fit=cover"
    )
    p.add_argument("--json", action="store_true", help="print the JSON description of each result")
    p.add_argument("--model-dir", type=Path, default=None, help="face model cache directory")
    p.add_argument(
        "--max-pixels", type=int, default=Limits.max_pixels, help="refuse larger sources"
    )
    p.add_argument("--force", action="store_true", help="folder: redo outputs that already exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        options = parse_options(args.options)
    except OptionError as error:
        print(f"focal: {error.public}", file=sys.stderr)
        return 2
    limits = Limits(max_pixels=args.max_pixels)
    try:
        detector = _detector(options, args.model_dir)
    except ModelMissingError as error:
        print(f"focal: {error.public}", file=sys.stderr)
        return 3
    if args.src.is_dir():
        return _folder(args, options, detector, limits)
    return _single(args, options, detector, limits)


def _detector(options: Options, model_dir: Path | None) -> Detector | None:
    if options.gravity.mode != "face":
        return None
    from focal.retinaface import load_detector  # the inference runtime only when faces are asked

    detector: Detector = load_detector(model_dir=model_dir)
    return detector


def _single(
    args: argparse.Namespace, options: Options, detector: Detector | None, limits: Limits
) -> int:
    if options.format is None and args.out.suffix.lower() in SUFFIX_FORMATS:
        options = replace(options, format=SUFFIX_FORMATS[args.out.suffix.lower()])
    try:
        result = _one(args.src, args.out, options, detector, limits)
    except (FocalError, OSError) as error:
        print(f"focal: {args.src}: {_reason(error)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.description, indent=2))
    return 0


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0


def _folder(
    args: argparse.Namespace, options: Options, detector: Detector | None, limits: Limits
) -> int:
    sources = sorted(
        p for p in args.src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    summary = Summary()
    failed: list[tuple[Path, str]] = []
    started = time.perf_counter()
    for index, src in enumerate(sources, 1):
        out = _output_path(src, args.src, args.out, options)
        _progress(index, len(sources), src.name)
        if not args.force and out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            summary.skipped += 1
            continue
        try:
            result = _one(src, out, options, detector, limits)
        except (FocalError, OSError) as error:
            failed.append((src, _reason(error)))
            continue
        summary.done += 1
        if args.json:
            print(json.dumps({"source": str(src), **result.description}))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    seconds = time.perf_counter() - started
    print(
        f"{summary.done} done, {summary.skipped} skipped (already there), {len(failed)} failed, "
        f"in {seconds:.1f} s",
        file=sys.stderr,
    )
    for src, reason in failed:
        print(f"  failed: {src}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def _output_path(src: Path, root: Path, out_root: Path, options: Options) -> Path:
    relative = src.relative_to(root)
    if options.format is None or options.format is Format.AUTO:
        return out_root / relative
    return (out_root / relative).with_suffix(FORMAT_SUFFIXES[options.format.value])


def _progress(index: int, total: int, name: str) -> None:
    if sys.stderr.isatty():
        width = 30
        filled = width * index // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r[{bar}] {index}/{total} {name[:40]:<40}", end="", file=sys.stderr, flush=True)


def _reason(error: Exception) -> str:
    if isinstance(error, FocalError):
        return f"{error.public} (status {error.status})"
    return f"{type(error).__name__}: {error}"


def _one(
    src: Path, out: Path, options: Options, detector: Detector | None, limits: Limits
) -> Result:
    size = src.stat().st_size
    if size > limits.max_bytes:
        raise FocalError(
            f"The source is {size} bytes: expected at most {limits.max_bytes}", status=413
        )
    result = transform(src.read_bytes(), options, detector=detector, limits=limits)
    write_atomic(out, result.data)
    return result


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside ``path`` and rename: never a partial file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
