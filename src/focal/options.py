"""Transformation options: parsed once, from the comma-separated URL form, into one frozen object.

Every option has one row in ``OPTIONS`` (name, aliases, parser). Unknown options, duplicates,
malformed and out-of-range values raise :class:`focal.errors.OptionError` with a message of one
form: ``Expected <what> for <option> but received '<value>'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Fit(StrEnum):
    SCALE_DOWN = "scale-down"
    CONTAIN = "contain"
    COVER = "cover"
    CROP = "crop"
    PAD = "pad"
    SQUEEZE = "squeeze"


class Format(StrEnum):
    AUTO = "auto"
    AVIF = "avif"
    WEBP = "webp"
    JPEG = "jpeg"
    BASELINE_JPEG = "baseline-jpeg"
    PNG = "png"
    GIF = "gif"
    JSON = "json"


class Metadata(StrEnum):
    KEEP = "keep"
    COPYRIGHT = "copyright"
    NONE = "none"


@dataclass(frozen=True)
class Gravity:
    """Where to crop from. ``mode`` is one of center, auto, face, left, right, top, bottom, point;
    for ``point`` (the ``XxY`` form), ``x`` and ``y`` are fractions 0..1 of the image."""

    mode: str = "center"
    x: float = 0.5
    y: float = 0.5


@dataclass(frozen=True)
class Trim:
    """Pixels to cut from each side, or ``border`` to cut a uniform border."""

    top: int = 0
    right: int = 0
    bottom: int = 0
    left: int = 0
    border: bool = False


RGBA = tuple[int, int, int, int]


@dataclass(frozen=True)
class Options:
    width: int | None = None
    height: int | None = None
    dpr: float = 1.0
    fit: Fit = Fit.SCALE_DOWN
    gravity: Gravity = Gravity()
    zoom: float = 0.0
    format: Format | None = None  # None: keep the source's format where it can be written
    quality: int = 85
    background: RGBA | None = None
    rotate: int = 0
    flip: str | None = None  # "h", "v" or "hv"
    trim: Trim | None = None
    blur: float = 0.0
    sharpen: float = 0.0
    brightness: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    saturation: float = 1.0
    metadata: Metadata = Metadata.COPYRIGHT
    anim: bool = True
    onerror: str | None = None  # "redirect"

    @property
    def target_width(self) -> int | None:
        return None if self.width is None else max(1, round(self.width * self.dpr))

    @property
    def target_height(self) -> int | None:
        return None if self.height is None else max(1, round(self.height * self.dpr))
