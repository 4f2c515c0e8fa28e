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


# ---- fit=scale-up, fit=aspect-crop ------------------------------------------------------------


def size_of(text: str, data: bytes = COFFEE) -> tuple[int, int]:
    result = transform(data, parse_options(text))
    image = pyvips.Image.new_from_buffer(result.data, "")
    assert (image.width, image.height) == (result.width, result.height)
    return image.width, image.height


def test_fit_scale_up_enlarges_to_fit_and_never_shrinks() -> None:
    assert (SIZE.width, SIZE.height) == (600, 400)
    assert size_of("width=900,height=900,fit=scale-up") == (900, 600)
    assert size_of("width=1200,fit=scale-up") == (1200, 800)
    assert size_of("width=300,height=300,fit=scale-up") == (600, 400)  # would shrink: kept
    assert size_of("height=200,fit=scale-up") == (600, 400)


def test_fit_aspect_crop_takes_the_aspect_and_never_enlarges() -> None:
    # larger than the source: cropped to 4:1 at the source's size (Cloudflare's 612x613 at
    # 1920x1120 gives 612x357)
    assert size_of("width=2400,height=600,fit=aspect-crop") == (600, 150)
    assert size_of("width=1920,height=1120,fit=aspect-crop") == (600, 350)
    # smaller: as cover
    assert size_of("width=100,height=100,fit=aspect-crop") == (100, 100)
    assert size_of("width=2400,height=600,fit=crop") == (600, 400)  # crop keeps the source's
    assert size_of("width=2400,height=600,fit=cover") == (2400, 600)  # cover enlarges


def test_aspect_crop_uses_gravity() -> None:
    left = transform(COFFEE, parse_options("width=400,height=400,fit=aspect-crop,gravity=left"))
    assert left.description["crop"] == {"left": 0, "top": 0, "width": 400, "height": 400}
    right = transform(COFFEE, parse_options("width=800,height=800,fit=aspect-crop,gravity=right"))
    assert right.description["crop"] == {"left": 200, "top": 0, "width": 400, "height": 400}
    assert (right.width, right.height) == (400, 400)


# ---- trim=border and trim.border.* --------------------------------------------------------------


def bordered(colour: list[int], width: int = 30) -> bytes:
    """The coffee photo inside a flat border of ``colour`` (PNG, so the border stays flat)."""
    image = SIZE.embed(
        width, width, 600 + 2 * width, 400 + 2 * width, extend="background", background=colour
    )
    return bytes(image.pngsave_buffer())


def test_trim_border_detects_the_border_colour() -> None:
    # the border is green: the colour is read from the image (white was assumed before)
    assert size_of("trim=border", bordered([0, 160, 0])) == (600, 400)
    assert size_of("trim=border", bordered([255, 255, 255])) == (600, 400)


def test_trim_border_color_and_tolerance_choose_what_is_cut() -> None:
    data = bordered([200, 0, 0])
    assert size_of("trim=border,trim.border.color=rgb(206 0 0)", data) == (600, 400)
    # tolerance 250: a pixel must be within 5 of the colour to be border; 200 is 6 away
    exact = "trim=border,trim.border.color=rgb(206 0 0),trim.border.tolerance=250"
    assert size_of(exact, data) == (660, 460)
    assert size_of("trim=border,trim.border.color=blue", data) == (660, 460)


def test_trim_border_keep_leaves_that_much_border() -> None:
    assert size_of("trim=border,trim.border.keep=7", bordered([0, 0, 90])) == (614, 414)
    assert size_of("trim=border,trim.border.keep=99", bordered([0, 0, 90])) == (660, 460)


def test_trim_border_options_need_trim_border() -> None:
    for text in ("trim.border.keep=3", "trim=1;2;3;4,trim.border.color=red"):
        with pytest.raises(OptionError, match="Expected trim=border alongside it"):
            parse_options(text)
    with pytest.raises(OptionError, match=r"for trim.border.tolerance but received .256."):
        parse_options("trim=border,trim.border.tolerance=256")
    assert normalise(parse_options("trim=border,trim.border.keep=2")) == "trim=border;keep:2"


def test_fractional_trim_is_refused_as_cloudflare_documents_pixels() -> None:
    for text in ("trim=0.1;0;0;0", "trim.top=0.5"):
        with pytest.raises(OptionError, match="for trim"):
            parse_options(text)


# ---- flip before rotate -----------------------------------------------------------------------


@pytest.mark.parametrize(("flip", "rotate"), [("h", 90), ("v", 90), ("h", 270), ("hv", 90)])
def test_flip_comes_before_rotate_as_cloudflare_does(flip: str, rotate: int) -> None:
    result = transform(COFFEE, parse_options(f"flip={flip},rotate={rotate},format=png"))
    out = pyvips.Image.new_from_buffer(result.data, "")
    expected = SIZE
    if "h" in flip:
        expected = expected.fliphor()
    if "v" in flip:
        expected = expected.flipver()
    expected = expected.rot(f"d{rotate}")
    assert (out.width, out.height) == (expected.width, expected.height)
    assert (out - expected).abs().max() <= 1


@pytest.mark.slow
def test_gravity_face_works_with_trim_border() -> None:
    # the border is found before the plan, so the faces are detected on the trimmed photo (it
    # used to fall back to the centre: "gravity=face cannot be combined with trim=border")
    from tests.model_fixtures import require_model_dir

    from focal.face.sessions import load_detector

    astronaut = pyvips.Image.new_from_file(str(DEMO / "astronaut.jpg"))
    framed = astronaut.embed(
        150, 90, 512 + 300, 512 + 180, extend="background", background=[128, 128, 128]
    )
    options = parse_options("trim=border,width=200,height=300,fit=cover,gravity=face,format=json")
    result = transform(
        bytes(framed.pngsave_buffer()), options, detector=load_detector(require_model_dir())
    )
    described = result.description
    assert (described["gravity"], described["fallback"]) == ("face", None)
    assert len(described["faces"]) == 1
    crop = described["crop"]
    assert crop["left"] + crop["width"] <= 512 and crop["top"] + crop["height"] <= 512
