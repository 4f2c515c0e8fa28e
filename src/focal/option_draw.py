"""``draw``: overlays drawn over the output. The JSON list of Cloudflare's overlay objects (or
``b64:`` and that JSON in base64url, the form for URLs), every key checked, and the canonical
JSON of a draw list (for cache keys and logs).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from enum import StrEnum

from focal.errors import OptionError, expected
from focal.option_parsers import COLOUR, FIT, GRAVITY, Grammar, choice, enum, unsupported
from focal.option_values import (
    MAX_DIMENSION,
    Composite,
    Gravity,
    Overlay,
    Repeat,
    canonical,
)

MAX_OVERLAYS = 8
MAX_DRAW_LENGTH = 960  # a draw list (JSON, or b64: and base64url JSON) is longer than a value
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
        return ROTATIONS.parse(name, text)
    if key == "fit":
        return FIT.parse(name, text)
    if key == "gravity":
        gravity: Gravity = GRAVITY.parse(name, text)  # type: ignore[assignment]
        if gravity.mode.value not in (*OVERLAY_GRAVITIES, "point"):
            raise unsupported(f"{name}={text}", "an overlay is placed by center, a side or XxY")
        return gravity
    if key == "background":
        return COLOUR.parse(name, text)
    return COMPOSITES.parse(name, text)


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
            out[key] = canonical(value)
    return out


def _check_draw(name: str, value: object) -> tuple[Overlay, ...]:
    """A draw list given in code: each overlay's canonical JSON read back as the URL's would be
    (so the same keys are checked, with the same messages)."""
    if not isinstance(value, tuple | list):
        raise expected(name, "a tuple of Overlay", value)
    if len(value) > MAX_OVERLAYS:
        raise expected(name, f"at most {MAX_OVERLAYS} overlays", f"{len(value)} overlays")
    checked = []
    for index, overlay in enumerate(value):
        if not isinstance(overlay, Overlay):
            raise expected(f"{name}[{index}]", "an Overlay", overlay)
        if not isinstance(overlay.url, str):
            raise expected(f"{name}[{index}].url", "a URL or path", overlay.url)
        checked.append(_overlay(f"{name}[{index}]", _overlay_json(overlay)))
    return tuple(checked)


ROTATIONS = choice({"0": 0, "90": 90, "180": 180, "270": 270})
COMPOSITES = enum(Composite)
DRAW = Grammar(_draw, _check_draw)
