"""The values options take: the enums, the small records (gravity, trim, border, overlay), the
limits their numbers keep to, and the canonical text of each value (for cache keys and logs).

A record checks its own numbers when it is made (an OptionError naming the option), so no
out-of-range gravity, trim or border exists, however it was built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from focal.errors import expected

# The lowest redact-strength served: below it focal's own detector still finds faces in the
# redacted regions (benchmarks/experiments/redact_strength.py: the rule, the images, the
# measurement; a lower strength asked in a URL is raised to this one).
MIN_REDACT_STRENGTH = 62
MAX_DIMENSION = 12000
MAX_BORDER = 1000
MAX_TRIM = MAX_DIMENSION * 10
WIDTH_AUTO = "auto"  # width=auto: Options turns it into width_auto
TRIM_PARTS = ("top", "right", "bottom", "left", "width", "height")

RGBA = tuple[int, int, int, int]


def is_number(value: object) -> bool:
    """A finite int or float (not a bool, which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_integer(name: str, value: object, low: int, high: int) -> int:
    """``value`` when it is an integer from ``low`` to ``high``, else the OptionError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise expected(name, f"an integer from {low} to {high}", value)
    return value


def check_rgba(name: str, value: object) -> RGBA:
    """``value`` when it is four channels 0..255 (red, green, blue, alpha)."""
    if not (isinstance(value, tuple) and len(value) == 4):
        raise expected(name, "a colour: four channels from 0 to 255", value)
    for channel in value:
        check_integer(name, channel, 0, 255)
    return value


class Fit(StrEnum):
    SCALE_DOWN = "scale-down"
    CONTAIN = "contain"
    COVER = "cover"
    CROP = "crop"
    PAD = "pad"
    SQUEEZE = "squeeze"
    SCALE_UP = "scale-up"
    ASPECT_CROP = "aspect-crop"


class Format(StrEnum):
    AUTO = "auto"
    AVIF = "avif"
    WEBP = "webp"
    JPEG = "jpeg"
    BASELINE_JPEG = "baseline-jpeg"
    PNG = "png"
    GIF = "gif"
    JSON = "json"


class RedactStyle(StrEnum):
    BLUR = "blur"
    PIXELATE = "pixelate"


class Metadata(StrEnum):
    KEEP = "keep"
    COPYRIGHT = "copyright"
    NONE = "none"


class GravityMode(StrEnum):
    CENTER = "center"
    AUTO = "auto"
    FACE = "face"
    LEFT = "left"
    RIGHT = "right"
    TOP = "top"
    BOTTOM = "bottom"
    POINT = "point"  # the XxY form


GRAVITY_WHAT = "one of " + ", ".join(GravityMode) + ", with x and y from 0 to 1"


@dataclass(frozen=True)
class Gravity:
    """Where to crop from; for ``point`` (the ``XxY`` form), ``x`` and ``y`` are fractions 0..1
    of the image."""

    mode: GravityMode = GravityMode.CENTER
    x: float = 0.5
    y: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in GravityMode.__members__.values():
            raise expected("gravity", GRAVITY_WHAT, self.mode)
        object.__setattr__(self, "mode", GravityMode(self.mode))  # "face" -> GravityMode.FACE
        if not (is_number(self.x) and is_number(self.y) and 0 <= self.x <= 1 and 0 <= self.y <= 1):
            raise expected("gravity", GRAVITY_WHAT, f"x={self.x!r}, y={self.y!r}")


@dataclass(frozen=True)
class Trim:
    """Pixels to cut from each side, or ``border`` to cut a uniform border. ``width`` and
    ``height`` (from ``trim.width``/``trim.height``) keep that many pixels from ``left``/``top``
    instead of naming the right and bottom cuts."""

    top: int = 0
    right: int = 0
    bottom: int = 0
    left: int = 0
    border: bool = False
    width: int | None = None
    height: int | None = None
    # trim=border only: the border's colour (None: the top-left pixel's colour), how
    # closely a pixel must match it (0 = anything matches .. 255 = exactly), pixels kept
    border_colour: tuple[int, int, int, int] | None = None
    border_tolerance: int = 245
    border_keep: int = 0

    def __post_init__(self) -> None:
        for side in ("top", "right", "bottom", "left", "width", "height"):
            value = getattr(self, side)
            if value is not None or side in ("top", "right", "bottom", "left"):
                check_integer(f"trim.{side}", value, 0, MAX_TRIM)
        check_integer("trim.border.tolerance", self.border_tolerance, 0, 255)
        check_integer("trim.border.keep", self.border_keep, 0, MAX_DIMENSION)
        if self.border_colour is not None:
            check_rgba("trim.border.color", self.border_colour)
        if not isinstance(self.border, bool):
            raise expected("trim", "border true or false", self.border)

    def sides(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(top, right, bottom, left) in pixels for an image of ``width`` x ``height``."""
        right = self.right if self.width is None else width - self.left - self.width
        bottom = self.bottom if self.height is None else height - self.top - self.height
        return self.top, right, bottom, self.left


@dataclass(frozen=True)
class Border:
    """A border added around the image after resizing (pixels before ``dpr``), in ``colour``."""

    top: int = 0
    right: int = 0
    bottom: int = 0
    left: int = 0
    colour: tuple[int, int, int, int] = (0, 0, 0, 255)

    def __post_init__(self) -> None:
        for side in ("top", "right", "bottom", "left"):
            check_integer(f"border {side}", getattr(self, side), 0, MAX_BORDER)
        check_rgba("border color", self.colour)


class Repeat(StrEnum):
    BOTH = "true"  # Cloudflare's repeat: true
    X = "x"
    Y = "y"


class Composite(StrEnum):
    """How an overlay meets the image under it: Cloudflare's Porter-Duff names (``lighter`` is
    libvips' ``add``), then the blend modes libvips has beyond them."""

    OVER = "over"
    IN = "in"
    ATOP = "atop"
    OUT = "out"
    XOR = "xor"
    LIGHTER = "lighter"
    MULTIPLY = "multiply"
    SCREEN = "screen"
    OVERLAY = "overlay"
    DARKEN = "darken"
    LIGHTEN = "lighten"
    DIFFERENCE = "difference"


@dataclass(frozen=True)
class Overlay:
    """One entry of ``draw``: an image drawn over the output, with Cloudflare's keys.

    ``width``/``height`` are pixels (before ``dpr``) when 1 or more, a fraction of the output's
    side when below 1. Offsets are pixels (before ``dpr``) from that edge; none on an axis
    centres the overlay on it."""

    url: str
    opacity: float = 1.0
    repeat: Repeat | None = None
    top: int | None = None
    left: int | None = None
    bottom: int | None = None
    right: int | None = None
    width: float | None = None
    height: float | None = None
    fit: Fit = Fit.SCALE_DOWN
    gravity: Gravity = Gravity()
    background: RGBA | None = None
    rotate: int = 0
    composite: Composite = Composite.OVER


def canonical(value: object) -> str:
    """The canonical text of one option value (for cache keys and logs)."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Gravity):
        if value.mode is GravityMode.POINT:
            return f"{value.x:g}x{value.y:g}"
        return value.mode.value
    if isinstance(value, Trim):
        if value.border:
            return "border" + _trim_border_canonical(value)
        sides = f"{value.top};{value.right};{value.bottom};{value.left}"
        if value.width is not None or value.height is not None:
            sides += f";width:{value.width};height:{value.height}"
        return sides + _trim_border_canonical(value)
    if isinstance(value, Border):
        colour = "".join(f"{c:02x}" for c in value.colour)
        return f"{value.top};{value.right};{value.bottom};{value.left};#{colour}"
    if isinstance(value, tuple):
        return "#" + "".join(f"{c:02x}" for c in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower()


def _trim_border_canonical(trim: Trim) -> str:
    default = Trim(border=True)
    parts = ""
    if trim.border_colour is not None:
        parts += ";color:#" + "".join(f"{c:02x}" for c in trim.border_colour)
    if trim.border_tolerance != default.border_tolerance:
        parts += f";tolerance:{trim.border_tolerance}"
    if trim.border_keep:
        parts += f";keep:{trim.border_keep}"
    return parts
