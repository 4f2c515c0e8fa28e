from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest
import pyvips
from tests import images

from focal import geometry, render, source
from focal.detection import (
    DetectionFailed,
    Face,
    RGBImage,
    faces_and_candidates,
    inference_cap,
)
from focal.errors import ImageError, LimitError, OptionError, RedactionError
from focal.geometry import Size
from focal.options import parse_options
from focal.pipeline import DetectionInput, Faces, Limits, Result, detection_input, transform


def run(data: bytes, text: str, **kwargs: object) -> tuple[pyvips.Image, dict[str, object]]:
    result = transform(data, parse_options(text), **kwargs)  # type: ignore[arg-type]
    if result.format == "json":
        return pyvips.Image.black(1, 1), json.loads(result.data)
    image = pyvips.Image.new_from_buffer(result.data, "")
    if image.get("vips-loader") in ("gifload_buffer", "webpload_buffer"):
        image = pyvips.Image.new_from_buffer(result.data, "", n=-1)
    return image, result.description


ASTRONAUT = (images.DEMO / "astronaut.jpg").read_bytes()


class FixedDetector:
    """Finds the faces it was given (in inference-image pixels), and records what it saw."""

    def __init__(self, faces: Sequence[tuple[float, float, float, float]]) -> None:
        self.faces = [Face(box=box, score=0.99) for box in faces]
        self.seen: list[tuple[int, int]] = []

    @property
    def model_id(self) -> str:
        return "fixed"

    def detect(self, batch: Sequence[RGBImage]) -> list[list[Face]]:
        self.seen.extend((image.shape[1], image.shape[0]) for image in batch)
        return [list(self.faces) for _ in batch]


class FailingDetector:
    model_id = "failing"

    def detect(self, batch: Sequence[RGBImage]) -> list[list[Face]]:
        raise DetectionFailed("worker died")


# --- real photos: orientation, colour, animation, formats -------------------------------------


def test_exif_rotated_jpeg_comes_out_upright() -> None:
    out, description = run(images.exif_rotated_jpeg(), "format=png")
    assert (out.width, out.height) == (600, 400)
    assert description["original"] == {  # type: ignore[comparison-overlap]
        "file_size": description["original"]["file_size"],  # type: ignore[index]
        "width": 600,
        "height": 400,
        "format": "image/jpeg",
        "frames": 1,
    }
    assert images.mean_difference(out, images.demo("coffee.jpg")) < 4


@pytest.mark.parametrize("make", [images.cmyk_jpeg, images.png16, images.grey_png])
def test_cmyk_16bit_and_grey_sources_become_8bit_srgb(make: object) -> None:
    out, _ = run(make(), "format=png")  # type: ignore[operator]
    assert out.format == "uchar"
    assert out.interpretation == "srgb"
    assert out.bands == 3
    reference = images.demo("astronaut.jpg")
    if make is images.grey_png:
        reference = reference.colourspace("b-w").colourspace("srgb")
    assert images.mean_difference(out, reference) < 12


def test_animated_gif_keeps_its_frames_cropped_identically() -> None:
    out, description = run(images.animated_gif(), "width=60,height=60,fit=cover,gravity=left")
    assert out.get("n-pages") == 5
    assert out.get("page-height") == 60
    assert out.width == 60
    for index, colour in enumerate(images.COLOURS):
        frame = out.crop(0, index * 60, 60, 60)
        # the black corner square was at the top-left and gravity=left keeps the left edge
        assert frame.getpoint(2, 2)[:3] == pytest.approx([0, 0, 0], abs=40)
        assert frame.getpoint(50, 50)[:3] == pytest.approx(list(colour), abs=40)
    assert description["frames"] == 5


def _pixels(image: pyvips.Image) -> np.ndarray:
    shape = (image.height, image.width, image.bands)
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=shape).astype(int)


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_animated_resize_keeps_each_frames_colour_at_its_edges(fmt: str) -> None:
    # 120x80 frames to 77x51: a lanczos3 resize of the whole strip would mix the last rows of
    # one frame into the first rows of the next (libvips issue 4014)
    out, _ = run(images.animated_gif(), f"width=77,format={fmt},quality=100")
    height = out.get("page-height")
    assert (out.width, height, out.get("n-pages")) == (77, 51, 5)
    pixels = _pixels(out)
    for index, colour in enumerate(images.COLOURS):
        frame = pixels[index * height : (index + 1) * height, 20:, :3]  # right of the black square
        for row in (frame[0], frame[1], frame[-2], frame[-1]):
            assert np.abs(row - np.array(colour)).max() <= 2, (index, row[:3].tolist())


@pytest.mark.parametrize(
    "text",
    [
        "width=77,height=40,fit=cover,gravity=right",
        "width=50,height=70,fit=pad,background=red",
        "width=60,height=90,fit=pad,background=#00ff0040",
        "width=90,blur=4,sharpen=2,brightness=1.2,saturation=0.5",
        "width=200,height=90,fit=cover",
        "width=40,height=61,fit=crop",
    ],
)
def test_animated_strip_steps_equal_frame_by_frame_steps(text: str) -> None:
    options = parse_options(text)
    strip = pyvips.Image.new_from_buffer(images.animated_gif(97, 61), "", n=-1)
    plan = geometry.plan(
        Size(97, 61), options.target_width, options.target_height, options.fit, options.gravity
    )
    by_strip = render.finish_strip(strip, 5, plan, options, 1.0, "webp", [])
    frames = source.split(strip, 5)
    pages = [render.finish(page, plan, options, 1.0, "webp", []) for page in frames]
    by_frame = render.join(pages)
    assert (by_strip.width, by_strip.height) == (by_frame.width, by_frame.height)
    assert by_strip.get("page-height") == by_frame.get("page-height") == plan.canvas.height
    assert np.array_equal(_pixels(by_strip), _pixels(by_frame))


def test_animated_vertical_flip_and_rotation_stay_frame_by_frame() -> None:
    out, _ = run(images.animated_gif(), "width=60,rotate=180,format=gif")
    height = out.get("page-height")
    pixels = _pixels(out)
    for index, colour in enumerate(images.COLOURS):  # same order; the black square bottom-right
        frame = pixels[index * height : (index + 1) * height, :, :3]
        assert np.abs(frame[2, 2] - np.array(colour)).max() <= 40
        assert np.abs(frame[-3, -3]).max() <= 40


def test_anim_false_takes_the_first_frame() -> None:
    out, description = run(images.animated_gif(), "anim=false,width=60")
    assert out.get("n-pages") == 1
    assert out.getpoint(50, 30)[:3] == pytest.approx([255, 0, 0], abs=40)
    assert description["frames"] == 1


@pytest.mark.parametrize(
    ("fmt", "loader"),
    [
        ("jpeg", "jpegload_buffer"),
        ("baseline-jpeg", "jpegload_buffer"),
        ("png", "pngload_buffer"),
        ("webp", "webpload_buffer"),
        ("avif", "heifload_buffer"),
    ],
)
def test_every_output_format_decodes_back_with_the_asked_size(fmt: str, loader: str) -> None:
    out, _ = run(ASTRONAUT, f"width=200,height=120,fit=cover,format={fmt}")
    assert out.get("vips-loader") == loader
    assert (out.width, out.height) == (200, 120)


def test_progressive_and_baseline_jpeg_differ_as_asked() -> None:
    progressive, _ = run(ASTRONAUT, "width=100,format=jpeg")
    baseline, _ = run(ASTRONAUT, "width=100,format=baseline-jpeg")
    assert progressive.get("interlaced") == 1
    assert "interlaced" not in baseline.get_fields() or baseline.get("interlaced") == 0


def test_format_auto_negotiates_from_accept() -> None:
    options = parse_options("width=64,format=auto")
    assert transform(ASTRONAUT, options, accept="image/avif,image/webp,*/*").format == "avif"
    webp = transform(ASTRONAUT, options, accept="image/webp,*/*")
    assert (webp.format, webp.negotiated) == ("webp", True)
    assert transform(ASTRONAUT, options, accept="*/*").format == "jpeg"
    assert transform(ASTRONAUT, parse_options("width=64")).negotiated is False


def test_alpha_is_kept_where_the_format_can_and_flattened_on_background_elsewhere() -> None:
    logo = (images.DEMO / "logo.png").read_bytes()
    png, _ = run(logo, "width=100,format=png")
    assert png.hasalpha()
    jpeg, _ = run(logo, "width=100,format=jpeg,background=red")
    assert not jpeg.hasalpha()
    assert jpeg.getpoint(0, 0) == pytest.approx([255, 0, 0], abs=30)


def test_pad_puts_the_image_on_a_background_of_the_exact_size() -> None:
    out, _ = run(ASTRONAUT, "width=300,height=100,fit=pad,background=red,format=png")
    assert (out.width, out.height) == (300, 100)
    assert out.getpoint(5, 50) == pytest.approx([255, 0, 0], abs=2)


def test_rotate_flip_and_adjustments_apply() -> None:
    coffee = (images.DEMO / "coffee.jpg").read_bytes()
    rotated, _ = run(coffee, "rotate=90,format=png")
    assert (rotated.width, rotated.height) == (400, 600)
    grey, _ = run(coffee, "saturation=0,format=png")
    r, g, b = (float(grey[i].avg()) for i in range(3))
    assert abs(r - g) < 2 and abs(g - b) < 2
    dark, _ = run(coffee, "brightness=0.5,format=png")
    assert dark.avg() < images.demo("coffee.jpg").avg() * 0.6
    blurred, _ = run(coffee, "blur=20,format=png")
    assert blurred.deviate() < images.demo("coffee.jpg").deviate()


def test_trim_cuts_pixels_from_each_side() -> None:
    out, description = run(ASTRONAUT, "trim=10;20;30;40,format=png")
    assert (out.width, out.height) == (512 - 20 - 40, 512 - 10 - 30)
    assert description["crop"] == {"left": 0, "top": 0, "width": 452, "height": 472}


def test_metadata_copyright_keeps_only_the_copyright() -> None:
    source = images.demo("astronaut.jpg").copy()
    source.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Copyright", "NASA")
    source.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "someone")
    data = bytes(source.jpegsave_buffer(keep="exif"))
    kept, _ = run(data, "width=64")
    fields = kept.get_fields()
    assert str(kept.get("exif-ifd0-Copyright")).startswith("NASA")
    assert "exif-ifd0-Artist" not in fields
    stripped, _ = run(data, "width=64,metadata=none")
    assert "exif-ifd0-Copyright" not in stripped.get_fields()
    everything, _ = run(data, "width=64,metadata=keep")
    assert str(everything.get("exif-ifd0-Artist")).startswith("someone")


# --- faces through the detector boundary (a fixed detector; the real model has its own tests) --


def test_face_gravity_maps_inference_boxes_back_to_the_original() -> None:
    big = images.demo("astronaut.jpg").resize(4).jpegsave_buffer(Q=90)  # 2048x2048
    detector = FixedDetector([(100.0, 100.0, 150.0, 350.0)])  # on the 1024x1024 inference image
    _, description = run(
        big, "format=json,width=256,height=256,fit=cover,gravity=face,zoom=1", detector=detector
    )
    assert detector.seen == [(1024, 1024)]
    assert description["faces"] == [{"box": [200.0, 200.0, 300.0, 700.0], "score": 0.99}]
    assert description["outer_box"] == [200.0, 200.0, 300.0, 700.0]
    assert description["gravity"] == "face"
    crop = description["crop"]
    assert isinstance(crop, dict)
    # the crop keeps the face box whole
    assert crop["left"] <= 200 and crop["top"] <= 200
    assert crop["left"] + crop["width"] >= 300 and crop["top"] + crop["height"] >= 700


class SidedDetector(FixedDetector):
    """FixedDetector with a detection side of its own (detector_max_side)."""

    def __init__(self, faces: Sequence[tuple[float, float, float, float]], side: int) -> None:
        super().__init__(faces)
        self.max_side = side


def test_a_smaller_detection_side_detects_on_a_smaller_copy_and_maps_back() -> None:
    big = images.demo("astronaut.jpg").resize(4).jpegsave_buffer(Q=90)  # 2048x2048
    detector = SidedDetector([(50.0, 50.0, 75.0, 175.0)], 512)  # on a 512x512 inference image
    _, description = run(
        big, "format=json,width=256,height=256,fit=cover,gravity=face,zoom=1", detector=detector
    )
    assert detector.seen == [(512, 512)]
    assert description["faces"] == [{"box": [200.0, 200.0, 300.0, 700.0], "score": 0.99}]
    crop = description["crop"]
    assert isinstance(crop, dict)
    assert crop["left"] <= 200 and crop["top"] <= 200
    assert crop["left"] + crop["width"] >= 300 and crop["top"] + crop["height"] >= 700


def test_a_detector_never_sees_more_than_the_published_cap() -> None:
    big = images.demo("astronaut.jpg").resize(4).jpegsave_buffer(Q=90)  # 2048x2048
    detector = SidedDetector([(100.0, 100.0, 150.0, 350.0)], 2048)
    options = "format=json,width=256,height=256,fit=cover,gravity=face"
    run(big, options, detector=detector, face_crop_side="cap")
    assert detector.seen == [(1024, 1024)]


def test_a_face_crop_detects_at_twice_the_outputs_scale_and_redaction_at_the_full_side() -> None:
    big = images.demo("astronaut.jpg").resize(4).jpegsave_buffer(Q=90)  # 2048x2048
    crop = "format=json,width=256,height=256,fit=cover,gravity=face"
    # the 256 px output shows the 2048 px source at 1/8: detection at 2/8 of it, 512 px
    detector = FixedDetector([(50.0, 50.0, 75.0, 175.0)])
    _, description = run(big, crop, detector=detector, face_crop_side="output")
    assert detector.seen == [(512, 512)]
    assert description["faces"] == [{"box": [200.0, 200.0, 300.0, 700.0], "score": 0.99}]
    # the published cap when asked for, and for redaction whatever the crop
    for text, side in ((crop, "cap"), (crop + ",redact=faces", "output")):
        detector = FixedDetector([(100.0, 100.0, 150.0, 350.0)])
        _, description = run(big, text, detector=detector, face_crop_side=side)
        assert detector.seen == [(1024, 1024)], text
        assert description["faces"][0]["box"] == [200.0, 200.0, 300.0, 700.0]
    # zoom above 0: the crop is made from the faces, so the detector's side
    detector = FixedDetector([(100.0, 100.0, 150.0, 350.0)])
    run(big, crop + ",zoom=0.5", detector=detector, face_crop_side="output")
    assert detector.seen == [(1024, 1024)]


def test_redaction_alone_detects_at_the_full_side() -> None:
    big = images.demo("astronaut.jpg").resize(4).jpegsave_buffer(Q=90)  # 2048x2048
    detector = FixedDetector([(100.0, 100.0, 150.0, 350.0)])
    run(big, "format=json,width=128,height=128,fit=cover,redact=faces", detector=detector)
    assert detector.seen == [(1024, 1024)]


def test_face_gravity_output_has_the_asked_size() -> None:
    detector = FixedDetector([(180.0, 60.0, 300.0, 220.0)])
    out, description = run(
        ASTRONAUT, "width=128,height=128,fit=cover,gravity=face,zoom=0.5", detector=detector
    )
    assert (out.width, out.height) == (128, 128)
    assert description["gravity"] == "face"


def test_no_face_falls_back_to_centre_and_says_so() -> None:
    result = transform(
        ASTRONAUT,
        parse_options("width=160,height=100,fit=cover,gravity=face"),
        detector=FixedDetector([]),
    )
    assert (result.gravity_used, result.fallback, result.degraded) == (
        "center",
        "no face found",
        False,
    )


def test_a_failed_detection_falls_back_and_is_marked_degraded() -> None:
    result = transform(
        ASTRONAUT,
        parse_options("width=160,height=100,fit=cover,gravity=face"),
        detector=FailingDetector(),
    )
    assert result.gravity_used == "center"
    assert result.degraded is True
    assert result.fallback is not None and "worker died" in result.fallback


def test_zoom_without_face_gravity_is_an_error() -> None:
    with pytest.raises(OptionError, match="gravity=face"):
        transform(ASTRONAUT, parse_options("width=100,zoom=0.5"))


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", ImageError, "empty"),
        (images.header_only_jpeg(), ImageError, "truncated or corrupt"),
        (b"this is a text file, not a picture\n" * 20, ImageError, "not an image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', ImageError, "svg"),
    ],
)
def test_bad_sources_give_clear_errors(data: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        transform(data, parse_options("width=100"))


def test_decompression_bomb_is_refused_from_the_header() -> None:
    with pytest.raises(LimitError, match=r"60000x60000 \(3600.0 megapixels\)") as raised:
        transform(images.png_bomb(), parse_options("width=100"))
    assert raised.value.status == 413


def test_decompression_bomb_is_refused_without_allocating_it() -> None:
    """In a fresh process, peak RSS grows by far less than the 10.8 GB the header claims."""
    script = (
        "import resource, sys\n"
        "from focal.pipeline import transform\n"
        "from focal.options import parse_options\n"
        "from focal.errors import LimitError\n"
        "from tests.images import png_bomb\n"
        "data = png_bomb()\n"
        "transform(b'', parse_options('')) if False else None\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    transform(data, parse_options('width=100'))\n"
        "except LimitError:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('not refused')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=images.DEMO.parents[2],
    )
    grown_kib = int(out.stdout.strip())
    assert grown_kib < 20 * 1024


def test_limits_are_configurable() -> None:
    with pytest.raises(LimitError, match=r"expected at most 0\.1 megapixels"):
        transform(ASTRONAUT, parse_options("width=10"), limits=Limits(max_pixels=100_000))
    with pytest.raises(LimitError, match="bytes"):
        transform(ASTRONAUT, parse_options("width=10"), limits=Limits(max_bytes=1000))
    with pytest.raises(LimitError, match="frames"):
        transform(images.animated_gif(), parse_options("width=10"), limits=Limits(max_frames=3))


def test_inference_array_is_rgb_uint8_of_the_asked_size() -> None:
    detector = FixedDetector([])
    transform(
        (images.DEMO / "logo.png").read_bytes(),
        parse_options("gravity=face,format=json"),
        detector=detector,
    )
    assert detector.seen and all(isinstance(v, int) for v in detector.seen[0])
    assert np.dtype(np.uint8)


# --- damaged sources: served as far as they decode, and said so ---------------------------------


def test_a_truncated_jpeg_is_served_with_a_warning() -> None:
    result = transform(images.truncated_jpeg(), parse_options("width=100"))
    assert (result.width, result.format) == (100, "jpeg")
    assert result.source_warning is not None and "truncated" in result.source_warning
    assert pyvips.Image.new_from_buffer(result.data, "").width == 100


def test_a_header_that_claims_more_than_the_scan_holds_is_served_with_a_warning() -> None:
    from benchmarks.hostile import jpeg_scan_lie

    result = transform(jpeg_scan_lie(10000, 512), parse_options("width=256"))
    assert (result.width, result.height) == (256, 256)
    assert result.source_warning is not None
    assert result.description["source_warning"] == result.source_warning


def test_an_intact_jpeg_has_no_warning() -> None:
    assert transform(ASTRONAUT, parse_options("width=100")).source_warning is None


def test_json_says_which_faces_a_crop_left_out_and_why() -> None:
    wide = images.demo("coffee.jpg").resize(2).crop(0, 200, 1000, 400).jpegsave_buffer(Q=90)
    # a 1000x400 source: two faces in the middle and a tiny one at the far left; a 1:1 crop is at
    # most 400 wide, so the three cannot all be kept
    faces = [(5.0, 150.0, 15.0, 162.0), (600.0, 100.0, 680.0, 200.0), (700.0, 110.0, 780.0, 210.0)]
    _, description = run(
        wide,
        "format=json,width=200,height=200,fit=cover,gravity=face",
        detector=FixedDetector(faces),
    )
    assert description["faces_left_out"] == 1
    left_out = [face for face in description["faces"] if "left_out" in face]
    assert [face["box"] for face in left_out] == [[5.0, 150.0, 15.0, 162.0]]
    assert left_out[0]["left_out"] == geometry.LEFT_OUT
    assert description["outer_box"] == [600.0, 100.0, 780.0, 210.0]
    crop = description["crop"]
    assert crop["left"] <= 600 and crop["left"] + crop["width"] >= 780


def test_a_group_a_few_pixels_wider_than_the_crop_keeps_every_face() -> None:
    wide = images.demo("coffee.jpg").resize(2).crop(0, 200, 1000, 400).jpegsave_buffer(Q=90)
    # a 1000x400 source, a 1:1 crop at most 400 wide; the two faces span 405 px. Centred on
    # both (302..702) the crop cuts 2 and 3 px of them; leaving the smaller one out would centre
    # on the larger (150..550) and lose the smaller entirely
    faces = [(300.0, 100.0, 400.0, 220.0), (610.0, 110.0, 705.0, 220.0)]
    _, description = run(
        wide,
        "format=json,width=200,height=200,fit=cover,gravity=face",
        detector=FixedDetector(faces),
    )
    assert description["faces_left_out"] == 0
    assert description["outer_box"] == [300.0, 100.0, 705.0, 220.0]
    assert description["crop"] == {"left": 302, "top": 0, "width": 400, "height": 400}


# --- weak candidates steer gravity=face (docs/cropping.md) -------------------------------------


class CandidateFixedDetector(FixedDetector):
    """FixedDetector that also hands over fixed weak candidates (score 0.1)."""

    def __init__(
        self,
        faces: Sequence[tuple[float, float, float, float]],
        candidates: Sequence[tuple[float, float, float, float]],
    ) -> None:
        super().__init__(faces)
        self.candidates = [Face(box=box, score=0.1) for box in candidates]

    def detect_with_candidates(
        self, batch: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        return [(faces, list(self.candidates)) for faces in self.detect(batch)]


def test_candidates_move_the_crop_and_the_json_says_so_but_never_list_them_as_faces() -> None:
    # astronaut.jpg is 512x512: a 256x512 crop centred on a face at x 200..260 starts at 102;
    # a candidate at x 370..390 is held by starts 134..370, the face by starts 4..200: 134
    face, candidate = (200.0, 100.0, 260.0, 170.0), (370.0, 120.0, 390.0, 140.0)
    detector = CandidateFixedDetector([face], [candidate])
    _, described = run(ASTRONAUT, "width=256,height=512,fit=cover,gravity=face,format=json",
                       detector=detector)  # fmt: skip
    assert described["crop"] == {"left": 134, "top": 0, "width": 256, "height": 512}
    assert described["candidates"] == {"found": 1, "held": 1, "moved_crop": True}
    assert [f["box"] for f in described["faces"]] == [list(face)]  # type: ignore[index]
    plain = FixedDetector([face])
    _, alone = run(ASTRONAUT, "width=256,height=512,fit=cover,gravity=face,format=json",
                   detector=plain)  # fmt: skip
    assert alone["crop"] == {"left": 102, "top": 0, "width": 256, "height": 512}
    assert alone["candidates"] == {"found": 0, "held": 0, "moved_crop": False}


def test_candidates_alone_do_not_make_a_face_crop() -> None:
    detector = CandidateFixedDetector([], [(370.0, 120.0, 390.0, 140.0)])
    _, described = run(ASTRONAUT, "width=256,height=512,fit=cover,gravity=face,format=json",
                       detector=detector)  # fmt: skip
    assert described["fallback"] == geometry.NO_FACE
    assert described["faces"] == [] and described["candidates"] is None
    assert described["crop"] == {"left": 128, "top": 0, "width": 256, "height": 512}


class ThresholdDetector(FixedDetector):
    """A face scoring 0.4: below the detection threshold (``detect`` answers nothing) and above
    the crop threshold (``detect_with_candidates`` answers it as a face)."""

    def detect(self, batch: Sequence[RGBImage]) -> list[list[Face]]:
        super().detect(batch)
        return [[] for _ in batch]

    def detect_with_candidates(
        self, batch: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        self.seen.extend((image.shape[1], image.shape[0]) for image in batch)
        return [([Face(box=f.box, score=0.4) for f in self.faces], []) for _ in batch]


def test_redaction_hides_faces_above_the_crop_threshold() -> None:
    # redaction takes the faces of a face crop (above 0.3), not only those above 0.5
    detector = ThresholdDetector([(200.0, 100.0, 260.0, 170.0)])
    _, description = run(ASTRONAUT, "format=json,width=256,redact=faces", detector=detector)
    assert description["redacted"] == 1


@pytest.mark.slow
def test_on_a_real_photo_candidates_keep_the_face_the_faces_alone_lose() -> None:
    # WIDER FACE 13--Interview 394, cropped 1:1: the faces alone (scoring above 0.3) put the
    # crop where one labelled face is cut; the weak candidates move it to hold all three
    from tests.conftest import FACEDATA, facedata_manifest
    from tests.model_fixtures import require_model_dir

    from focal.face.sessions import load_detector

    path = "wider_face/WIDER_val/images/13--Interview/13_Interview_Interview_On_Location_13_394.jpg"
    (row,) = [r for r in facedata_manifest() if r["path"] == path]
    side = min(row["width"], row["height"])
    text = f"width={side},height={side},fit=cover,gravity=face,format=json"
    detector = load_detector(require_model_dir())
    _, described = run((FACEDATA / path).read_bytes(), text, detector=detector)
    crop = described["crop"]
    assert described["candidates"]["moved_crop"] is True  # type: ignore[index]
    for x1, y1, x2, y2 in row["faces"]:
        if y2 - y1 < 16:
            continue
        inside_w = min(x2, crop["left"] + crop["width"]) - max(x1, crop["left"])  # type: ignore[index]
        inside_h = min(y2, crop["top"] + crop["height"]) - max(y1, crop["top"])  # type: ignore[index]
        assert max(inside_w, 0) * max(inside_h, 0) >= 0.9 * (x2 - x1) * (y2 - y1)
    assert all(face["score"] > 0.3 for face in described["faces"])  # type: ignore[index]


# --- the two phases: detection input, then the transform with the faces found elsewhere --------


def phases(data: bytes, text: str, detector: FixedDetector) -> tuple[DetectionInput, Result]:
    """Phase 1, every image answered in one detector call (as focal batch's actors answer
    them), then phase 2 with the faces."""
    options = parse_options(text)
    inputs = detection_input(data, options, cap=inference_cap(detector))
    answers = faces_and_candidates(detector, inputs.images)
    return inputs, transform(data, options, faces=inputs.faces(answers))


@pytest.mark.parametrize(
    ("data", "text", "images_seen"),
    [
        (ASTRONAUT, "width=200,height=120,fit=cover,gravity=face,zoom=0.5,format=png", 1),
        (images.animated_gif(240, 160), "width=120,redact=faces,format=webp,quality=100", 1 + 5),
        (images.animated_gif(240, 160), "width=120,redact=faces,anim=false,format=png", 1),
    ],
    ids=["face crop", "animation redacted", "first frame redacted"],
)
def test_the_two_phases_give_the_one_calls_bytes(data: bytes, text: str, images_seen: int) -> None:
    one_call = transform(data, parse_options(text), detector=FixedDetector([(40, 30, 90, 100)]))
    inputs, two = phases(data, text, FixedDetector([(40, 30, 90, 100)]))
    assert len(inputs.images) == images_seen
    assert two.data == one_call.data
    assert two.description["faces"] == one_call.description["faces"] != []


def test_phase_two_never_redacts_an_animation_without_every_frames_faces() -> None:
    data, options = images.animated_gif(240, 160), parse_options("width=120,redact=faces")
    inputs = detection_input(data, options)
    answer = ([Face(box=(40, 30, 90, 100), score=0.99)], [])
    page_only = inputs.faces([answer])
    failed = inputs.faces([answer, *[DetectionFailed("worker died")] * 5])
    for faces in (page_only, failed):
        with pytest.raises(RedactionError):
            transform(data, options, faces=faces)
    assert failed.frames_failed is not None and "worker died" in failed.frames_failed


def test_phase_two_takes_a_detector_or_faces_not_both() -> None:
    with pytest.raises(OptionError, match="not both"):
        transform(ASTRONAUT, parse_options("width=10"), detector=FixedDetector([]), faces=Faces())


def test_a_damaged_source_found_in_phase_one_is_served_with_a_warning_in_phase_two() -> None:
    options = parse_options("width=160,height=100,fit=cover,gravity=face")
    inputs = detection_input(images.truncated_jpeg(), options)
    assert inputs.damaged and inputs.page is not None
    result = transform(images.truncated_jpeg(), options, faces=inputs.faces([([], [])]))
    assert result.source_warning is not None and result.fallback == geometry.NO_FACE


# --- face crops whose crop no face can move detect nothing ---------------------------------------


def test_a_square_face_crop_of_a_square_source_detects_nothing_and_matches_the_centred_crop() -> (
    None
):
    detector = FixedDetector([(10, 10, 60, 70)])  # a face in the corner, were it asked
    face = transform(
        ASTRONAUT, parse_options("width=128,height=128,fit=cover,gravity=face"), detector=detector
    )
    centre = transform(ASTRONAUT, parse_options("width=128,height=128,fit=cover"))
    assert detector.seen == []
    assert (face.gravity_used, face.fallback, face.degraded) == (
        "center",
        geometry.FACES_CANNOT_MOVE,
        False,
    )
    assert face.data == centre.data


@pytest.mark.parametrize(
    "text",
    [
        "width=160,height=128,fit=cover,gravity=face",  # the crop has room to move
        "width=128,height=128,fit=cover,gravity=face,zoom=0.5",  # the faces size the crop
        "width=128,height=128,fit=cover,gravity=face,redact=faces",  # redaction needs them all
        "width=128,height=128,fit=cover,gravity=face,format=json",  # the description lists them
    ],
)
def test_face_crops_that_faces_can_change_still_detect(text: str) -> None:
    detector = FixedDetector([(10, 10, 60, 70)])
    result = transform(ASTRONAUT, parse_options(text), detector=detector)
    assert len(detector.seen) == 1
    assert result.fallback is None
