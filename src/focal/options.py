"""Transformation options: parsed once, from the comma-separated URL form, into one frozen object.

Every option has one row in ``OPTIONS`` (name, aliases, parser). Unknown options, duplicates,
malformed and out-of-range values raise :class:`focal.errors.OptionError` with a message of one
form: ``Expected <what> for <option> but received '<value>'``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from focal.errors import OptionError, expected

# The lowest redact-strength served: below it focal's own detector still finds faces in the
# redacted regions (benchmarks/redact_strength.py: the rule, the images, the measurement; a lower
# strength asked in a URL is raised to this one).
MIN_REDACT_STRENGTH = 62


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


@dataclass(frozen=True)
class Gravity:
    """Where to crop from; for ``point`` (the ``XxY`` form), ``x`` and ``y`` are fractions 0..1
    of the image."""

    mode: GravityMode = GravityMode.CENTER
    x: float = 0.5
    y: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", GravityMode(self.mode))  # "face" -> GravityMode.FACE


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


RGBA = tuple[int, int, int, int]


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
    redact: bool = False  # redact=faces: blur or pixelate every detected face
    redact_style: RedactStyle = RedactStyle.BLUR
    redact_strength: int = MIN_REDACT_STRENGTH  # raised to it when lower (see MIN_REDACT_STRENGTH)
    border: Border | None = None
    compression: str | None = None  # "fast"
    slow_connection_quality: int | None = None  # the quality on a slow connection (client hints)
    upscale: str | None = None  # "interpolate" (the only upscaling focal does)
    segment: str | None = None  # never set: the option is refused
    width_auto: bool = False  # width=auto: the server fills width from the client's hints
    draw: tuple[Overlay, ...] = ()  # overlays drawn over the output, in order (docs/options.md)
    # trim.top, trim.right, ...: folded into ``trim`` when the options are made
    trim_top: int | None = None
    trim_right: int | None = None
    trim_bottom: int | None = None
    trim_left: int | None = None
    trim_width: int | None = None
    trim_height: int | None = None
    # trim.border.color, trim.border.tolerance, trim.border.keep: folded into ``trim`` too
    trim_border_color: RGBA | None = None
    trim_border_tolerance: int | None = None
    trim_border_keep: int | None = None

    def __post_init__(self) -> None:
        if self.redact and self.redact_strength < MIN_REDACT_STRENGTH:  # never weaker than that
            object.__setattr__(self, "redact_strength", MIN_REDACT_STRENGTH)
        if self.width == WIDTH_AUTO:
            object.__setattr__(self, "width", None)
            object.__setattr__(self, "width_auto", True)
        self._fold_trim_border()
        sides = {name: getattr(self, "trim_" + name) for name in TRIM_PARTS}
        given = {name: value for name, value in sides.items() if value is not None}
        if not given:
            return
        if self.trim is not None:
            raise expected("trim", "either trim=top;right;bottom;left or trim.* options", given)
        for side, size in (("right", "width"), ("bottom", "height")):
            if side in given and size in given:
                raise expected(f"trim.{size}", f"no trim.{side} alongside it", given)
        trim = Trim(
            top=given.get("top", 0),
            right=given.get("right", 0),
            bottom=given.get("bottom", 0),
            left=given.get("left", 0),
            width=given.get("width"),
            height=given.get("height"),
        )
        object.__setattr__(self, "trim", trim)
        for name in TRIM_PARTS:
            object.__setattr__(self, "trim_" + name, None)

    def _fold_trim_border(self) -> None:
        """trim.border.* into ``trim`` (they refine trim=border, and need it)."""
        colour, tolerance, keep = (
            self.trim_border_color,
            self.trim_border_tolerance,
            self.trim_border_keep,
        )
        if (colour, tolerance, keep) == (None, None, None):
            return
        if self.trim is None or not self.trim.border:
            name = next(
                f"trim.border.{part}"
                for part, value in (("color", colour), ("tolerance", tolerance), ("keep", keep))
                if value is not None
            )
            raise expected(name, "trim=border alongside it", f"{name} without it")
        trim = replace(
            self.trim,
            border_colour=colour,
            border_tolerance=self.trim.border_tolerance if tolerance is None else tolerance,
            border_keep=keep or 0,
        )
        object.__setattr__(self, "trim", trim)
        for name in ("trim_border_color", "trim_border_tolerance", "trim_border_keep"):
            object.__setattr__(self, name, None)

    @property
    def face_gravity(self) -> bool:
        return self.gravity.mode is GravityMode.FACE

    @property
    def needs_faces(self) -> bool:
        """Whether this transformation runs the face detector (gravity=face, redact=faces)."""
        return self.face_gravity or self.redact

    @property
    def target_width(self) -> int | None:
        return None if self.width is None else max(1, round(self.width * self.dpr))

    @property
    def target_height(self) -> int | None:
        return None if self.height is None else max(1, round(self.height * self.dpr))


# --- parsing -----------------------------------------------------------------------------------

MAX_DIMENSION = 12000
MAX_BORDER = 1000
WIDTH_AUTO = -1  # what the width parser gives for width=auto (Options turns it into width_auto)
TRIM_PARTS = ("top", "right", "bottom", "left", "width", "height")
# Cloudflare's perceptual names, then Astro's (mid, max), which its Cloudflare service passes on
QUALITY_NAMES = {
    "high": 90,
    "medium-high": 80,
    "medium-low": 65,
    "low": 50,
    "mid": 65,
    "max": 100,
}
# other names for fit values that frameworks emit: CSS object-fit / sharp names
FIT_ALIASES = {"fill": "squeeze", "inside": "contain"}
# fit values that frameworks or Cloudflare emit and focal refuses, with what to use instead
FIT_REFUSED = {
    "outside": "it has no Cloudflare equivalent; use fit=cover (fills the box, cropping)",
    "none": "it would not resize; leave width and height out instead",
}
GRAVITY_MODES = tuple(mode.value for mode in GravityMode if mode is not GravityMode.POINT)
FLIPS = {"h": "h", "v": "v", "hv": "hv", "vh": "hv"}
NAMED_COLOURS: dict[str, RGBA] = {
    "transparent": (0, 0, 0, 0),
    "black": (0, 0, 0, 255),
    "white": (255, 255, 255, 255),
    "red": (255, 0, 0, 255),
    "lime": (0, 255, 0, 255),
    "green": (0, 128, 0, 255),
    "blue": (0, 0, 255, 255),
    "yellow": (255, 255, 0, 255),
    "cyan": (0, 255, 255, 255),
    "aqua": (0, 255, 255, 255),
    "magenta": (255, 0, 255, 255),
    "fuchsia": (255, 0, 255, 255),
    "gray": (128, 128, 128, 255),
    "grey": (128, 128, 128, 255),
    "silver": (192, 192, 192, 255),
    "maroon": (128, 0, 0, 255),
    "olive": (128, 128, 0, 255),
    "navy": (0, 0, 128, 255),
    "purple": (128, 0, 128, 255),
    "teal": (0, 128, 128, 255),
    "orange": (255, 165, 0, 255),
}

Parser = Callable[[str, str], object]

# Bounds on the text itself, checked before any value is parsed: every grammar below is linear in
# its input, and these keep the input small (a URL's options are a few dozen characters).
MAX_OPTIONS_LENGTH = 1024
MAX_VALUE_LENGTH = 64
MAX_DRAW_LENGTH = 960  # a draw list (JSON, or b64: and base64url JSON) is longer than a value
# ASCII only: str.isdigit() and float() also accept other scripts' digits and superscripts.
INTEGER = re.compile(r"-?[0-9]{1,9}")
NUMBER = re.compile(r"[-+]?(?:[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})")
FRACTION = r"(?:[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})"
POINT = re.compile(rf"({FRACTION})x({FRACTION})")


def _integer(low: int, high: int) -> Parser:
    def parse(name: str, text: str) -> int:
        if INTEGER.fullmatch(text) is None:
            raise expected(name, f"an integer from {low} to {high}", text)
        value = int(text)
        if not low <= value <= high:
            raise expected(name, f"an integer from {low} to {high}", text)
        return value

    return parse


def _number(low: float, high: float, *, low_open: bool = False) -> Parser:
    if low_open:
        what = f"a number above {low:g} and at most {high:g}"
    else:
        what = f"a number from {low:g} to {high:g}"

    def parse(name: str, text: str) -> float:
        if NUMBER.fullmatch(text) is None:
            raise expected(name, what, text)
        value = float(text)
        if value > high or value < low or (low_open and value == low):
            raise expected(name, what, text)
        return value

    return parse


def _choice(choices: dict[str, object]) -> Parser:
    what = "one of " + ", ".join(choices)

    def parse(name: str, text: str) -> object:
        if text not in choices:
            raise expected(name, what, text)
        return choices[text]

    return parse


def _enum(kind: type[StrEnum]) -> Parser:
    return _choice({member.value: member for member in kind})


def _quality(name: str, text: str) -> int:
    if text in QUALITY_NAMES:
        return QUALITY_NAMES[text]
    value: int = _integer(1, 100)(name, text)  # type: ignore[assignment]
    return value


def _gravity(name: str, text: str) -> Gravity:
    if text in GRAVITY_MODES:
        return Gravity(mode=GravityMode(text))
    match = POINT.fullmatch(text)
    what = "one of " + ", ".join(GRAVITY_MODES) + ", or XxY with X and Y from 0 to 1"
    if match is None:
        raise expected(name, what, text)
    x, y = float(match[1]), float(match[2])
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise expected(name, what, text)
    return Gravity(mode=GravityMode.POINT, x=x, y=y)


def _trim(name: str, text: str) -> Trim:
    if text == "border":
        return Trim(border=True)
    what = "border, or top;right;bottom;left in pixels"
    parts = text.split(";")
    if len(parts) != 4 or not all(re.fullmatch(r"[0-9]{1,9}", part) for part in parts):
        raise expected(name, what, text)
    top, right, bottom, left = (int(part) for part in parts)
    if max(top, right, bottom, left) > MAX_DIMENSION * 10:
        raise expected(name, what, text)
    return Trim(top=top, right=right, bottom=bottom, left=left)


COLOUR_WHAT = "a CSS colour (#rgb, #rrggbb, #rrggbbaa, rgb(r g b), rgba(r,g,b,a) or a colour name)"
HEX_COLOUR = re.compile(r"#([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})")
RGB_FUNCTION = re.compile(r"rgba?\(([^)]*)\)")
CHANNEL = re.compile(r"[0-9]{1,3}")
ALPHA = re.compile(r"(?:[0-9]{1,3}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})(%?)")


def _colour(name: str, text: str) -> RGBA:
    lowered = text.strip().lower()
    if lowered in NAMED_COLOURS:
        return NAMED_COLOURS[lowered]
    hexa = HEX_COLOUR.fullmatch(lowered)
    if hexa:
        digits = hexa[1]
        if len(digits) <= 4:
            digits = "".join(c * 2 for c in digits)
        channels = [int(digits[i : i + 2], 16) for i in range(0, len(digits), 2)]
        return (channels[0], channels[1], channels[2], channels[3] if len(channels) == 4 else 255)
    func = RGB_FUNCTION.fullmatch(lowered)
    if func:
        rgba = _rgb_function([p for p in re.split(r"[\s,/]+", func[1].strip()) if p])
        if rgba is not None:
            return rgba
    raise expected(name, COLOUR_WHAT, text)


def _rgb_function(parts: list[str]) -> RGBA | None:
    """rgb(r g b) / rgba(r, g, b, a) with a as 0..1 or a percentage; None if malformed."""
    if len(parts) not in (3, 4) or not all(CHANNEL.fullmatch(p) for p in parts[:3]):
        return None
    rgb = [int(p) for p in parts[:3]]
    alpha = 1.0
    if len(parts) == 4:
        match = ALPHA.fullmatch(parts[3])
        if match is None:
            return None
        alpha = float(parts[3].rstrip("%")) / (100 if match[1] else 1)
    if not (all(0 <= c <= 255 for c in rgb) and 0 <= alpha <= 1):
        return None
    return (rgb[0], rgb[1], rgb[2], round(alpha * 255))


def _boolean(name: str, text: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise expected(name, "true or false", text)


def unsupported(name: str, why: str) -> OptionError:
    """The refusal of an option (or value) that Cloudflare has and focal does not."""
    return OptionError(f"The option {name} is not supported by focal: {why}")


def _unsupported(why: str) -> Parser:
    def parse(name: str, text: str) -> object:
        raise unsupported(name, why)

    return parse


def _width(name: str, text: str) -> int:
    if text == "auto":
        return WIDTH_AUTO
    value: int = _integer(1, MAX_DIMENSION)(name, text)  # type: ignore[assignment]
    return value


def _upscale(name: str, text: str) -> str:
    if text == "generate":
        raise unsupported("upscale=generate", "AI upscaling needs a model focal does not have")
    value: str = _choice({"interpolate": "interpolate"})(name, text)  # type: ignore[assignment]
    return value


def _format(name: str, text: str) -> Format:
    value: Format = _enum(Format)(name, "jpeg" if text == "jpg" else text)  # type: ignore[assignment]
    return value


def _fit(name: str, text: str) -> Fit:
    if text in FIT_REFUSED:
        raise unsupported(f"{name}={text}", FIT_REFUSED[text])
    value: Fit = _enum(Fit)(name, FIT_ALIASES.get(text, text))  # type: ignore[assignment]
    return value


def _border(name: str, text: str) -> Border:
    """``width:N;color:C`` or ``top:N;right:N;bottom:N;left:N;color:C`` (any order; sides not
    named are 0; colour defaults to black): the keys of Cloudflare's Workers border object."""
    what = (
        "width:N or top:N;right:N;bottom:N;left:N, with an optional color:C "
        f"(N from 0 to {MAX_BORDER}, C a CSS colour)"
    )
    sides = {"top": 0, "right": 0, "bottom": 0, "left": 0}
    colour: RGBA = (0, 0, 0, 255)
    seen: set[str] = set()
    for part in text.split(";"):
        key, sep, value = part.partition(":")
        key = key.strip()
        if not sep or key in seen or key not in (*sides, "width", "color", "colour"):
            raise expected(name, what, text)
        seen.add(key)
        if key in ("color", "colour"):
            colour = _colour(name, value)
            continue
        if re.fullmatch(r"[0-9]{1,4}", value) is None or int(value) > MAX_BORDER:
            raise expected(name, what, text)
        if key == "width":
            sides = dict.fromkeys(sides, int(value))
        else:
            sides[key] = int(value)
    if "width" in seen and seen & {"top", "right", "bottom", "left"}:
        raise expected(name, what, text)
    return Border(colour=colour, **sides)


# --- draw: overlays ------------------------------------------------------------------------------

MAX_OVERLAYS = 8
MAX_URL_LENGTH = 512
B64_PREFIX = "b64:"
BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
PRESET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DRAW_WHAT = (
    'a JSON list of overlays ([{"url": ...}, ...]), b64: and that list in base64url, '
    "or the name of a preset that has draw"
)
OVERLAY_KEYS = (
    *("url", "opacity", "repeat", "top", "left", "bottom", "right", "width", "height"),
    *("fit", "gravity", "background", "rotate", "composite"),
)
OVERLAY_REFUSED = {
    "text": "text overlays need fonts focal does not ship; draw an image of the text instead",
}
OVERLAY_GRAVITIES = ("center", "left", "right", "top", "bottom")


def _draw(name: str, text: str) -> tuple[Overlay, ...]:
    """``draw``: a JSON list of overlay objects (Cloudflare's Workers keys), or ``b64:`` and the
    same JSON in base64url (the form for URLs: no commas, slashes or quotes). A bare preset name
    is resolved by :func:`focal.presets.expand` before parsing; one that reaches here is
    refused."""
    if text.startswith(B64_PREFIX):
        encoded = text[len(B64_PREFIX) :]
        if BASE64URL.fullmatch(encoded) is None:
            raise expected(name, "b64: and base64url text (A-Z a-z 0-9 - _)", text)
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise expected(name, "b64: and base64url of UTF-8 JSON", text) from None
        return _draw_json(name, raw)
    if text.startswith("["):
        return _draw_json(name, text)
    if PRESET_NAME.fullmatch(text):
        raise OptionError(
            f"Expected {DRAW_WHAT} for {name} but received {text!r}: no preset of that name has "
            "draw (preset names are resolved by focal serve, from its presets setting)"
        )
    raise expected(name, DRAW_WHAT, text)


def _reject_constant(text: str) -> object:
    raise ValueError(f"{text} is not a number")


def _draw_json(name: str, text: str) -> tuple[Overlay, ...]:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise expected(name, "a JSON list of overlay objects", f"{text[:80]} ({error})") from None
    if not isinstance(value, list) or not value:
        raise expected(name, "a non-empty JSON list of overlay objects", text[:80])
    if len(value) > MAX_OVERLAYS:
        raise expected(name, f"at most {MAX_OVERLAYS} overlays", f"{len(value)} overlays")
    return tuple(_overlay(f"{name}[{index}]", item) for index, item in enumerate(value))


def _overlay(name: str, item: object) -> Overlay:
    """One overlay object, every key checked (``draw[0].opacity`` names what is wrong)."""
    if not isinstance(item, dict):
        raise expected(name, 'an overlay object ({"url": ...})', item)
    for key in item:
        if key in OVERLAY_REFUSED:
            raise unsupported(f"{name}.{key}", OVERLAY_REFUSED[key])
        if key not in OVERLAY_KEYS:
            raise expected(f"{name} key", "one of " + ", ".join(OVERLAY_KEYS), key)
    url = item.get("url")
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise expected(f"{name}.url", f"a URL or path of 1 to {MAX_URL_LENGTH} characters", url)
    if not all(" " < char <= "~" for char in url):
        raise expected(f"{name}.url", "printable ASCII (percent-encode the rest)", url)
    for first, second in (("left", "right"), ("top", "bottom")):
        if item.get(first) is not None and item.get(second) is not None:
            raise expected(f"{name}.{second}", f"no {first} alongside it", f"{first} and {second}")
    fields = {key: _overlay_value(f"{name}.{key}", key, item[key]) for key in item if key != "url"}
    return Overlay(url=url, **fields)  # type: ignore[arg-type]


def _overlay_value(name: str, key: str, value: object) -> object:
    if key == "opacity":
        return _json_number(name, value, 0, 1, "a number from 0 to 1")
    if key == "repeat":
        if value is True or value in ("x", "y"):
            return Repeat.BOTH if value is True else Repeat(value)
        if value is False:
            return None
        raise expected(name, 'true, "x" or "y"', value)
    if key in ("top", "left", "bottom", "right"):
        what = f"a whole number of pixels from 0 to {MAX_DIMENSION}"
        number = _json_number(name, value, 0, MAX_DIMENSION, what)
        if number != int(number):
            raise expected(name, what, value)
        return int(number)
    if key in ("width", "height"):
        return _overlay_size(name, value)
    if key == "rotate" and isinstance(value, int | float) and not isinstance(value, bool):
        value = int(value) if float(value).is_integer() else value
    if key in ("rotate", "fit", "gravity", "background", "composite"):
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise expected(name, "a string" if key != "rotate" else "0, 90, 180 or 270", value)
        return _overlay_text(name, key, str(value))
    raise expected(name, "a known key", key)  # unreachable: keys are checked first


def _overlay_text(name: str, key: str, text: str) -> object:
    if key == "rotate":
        return _choice({"0": 0, "90": 90, "180": 180, "270": 270})(name, text)
    if key == "fit":
        return _fit(name, text)
    if key == "gravity":
        gravity = _gravity(name, text)
        if gravity.mode.value not in (*OVERLAY_GRAVITIES, "point"):
            raise unsupported(f"{name}={text}", "an overlay is placed by center, a side or XxY")
        return gravity
    if key == "background":
        return _colour(name, text)
    return _enum(Composite)(name, text)


def _json_number(name: str, value: object, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise expected(name, what, value)
    if not low <= value <= high:
        raise expected(name, what, value)
    return float(value)


def _overlay_size(name: str, value: object) -> float:
    """Pixels (a whole number from 1) or a fraction of the output's side (above 0, below 1)."""
    what = f"whole pixels from 1 to {MAX_DIMENSION}, or a fraction of the image above 0 and below 1"
    number = _json_number(name, value, 0, MAX_DIMENSION, what)
    if number == 0 or (number >= 1 and number != int(number)):
        raise expected(name, what, value)
    return number


def draw_text(overlays: tuple[Overlay, ...]) -> str:
    """The canonical JSON of a draw list (the keys that differ from their defaults, in a fixed
    order; Cloudflare's shapes): one text per draw list, for cache keys and logs."""
    return json.dumps([_overlay_json(overlay) for overlay in overlays], separators=(",", ":"))


def draw_b64(overlays: list[dict[str, object]]) -> str:
    """``b64:`` and the base64url JSON of overlay objects: draw's form for URLs."""
    raw = json.dumps(overlays, separators=(",", ":")).encode()
    return B64_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _overlay_json(overlay: Overlay) -> dict[str, object]:
    out: dict[str, object] = {}
    default = Overlay(url="")
    for key in OVERLAY_KEYS:
        value = getattr(overlay, key)
        if key != "url" and value == getattr(default, key):
            continue
        if value is Repeat.BOTH:
            out[key] = True
        elif isinstance(value, str | int | float) and not isinstance(value, StrEnum):
            out[key] = int(value) if isinstance(value, float) and value.is_integer() else value
        else:
            out[key] = _canonical(value)
    return out


@dataclass(frozen=True)
class OptionSpec:
    name: str  # the field of Options it sets
    aliases: tuple[str, ...]
    parse: Parser
    values: str
    help: str
    default: str
    max_length: int = MAX_VALUE_LENGTH


OPTIONS: tuple[OptionSpec, ...] = (
    # name, aliases, parser, values, meaning, default
    OptionSpec(
        "width",
        ("w",),
        _width,
        "1..12000, auto",
        "target width in pixels; auto: from the client's hints (Sec-CH-Width, Width, "
        "Sec-CH-Viewport-Width x Sec-CH-DPR), else the original",
        "original",
    ),
    OptionSpec(
        "height",
        ("h",),
        _integer(1, MAX_DIMENSION),
        "1..12000",
        "target height in pixels",
        "original",
    ),
    OptionSpec(
        "dpr", (), _number(1, 3), "1..3", "device pixel ratio: multiplies width and height", "1"
    ),
    OptionSpec(
        "fit",
        (),
        _fit,
        "scale-down, contain, cover, crop, pad, squeeze, scale-up, aspect-crop; fill (= squeeze), "
        "inside (= contain)",
        "how the image meets width x height (see below)",
        "scale-down",
    ),
    OptionSpec(
        "gravity",
        ("g",),
        _gravity,
        "center, auto, face, left, right, top, bottom, XxY (0..1 each)",
        "where to crop from when the fit crops",
        "center",
    ),
    OptionSpec(
        "zoom",
        ("face-zoom",),
        _number(0, 1),
        "0..1",
        "with gravity=face only: 1 = crop to the faces, towards 0 = more surroundings",
        "0",
    ),
    OptionSpec(
        "format",
        ("f",),
        _format,
        "auto, avif, webp, jpeg (or jpg), baseline-jpeg, png, gif, json",
        "output format; auto = the best the Accept header allows; json = a description",
        "the source's",
    ),
    OptionSpec(
        "quality",
        ("q",),
        _quality,
        "1..100, high (90), medium-high (80), medium-low (65), low (50), mid (65), max (100)",
        "encoder quality",
        "85",
    ),
    OptionSpec(
        "background",
        (),
        _colour,
        "CSS colour: name, #rgb, #rrggbb, #rrggbbaa, rgb(), rgba()",
        "for pad and to flatten transparency",
        "white",
    ),
    OptionSpec(
        "rotate",
        (),
        _choice({"0": 0, "90": 90, "180": 180, "270": 270}),
        "0, 90, 180, 270",
        "clockwise turn, before resizing",
        "0",
    ),
    OptionSpec(
        "flip",
        (),
        _choice(dict(FLIPS)),
        "h, v, hv",
        "mirror horizontally, vertically or both",
        "none",
    ),
    OptionSpec(
        "trim",
        (),
        _trim,
        "top;right;bottom;left (pixels) or border",
        "cut pixels from the sides, or a uniform border (see also trim.*)",
        "none",
    ),
    *(
        OptionSpec(
            "trim_" + part,
            ("trim." + part,),
            _integer(0, MAX_DIMENSION * 10),
            "pixels",
            "trim.width/trim.height: pixels kept from trim.left/trim.top"
            if part in ("width", "height")
            else f"pixels cut from the {part}",
            "none",
        )
        for part in TRIM_PARTS
    ),
    OptionSpec(
        "trim_border_color",
        ("trim.border.color",),
        _colour,
        "CSS colour",
        "with trim=border: the border colour to cut (else the top-left pixel's)",
        "detected",
    ),
    OptionSpec(
        "trim_border_tolerance",
        ("trim.border.tolerance",),
        _integer(0, 255),
        "0..255",
        "with trim=border: how closely a pixel must match the border colour to be cut "
        "(0 = any pixel matches, 255 = exactly)",
        "245",
    ),
    OptionSpec(
        "trim_border_keep",
        ("trim.border.keep",),
        _integer(0, MAX_DIMENSION),
        "pixels",
        "with trim=border: pixels of the border left on each side",
        "0",
    ),
    OptionSpec("blur", (), _number(0, 250), "0..250", "gaussian blur radius", "0"),
    OptionSpec("sharpen", (), _number(0, 10), "0..10", "sharpening strength", "0"),
    OptionSpec(
        "brightness",
        (),
        _number(0, 10, low_open=True),
        "above 0, up to 10",
        "1 = unchanged, 0.5 = half, 2 = double",
        "1",
    ),
    OptionSpec(
        "contrast", (), _number(0, 10, low_open=True), "above 0, up to 10", "1 = unchanged", "1"
    ),
    OptionSpec(
        "gamma",
        (),
        _number(0, 10, low_open=True),
        "above 0, up to 10",
        "1 = unchanged, above 1 = lighter",
        "1",
    ),
    OptionSpec("saturation", (), _number(0, 10), "0..10", "1 = unchanged, 0 = greyscale", "1"),
    OptionSpec(
        "metadata",
        (),
        _enum(Metadata),
        "keep, copyright, none",
        "metadata kept in the output (EXIF orientation is always applied)",
        "copyright",
    ),
    OptionSpec(
        "anim",
        (),
        _boolean,
        "true, false",
        "keep animation frames (false: the first frame only)",
        "true",
    ),
    OptionSpec(
        "redact",
        (),
        _choice({"faces": True}),
        "faces",
        "blur (or pixelate) every detected face, on any fit and gravity, every frame",
        "none",
    ),
    OptionSpec(
        "redact_style",
        ("redact-style",),
        _enum(RedactStyle),
        "blur, pixelate",
        "with redact=faces: how faces are hidden",
        "blur",
    ),
    OptionSpec(
        "redact_strength",
        ("redact-strength",),
        _integer(1, 100),
        "1..100",
        "with redact=faces: blur radius or block size, in hundredths of the face's size; "
        f"below {MIN_REDACT_STRENGTH} raised to {MIN_REDACT_STRENGTH}, the lowest at which "
        "focal's own detector finds no face in what it hid",
        str(MIN_REDACT_STRENGTH),
    ),
    OptionSpec(
        "onerror",
        (),
        _choice({"redirect": "redirect"}),
        "redirect",
        "served by focal serve: on failure, redirect to the original; never with redact=faces "
        "(the error is answered: the original shows the faces)",
        "none",
    ),
    OptionSpec(
        "border",
        (),
        _border,
        f"width:N;color:C, or top:N;right:N;bottom:N;left:N;color:C (N 0..{MAX_BORDER})",
        "a border added after resizing, times dpr (`#` in a colour is written %23)",
        "none",
    ),
    OptionSpec(
        "compression",
        (),
        _choice({"fast": "fast"}),
        "fast",
        "format=auto picks JPEG (or PNG) over WebP and AVIF, and the encoder its quickest setting",
        "none",
    ),
    OptionSpec(
        "slow_connection_quality",
        ("slow-connection-quality", "scq"),
        _quality,
        "like quality",
        "served by focal serve: the quality when the client hints say the connection is slow "
        "(Save-Data: on, ECT slow-2g/2g/3g, RTT > 150, Downlink < 5)",
        "none",
    ),
    OptionSpec(
        "upscale",
        (),
        _upscale,
        "interpolate",
        "how images are enlarged; generate (AI upscaling) is not supported",
        "interpolate",
    ),
    OptionSpec(
        "segment",
        (),
        _unsupported("removing the background needs a segmentation model focal does not have"),
        "(none)",
        "not supported: answered with a 400",
        "none",
    ),
    OptionSpec(
        "draw",
        (),
        _draw,
        "JSON list of overlays, b64:BASE64URL of it, or a preset name",
        "images drawn over the output, in order: url, opacity, repeat, top/left/bottom/right, "
        "width/height, fit, gravity, background, rotate, composite (see Overlays below)",
        "none",
        max_length=MAX_DRAW_LENGTH,
    ),
)
BY_KEY: dict[str, OptionSpec] = {
    key: spec for spec in OPTIONS for key in (spec.name, *spec.aliases)
}


def split_options(text: str) -> list[str]:
    """Split on commas that are not inside parentheses or brackets (``background=rgb(1,2,3)``,
    ``draw=[{"url": "a.png", "top": 5}]``)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class Rule:
    """An option combination that is refused: ``broken`` says whether the options break it."""

    option: str
    expected: str
    broken: Callable[[Options], bool]
    received: Callable[[Options], str]


RULES: tuple[Rule, ...] = (
    Rule(
        "redact-style",
        "redact=faces alongside it",
        lambda o: o.redact_style is not RedactStyle.BLUR and not o.redact,
        lambda o: f"redact-style={o.redact_style.value} without it",
    ),
    Rule(
        "redact-strength",
        "redact=faces alongside it",
        lambda o: o.redact_strength != MIN_REDACT_STRENGTH and not o.redact,
        lambda o: f"redact-strength={o.redact_strength} without it",
    ),
    Rule(
        "trim",
        "no trim=border alongside redact=faces (faces are found on the untrimmed image)",
        lambda o: o.redact and o.trim is not None and o.trim.border,
        lambda o: "trim=border",
    ),
    Rule(
        "zoom",
        "gravity=face alongside it",
        lambda o: o.zoom != 0 and not o.face_gravity,
        lambda o: f"zoom={o.zoom:g} without it",
    ),
)


def check_rules(options: Options) -> None:
    """Raise the OptionError of the first combination rule ``options`` breaks."""
    for rule in RULES:
        if rule.broken(options):
            raise expected(rule.option, rule.expected, rule.received(options))


def parse_options(text: str) -> Options:
    """Parse ``width=256,fit=cover,...`` into :class:`Options`; every problem is an OptionError.

    Linear in the length of ``text``, which is bounded first (MAX_OPTIONS_LENGTH, and
    MAX_VALUE_LENGTH for each value)."""
    if len(text) > MAX_OPTIONS_LENGTH:
        raise expected(
            "options", f"at most {MAX_OPTIONS_LENGTH} characters", f"{len(text)} characters"
        )
    values: dict[str, object] = {}
    seen: dict[str, str] = {}
    if text.strip() == "":
        return Options()
    for part in split_options(text):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise expected(key or "options", "key=value pairs separated by commas", part)
        spec = BY_KEY.get(key)
        if spec is None:
            raise expected("option name", "one of " + ", ".join(sorted(BY_KEY)), key)
        if spec.name in seen:
            raise expected(spec.name, "a single value", f"{seen[spec.name]} and {part}")
        seen[spec.name] = part
        value = raw.strip()
        if len(value) > spec.max_length:
            raise expected(
                key, f"a value of at most {spec.max_length} characters", f"{len(value)} characters"
            )
        values[spec.name] = spec.parse(key, value)
    options = Options(**values)  # type: ignore[arg-type]
    check_rules(options)
    return options


def _canonical(value: object) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], Overlay):
        return draw_text(value)
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


def normalise(options: Options) -> str:
    """Canonical text of the options that differ from the defaults (for cache keys and logs)."""
    default = Options()
    parts = [
        f"{spec.name}={_canonical(getattr(options, spec.name))}"
        for spec in OPTIONS
        if getattr(options, spec.name) != getattr(default, spec.name)
    ]
    return ",".join(sorted(parts))


def options_markdown() -> str:
    """The option table of docs/options.md, generated from ``OPTIONS`` (a test keeps it current)."""
    lines = ["| option | aliases | values | meaning | default |", "|---|---|---|---|---|"]
    for spec in OPTIONS:
        aliases = ", ".join(f"`{alias}`" for alias in spec.aliases)
        lines.append(
            f"| `{spec.name}` | {aliases} | {spec.values} | {spec.help} | {spec.default} |"
        )
    return "\n".join(lines) + "\n"


# Every option Cloudflare documents (URL and Workers, Images docs as of 2026), and what focal does
# with it: docs/options.md's "Cloudflare's options, one by one" table is generated from this.
CLOUDFLARE: tuple[tuple[str, str], ...] = (
    ("anim", "supported"),
    ("background", "supported (CSS colours; write `#` as `%23` in a URL)"),
    ("blur", "supported"),
    (
        "border",
        "supported: `border=width:10;color:%23ffffff` or "
        "`border=top:5;right:10;bottom:5;left:10;color:red` (Cloudflare documents border for "
        "Workers only; the URL form takes the same keys), added after resizing, times `dpr`",
    ),
    ("brightness", "supported"),
    (
        "compression",
        "supported: `compression=fast` makes `format=auto` pick JPEG (PNG with transparency) "
        "and the encoder its quickest settings",
    ),
    ("contrast", "supported"),
    ("dpr", "supported (1..3; Cloudflare documents up to 2)"),
    (
        "draw",
        "supported (Cloudflare: Workers only): a JSON list of overlays, `b64:` and that JSON in "
        "base64url (the URL form), or the name of a preset with a draw list; every key of "
        "Cloudflare's overlay objects but `text` (see [Overlays](#overlays-draw))",
    ),
    (
        "fit",
        "supported: scale-down, contain, cover, crop, pad, squeeze, scale-up (enlarges to fit "
        "inside, never shrinks), aspect-crop (the target's aspect ratio, never enlarged); also "
        "`fill` (= squeeze) and `inside` (= contain) as frameworks emit them. Refused: "
        "`outside` and `none`, which frameworks emit but Cloudflare does not know",
    ),
    (
        "flip",
        "supported (h, v, hv; also vh), before `rotate` as Cloudflare does "
        "(`flip=h,rotate=90` mirrors, then turns)",
    ),
    ("format", "supported (auto, avif, webp, jpeg, baseline-jpeg, png, gif, json; also `jpg`)"),
    ("gamma", "supported"),
    (
        "gravity",
        "supported (auto, face, left, right, top, bottom, XxY); `face` is focal's RetinaFace crop",
    ),
    ("height", "supported"),
    ("metadata", "supported (keep, copyright, none)"),
    ("onerror", "supported (`redirect`, by `focal serve`)"),
    (
        "origin-auth",
        "not applicable (Workers only: it forwards the request's credentials to the origin; "
        "focal fetches sources itself, with no client credentials)",
    ),
    (
        "quality",
        "supported: 1..100 and Cloudflare's names high, medium-high, medium-low, low; also "
        "Astro's `mid` (65) and `max` (100)",
    ),
    ("rotate", "supported (90, 180, 270), after `flip`"),
    ("saturation", "supported"),
    (
        "segment",
        "refused: `segment=foreground` needs a general foreground segmentation model (Cloudflare "
        "runs BiRefNet); none small enough to ship in a wheel from PyPI was found (BiRefNet's "
        "weights are far above PyPI's file size limit, and the small models packaged on PyPI "
        "segment people only)",
    ),
    ("sharpen", "supported"),
    (
        "slow-connection-quality",
        "supported by `focal serve` (alias `scq`): the quality used when the request's client "
        "hints say the connection is slow (`Save-Data: on`, `ECT` slow-2g/2g/3g, `RTT` over "
        "150 ms, `Downlink` under 5 Mbps); such responses carry "
        "`Vary: Save-Data, ECT, RTT, Downlink`, and the variant cache keeps the two variants "
        "apart. Ask browsers for the hints with `Accept-CH: Save-Data, ECT, RTT, Downlink`",
    ),
    (
        "trim",
        "supported (`top;right;bottom;left` in whole pixels, or `border`); fractions are "
        "refused, as Cloudflare documents pixels only",
    ),
    ("trim.top", "supported: pixels cut from the top"),
    ("trim.right", "supported: pixels cut from the right"),
    ("trim.bottom", "supported: pixels cut from the bottom"),
    ("trim.left", "supported: pixels cut from the left"),
    (
        "trim.width",
        "supported: pixels kept from `trim.left` (not with `trim.right`, nor with `trim=`)",
    ),
    (
        "trim.height",
        "supported: pixels kept from `trim.top` (not with `trim.bottom`, nor with `trim=`)",
    ),
    (
        "trim.border.color",
        "supported, with `trim=border`: the border colour to cut (default: the top-left "
        "pixel's colour, Cloudflare's \"detected automatically\")",
    ),
    (
        "trim.border.tolerance",
        "supported, with `trim=border`: 0 (any pixel counts as border) to 255 (only the exact "
        "colour); default 245",
    ),
    ("trim.border.keep", "supported, with `trim=border`: pixels of the border left on each side"),
    ("upscale", "`interpolate` (the default) supported; `generate` (AI upscaling) refused"),
    (
        "width",
        "supported, including `width=auto`: `focal serve` takes the width from the client "
        "hints `Sec-CH-Width` (or `Width`), else `Sec-CH-Viewport-Width` times `Sec-CH-DPR`, "
        "rounded up to one of 320, 768, 960, 1200 (Cloudflare's four widths), 1600, 1920, "
        "2560, 3840 device pixels, and under `fit=scale-down` no wider than the source; with "
        "none of them, the original width (Cloudflare also guesses from the User-Agent; focal "
        "does not). Such responses carry `Vary` on those headers. `width=auto` has no "
        "sub-options",
    ),
    ("zoom", "supported (alias `face-zoom`), with `gravity=face`"),
)


def cloudflare_markdown() -> str:
    """docs/options.md's table of Cloudflare's options, from ``CLOUDFLARE``."""
    lines = ["| Cloudflare option | focal |", "|---|---|"]
    lines += [f"| `{name}` | {what} |" for name, what in CLOUDFLARE]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m focal.options [--cloudflare]: docs/options.md's tables
    import sys

    print(cloudflare_markdown() if sys.argv[1:] == ["--cloudflare"] else options_markdown(), end="")
