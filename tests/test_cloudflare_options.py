"""The Cloudflare options beyond the core set: what focal accepts, what it does with them, and the
refusals that name an option focal does not support."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips

from focal.errors import OptionError
from focal.options import (
    CLOUDFLARE,
    Border,
    Fit,
    Options,
    Trim,
    cloudflare_markdown,
    normalise,
    parse_options,
)
from focal.pipeline import transform

DEMO = Path(__file__).resolve().parents[1] / "src" / "focal" / "demo"
COFFEE = (DEMO / "coffee.jpg").read_bytes()
SIZE = pyvips.Image.new_from_buffer(COFFEE, "")
CLOUDFLARE_OPTIONS = [
    *("anim", "background", "blur", "border", "brightness", "compression", "contrast", "dpr"),
    *("fit", "flip", "format", "gamma", "gravity", "height", "metadata", "onerror", "quality"),
    *("rotate", "saturation", "segment", "sharpen", "slow-connection-quality", "trim"),
    *("trim.top", "trim.right", "trim.bottom", "trim.left", "trim.width", "trim.height"),
    *("upscale", "width", "zoom"),
    *("draw", "trim.border.color", "trim.border.tolerance", "trim.border.keep", "origin-auth"),
]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("segment=foreground", "segment"),
        ("upscale=generate", "upscale=generate"),
        ("fit=outside", "fit=outside"),
        ("fit=none", "fit=none"),
    ],
)
def test_refusals_name_the_option_and_say_it_is_not_supported(text: str, name: str) -> None:
    with pytest.raises(OptionError) as raised:
        parse_options(f"width=100,{text}")
    assert raised.value.status == 400
    assert raised.value.public.startswith(f"The option {name} is not supported by focal: ")


@pytest.mark.parametrize(
    ("text", "quality"),
    [("mid", 65), ("max", 100), ("high", 90), ("medium-high", 80), ("medium-low", 65), ("low", 50)],
)
def test_quality_names_of_cloudflare_and_astro(text: str, quality: int) -> None:
    assert parse_options(f"quality={text}").quality == quality
    assert parse_options(f"scq={text}").slow_connection_quality == quality


def test_format_jpg_is_jpeg() -> None:
    assert parse_options("format=jpg") == parse_options("format=jpeg")


def test_fit_names_frameworks_emit() -> None:
    assert parse_options("fit=fill").fit is Fit.SQUEEZE
    assert parse_options("fit=inside").fit is Fit.CONTAIN
    assert parse_options("upscale=interpolate").upscale == "interpolate"


def test_width_auto_is_marked_for_the_server_and_is_no_width_by_itself() -> None:
    options = parse_options("width=auto,height=100")
    assert options.width_auto and options.width is None and options.height == 100
    assert normalise(options) == normalise(parse_options("height=100"))
    with pytest.raises(OptionError, match="for width but received 'automatic'"):
        parse_options("width=automatic")


def test_trim_sub_options_fold_into_trim() -> None:
    options = parse_options("trim.top=5,trim.left=10,trim.width=100,trim.height=50")
    assert options.trim == Trim(top=5, left=10, width=100, height=50)
    assert options.trim_top is None
    assert parse_options("trim.right=7").trim == Trim(right=7)
    assert Trim(top=5, left=10, width=100, height=50).sides(300, 200) == (5, 190, 145, 10)
    for bad in ("trim=1;2;3;4,trim.top=3", "trim.right=1,trim.width=5", "trim.top=-1"):
        with pytest.raises(OptionError):
            parse_options(bad)


def test_border_forms() -> None:
    assert parse_options("border=width:10;color:#fff").border == Border(
        10, 10, 10, 10, (255, 255, 255, 255)
    )
    assert parse_options("border=top:5;right:10;bottom:5;left:10;color:rgba(0,0,0,0)").border == (
        Border(5, 10, 5, 10, (0, 0, 0, 0))
    )
    assert parse_options("border=width:3").border == Border(3, 3, 3, 3)
    bad_ones = ("border=10", "border=width:10;top:2", "border=width:5000", "border=width:1;x:2")
    for bad in (*bad_ones, "border=width:\u00b2", "border=width:"):
        with pytest.raises(OptionError, match="for border but received"):
            parse_options(bad)
    assert "border=" in normalise(parse_options("border=width:3"))


def test_border_is_added_after_resizing_times_dpr() -> None:
    result = transform(COFFEE, parse_options("width=100,dpr=2,border=width:5;color:red"))
    image = pyvips.Image.new_from_buffer(result.data, "")
    resized_height = round(SIZE.height * 200 / SIZE.width)
    assert (image.width, image.height) == (220, resized_height + 20)
    assert (result.width, result.height) == (220, resized_height + 20)
    red, green, blue = image(2, 2)
    assert red > 200 and green < 40 and blue < 40


def test_a_transparent_border_on_png_keeps_alpha() -> None:
    options = parse_options("width=50,format=png,border=width:2;color:transparent")
    result = transform(COFFEE, options)
    image = pyvips.Image.new_from_buffer(result.data, "")
    assert image.bands == 4 and image(0, 0)[3] == 0 and image(25, 10)[3] == 255


def test_trim_width_and_height_keep_that_many_pixels() -> None:
    options = parse_options("trim.left=10,trim.top=5,trim.width=60,trim.height=40")
    result = transform(COFFEE, options)
    assert (result.width, result.height) == (60, 40)
    with pytest.raises(OptionError, match="trim smaller than the image"):
        transform(COFFEE, parse_options(f"trim.left=10,trim.width={SIZE.width}"))


def test_compression_fast_picks_jpeg_over_webp_and_avif() -> None:
    accept = "image/avif,image/webp,*/*"
    assert transform(COFFEE, parse_options("width=80,format=auto"), accept=accept).format == "avif"
    fast = transform(COFFEE, parse_options("width=80,format=auto,compression=fast"), accept=accept)
    assert fast.format == "jpeg" and fast.data[:2] == b"\xff\xd8"


def test_every_cloudflare_option_is_in_the_docs_table() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "options.md").read_text()
    assert cloudflare_markdown() in docs, "regenerate: python -m focal.options --cloudflare"
    table = docs.split("## Cloudflare's options, one by one", 1)[1].split("\n## ", 1)[0]
    names = CLOUDFLARE_OPTIONS
    for name in names:
        assert f"| `{name}` |" in table, name
    assert {name for name, _ in CLOUDFLARE} == set(names)  # each one row, none unaccounted for
    assert "width=auto" in table
    assert Options().border is None
