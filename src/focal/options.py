"""Transformation options: parsed once, from the comma-separated URL form, into one frozen object.

Every option has one row in ``focal.option_table.OPTIONS`` (name, aliases, grammar). Unknown
options, duplicates, malformed and out-of-range values raise :class:`focal.errors.OptionError`
with a message of one form: ``Expected <what> for <option> but received '<value>'``. An
:class:`Options` checks its values when it is made, however it is made (parsed, by
``dataclasses.replace``, from a preset, a CLI flag or in code), with the same messages; the
combination rules (``RULES``) are checked by :func:`parse_options` and the pipeline.

This module is the public import for options: the value types (focal.option_values), the draw
helpers (focal.option_draw) and the table (focal.option_table) are re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, replace

from focal.cloudflare_options import CLOUDFLARE as CLOUDFLARE
from focal.cloudflare_options import cloudflare_markdown as cloudflare_markdown
from focal.errors import OptionError as OptionError
from focal.errors import expected
from focal.option_draw import draw_b64 as draw_b64
from focal.option_draw import draw_text
from focal.option_parsers import MAX_OPTIONS_LENGTH
from focal.option_table import BY_KEY as BY_KEY
from focal.option_table import OPTIONS as OPTIONS
from focal.option_table import options_markdown as options_markdown
from focal.option_values import MIN_REDACT_STRENGTH as MIN_REDACT_STRENGTH
from focal.option_values import RGBA as RGBA
from focal.option_values import TRIM_PARTS, WIDTH_AUTO, canonical
from focal.option_values import Border as Border
from focal.option_values import Composite as Composite
from focal.option_values import Fit as Fit
from focal.option_values import Format as Format
from focal.option_values import Gravity as Gravity
from focal.option_values import GravityMode as GravityMode
from focal.option_values import Metadata as Metadata
from focal.option_values import Overlay as Overlay
from focal.option_values import RedactStyle as RedactStyle
from focal.option_values import Repeat as Repeat
from focal.option_values import Trim as Trim

PARSED_REMEMBERED = 1024  # option texts whose Options parse_options keeps (each a few kB)


@dataclass(frozen=True)
class Options:
    width: int | None = None
    height: int | None = None
    dpr: float = 1.0
    fit: Fit = Fit.SCALE_DOWN
    gravity: Gravity = Gravity()  # noqa: RUF009 (a frozen dataclass)
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
        self._check_values()
        if self.redact and self.redact_strength < MIN_REDACT_STRENGTH:  # never weaker than that
            object.__setattr__(self, "redact_strength", MIN_REDACT_STRENGTH)
        if self.width == WIDTH_AUTO:  # type: ignore[comparison-overlap]  # width="auto"
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

    def _check_values(self) -> None:
        """Every value given checked by its option's grammar (text parsed, as in a URL), so no
        Options holds a value the URL could not ask for."""
        for spec in OPTIONS:
            value = getattr(self, spec.name)
            if value is _DEFAULTS[spec.name]:  # None too, where None is the default
                continue
            object.__setattr__(self, spec.name, spec.check(value))
        if not isinstance(self.width_auto, bool):
            raise expected("width_auto", "true or false", self.width_auto)

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


_DEFAULTS = {f.name: f.default for f in fields(Options) if f.default is not MISSING}


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


@functools.lru_cache(maxsize=PARSED_REMEMBERED)
def parse_options(text: str) -> Options:
    """Parse ``width=256,fit=cover,...`` into :class:`Options`; every problem is an OptionError.

    Linear in the length of ``text``, which is bounded first (MAX_OPTIONS_LENGTH, and
    MAX_VALUE_LENGTH for each value). The most recent texts' answers are remembered (an
    Options is immutable): a server asked for the same variants again skips the checks."""
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


def _text(value: object) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], Overlay):
        return draw_text(value)
    return canonical(value)


def normalise(options: Options) -> str:
    """Canonical text of the options that differ from the defaults (for cache keys and logs)."""
    default = Options()
    parts = [
        f"{spec.name}={_text(getattr(options, spec.name))}"
        for spec in OPTIONS
        if getattr(options, spec.name) != getattr(default, spec.name)
    ]
    return ",".join(sorted(parts))


if __name__ == "__main__":  # python -m focal.options [--cloudflare]: docs/options.md's tables
    import sys

    print(cloudflare_markdown() if sys.argv[1:] == ["--cloudflare"] else options_markdown(), end="")
