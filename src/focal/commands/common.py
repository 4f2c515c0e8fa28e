"""What `focal transform` and `focal batch` share: their job arguments, the names of their
outputs and when one is skipped, the summary, the way a failure is reported, and the exit
codes."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from focal.errors import FocalError, OptionError
from focal.face.retinaface import CROP_THRESHOLD
from focal.face.sessions import MIN_MAX_SIDE, PRECISIONS, RUNTIMES
from focal.geometry import FACE_CROP_SIDE, FACE_CROP_SIDES, INFERENCE_CAP
from focal.options import BY_KEY, Format, Options
from focal.pipeline import Limits

Number = TypeVar("Number", int, float)
# exit codes: all done; an input failed; usage or option error; the face model is not
# installed; an optional dependency (Ray, obstore) is not installed
DONE, FAILED, USAGE, NO_MODEL, NOT_INSTALLED = 0, 1, 2, 3, 4
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".avif", ".tif", ".tiff"}
FORMAT_SUFFIXES = {
    "jpeg": ".jpg",
    "baseline-jpeg": ".jpg",
    "png": ".png",
    "webp": ".webp",
    "avif": ".avif",
    "gif": ".gif",
    "json": ".json",
}


def add_command(sub: Any, name: str, about: str, doc: str | None) -> Any:
    """The subcommand's parser, its module docstring as the description."""
    return sub.add_parser(
        name, help=about, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_job_arguments(p: Any, *, folder: str = "") -> None:
    """The options, limits, resume and face detector flags of a transform job. ``folder``
    prefixes the help of the flags that only matter for many images (``"folder: "``)."""
    p.add_argument(
        "--options", default="", help="Cloudflare-style options, e.g. width=256,fit=cover"
    )
    p.add_argument("--model-dir", type=Path, default=None, help="face model cache directory")
    p.add_argument(
        "--max-pixels", type=int, default=Limits.max_pixels, help="refuse larger sources"
    )
    p.add_argument(
        "--max-bytes",
        type=positive_int,
        default=Limits.max_bytes,
        help="refuse larger source files (before they are read whole)",
    )
    p.add_argument("--force", action="store_true", help=f"{folder}redo outputs that already exist")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="face detector runtime; torch runs on a GPU (needs the gpu extra)",
    )
    p.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="face detector precision"
    )
    p.add_argument("--device", default="auto", help="torch runtime only: auto, cuda, cuda:N or cpu")
    p.add_argument(
        "--face-crop-threshold",
        type=unit_float,
        default=CROP_THRESHOLD,
        help="CPU runtimes: what scores as a face for gravity=face (weak candidates below it "
        "only steer the crop; docs/cropping.md)",
    )
    p.add_argument(
        "--detector-flip",
        action="store_true",
        help="CPU runtimes: also detect on the mirrored image (about twice the detector time)",
    )
    p.add_argument(
        "--detector-max-side",
        type=detection_side,
        default=INFERENCE_CAP,
        help=f"most pixels per side detection runs on ({MIN_MAX_SIDE} to {INFERENCE_CAP}; smaller "
        "is faster and finds fewer small faces, docs/detector.md)",
    )
    p.add_argument(
        "--face-crop-side",
        choices=FACE_CROP_SIDES,
        default=FACE_CROP_SIDE,
        help="the side a zoom=0 face crop detects at: cap (the detector's side, the published "
        "algorithm) or output (twice the output's scale: faster, finds fewer small faces; "
        "docs/detector.md)",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=16,
        help=f"{folder}most images in one face detector call",
    )


def detector_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """focal.face.sessions.DetectorConfig's arguments from the flags of add_job_arguments."""
    return {
        "model_dir": args.model_dir,
        "runtime": args.runtime,
        "precision": args.precision,
        "device": args.device,
        "max_batch": args.batch,
        "crop_threshold": args.face_crop_threshold,
        "flip": args.detector_flip,
        "max_side": args.detector_max_side,
    }


def option_flag(name: str) -> Callable[[str], Any]:
    """An argparse type reading a flag as the option ``name`` reads its URL value: the same
    grammar, and the OptionError's message (naming the option and what was expected)."""
    spec = BY_KEY[name]

    def parse(text: str) -> Any:
        try:
            return spec.parse(name, text)
        except OptionError as error:
            raise argparse.ArgumentTypeError(error.public) from None

    parse.__name__ = name
    return parse


def _checked(
    text: str, convert: Callable[[str], Number], ok: Callable[[Number], bool], expected: str
) -> Number:
    """``convert(text)`` if it parses and passes ``ok``; else argparse's error, naming what was
    ``expected``."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, received {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, received {text!r}")
    return value


def positive_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 1, "a positive integer")


def detection_side(text: str) -> int:
    return _checked(
        text,
        int,
        lambda v: MIN_MAX_SIDE <= v <= INFERENCE_CAP,
        f"a whole number of pixels from {MIN_MAX_SIDE} to {INFERENCE_CAP}",
    )


def unit_float(text: str) -> float:
    return _checked(text, float, lambda v: 0 <= v < 1, "a number from 0 to below 1")


def non_negative_float(text: str) -> float:
    return _checked(text, float, lambda v: 0 <= v < float("inf"), "a number of at least 0")


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def output_name(relative: str, options: Options) -> str:
    """The output's path relative to the output folder or prefix, for a source's relative path
    (``/``-separated): the same name, with the suffix of an explicit format."""
    if options.format is None or options.format is Format.AUTO:
        return relative
    return str(PurePosixPath(relative).with_suffix(FORMAT_SUFFIXES[options.format.value]))


def reason(error: Exception) -> str:
    if isinstance(error, FocalError):
        return f"{error.public} (status {error.status})"
    return f"{type(error).__name__}: {error}"


def up_to_date(output_time: float | None, source_time: float, *, whole_seconds: bool) -> bool:
    """The skip rule: an output is there (``output_time`` not None) and not older than its
    source. Object-storage times have whole seconds: with ``whole_seconds`` (either side is
    object storage) the source's time is compared in whole seconds too."""
    if output_time is None:
        return False
    return output_time >= (math.floor(source_time) if whole_seconds else source_time)


def summarize(done: int, skipped: int, failures: list[tuple[str, str]], tail: str = "") -> int:
    """The summary on stderr (counts, then each failed source and its reason); the exit code."""
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"{done} done, {skipped} skipped (already there), {len(failures)} failed{tail}",
        file=sys.stderr,
    )
    for source, why in failures:
        print(f"  failed: {source}: {why}", file=sys.stderr)
    return FAILED if failures else DONE


def read_file(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refused (413) past ``max_bytes`` before they are read whole."""
    size = path.stat().st_size
    if size > max_bytes:
        raise FocalError(f"The source is {size} bytes: expected at most {max_bytes}", status=413)
    return path.read_bytes()
