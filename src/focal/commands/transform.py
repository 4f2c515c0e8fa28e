"""`focal transform SRC -o OUT --options ...`: one file, or a whole folder.

A folder is worked on by --workers threads (reading, decoding, transforming, writing). With
gravity=face they share one face detector that takes their images in batches of up to --batch,
waiting at most --batch-window-ms for a batch to fill (focal.face.batching). --json lines come
out in source order, whatever order the threads finish in.

Exit codes: 0 all done; 1 an input failed (a folder run lists each failure and goes on);
2 usage or option error; 3 the face model is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from focal.commands.common import (
    DONE,
    FAILED,
    IMAGE_SUFFIXES,
    NO_MODEL,
    USAGE,
    add_command,
    add_job_arguments,
    detector_kwargs,
    non_negative_float,
    output_name,
    positive_int,
    read_file,
    reason,
    summarize,
    up_to_date,
)
from focal.detection import Detector
from focal.errors import FocalError, ForbiddenError, ModelMissingError, OptionError
from focal.face.batching import BatchingDetector
from focal.face.sessions import DetectorConfig, open_detector
from focal.files import write_atomic
from focal.geometry import FACE_CROP_SIDE
from focal.options import Format, Options, parse_options
from focal.pipeline import Limits, Result, overlay_error, transform
from focal.server.origins import LocalOrigin, is_remote

SUFFIX_FORMATS = {
    ".jpg": Format.JPEG,
    ".jpeg": Format.JPEG,
    ".png": Format.PNG,
    ".webp": Format.WEBP,
    ".avif": Format.AVIF,
    ".gif": Format.GIF,
    ".json": Format.JSON,
}


def register(sub: Any) -> None:
    p = add_command(sub, "transform", "transform an image or a folder of images", __doc__)
    p.add_argument("src", type=Path, help="an image file or a folder of images")
    p.add_argument("-o", "--out", type=Path, required=True, help="output file (or folder)")
    p.add_argument("--json", action="store_true", help="print the JSON description of each result")
    add_job_arguments(p, folder="folder: ")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="folder: threads that read, decode, transform and write (default: CPU count)",
    )
    p.add_argument(
        "--overlay-root",
        type=Path,
        default=Path("."),
        help="the folder draw's overlay paths are read from (as focal serve's root; "
        "default: the current folder)",
    )
    p.add_argument(
        "--batch-window-ms",
        type=non_negative_float,
        default=20.0,
        help="folder: longest wait for a detector batch to fill, in milliseconds",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        options = parse_options(args.options)
    except OptionError as error:
        print(f"focal: {error.public}", file=sys.stderr)
        return USAGE
    limits = Limits(max_pixels=args.max_pixels, max_bytes=args.max_bytes)
    try:
        overlays = load_overlays(options, args.overlay_root, limits.max_bytes)
    except FocalError as error:
        print(f"focal: {error.public}", file=sys.stderr)
        return FAILED
    try:
        detector = _detector(options, args)
    except ModelMissingError as error:
        print(f"focal: {error.public}", file=sys.stderr)
        return NO_MODEL
    except FocalError as error:  # a runtime or precision this machine cannot run
        print(f"focal: {error.public}", file=sys.stderr)
        return USAGE
    except ImportError as error:
        print(f"focal: the {args.runtime} runtime is not installed ({error})", file=sys.stderr)
        return USAGE
    work = _Work(options, detector, limits, overlays, args.face_crop_side)
    if args.src.is_dir():
        return _folder(args, work)
    return _single(args, work)


def load_overlays(options: Options, root: Path, max_bytes: int) -> dict[str, bytes]:
    """draw's overlays, read once, through the checks focal serve's local root makes (no path
    out of ``root``, the byte limit); an overlay URL is refused (focal serve fetches those)."""
    origin = LocalOrigin(root, max_bytes)
    loaded: dict[str, bytes] = {}
    for index, spec in enumerate(options.draw):
        try:
            if is_remote(spec.url):
                raise ForbiddenError("remote overlays are fetched by focal serve only")
            if spec.url not in loaded:
                loaded[spec.url] = asyncio.run(origin.fetch(spec.url)).data
        except FocalError as error:
            raise overlay_error(error, index, spec.url) from None
    return loaded


def _detector(options: Options, args: argparse.Namespace) -> Detector | None:
    if not options.needs_faces:
        return None
    return open_detector(DetectorConfig(**detector_kwargs(args)))


@dataclass(frozen=True)
class _Work:
    """What every source of a run is transformed with."""

    options: Options
    detector: Detector | None
    limits: Limits
    overlays: dict[str, bytes]
    face_crop_side: str = FACE_CROP_SIDE

    def one(self, src: Path, out: Path) -> Result:
        """``src`` transformed and written whole to ``out``."""
        data = read_file(src, self.limits.max_bytes)
        result = transform(
            data,
            self.options,
            detector=self.detector,
            limits=self.limits,
            overlays=self.overlays,
            face_crop_side=self.face_crop_side,
        )
        write_atomic(out, result.data)
        return result


def _single(args: argparse.Namespace, work: _Work) -> int:
    options = work.options
    if options.format is None and args.out.suffix.lower() in SUFFIX_FORMATS:
        work = replace(
            work, options=replace(options, format=SUFFIX_FORMATS[args.out.suffix.lower()])
        )
    try:
        result = work.one(args.src, args.out)
    except (FocalError, OSError) as error:
        print(f"focal: {args.src}: {reason(error)}", file=sys.stderr)
        return FAILED
    if args.json:
        print(json.dumps(result.description, indent=2))
    return DONE


@dataclass(frozen=True)
class Outcome:
    """One source of a folder run: skipped, done (with its description) or failed (a reason)."""

    skipped: bool = False
    description: dict[str, Any] | None = None
    failure: str | None = None


def _folder(args: argparse.Namespace, work: _Work) -> int:
    sources = sorted(
        p for p in args.src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    batching = None
    if work.detector is not None:  # each worker waits on one image: a batch is <= --workers
        most = min(args.batch, args.workers)
        batching = BatchingDetector(work.detector, most, args.batch_window_ms)
    job = partial(_job, args=args, work=replace(work, detector=batching))
    done = skipped = 0
    failed: list[tuple[str, str]] = []
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(args.workers, thread_name_prefix="focal-transform") as pool:
            outcomes = pool.map(job, sources)  # yielded in source order
            for index, (src, outcome) in enumerate(zip(sources, outcomes, strict=True), 1):
                _progress(index, len(sources), src.name)
                if outcome.skipped:
                    skipped += 1
                elif outcome.failure is not None:
                    failed.append((str(src), outcome.failure))
                else:
                    done += 1
                    if args.json:
                        print(json.dumps({"source": str(src), **(outcome.description or {})}))
    finally:
        if batching is not None:
            batching.close()
    seconds = time.perf_counter() - started
    return summarize(done, skipped, failed, f", in {seconds:.1f} s")


def _job(src: Path, args: argparse.Namespace, work: _Work) -> Outcome:
    """One source of a folder run, on a worker thread."""
    out = _output_path(src, args.src, args.out, work.options)
    try:
        done_at = out.stat().st_mtime if out.exists() else None
        if not args.force and up_to_date(done_at, src.stat().st_mtime, whole_seconds=False):
            return Outcome(skipped=True)
        result = work.one(src, out)
    except (FocalError, OSError) as error:
        return Outcome(failure=reason(error))
    return Outcome(description=result.description)


def _output_path(src: Path, root: Path, out_root: Path, options: Options) -> Path:
    return out_root / output_name(src.relative_to(root).as_posix(), options)


def _progress(index: int, total: int, name: str) -> None:
    if sys.stderr.isatty():
        width = 30
        filled = width * index // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r[{bar}] {index}/{total} {name[:40]:<40}", end="", file=sys.stderr, flush=True)
