"""What `focal transform` and `focal batch` share: their job arguments, the names of their
outputs, and the way a failure is reported."""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath
from typing import Any

from focal.errors import FocalError
from focal.face.retinaface import CROP_THRESHOLD
from focal.face.sessions import PRECISIONS, RUNTIMES
from focal.options import Format, Options
from focal.pipeline import Limits

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
        "--batch",
        type=positive_int,
        default=16,
        help=f"{folder}most images in one face detector call",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to below 1, received {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, received {text!r}")
    return value


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
