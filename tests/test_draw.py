"""draw: overlays drawn over the output, checked pixel by pixel on images made here and on the
demo images (position, opacity, tiling, sizes, rotation, composite modes, animation frames), and
refused with a message naming the overlay when they cannot be drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
from tests import images

from focal.errors import ImageError, LimitError, OptionError, SettingsError
from focal.options import Options, Overlay, draw_b64, parse_options
from focal.pipeline import Limits, transform
from focal.presets import check as check_presets
from focal.presets import expand

DEMO = Path(__file__).resolve().parents[1] / "src" / "focal" / "demo"
BLUE = (0, 0, 255)
RED = (255, 0, 0)
GREEN = (0, 255, 0)


def solid(width: int, height: int, colour: tuple[int, ...]) -> pyvips.Image:
    image = (pyvips.Image.black(width, height) + list(colour)).cast("uchar")
    return image.copy(interpretation="srgb")


def png(image: pyvips.Image) -> bytes:
    return bytes(image.pngsave_buffer())


BASE = png(solid(200, 100, BLUE))
LOGO = png(solid(20, 10, RED))
# left half red, right half green: shows which part of an overlay was kept or where it went
HALVES = png(solid(10, 10, RED).join(solid(10, 10, GREEN), "horizontal"))


def drawn(
    overlays: list[dict[str, object]],
    extra: str = "format=png",
    base: bytes = BASE,
    sources: dict[str, bytes] | None = None,
) -> np.ndarray:
    options = parse_options(f"{extra},draw={draw_b64(overlays)}")
    result = transform(base, options, overlays=sources or {"logo.png": LOGO, "halves.png": HALVES})
    return pixels(pyvips.Image.new_from_buffer(result.data, ""))


def pixels(image: pyvips.Image) -> np.ndarray:
    return np.ndarray(
        buffer=image.write_to_memory(),
        dtype=np.uint8,
        shape=(image.height, image.width, image.bands),
    )


def box_of(out: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels of ``colour`` (right/bottom exclusive)."""
    ys, xs = np.nonzero(np.all(np.abs(out[:, :, :3].astype(int) - colour) <= 2, axis=2))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ---- position ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offsets", "box"),
    [
        ({"top": 0, "left": 0}, (0, 0, 20, 10)),
        ({"top": 3, "right": 7}, (173, 3, 193, 13)),
        ({"bottom": 5, "left": 11}, (11, 85, 31, 95)),
        ({"bottom": 5, "right": 5}, (175, 85, 195, 95)),
        ({}, (90, 45, 110, 55)),  # no offset: centred
        ({"left": 4}, (4, 45, 24, 55)),  # one axis given: centred on the other
    ],
)
def test_offsets_place_the_overlay_from_that_edge(
    offsets: dict[str, int], box: tuple[int, int, int, int]
) -> None:
    out = drawn([{"url": "logo.png", **offsets}])
    assert box_of(out, RED) == box
    left, top, right, bottom = box
    outside = np.ones(out.shape[:2], bool)
    outside[top:bottom, left:right] = False
    assert np.all(out[outside] == BLUE)  # nothing else changed


def test_offsets_and_pixel_sizes_follow_dpr() -> None:
    out = drawn(
        [{"url": "logo.png", "top": 2, "left": 3, "width": 10}], "format=png,dpr=2,width=100"
    )
    # the 200x100 base at width 100 x dpr 2 stays 200x100; the logo is 20 wide (10 x 2) at (6, 4)
    assert box_of(out, RED) == (6, 4, 26, 14)


def test_gravity_chooses_the_part_of_the_overlay_a_cropping_fit_keeps() -> None:
    overlay = {"url": "halves.png", "width": 10, "height": 10, "fit": "cover", "top": 0}
    left = drawn([{**overlay, "left": 0, "gravity": "left"}])
    right = drawn([{**overlay, "left": 0, "gravity": "right"}])
    assert np.all(left[0:10, 0:10, :3] == RED)
    assert np.all(right[0:10, 0:10, :3] == GREEN)


def test_a_logo_on_a_photo_keeps_the_logos_pixels_where_it_is_opaque() -> None:
    logo = pyvips.Image.new_from_file(str(DEMO / "logo.png"))
    base = (DEMO / "coffee.jpg").read_bytes()
    sources = {"logo.png": (DEMO / "logo.png").read_bytes()}
    out = drawn([{"url": "logo.png", "top": 0, "left": 0}], "format=png", base, sources)
    expected = pixels(logo.colourspace("srgb"))
    opaque = expected[:, :, 3] == 255 if logo.hasalpha() else np.ones(expected.shape[:2], bool)
    region = out[: logo.height, : logo.width, :3]
    assert np.abs(region[opaque].astype(int) - expected[:, :, :3][opaque]).max() <= 1


# ---- opacity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("opacity", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_opacity_mixes_the_overlay_with_the_image_under_it(opacity: float) -> None:
    out = drawn([{"url": "logo.png", "opacity": opacity}])
    red, green, blue = (int(v) for v in out[50, 100, :3])
    assert abs(red - 255 * opacity) <= 2 and green == 0 and abs(blue - 255 * (1 - opacity)) <= 2


# ---- tiling -------------------------------------------------------------------------------------


def test_repeat_true_tiles_the_whole_image() -> None:
    out = drawn([{"url": "halves.png", "repeat": True, "top": 0, "left": 0}])
    assert not np.any(np.all(out[:, :, :3] == BLUE, axis=2))  # covered everywhere
    assert tuple(out[0, 0, :3]) == RED and tuple(out[99, 10, :3]) == GREEN
    assert tuple(out[55, 185, :3]) == RED and tuple(out[55, 199, :3]) == GREEN


def test_repeat_x_makes_a_row_through_the_overlay() -> None:
    out = drawn([{"url": "logo.png", "repeat": "x", "bottom": 0}])
    assert np.all(out[90:100, :, :3] == RED)
    assert np.all(out[0:90, :, :3] == BLUE)


def test_repeat_y_makes_a_column_through_the_overlay() -> None:
    out = drawn([{"url": "logo.png", "repeat": "y", "left": 30}])
    assert np.all(out[:, 30:50, :3] == RED)
    assert np.all(out[:, :30, :3] == BLUE) and np.all(out[:, 50:, :3] == BLUE)


def test_tiles_pass_through_the_placed_overlay() -> None:
    out = drawn([{"url": "halves.png", "repeat": "x", "top": 0, "left": 5}])
    # a tile starts at x=5, so tiles start at 5 - 20k: red 5..14, green 15..24, and red 0..4
    assert tuple(out[0, 0, :3]) == GREEN and tuple(out[0, 5, :3]) == RED
    assert tuple(out[0, 15, :3]) == GREEN and tuple(out[0, 25, :3]) == RED


# ---- sizes and rotation -----------------------------------------------------------------------


def test_fraction_sizes_are_shares_of_the_output() -> None:
    out = drawn([{"url": "logo.png", "width": 0.5, "fit": "contain", "top": 0, "left": 0}])
    assert box_of(out, RED) == (0, 0, 100, 50)  # half of 200 wide, the logo's 2:1 kept
    out = drawn([{"url": "logo.png", "height": 0.3, "fit": "squeeze", "width": 0.1, "top": 0}])
    left, top, right, bottom = box_of(out, RED)
    assert (right - left, bottom - top) == (20, 30)


def test_the_default_fit_never_enlarges_an_overlay() -> None:
    out = drawn([{"url": "logo.png", "width": 0.5, "top": 0, "left": 0}])
    assert box_of(out, RED) == (0, 0, 20, 10)  # scale-down, as for the image itself


def test_rotate_turns_the_overlay_before_it_is_placed() -> None:
    out = drawn([{"url": "halves.png", "rotate": 90, "top": 0, "left": 0}])
    # 20x10 red|green turned clockwise: 10x20, red on top, green below
    assert np.all(out[0:10, 0:10, :3] == RED) and np.all(out[10:20, 0:10, :3] == GREEN)
    assert np.all(out[0:20, 10:20, :3] == BLUE)


def test_background_fills_under_a_transparent_overlay() -> None:
    clear = png(solid(10, 10, (0, 0, 0, 0)))
    out = drawn(
        [{"url": "clear.png", "background": "lime", "top": 0, "left": 0}],
        sources={"clear.png": clear},
    )
    assert np.all(out[0:10, 0:10, :3] == GREEN) and tuple(out[20, 20, :3]) == BLUE


# ---- composite modes --------------------------------------------------------------------------


def half_clear() -> bytes:
    """20x10: the left half opaque red, the right half transparent."""
    return png(solid(10, 10, (255, 0, 0, 255)).join(solid(10, 10, (0, 0, 0, 0)), "horizontal"))


def test_composite_in_clears_the_image_where_the_overlay_is_transparent_inside_its_box() -> None:
    out = drawn(
        [{"url": "half.png", "composite": "in", "top": 0, "left": 0}],
        sources={"half.png": half_clear()},
    )
    assert out.shape[2] == 4
    assert tuple(out[5, 5]) == (255, 0, 0, 255)  # the overlay where it is opaque
    assert out[5, 15, 3] == 0  # cleared: the overlay is transparent there
    assert tuple(out[50, 100]) == (*BLUE, 255)  # outside its box: unchanged


def test_composite_over_keeps_the_image_where_the_overlay_is_transparent() -> None:
    out = drawn([{"url": "half.png", "top": 0, "left": 0}], sources={"half.png": half_clear()})
    assert out.shape[2] == 3 and tuple(out[5, 15]) == BLUE and tuple(out[5, 5]) == RED


def test_composite_multiply_multiplies_the_colours() -> None:
    grey = png(solid(10, 10, (128, 128, 128)))
    base = png(solid(40, 40, (200, 100, 50)))
    out = drawn(
        [{"url": "grey.png", "composite": "multiply", "top": 0, "left": 0}],
        base=base,
        sources={"grey.png": grey},
    )
    expected = np.array([200, 100, 50]) * 128 / 255
    assert np.abs(out[5, 5, :3] - expected).max() <= 2
    assert tuple(out[20, 20, :3]) == (200, 100, 50)


def test_composite_lighter_adds_the_colours() -> None:
    out = drawn([{"url": "logo.png", "composite": "lighter", "top": 0, "left": 0}])
    assert tuple(out[5, 5, :3]) == (255, 0, 255)


def test_overlays_are_drawn_in_order_the_last_on_top() -> None:
    out = drawn(
        [{"url": "logo.png", "top": 0, "left": 0}, {"url": "halves.png", "top": 0, "left": 0}]
    )
    assert tuple(out[5, 5, :3]) == RED and tuple(out[5, 15, :3]) == GREEN


# ---- animation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_every_frame_of_an_animation_gets_the_overlay(fmt: str) -> None:
    white = png(solid(16, 8, (255, 255, 255)))
    options = parse_options(
        f"width=60,format={fmt},quality=100,"
        f"draw={draw_b64([{'url': 'w.png', 'bottom': 2, 'right': 2}])}"
    )
    result = transform(images.animated_gif(), options, overlays={"w.png": white})
    out = pyvips.Image.new_from_buffer(result.data, "", n=-1)
    height = out.get("page-height")
    assert out.get("n-pages") == 5 and (out.width, height) == (60, 40)
    strip = pixels(out)
    for index, colour in enumerate(images.COLOURS):
        frame = strip[index * height : (index + 1) * height, :, :3].astype(int)
        # the overlay (webp at quality 100 is still lossy in colour: within 24 of it)
        assert np.abs(frame[33:35, 46:54] - 255).max() <= 24, index
        assert np.abs(frame[25, 30] - colour).max() <= 24, index  # the frame itself


# ---- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        (
            {"url": "a.png", "left": 1, "right": 2},
            "for draw[0].right but received 'left and right'",
        ),
        (
            {"url": "a.png", "top": 1, "bottom": 2},
            "for draw[0].bottom but received 'top and bottom'",
        ),
        ({"url": "a.png", "opacity": 1.5}, "Expected a number from 0 to 1 for draw[0].opacity"),
        ({"url": "a.png", "opacity": "half"}, "for draw[0].opacity but received 'half'"),
        ({"url": "a.png", "composite": "burn"}, "for draw[0].composite but received 'burn'"),
        ({"url": "a.png", "repeat": "z"}, "for draw[0].repeat but received 'z'"),
        ({"url": "a.png", "width": 2.5}, "for draw[0].width but received 2.5"),
        ({"url": "a.png", "width": 0}, "for draw[0].width but received 0"),
        ({"url": "a.png", "rotate": 45}, "for draw[0].rotate but received '45'"),
        ({"url": "a.png", "gravity": "face"}, "The option draw[0].gravity=face is not supported"),
        ({"url": "a.png", "blend": "x"}, "for draw[0] key but received 'blend'"),
        ({"url": "a.png", "text": "hi"}, "The option draw[0].text is not supported by focal"),
        ({"opacity": 1}, "for draw[0].url but received None"),
        ({"url": "a b.png"}, "printable ASCII (percent-encode the rest) for draw[0].url"),
    ],
)
def test_bad_overlays_are_refused_naming_the_key(overlay: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError) as raised:
        parse_options(f"draw={draw_b64([overlay])}")
    assert raised.value.status == 400 and message in raised.value.public


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("b64:not*base64", "Expected b64: and base64url text"),
        ("b64:AAAA", "Expected a JSON list of overlay objects for draw"),
        ("[]", "Expected a non-empty JSON list of overlay objects for draw"),
        ('{"url":"a.png"}', "Expected a JSON list of overlays"),
        ("brand", "no preset of that name has draw"),
        ("[" + ",".join(['{"url":"a"}'] * 9) + "]", "Expected at most 8 overlays for draw"),
        ('[{"url":"a","opacity":NaN}]', "Expected a JSON list of overlay objects for draw"),
    ],
)
def test_malformed_draw_values_are_refused_naming_draw(value: str, message: str) -> None:
    with pytest.raises(OptionError) as raised:
        parse_options(f"draw={value}")
    assert message in raised.value.public


def test_the_json_form_parses_inside_the_comma_separated_options() -> None:
    options = parse_options('width=50,draw=[{"url":"a.png","top":1,"left":2}],format=png')
    assert options.width == 50 and options.format == "png"
    assert options.draw == (Overlay(url="a.png", top=1, left=2),)
    assert parse_options(f"draw={draw_b64([{'url': 'a.png', 'top': 1, 'left': 2}])}") == Options(
        draw=(Overlay(url="a.png", top=1, left=2),)
    )


def test_an_overlay_that_is_not_an_image_is_a_415_naming_it() -> None:
    with pytest.raises(ImageError) as raised:
        drawn([{"url": "logo.png"}], sources={"logo.png": b"not an image at all"})
    assert raised.value.status == 415
    assert raised.value.public.startswith("draw[0] overlay 'logo.png': The source is not an image")


def test_overlays_are_held_to_the_source_limits_naming_the_overlay() -> None:
    options = parse_options(f"draw={draw_b64([{'url': 'bomb.png'}])}")
    with pytest.raises(LimitError) as raised:
        transform(BASE, options, overlays={"bomb.png": images.png_bomb()})
    assert raised.value.status == 413 and "draw[0] overlay 'bomb.png'" in raised.value.public
    big = png(solid(100, 100, RED))
    twice = f"draw={draw_b64([{'url': 'a.png'}, {'url': 'b.png'}])}"
    limits = Limits(max_pixels=15_000)
    with pytest.raises(LimitError, match=r"draw\[1\] overlay 'b.png': the overlays are 0.0"):
        transform(
            png(solid(10, 10, BLUE)),
            parse_options(twice),
            limits=limits,
            overlays={"a.png": big, "b.png": big},
        )


def test_an_overlay_nobody_loaded_is_refused() -> None:
    with pytest.raises(OptionError, match=r"for draw\[0\] but received 'logo.png' unloaded"):
        transform(BASE, parse_options(f"draw={draw_b64([{'url': 'logo.png'}])}"))


# ---- presets ------------------------------------------------------------------------------------

PRESETS = {
    "brand": 'draw=[{"url":"logo.png","bottom":5,"right":5}]',
    "avatar": "width=64,draw=brand",
    "plain": "width=64",
}


def test_draw_names_a_presets_draw_list() -> None:
    check_presets(PRESETS)
    assert expand("avatar", PRESETS) == 'width=64,draw=[{"url":"logo.png","bottom":5,"right":5}]'
    text = expand("width=10,draw=brand", PRESETS)
    assert parse_options(text).draw == (Overlay(url="logo.png", bottom=5, right=5),)
    with pytest.raises(
        OptionError, match="with a draw list \\(brand\\) for draw but received 'plain'"
    ):
        expand("draw=plain", PRESETS)
    with pytest.raises(OptionError, match="received 'avatar'"):
        expand("draw=avatar", PRESETS)  # its draw names another preset: one level only
    with pytest.raises(SettingsError, match="Preset 'bad'"):
        check_presets({"bad": "draw=nothing"})


# ---- focal transform ----------------------------------------------------------------------------


def test_focal_transform_reads_overlays_under_the_overlay_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from focal.cli import main

    (tmp_path / "marks").mkdir()
    (tmp_path / "marks" / "m.png").write_bytes(LOGO)
    (tmp_path / "in.png").write_bytes(BASE)
    draw = draw_b64([{"url": "marks/m.png", "top": 0, "left": 0}])
    out = tmp_path / "out.png"
    args = ["transform", str(tmp_path / "in.png"), "-o", str(out), "--options", f"draw={draw}"]
    assert main([*args, "--overlay-root", str(tmp_path)]) == 0
    image = pixels(pyvips.Image.new_from_file(str(out)))
    assert box_of(image, RED) == (0, 0, 20, 10)
    out.unlink()
    for url, words in (("marks/none.png", "source not found"), ("../x.png", "not allowed")):
        draw = draw_b64([{"url": url}])
        code = main(
            [
                "transform",
                str(tmp_path / "in.png"),
                "-o",
                str(out),
                "--options",
                f"draw={draw}",
                "--overlay-root",
                str(tmp_path / "marks"),
            ]
        )
        error = capsys.readouterr().err
        assert code == 1 and f"draw[0] overlay '{url}'" in error and words in error
        assert not out.exists()


def test_focal_batch_refuses_draw_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from focal.cli import main

    draw = draw_b64([{"url": "m.png"}])
    assert main(["batch", str(tmp_path), str(tmp_path / "out"), "--options", f"draw={draw}"]) == 2
    assert "draw is not supported here" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
