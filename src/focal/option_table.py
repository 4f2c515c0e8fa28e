"""The option table: one row per option (its name, aliases, grammar, and the words of
docs/options.md's table, which is generated from it).
"""

from __future__ import annotations

from dataclasses import dataclass

from focal.option_draw import DRAW, MAX_DRAW_LENGTH, ROTATIONS
from focal.option_parsers import (
    BOOLEAN,
    BORDER,
    COLOUR,
    DIMENSION,
    FIT,
    FLIPS,
    FORMAT,
    GRAVITY,
    MAX_VALUE_LENGTH,
    QUALITY,
    TRIM,
    UPSCALE,
    WIDTH,
    Grammar,
    choice,
    enum,
    integer,
    number,
    refused,
)
from focal.option_values import (
    MAX_BORDER,
    MAX_DIMENSION,
    MAX_TRIM,
    MIN_REDACT_STRENGTH,
    TRIM_PARTS,
    Metadata,
    RedactStyle,
)


@dataclass(frozen=True)
class OptionSpec:
    name: str  # the field of Options it sets
    aliases: tuple[str, ...]
    grammar: Grammar
    values: str
    help: str
    default: str
    max_length: int = MAX_VALUE_LENGTH

    def parse(self, key: str, text: str) -> object:
        """The value of ``key=text`` (``key`` is the name or alias written)."""
        return self.grammar.parse(key, text)

    def check(self, value: object) -> object:
        """``value`` given in code, checked (text is parsed) and normalised."""
        if isinstance(value, str):
            return self.grammar.parse(self.name, value)
        return self.grammar.check(self.name, value)


OPTIONS: tuple[OptionSpec, ...] = (
    # name, aliases, grammar, values, meaning, default
    OptionSpec(
        "width",
        ("w",),
        WIDTH,
        "1..12000, auto",
        "target width in pixels; auto: from the client's hints (Sec-CH-Width, Width, "
        "Sec-CH-Viewport-Width x Sec-CH-DPR), else the original",
        "original",
    ),
    OptionSpec(
        "height",
        ("h",),
        DIMENSION,
        "1..12000",
        "target height in pixels",
        "original",
    ),
    OptionSpec(
        "dpr", (), number(1, 3), "1..3", "device pixel ratio: multiplies width and height", "1"
    ),
    OptionSpec(
        "fit",
        (),
        FIT,
        "scale-down, contain, cover, crop, pad, squeeze, scale-up, aspect-crop; fill (= squeeze), "
        "inside (= contain)",
        "how the image meets width x height (see below)",
        "scale-down",
    ),
    OptionSpec(
        "gravity",
        ("g",),
        GRAVITY,
        "center, auto, face, left, right, top, bottom, XxY (0..1 each)",
        "where to crop from when the fit crops",
        "center",
    ),
    OptionSpec(
        "zoom",
        ("face-zoom",),
        number(0, 1),
        "0..1",
        "with gravity=face only: 1 = crop to the faces, towards 0 = more surroundings",
        "0",
    ),
    OptionSpec(
        "format",
        ("f",),
        FORMAT,
        "auto, avif, webp, jpeg (or jpg), baseline-jpeg, png, gif, json",
        "output format; auto = the best the Accept header allows; json = a description",
        "the source's",
    ),
    OptionSpec(
        "quality",
        ("q",),
        QUALITY,
        "1..100, high (90), medium-high (80), medium-low (65), low (50), mid (65), max (100)",
        "encoder quality",
        "85",
    ),
    OptionSpec(
        "background",
        (),
        COLOUR,
        "CSS colour: name, #rgb, #rrggbb, #rrggbbaa, rgb(), rgba()",
        "for pad and to flatten transparency",
        "white",
    ),
    OptionSpec(
        "rotate",
        (),
        ROTATIONS,
        "0, 90, 180, 270",
        "clockwise turn, before resizing",
        "0",
    ),
    OptionSpec(
        "flip",
        (),
        choice(dict(FLIPS)),
        "h, v, hv",
        "mirror horizontally, vertically or both",
        "none",
    ),
    OptionSpec(
        "trim",
        (),
        TRIM,
        "top;right;bottom;left (pixels) or border",
        "cut pixels from the sides, or a uniform border (see also trim.*)",
        "none",
    ),
    *(
        OptionSpec(
            "trim_" + part,
            ("trim." + part,),
            integer(0, MAX_TRIM),
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
        COLOUR,
        "CSS colour",
        "with trim=border: the border colour to cut (else the top-left pixel's)",
        "detected",
    ),
    OptionSpec(
        "trim_border_tolerance",
        ("trim.border.tolerance",),
        integer(0, 255),
        "0..255",
        "with trim=border: how closely a pixel must match the border colour to be cut "
        "(0 = any pixel matches, 255 = exactly)",
        "245",
    ),
    OptionSpec(
        "trim_border_keep",
        ("trim.border.keep",),
        integer(0, MAX_DIMENSION),
        "pixels",
        "with trim=border: pixels of the border left on each side",
        "0",
    ),
    OptionSpec("blur", (), number(0, 250), "0..250", "gaussian blur radius", "0"),
    OptionSpec("sharpen", (), number(0, 10), "0..10", "sharpening strength", "0"),
    OptionSpec(
        "brightness",
        (),
        number(0, 10, low_open=True),
        "above 0, up to 10",
        "1 = unchanged, 0.5 = half, 2 = double",
        "1",
    ),
    OptionSpec(
        "contrast", (), number(0, 10, low_open=True), "above 0, up to 10", "1 = unchanged", "1"
    ),
    OptionSpec(
        "gamma",
        (),
        number(0, 10, low_open=True),
        "above 0, up to 10",
        "1 = unchanged, above 1 = lighter",
        "1",
    ),
    OptionSpec("saturation", (), number(0, 10), "0..10", "1 = unchanged, 0 = greyscale", "1"),
    OptionSpec(
        "metadata",
        (),
        enum(Metadata),
        "keep, copyright, none",
        "metadata kept in the output (EXIF orientation is always applied)",
        "copyright",
    ),
    OptionSpec(
        "anim",
        (),
        BOOLEAN,
        "true, false",
        "keep animation frames (false: the first frame only)",
        "true",
    ),
    OptionSpec(
        "redact",
        (),
        Grammar(choice({"faces": True}).parse, BOOLEAN.check),
        "faces",
        "blur (or pixelate) every detected face, on any fit and gravity, every frame",
        "none",
    ),
    OptionSpec(
        "redact_style",
        ("redact-style",),
        enum(RedactStyle),
        "blur, pixelate",
        "with redact=faces: how faces are hidden",
        "blur",
    ),
    OptionSpec(
        "redact_strength",
        ("redact-strength",),
        integer(1, 100),
        "1..100",
        "with redact=faces: blur radius or block size, in hundredths of the face's size; "
        f"below {MIN_REDACT_STRENGTH} raised to {MIN_REDACT_STRENGTH}, the lowest at which "
        "focal's own detector finds no face in what it hid",
        str(MIN_REDACT_STRENGTH),
    ),
    OptionSpec(
        "onerror",
        (),
        choice({"redirect": "redirect"}),
        "redirect",
        "served by focal serve: on failure, redirect to the original; never with redact=faces "
        "(the error is answered: the original shows the faces)",
        "none",
    ),
    OptionSpec(
        "border",
        (),
        BORDER,
        f"width:N;color:C, or top:N;right:N;bottom:N;left:N;color:C (N 0..{MAX_BORDER})",
        "a border added after resizing, times dpr (`#` in a colour is written %23)",
        "none",
    ),
    OptionSpec(
        "compression",
        (),
        choice({"fast": "fast"}),
        "fast",
        "format=auto picks JPEG (or PNG) over WebP and AVIF, and the encoder its quickest setting",
        "none",
    ),
    OptionSpec(
        "slow_connection_quality",
        ("slow-connection-quality", "scq"),
        QUALITY,
        "like quality",
        "served by focal serve: the quality when the client hints say the connection is slow "
        "(Save-Data: on, ECT slow-2g/2g/3g, RTT > 150, Downlink < 5)",
        "none",
    ),
    OptionSpec(
        "upscale",
        (),
        UPSCALE,
        "interpolate",
        "how images are enlarged; generate (AI upscaling) is not supported",
        "interpolate",
    ),
    OptionSpec(
        "segment",
        (),
        refused("removing the background needs a segmentation model focal does not have"),
        "(none)",
        "not supported: answered with a 400",
        "none",
    ),
    OptionSpec(
        "draw",
        (),
        DRAW,
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


def options_markdown() -> str:
    """The option table of docs/options.md, generated from ``OPTIONS`` (a test keeps it current)."""
    lines = ["| option | aliases | values | meaning | default |", "|---|---|---|---|---|"]
    for spec in OPTIONS:
        aliases = ", ".join(f"`{alias}`" for alias in spec.aliases)
        lines.append(
            f"| `{spec.name}` | {aliases} | {spec.values} | {spec.help} | {spec.default} |"
        )
    return "\n".join(lines) + "\n"
