"""The grammar of option values: text to value (``parse``) and value to checked value
(``check``), for every kind of option value but ``draw`` (focal.option_draw).

Every problem is an :class:`focal.errors.OptionError` of one form:
``Expected <what> for <option> but received '<value>'``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from focal.errors import OptionError, expected
from focal.option_values import (
    MAX_BORDER,
    MAX_DIMENSION,
    MAX_TRIM,
    RGBA,
    WIDTH_AUTO,
    Border,
    Fit,
    Format,
    Gravity,
    GravityMode,
    Trim,
    check_integer,
    check_rgba,
    is_number,
)

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

Parser = Callable[[str, str], object]  # (option name as written, text) -> value
Check = Callable[[str, object], object]  # (option name, value) -> the value, normalised


@dataclass(frozen=True)
class Grammar:
    """One option's values: ``parse`` reads the URL text, ``check`` takes a value given in code
    (an Options made directly, by dataclasses.replace or from a CLI flag). Both raise the same
    OptionError, ``Expected <what> for <option> but received <value>``."""

    parse: Parser
    check: Check


# Bounds on the text itself, checked before any value is parsed: every grammar below is linear in
# its input, and these keep the input small (a URL's options are a few dozen characters).
MAX_OPTIONS_LENGTH = 1024
MAX_VALUE_LENGTH = 64
# ASCII only: str.isdigit() and float() also accept other scripts' digits and superscripts.
INTEGER = re.compile(r"-?[0-9]{1,9}")
NUMBER = re.compile(r"[-+]?(?:[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})")
FRACTION = r"(?:[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})"
POINT = re.compile(rf"({FRACTION})x({FRACTION})")


def integer(low: int, high: int) -> Grammar:
    what = f"an integer from {low} to {high}"

    def parse(name: str, text: str) -> int:
        if INTEGER.fullmatch(text) is None or not low <= int(text) <= high:
            raise expected(name, what, text)
        return int(text)

    def check(name: str, value: object) -> int:
        return check_integer(name, value, low, high)

    return Grammar(parse, check)


def number(low: float, high: float, *, low_open: bool = False) -> Grammar:
    if low_open:
        what = f"a number above {low:g} and at most {high:g}"
    else:
        what = f"a number from {low:g} to {high:g}"

    def within(value: float) -> bool:
        return low <= value <= high and not (low_open and value == low)

    def parse(name: str, text: str) -> float:
        if NUMBER.fullmatch(text) is None or not within(float(text)):
            raise expected(name, what, text)
        return float(text)

    def check(name: str, value: object) -> float:
        if not is_number(value) or not within(value):  # type: ignore[arg-type]
            raise expected(name, what, value)
        return float(value)  # type: ignore[arg-type]

    return Grammar(parse, check)


def choice(choices: dict[str, object]) -> Grammar:
    what = "one of " + ", ".join(choices)

    def parse(name: str, text: str) -> object:
        if text not in choices:
            raise expected(name, what, text)
        return choices[text]

    def check(name: str, value: object) -> object:
        if not any(type(value) is type(c) and value == c for c in choices.values()):
            raise expected(name, what, value)
        return value

    return Grammar(parse, check)


def enum(kind: type[StrEnum]) -> Grammar:
    return choice({member.value: member for member in kind})


def of_type(kind: type, parse: Parser, what: str) -> Grammar:
    """A grammar whose values in code are ``kind`` records (which check themselves)."""

    def check(name: str, value: object) -> object:
        if not isinstance(value, kind):
            raise expected(name, what, value)
        return value

    return Grammar(parse, check)


def _quality(name: str, text: str) -> int:
    if text in QUALITY_NAMES:
        return QUALITY_NAMES[text]
    value: int = INTEGER_1_100.parse(name, text)  # type: ignore[assignment]
    return value


INTEGER_1_100 = integer(1, 100)
QUALITY = Grammar(_quality, INTEGER_1_100.check)


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


GRAVITY = of_type(Gravity, _gravity, "a Gravity")


def _trim(name: str, text: str) -> Trim:
    if text == "border":
        return Trim(border=True)
    what = "border, or top;right;bottom;left in pixels"
    parts = text.split(";")
    if len(parts) != 4 or not all(re.fullmatch(r"[0-9]{1,9}", part) for part in parts):
        raise expected(name, what, text)
    top, right, bottom, left = (int(part) for part in parts)
    if max(top, right, bottom, left) > MAX_TRIM:
        raise expected(name, what, text)
    return Trim(top=top, right=right, bottom=bottom, left=left)


TRIM = of_type(Trim, _trim, "a Trim")


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


COLOUR = Grammar(_colour, check_rgba)


def _boolean(name: str, text: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise expected(name, "true or false", text)


def _is_boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise expected(name, "true or false", value)
    return value


BOOLEAN = Grammar(_boolean, _is_boolean)


def unsupported(name: str, why: str) -> OptionError:
    """The refusal of an option (or value) that Cloudflare has and focal does not."""
    return OptionError(f"The option {name} is not supported by focal: {why}")


def refused(why: str) -> Grammar:
    """An option Cloudflare has and focal refuses, in the URL and in code alike."""

    def parse(name: str, text: object) -> object:
        raise unsupported(name, why)

    return Grammar(parse, parse)


DIMENSION = integer(1, MAX_DIMENSION)


def _width(name: str, text: str) -> int | str:
    if text == "auto":
        return WIDTH_AUTO
    value: int = DIMENSION.parse(name, text)  # type: ignore[assignment]
    return value


WIDTH = Grammar(_width, DIMENSION.check)


def _upscale(name: str, text: str) -> str:
    if text == "generate":
        raise unsupported("upscale=generate", "AI upscaling needs a model focal does not have")
    value: str = INTERPOLATE.parse(name, text)  # type: ignore[assignment]
    return value


INTERPOLATE = choice({"interpolate": "interpolate"})
UPSCALE = Grammar(_upscale, INTERPOLATE.check)


FORMATS = enum(Format)


def _format(name: str, text: str) -> Format:
    value: Format = FORMATS.parse(name, "jpeg" if text == "jpg" else text)  # type: ignore[assignment]
    return value


FORMAT = Grammar(_format, FORMATS.check)


FITS = enum(Fit)


def _fit(name: str, text: str) -> Fit:
    if text in FIT_REFUSED:
        raise unsupported(f"{name}={text}", FIT_REFUSED[text])
    value: Fit = FITS.parse(name, FIT_ALIASES.get(text, text))  # type: ignore[assignment]
    return value


FIT = Grammar(_fit, FITS.check)


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


BORDER = of_type(Border, _border, "a Border")
