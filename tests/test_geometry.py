"""The pure geometry: the published face-crop algorithm and the fit x gravity plan."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from focal import geometry
from focal.errors import OptionError
from focal.geometry import (
    NO_FACE,
    NO_FOCUS,
    Box,
    FacePolicy,
    FaceRegion,
    Plan,
    Rect,
    Size,
    Steering,
    crop_target,
    face_crop_size,
    face_region,
    faces_can_move_crop,
    faces_that_fit,
    focal_point,
    inference_size,
    largest_crop,
    outer_box,
    plan,
    steer,
)
from focal.options import Fit, Gravity

# --- the published algorithm ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected", "factor"),
    [
        (Size(2048, 2048), Size(1024, 1024), 2.0),
        (Size(125, 2000), Size(64, 1024), 2000 / 1024),
        (Size(2000, 125), Size(1024, 64), 2000 / 1024),
        (Size(1024, 1024), Size(1024, 1024), 1.0),
        (Size(800, 600), Size(800, 600), 1.0),
        (Size(1025, 10), Size(1024, 10), 1025 / 1024),
        (Size(1, 5000), Size(1, 1024), 5000 / 1024),
    ],
)
def test_inference_size(source: Size, expected: Size, factor: float) -> None:
    size, scale = inference_size(source)
    assert size == expected
    assert scale == pytest.approx(factor)


def test_inference_size_with_another_cap() -> None:
    assert inference_size(Size(640, 480), cap=320) == (Size(320, 240), 2.0)


def test_outer_box_takes_each_edge_from_the_box_that_reaches_furthest() -> None:
    boxes = [Box(10, 50, 30, 60), Box(40, 20, 80, 45), Box(5, 70, 20, 90)]
    assert outer_box(boxes) == Box(5, 20, 80, 90)
    assert outer_box([Box(1, 2, 3, 4)]) == Box(1, 2, 3, 4)
    assert outer_box([]) is None


def test_focal_point_is_the_centre_of_the_outer_box() -> None:
    assert focal_point(Box(100, 200, 300, 600)) == (200.0, 400.0)


# The worked example: 2048x2048 source, 1024x1024 inference image, outer box 100x500 on it.
INFERENCE = Size(1024, 1024)
OUTER_ON_INFERENCE = Box(462, 262, 562, 762)  # 100 x 500, centred at (512, 512)


@pytest.mark.parametrize(
    ("zoom", "expected"),
    [(1.0, (100.0, 500.0)), (0.5, (200.0, 1000.0)), (0.25, (400.0, 1024.0)), (0.0, (1024, 1024))],
)
def test_worked_example_crop_size_on_the_inference_image(
    zoom: float, expected: tuple[float, float]
) -> None:
    assert face_crop_size(OUTER_ON_INFERENCE, zoom, INFERENCE) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("zoom", "crop"),
    [
        (1.0, Box(924, 524, 1124, 1524)),
        (0.5, Box(824, 24, 1224, 2024)),  # 200x1000 on the inference image, times 2
        (0.25, Box(624, 0, 1424, 2048)),  # 400x1024 on the inference image -> 800x2048
        (0.0, Box(0, 0, 2048, 2048)),
    ],
)
def test_worked_example_face_region_on_the_original(zoom: float, crop: Box) -> None:
    faces = [OUTER_ON_INFERENCE.scaled(2)]  # the same face in original pixels
    region = face_region(faces, zoom, Size(2048, 2048))
    assert region is not None
    assert region.inference == INFERENCE
    assert region.scale == 2.0
    assert region.outer == Box(924, 524, 1124, 1524)
    assert region.focal == (1024.0, 1024.0)
    assert region.crop == crop


def test_face_region_of_several_faces_is_centred_on_their_outer_box() -> None:
    faces = [Box(100, 100, 200, 250), Box(600, 150, 700, 300)]
    region = face_region(faces, 1.0, Size(1000, 500))
    assert region is not None
    assert region.outer == Box(100, 100, 700, 300)
    assert region.focal == (400.0, 200.0)
    assert region.crop == Box(100, 100, 700, 300)
    assert (region.inference, region.scale) == (Size(1000, 500), 1.0)


def test_face_region_is_shifted_to_stay_inside_the_image() -> None:
    region = face_region([Box(0, 0, 50, 50)], 0.5, Size(1000, 500))
    assert region is not None
    assert region.focal == (25.0, 25.0)
    assert region.crop == Box(0, 0, 100, 100)  # centred it would be -25..75


def test_face_region_on_a_tall_image_scaled_for_inference() -> None:
    # 125x2000 -> 64x1024 (factor 1.953125). The face is 32x64 on the inference image; zoom=0.25
    # asks for 128x256 there, the width is capped at 64, which is the whole width of the original.
    face = Box(16, 480, 48, 544).scaled(2000 / 1024)
    region = face_region([face], 0.25, Size(125, 2000))
    assert region is not None
    assert region.inference == Size(64, 1024)
    assert region.crop.left == 0 and region.crop.right == 125
    assert region.crop.height == pytest.approx(256 * 2000 / 1024)
    assert region.crop.center[1] == pytest.approx(region.focal[1])


def test_face_region_clips_overhanging_faces_and_drops_faces_outside() -> None:
    region = face_region([Box(-20, -10, 30, 40), Box(2000, 10, 2100, 90)], 1.0, Size(100, 100))
    assert region is not None
    assert region.outer == Box(0, 0, 30, 40)
    assert face_region([Box(200, 10, 300, 90)], 1.0, Size(100, 100)) is None
    assert face_region([], 0.5, Size(100, 100)) is None


@pytest.mark.parametrize("zoom", [-0.1, 1.5, math.nan])
def test_zoom_outside_0_to_1_is_refused(zoom: float) -> None:
    with pytest.raises(OptionError, match="for zoom but received"):
        face_crop_size(Box(0, 0, 10, 10), zoom, Size(100, 100))


# --- fit x gravity, worked by hand --------------------------------------------------------------

SRC = Size(1000, 500)
FACE = Box(600, 100, 700, 250)  # 100 x 150, focal point (650, 175)


def point(x: float, y: float) -> Gravity:
    return Gravity("point", x, y)


G = {name: Gravity(name) for name in ("center", "left", "right", "top", "bottom", "auto", "face")}

# (width, height, fit, gravity, crop (left, top, width, height), resize, canvas, offset)
TABLE: list[
    tuple[
        int | None,
        int | None,
        Fit,
        Gravity,
        tuple[int, int, int, int],
        tuple[int, int],
        tuple[int, int],
        tuple[int, int],
    ]
] = [
    # cover: the largest 1:1 (500x500) or 4:1 (1000x250) crop, then scaled to the box
    (200, 200, Fit.COVER, G["center"], (250, 0, 500, 500), (200, 200), (200, 200), (0, 0)),
    (200, 200, Fit.COVER, G["left"], (0, 0, 500, 500), (200, 200), (200, 200), (0, 0)),
    (200, 200, Fit.COVER, G["right"], (500, 0, 500, 500), (200, 200), (200, 200), (0, 0)),
    (400, 100, Fit.COVER, G["center"], (0, 125, 1000, 250), (400, 100), (400, 100), (0, 0)),
    (400, 100, Fit.COVER, G["top"], (0, 0, 1000, 250), (400, 100), (400, 100), (0, 0)),
    (400, 100, Fit.COVER, G["bottom"], (0, 250, 1000, 250), (400, 100), (400, 100), (0, 0)),
    (200, 200, Fit.COVER, G["top"], (250, 0, 500, 500), (200, 200), (200, 200), (0, 0)),
    # XxY: centred on (x*W, y*H), shifted inside: 300-250=50; 900-250=650 -> 500 at most
    (200, 200, Fit.COVER, point(0.3, 0.5), (50, 0, 500, 500), (200, 200), (200, 200), (0, 0)),
    (200, 200, Fit.COVER, point(0.9, 0.1), (500, 0, 500, 500), (200, 200), (200, 200), (0, 0)),
    (400, 100, Fit.COVER, point(0.5, 0.3), (0, 25, 1000, 250), (400, 100), (400, 100), (0, 0)),
    # crop: cover when the source is larger; never enlarges; smaller where the source is
    (200, 200, Fit.CROP, G["center"], (250, 0, 500, 500), (200, 200), (200, 200), (0, 0)),
    (400, 800, Fit.CROP, G["center"], (300, 0, 400, 500), (400, 500), (400, 500), (0, 0)),
    (400, 800, Fit.CROP, G["left"], (0, 0, 400, 500), (400, 500), (400, 500), (0, 0)),
    (2000, 2000, Fit.CROP, G["center"], (0, 0, 1000, 500), (1000, 500), (1000, 500), (0, 0)),
    # scale-down: fits inside, never enlarges
    (200, 200, Fit.SCALE_DOWN, G["center"], (0, 0, 1000, 500), (200, 100), (200, 100), (0, 0)),
    (2000, 2000, Fit.SCALE_DOWN, G["left"], (0, 0, 1000, 500), (1000, 500), (1000, 500), (0, 0)),
    # contain: fits inside, may enlarge
    (200, 200, Fit.CONTAIN, G["center"], (0, 0, 1000, 500), (200, 100), (200, 100), (0, 0)),
    (2000, 2000, Fit.CONTAIN, G["center"], (0, 0, 1000, 500), (2000, 1000), (2000, 1000), (0, 0)),
    # pad: contain, centred on a canvas of exactly the box
    (200, 200, Fit.PAD, G["center"], (0, 0, 1000, 500), (200, 100), (200, 200), (0, 50)),
    (300, 100, Fit.PAD, G["right"], (0, 0, 1000, 500), (200, 100), (300, 100), (50, 0)),
    (2000, 2000, Fit.PAD, G["center"], (0, 0, 1000, 500), (2000, 1000), (2000, 2000), (0, 500)),
    (201, 200, Fit.PAD, G["center"], (0, 0, 1000, 500), (201, 101), (201, 200), (0, 49)),
    # squeeze: exactly the box, no crop
    (300, 300, Fit.SQUEEZE, G["center"], (0, 0, 1000, 500), (300, 300), (300, 300), (0, 0)),
    # one side only: the other from the aspect ratio; no crop
    (300, None, Fit.COVER, G["center"], (0, 0, 1000, 500), (300, 150), (300, 150), (0, 0)),
    (None, 100, Fit.CONTAIN, G["center"], (0, 0, 1000, 500), (200, 100), (200, 100), (0, 0)),
    (2000, None, Fit.CONTAIN, G["center"], (0, 0, 1000, 500), (2000, 1000), (2000, 1000), (0, 0)),
    (2000, None, Fit.PAD, G["center"], (0, 0, 1000, 500), (2000, 1000), (2000, 1000), (0, 0)),
    (2000, None, Fit.SCALE_DOWN, G["center"], (0, 0, 1000, 500), (1000, 500), (1000, 500), (0, 0)),
    (None, 1000, Fit.CROP, G["center"], (0, 0, 1000, 500), (1000, 500), (1000, 500), (0, 0)),
    (None, 1000, Fit.SQUEEZE, G["center"], (0, 0, 1000, 500), (2000, 1000), (2000, 1000), (0, 0)),
    (333, None, Fit.SCALE_DOWN, G["center"], (0, 0, 1000, 500), (333, 167), (333, 167), (0, 0)),
    # neither: the source as is
    (None, None, Fit.COVER, G["center"], (0, 0, 1000, 500), (1000, 500), (1000, 500), (0, 0)),
]


@pytest.mark.parametrize(
    ("width", "height", "fit", "gravity", "crop", "resize", "canvas", "offset"), TABLE
)
def test_fit_and_gravity_table(
    width: int | None,
    height: int | None,
    fit: Fit,
    gravity: Gravity,
    crop: tuple[int, int, int, int],
    resize: tuple[int, int],
    canvas: tuple[int, int],
    offset: tuple[int, int],
) -> None:
    result = plan(SRC, width, height, fit, gravity)
    assert result.crop == Rect(*crop)
    assert result.resize == Size(*resize)
    assert result.canvas == Size(*canvas)
    assert result.offset == offset
    assert result.gravity_used == gravity.mode
    assert result.fallback is None
    assert result.face is None


def test_an_odd_excess_puts_the_extra_pixel_on_the_right() -> None:
    result = plan(Size(1001, 500), 200, 200, Fit.COVER, G["center"])
    assert result.crop == Rect(250, 0, 500, 500)
    assert result.crop.right == 750  # 250 px left of it, 251 right


def test_auto_uses_the_focus_point_like_a_point_gravity() -> None:
    result = plan(SRC, 200, 200, Fit.COVER, G["auto"], focus=(100.0, 250.0))
    assert result.crop == Rect(0, 0, 500, 500)
    assert (result.gravity_used, result.fallback) == ("auto", None)
    result = plan(SRC, 200, 200, Fit.COVER, G["auto"], focus=(700.0, 250.0))
    assert result.crop == Rect(450, 0, 500, 500)


def test_auto_without_a_focus_point_falls_back_to_centre() -> None:
    result = plan(SRC, 200, 200, Fit.COVER, G["auto"])
    assert result.crop == Rect(250, 0, 500, 500)
    assert (result.gravity_used, result.fallback) == ("center", NO_FOCUS)


# gravity=face on SRC with FACE (100x150 at 600..700 x 100..250, focal point (650, 175))
FACE_TABLE: list[
    tuple[
        int | None,
        int | None,
        Fit,
        float,
        tuple[int, int, int, int],
        tuple[int, int],
        tuple[int, int],
        tuple[int, int],
    ]
] = [
    # zoom=1: the 100x150 face grown to 150x150 around (650, 175)
    (200, 200, Fit.COVER, 1.0, (575, 100, 150, 150), (200, 200), (200, 200), (0, 0)),
    # zoom=0.5: region 200x300 at 550..750 x 25..325, grown to 300x300
    (200, 200, Fit.COVER, 0.5, (500, 25, 300, 300), (200, 200), (200, 200), (0, 0)),
    # zoom=0: the largest 1:1 crop (500x500), placed around the focal point
    (200, 200, Fit.COVER, 0.0, (400, 0, 500, 500), (200, 200), (200, 200), (0, 0)),
    # a wide box: the region 200x300 grown to 1200x300 does not fit; the largest 4:1 crop
    # (1000x250) holds the 100x150 face, so it is kept (the zoom margin is cut)
    (400, 100, Fit.COVER, 0.5, (0, 50, 1000, 250), (400, 100), (400, 100), (0, 0)),
    # fit=crop never enlarges: the 150x150 region stays 150x150 for a 400x400 box
    (400, 400, Fit.CROP, 1.0, (575, 100, 150, 150), (150, 150), (150, 150), (0, 0)),
    (100, 100, Fit.CROP, 1.0, (575, 100, 150, 150), (100, 100), (100, 100), (0, 0)),
    # non-cropping fits: the face region itself is the crop
    (100, 100, Fit.CONTAIN, 0.5, (550, 25, 200, 300), (67, 100), (67, 100), (0, 0)),
    (100, 100, Fit.PAD, 0.5, (550, 25, 200, 300), (67, 100), (100, 100), (16, 0)),
    (100, 100, Fit.SQUEEZE, 0.5, (550, 25, 200, 300), (100, 100), (100, 100), (0, 0)),
    (1000, 1000, Fit.SCALE_DOWN, 0.5, (550, 25, 200, 300), (200, 300), (200, 300), (0, 0)),
    (100, 100, Fit.SCALE_DOWN, 0.0, (0, 0, 1000, 500), (100, 50), (100, 50), (0, 0)),
    # no width/height, or only one: the face region, at its size or scaled to the given side
    (None, None, Fit.COVER, 1.0, (600, 100, 100, 150), (100, 150), (100, 150), (0, 0)),
    (None, None, Fit.SCALE_DOWN, 0.0, (0, 0, 1000, 500), (1000, 500), (1000, 500), (0, 0)),
    (None, 600, Fit.COVER, 0.5, (550, 25, 200, 300), (400, 600), (400, 600), (0, 0)),
]


@pytest.mark.parametrize(
    ("width", "height", "fit", "zoom", "crop", "resize", "canvas", "offset"), FACE_TABLE
)
def test_face_gravity_table(
    width: int | None,
    height: int | None,
    fit: Fit,
    zoom: float,
    crop: tuple[int, int, int, int],
    resize: tuple[int, int],
    canvas: tuple[int, int],
    offset: tuple[int, int],
) -> None:
    result = plan(SRC, width, height, fit, G["face"], faces=[FACE], zoom=zoom)
    assert result.crop == Rect(*crop)
    assert result.resize == Size(*resize)
    assert result.canvas == Size(*canvas)
    assert result.offset == offset
    assert (result.gravity_used, result.fallback) == ("face", None)
    assert result.face is not None and result.face.outer == FACE


def test_face_near_the_edge_grows_into_the_image() -> None:
    result = plan(SRC, 300, 100, Fit.COVER, G["face"], faces=[Box(0, 0, 50, 50)], zoom=0.5)
    assert result.crop == Rect(0, 0, 300, 100)


def test_faces_are_cut_only_when_no_crop_of_the_aspect_can_hold_them() -> None:
    # portrait 500x1000, face 100x200; a 10:1 box allows at most 500x50: the face is cut, and the
    # strip is centred on the focal point (250, 500)
    face = Box(200, 400, 300, 600)
    result = plan(Size(500, 1000), 1000, 100, Fit.COVER, G["face"], faces=[face], zoom=0.5)
    assert result.crop == Rect(0, 475, 500, 50)
    assert result.resize == Size(1000, 100)


def test_no_face_falls_back_to_centre_and_says_so() -> None:
    result = plan(SRC, 200, 200, Fit.COVER, G["face"], faces=[], zoom=0.5)
    assert result.crop == Rect(250, 0, 500, 500)
    assert (result.gravity_used, result.fallback, result.face) == ("center", NO_FACE, None)
    assert NO_FACE == "no face found"


def test_faces_are_ignored_by_other_gravities() -> None:
    result = plan(SRC, 200, 200, Fit.COVER, G["left"], faces=[FACE], zoom=1.0)
    assert result.crop == Rect(0, 0, 500, 500)
    assert result.face is None


@pytest.mark.parametrize(("width", "height"), [(0, 100), (100, 0), (-5, None), (None, -1)])
def test_sizes_below_one_are_refused(width: int | None, height: int | None) -> None:
    named = "width" if width is not None and width < 1 else "height"
    with pytest.raises(OptionError, match=f"^Expected an integer of at least 1 for {named} "):
        plan(SRC, width, height, Fit.COVER, G["center"])


def test_unknown_gravity_is_refused() -> None:
    with pytest.raises(OptionError, match="for gravity but received 'middle'"):
        Gravity("middle")  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------

sides = st.integers(min_value=1, max_value=3000)
targets = st.one_of(st.none(), st.integers(min_value=1, max_value=2500))
fits = st.sampled_from(list(Fit))
zooms = st.one_of(st.just(0.0), st.just(1.0), st.floats(min_value=0.01, max_value=1.0))
unit = st.floats(min_value=0.0, max_value=1.0)
gravities = st.one_of(
    st.sampled_from([Gravity(m) for m in ("center", "left", "right", "top", "bottom", "auto")]),
    st.builds(point, unit, unit),
)


@st.composite
def images_with_faces(draw: st.DrawFn, max_faces: int = 4) -> tuple[Size, list[Box]]:
    image = Size(draw(sides), draw(sides))
    count = draw(st.integers(min_value=1, max_value=max_faces))
    faces = []
    for _ in range(count):
        x1 = draw(st.floats(min_value=0, max_value=image.width - 0.5))
        y1 = draw(st.floats(min_value=0, max_value=image.height - 0.5))
        x2 = draw(st.floats(min_value=x1 + 0.5, max_value=image.width))
        y2 = draw(st.floats(min_value=y1 + 0.5, max_value=image.height))
        faces.append(Box(x1, y1, x2, y2))
    return image, faces


def assert_inside(crop: Rect, image: Size) -> None:
    assert crop.width >= 1 and crop.height >= 1
    assert 0 <= crop.left and crop.right <= image.width
    assert 0 <= crop.top and crop.bottom <= image.height


def holds(crop: Rect, box: Box) -> bool:
    return (
        crop.left <= box.left + 1e-6
        and crop.top <= box.top + 1e-6
        and crop.right >= box.right - 1e-6
        and crop.bottom >= box.bottom - 1e-6
    )


def aspect_of_box(image: Size, width: int, height: int, fit: Fit) -> float:
    """The aspect a cropping fit must reach (fit=crop first limits the box to the image,
    fit=aspect-crop shrinks it into the image)."""
    box = crop_target(image, Size(width, height), fit)
    return box.width / box.height


def rounded_out(box: Box) -> Box:
    return Box(
        math.floor(box.left), math.floor(box.top), math.ceil(box.right), math.ceil(box.bottom)
    )


def check_sizes(result: Plan, width: int | None, height: int | None, fit: Fit) -> None:
    resize, canvas, crop = result.resize, result.canvas, result.crop
    assert resize.width >= 1 and resize.height >= 1
    if fit is not Fit.PAD or width is None or height is None:
        assert canvas == resize and result.offset == (0, 0)
    if width is not None and height is not None:
        box = Size(width, height)
        if fit in (Fit.COVER, Fit.PAD, Fit.SQUEEZE):
            assert canvas == box
        if fit in (Fit.CONTAIN, Fit.PAD):
            assert resize.width <= width and resize.height <= height
            assert resize.width == width or resize.height == height
        if fit in (Fit.SCALE_DOWN, Fit.CROP, Fit.ASPECT_CROP):
            assert resize.width <= width and resize.height <= height
        if fit is Fit.SCALE_UP and resize != crop.size:
            assert resize.width <= width and resize.height <= height
            assert resize.width == width or resize.height == height
    elif width is not None or height is not None:
        given = resize.width if width is not None else resize.height
        kept = (Fit.SCALE_DOWN, Fit.CROP, Fit.ASPECT_CROP, Fit.SCALE_UP)
        assert given == (width or height) or (fit in kept and resize == crop.size)
    else:
        assert resize == crop.size
    if fit in (Fit.SCALE_DOWN, Fit.CROP, Fit.ASPECT_CROP):
        assert resize.width <= crop.width and resize.height <= crop.height
    if fit is Fit.SCALE_UP:
        assert resize.width >= crop.width or resize.height >= crop.height
    if fit is Fit.PAD:
        assert result.offset == (
            (canvas.width - resize.width) // 2,
            (canvas.height - resize.height) // 2,
        )
    if fit is not Fit.SQUEEZE and min(crop.width, crop.height, resize.width, resize.height) > 1:
        # The crop's aspect ratio is kept, up to rounding: a side rounded to r pixels is off by a
        # factor of at most 1 + 1/r (a side clamped to the 1 px minimum can be off by any amount,
        # so those are left out).
        bound = (1 + 1 / min(crop.width, crop.height)) * (1 + 1 / min(resize.width, resize.height))
        ratio = (resize.width / crop.width) / (resize.height / crop.height)
        assert 1 / bound <= ratio <= bound


@settings(deadline=None, max_examples=300)
@given(
    image=st.builds(Size, sides, sides),
    width=targets,
    height=targets,
    fit=fits,
    gravity=gravities,
    focus=st.one_of(st.none(), st.tuples(unit, unit)),
)
def test_plan_stays_inside_and_has_the_requested_size(
    image: Size,
    width: int | None,
    height: int | None,
    fit: Fit,
    gravity: Gravity,
    focus: tuple[float, float] | None,
) -> None:
    focus_px = None if focus is None else (focus[0] * image.width, focus[1] * image.height)
    result = plan(image, width, height, fit, gravity, focus=focus_px)
    assert_inside(result.crop, image)
    check_sizes(result, width, height, fit)
    cropping = (
        width is not None and height is not None and fit in (Fit.COVER, Fit.CROP, Fit.ASPECT_CROP)
    )
    if not cropping:
        assert result.crop == Rect(0, 0, image.width, image.height)
    target = (
        (gravity.x * image.width, gravity.y * image.height) if gravity.mode == "point" else None
    )
    target = focus_px if gravity.mode == "auto" else target
    if cropping and target is not None:  # the gravity point is always in the crop
        assert result.crop.left <= target[0] <= result.crop.right
        assert result.crop.top <= target[1] <= result.crop.bottom
    if cropping and gravity.mode == "left":
        assert result.crop.left == 0


@settings(deadline=None, max_examples=300)
@given(scene=images_with_faces(), width=targets, height=targets, fit=fits, zoom=zooms)
def test_face_crop_keeps_the_faces_whenever_the_aspect_allows(
    scene: tuple[Size, list[Box]],
    width: int | None,
    height: int | None,
    fit: Fit,
    zoom: float,
) -> None:
    image, faces = scene
    result = plan(image, width, height, fit, G["face"], faces=faces, zoom=zoom)
    assert (result.gravity_used, result.fallback) == ("face", None)
    assert result.face is not None
    outer = result.face.outer
    kept = [face for face in faces if face not in result.face.left_out]
    assert outer == outer_box(kept)
    assert_inside(result.crop, image)
    check_sizes(result, width, height, fit)
    if width is None or height is None or fit not in (Fit.COVER, Fit.CROP, Fit.ASPECT_CROP):
        assert holds(result.crop, outer)
        return
    # Cropping fits: a crop of aspect a inside W x H is at most min(W, H*a) x min(H, W/a). When
    # the outer box, rounded outwards to whole pixels, plus one pixel of rounding fits in that
    # on both sides, the crop must hold it.
    a = aspect_of_box(image, width, height, fit)
    need = rounded_out(outer)
    if need.width + 1 <= min(image.width, image.height * a) and need.height + 1 <= min(
        image.height, image.width / a
    ):
        assert holds(result.crop, outer)


@settings(deadline=None, max_examples=200)
@given(scene=images_with_faces(), width=st.integers(1, 2500), height=st.integers(1, 2500))
def test_zoom_0_with_cover_gives_the_largest_crop_of_the_aspect(
    scene: tuple[Size, list[Box]], width: int, height: int
) -> None:
    image, faces = scene
    result = plan(image, width, height, Fit.COVER, G["face"], faces=faces, zoom=0.0)
    a = width / height
    largest_w = max(1.0, min(image.width, image.height * a))
    largest_h = max(1.0, min(image.height, image.width / a))
    assert abs(result.crop.width - largest_w) <= 0.5 + 1e-9
    assert abs(result.crop.height - largest_h) <= 0.5 + 1e-9
    centred = plan(image, width, height, Fit.COVER, G["center"])
    assert result.crop.size == centred.crop.size


@settings(deadline=None, max_examples=300)
@given(scene=images_with_faces())
def test_zoom_1_hugs_the_faces(scene: tuple[Size, list[Box]]) -> None:
    image, faces = scene
    result = plan(image, None, None, Fit.SCALE_DOWN, G["face"], faces=faces, zoom=1.0)
    outer = outer_box(faces)
    assert outer is not None and result.face is not None
    # Up to rounding: outwards to whole pixels (less than 1 px; float noise of a millionth of a
    # pixel ignored), and, where detection ran on a smaller copy and the faces span (nearly) a
    # whole side of it, half a pixel of that copy.
    slack = 1.0 if result.face.scale == 1.0 else 1.0 + result.face.scale / 2
    crop = result.crop
    assert holds(crop, outer)
    assert crop.left > outer.left - slack and crop.top > outer.top - slack
    assert crop.right < outer.right + slack and crop.bottom < outer.bottom + slack
    assert result.resize == result.crop.size


@settings(deadline=None, max_examples=300)
@given(scene=images_with_faces(), zoom=zooms, cap=st.sampled_from([1024, 512, 100]))
def test_face_region_follows_the_published_steps(
    scene: tuple[Size, list[Box]], zoom: float, cap: int
) -> None:
    image, faces = scene
    region = face_region(faces, zoom, image, cap)
    assert isinstance(region, FaceRegion)
    inference, factor = inference_size(image, cap)
    assert max(inference.width, inference.height) <= max(cap, image.width, image.height)
    assert inference.width <= cap or inference == image
    outer = outer_box(faces)
    assert outer is not None
    assert region.outer.left == pytest.approx(outer.left)
    assert region.outer.bottom == pytest.approx(outer.bottom)
    assert region.focal == pytest.approx(outer.center)
    crop = region.crop
    assert -1e-6 <= crop.left and crop.right <= image.width + 1e-6
    assert -1e-6 <= crop.top and crop.bottom <= image.height + 1e-6
    assert crop.left <= outer.left + 1e-6 and crop.right >= outer.right - 1e-6
    assert crop.top <= outer.top + 1e-6 and crop.bottom >= outer.bottom - 1e-6
    # step 5 on the inference image, step 6 back on the original
    d_w, d_h = face_crop_size(outer.scaled(1 / factor), zoom, inference)
    expect_w = image.width if d_w >= inference.width else d_w * factor
    expect_h = image.height if d_h >= inference.height else d_h * factor
    assert crop.width == pytest.approx(min(expect_w, image.width))
    assert crop.height == pytest.approx(min(expect_h, image.height))


@settings(deadline=None, max_examples=200)
@given(image=st.builds(Size, sides, sides), width=st.integers(1, 2500), height=st.integers(1, 2500))
def test_edge_points_agree_with_the_named_gravities(image: Size, width: int, height: int) -> None:
    named = [(0.5, 0.5, "center"), (0, 0.5, "left"), (1, 0.5, "right"), (0.5, 0, "top")]
    for x, y, name in [*named, (0.5, 1, "bottom")]:
        by_point = plan(image, width, height, Fit.COVER, point(x, y))
        by_name = plan(image, width, height, Fit.COVER, Gravity(name))
        assert by_point.crop == by_name.crop, name


def test_a_face_crop_detects_at_twice_the_outputs_scale() -> None:
    side = geometry.crop_detection_side
    # a 1536 px square crop of a 2048x1536 source shown at 256 px: 1/6, twice that of 2048
    assert side(Size(2048, 1536), Size(256, 256), Fit.COVER) == 683
    # shown at full size (the crop is the output): the cap
    assert side(Size(1024, 683), Size(683, 683), Fit.COVER) == 1024
    assert side(Size(1024, 683), Size(2000, 2000), Fit.COVER) == 1024  # enlarged: the cap
    assert side(Size(1024, 683), Size(2000, 2000), Fit.CROP) == 1024  # crop never enlarges
    assert side(Size(4000, 4000), Size(64, 64), Fit.COVER) == 256  # never below 256
    assert side(Size(200, 100), Size(10, 10), Fit.COVER) == 256
    assert side(Size(2048, 2048), Size(256, 256), Fit.COVER, cap=384) == 384


# ---- faces that cannot all fit the output's aspect ratio ---------------------------------------


def test_a_tiny_face_far_off_does_not_push_the_main_faces_out() -> None:
    # a 5:2 picture, two people in the middle and a tiny face at the far left; a 1:1 crop (at
    # most 1200 wide) cannot hold all three, so the tiny one is left out and the two kept whole
    image = Size(3000, 1200)
    people = [Box(1300, 600, 1500, 850), Box(1600, 650, 1800, 900)]
    tiny = Box(20, 900, 50, 935)
    result = plan(image, 500, 500, Fit.COVER, G["face"], faces=[tiny, *people], zoom=0.5)
    assert result.face is not None and result.face.left_out == (tiny,)
    assert all(holds(result.crop, face) for face in people)
    published = plan(
        image,
        500,
        500,
        Fit.COVER,
        G["face"],
        faces=[tiny, *people],
        zoom=0.5,
        face_policy=FacePolicy.PUBLISHED,
    )
    assert not all(holds(published.crop, face) for face in people)  # what the rule fixes


def test_a_group_that_overflows_the_crop_by_a_sliver_keeps_every_face() -> None:
    # a 1000x500 picture, a 1:1 crop is at most 500 wide; the two faces' outer box is 510 wide.
    # Centred on it (250..750) the crop cuts 5 px of each: 95% and 94.7% inside, both kept.
    # Leaving the smaller face out would centre the crop on the other and cut it entirely.
    image = Size(1000, 500)
    big, small = Box(245, 100, 345, 250), Box(660, 120, 755, 240)
    result = plan(image, 500, 500, Fit.COVER, G["face"], faces=[big, small])
    published = plan(
        image, 500, 500, Fit.COVER, G["face"], faces=[big, small], face_policy=FacePolicy.PUBLISHED
    )
    assert result.crop == published.crop == Rect(250, 0, 500, 500)
    assert result.face is not None and result.face.left_out == ()
    assert geometry.share_inside(big, result.crop) == pytest.approx(0.95)
    assert geometry.share_inside(small, result.crop) == pytest.approx(90 / 95)
    assert faces_that_fit([big, small], image, 1.0) == (big, small)


def test_a_group_that_overflows_the_crop_by_far_leaves_the_smallest_face_out() -> None:
    # the same picture, the faces 780 px apart: centred on both, the crop (240..740) keeps
    # neither; the smaller is left out and the larger kept whole
    image = Size(1000, 500)
    big, small = Box(100, 100, 200, 250), Box(800, 120, 880, 220)
    result = plan(image, 500, 500, Fit.COVER, G["face"], faces=[big, small])
    assert result.face is not None and result.face.left_out == (small,)
    assert holds(result.crop, big)
    published = plan(
        image, 500, 500, Fit.COVER, G["face"], faces=[big, small], face_policy=FacePolicy.PUBLISHED
    )
    assert geometry.share_inside(big, published.crop) < geometry.KEPT_SHARE


def test_when_the_centred_crop_cuts_a_face_the_crop_slides_to_keep_them_all() -> None:
    # centred on both faces (255..755) the crop keeps 87.5% of the narrow face; starts 234..254
    # keep both at least 90% inside: the nearest, 254, is taken and nothing is left out (leaving
    # the narrow face out would centre the crop on the wide one, 380..880, and lose it)
    image = Size(1000, 500)
    narrow, wide = Box(250, 100, 290, 300), Box(500, 100, 760, 250)
    both = [narrow, wide]
    published = plan(
        image, 500, 500, Fit.COVER, G["face"], faces=both, face_policy=FacePolicy.PUBLISHED
    )
    assert published.crop == Rect(255, 0, 500, 500)
    assert geometry.share_inside(narrow, published.crop) == pytest.approx(0.875)
    result = plan(image, 500, 500, Fit.COVER, G["face"], faces=[narrow, wide])
    assert result.crop == Rect(254, 0, 500, 500)
    assert result.face is not None and result.face.left_out == ()
    assert geometry.share_inside(narrow, result.crop) == pytest.approx(0.9)


@settings(deadline=None, max_examples=200)
@given(
    scene=images_with_faces(max_faces=5), width=st.integers(1, 3000), height=st.integers(1, 3000)
)
def test_no_face_is_left_out_when_some_placement_keeps_them_all(
    scene: tuple[Size, list[Box]], width: int, height: int
) -> None:
    image, faces = scene
    result = plan(image, width, height, Fit.COVER, G["face"], faces=faces)
    crop = result.crop
    clipped = [b for b in (geometry.clip(f, image) for f in faces) if b is not None]
    w, h = crop.width, crop.height
    if h == image.height:  # the crop is free along x only: try every start
        starts = [Rect(x, 0, w, h) for x in range(image.width - w + 1)]
    else:
        starts = [Rect(0, y, w, h) for y in range(image.height - h + 1)]
    keeps_all = any(
        all(geometry.share_inside(f, at) >= geometry.KEPT_SHARE - 1e-9 for f in clipped)
        for at in starts
    )
    assert result.face is not None
    if keeps_all:
        assert result.face.left_out == ()
        assert all(geometry.share_inside(f, crop) >= geometry.KEPT_SHARE - 1e-9 for f in clipped)


def test_the_tolerance_is_the_crop_quality_metrics() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "crop_quality.py"
    text = path.read_text()
    assert f"KEPT_SHARE = {geometry.KEPT_SHARE}" in text
    assert importlib.util.find_spec("focal.geometry") is not None


@settings(deadline=None, max_examples=300)
@given(
    scene=images_with_faces(max_faces=6),
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    zoom=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_the_published_placement_stands_whenever_it_keeps_every_face(
    scene: tuple[Size, list[Box]], width: int, height: int, zoom: float
) -> None:
    image, faces = scene
    fit_plan = plan(image, width, height, Fit.COVER, G["face"], faces=faces, zoom=zoom)
    published = plan(
        image,
        width,
        height,
        Fit.COVER,
        G["face"],
        faces=faces,
        zoom=zoom,
        face_policy=FacePolicy.PUBLISHED,
    )
    clipped = [b for b in (geometry.clip(f, image) for f in faces) if b is not None]
    shares = [geometry.share_inside(face, published.crop) for face in clipped]
    if all(share >= geometry.KEPT_SHARE for share in shares):
        assert fit_plan.crop == published.crop
        assert fit_plan.face is not None and fit_plan.face.left_out == ()
    else:  # faces are left out only then, and the faces kept are each kept
        assert fit_plan.face is not None
        kept = [face for face in clipped if face not in fit_plan.face.left_out]
        if len(kept) > 1:
            assert all(
                geometry.share_inside(face, fit_plan.crop) >= geometry.KEPT_SHARE - 1e-9
                for face in kept
            )


@settings(deadline=None, max_examples=300)
@given(
    scene=images_with_faces(max_faces=6), width=st.integers(1, 3000), height=st.integers(1, 3000)
)
def test_the_fit_policy_keeps_every_face_when_all_fit_and_always_the_largest(
    scene: tuple[Size, list[Box]], width: int, height: int
) -> None:
    image, faces = scene
    kept = faces_that_fit(faces, image, width / height)
    largest = max(faces, key=lambda b: b.area)
    assert any(face.area == largest.area for face in kept)
    widest, tallest = largest_crop(image.width, image.height, width / height)
    all_box = rounded_out(outer_box(faces))
    if all_box.width <= widest and all_box.height <= tallest:
        assert sorted(kept, key=repr) == sorted(faces, key=repr)
    assert set(kept) <= set(faces)
    dropped = [face for face in faces if face not in kept]
    if dropped:  # only faces no larger than every kept one are left out
        assert max(face.area for face in dropped) <= min(face.area for face in kept)


@settings(deadline=None, max_examples=200)
@given(
    scene=images_with_faces(max_faces=6),
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    data=st.data(),
)
def test_the_fit_policy_does_not_depend_on_the_order_of_detections(
    scene: tuple[Size, list[Box]], width: int, height: int, data: st.DataObject
) -> None:
    image, faces = scene
    shuffled = data.draw(st.permutations(faces))
    first = plan(image, width, height, Fit.COVER, G["face"], faces=faces, zoom=0.4)
    second = plan(image, width, height, Fit.COVER, G["face"], faces=shuffled, zoom=0.4)
    assert first.crop == second.crop
    assert first.face is not None and second.face is not None
    assert sorted(first.face.left_out, key=repr) == sorted(second.face.left_out, key=repr)


# ---- weak candidates steer the placement -------------------------------------------------------


def test_candidates_slide_the_crop_to_hold_them_while_keeping_the_faces() -> None:
    # one face in the middle of a 3:1 picture; a weak candidate to its right. The 1000x1000
    # crop centred on the face (left 950) cannot hold the candidate; starting at 1180 it holds
    # both (the start closest to the published one that does)
    image = Size(3000, 1000)
    face = Box(1400, 300, 1500, 400)
    candidate = Box(2100, 300, 2180, 400)
    alone = plan(image, 500, 500, Fit.COVER, G["face"], faces=[face])
    steered = plan(image, 500, 500, Fit.COVER, G["face"], faces=[face], candidates=[candidate])
    assert alone.crop == Rect(950, 0, 1000, 1000) and alone.steering is None
    assert steered.crop == Rect(1180, 0, 1000, 1000)
    assert steered.steering == Steering(candidates=1, held=1, moved=True)
    assert holds(steered.crop, face) and holds(steered.crop, candidate)


def test_candidates_never_pull_the_crop_off_the_faces() -> None:
    image = Size(3000, 1000)
    face = Box(1400, 300, 1500, 400)
    far = Box(2900, 300, 2990, 400)  # no crop keeping the face can hold it
    steered = plan(image, 500, 500, Fit.COVER, G["face"], faces=[face], candidates=[far])
    assert steered.crop == Rect(950, 0, 1000, 1000)
    assert steered.steering == Steering(candidates=1, held=0, moved=False)


def test_candidates_alone_make_no_face_crop() -> None:
    image = Size(3000, 1000)
    result = plan(image, 500, 500, Fit.COVER, G["face"], candidates=[Box(2100, 300, 2180, 400)])
    assert result.fallback == NO_FACE and result.face is None and result.steering is None
    assert result.crop == Rect(1000, 0, 1000, 1000)


def test_steer_prefers_more_candidates_then_the_nearest_start() -> None:
    # starts 0..100 of a 50 span; candidates at 60-100 and 70-90 are held together from 50 on
    assert steer(20, 0, 100, 50, [(60, 100), (70, 90)]) == (50, 2)
    assert steer(20, 0, 100, 50, []) == (20, 0)
    assert steer(20, 0, 100, 50, [(25, 60)]) == (20, 1)  # already held: the crop stays
    assert steer(20, 0, 100, 50, [(0, 30), (90, 100)]) == (0, 1)  # one either way: nearest
    assert steer(50, 0, 100, 50, [(0, 10), (140, 150)]) == (0, 1)  # tie at equal distance: lower


candidate_boxes = st.lists(
    st.builds(
        lambda x, y, w, h: Box(x, y, x + w, y + h),
        st.floats(0, 2400),
        st.floats(0, 2400),
        st.floats(1, 400),
        st.floats(1, 400),
    ),
    max_size=6,
)


@settings(deadline=None, max_examples=300)
@given(
    scene=images_with_faces(max_faces=5),
    candidates=candidate_boxes,
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    fit=st.sampled_from([Fit.COVER, Fit.CROP]),
    zoom=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
)
@example(  # a face left out, but held by the published crop, stays held when candidates steer
    scene=(
        Size(703, 532),
        [Box(1.0, 0.0, 9.0, 1.0), Box(458.0, 0.0, 463.0, 532.0), Box(12.0, 1.0, 85.0, 99.0)],
    ),
    candidates=[Box(0.0, 132.0, 124.0, 529.0)],
    width=693,
    height=520,
    fit=Fit.CROP,
    zoom=0.0,
)
def test_candidates_never_change_which_faces_are_kept(
    scene: tuple[Size, list[Box]],
    candidates: list[Box],
    width: int,
    height: int,
    fit: Fit,
    zoom: float,
) -> None:
    image, faces = scene
    alone = plan(image, width, height, fit, G["face"], faces=faces, zoom=zoom)
    steered = plan(
        image, width, height, fit, G["face"], faces=faces, zoom=zoom, candidates=candidates
    )
    assert steered.crop.size == alone.crop.size
    assert_inside(steered.crop, image)
    assert alone.face is not None and steered.face == alone.face  # the same faces, left out too
    clipped = [b for b in (geometry.clip(f, image) for f in faces) if b is not None]
    for face in clipped:  # every face the crop holds without candidates, it holds with them
        if holds(alone.crop, face):
            assert holds(steered.crop, face)
    all_box = rounded_out(outer_box(clipped))
    aspect = aspect_of_box(image, width, height, fit)
    widest, tallest = largest_crop(image.width, image.height, aspect)
    if all_box.width <= widest and all_box.height <= tallest:  # all fit: none dropped
        assert steered.face.left_out == ()
        assert all(holds(steered.crop, face) for face in clipped)
    largest = max(clipped, key=lambda b: b.area)
    if rounded_out(largest).width <= widest and rounded_out(largest).height <= tallest:
        # kept: at least the metric's share inside (whole, unless every face is kept that way)
        assert any(
            geometry.share_inside(f, steered.crop) >= geometry.KEPT_SHARE - 1e-9
            and f.area == largest.area
            for f in clipped
        )


@settings(deadline=None, max_examples=200)
@given(
    scene=images_with_faces(max_faces=5),
    candidates=candidate_boxes,
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    data=st.data(),
)
def test_candidates_steer_the_same_way_in_any_order(
    scene: tuple[Size, list[Box]],
    candidates: list[Box],
    width: int,
    height: int,
    data: st.DataObject,
) -> None:
    image, faces = scene
    first = plan(
        image, width, height, Fit.COVER, G["face"], faces=faces, zoom=0.0, candidates=candidates
    )
    second = plan(
        image,
        width,
        height,
        Fit.COVER,
        G["face"],
        faces=data.draw(st.permutations(faces)),
        zoom=0.0,
        candidates=data.draw(st.permutations(candidates)),
    )
    assert first.crop == second.crop and first.steering == second.steering


# --- where faces cannot move the crop (detection is skipped) -------------------------------------


@st.composite
def scenes_and_boxes(draw: st.DrawFn) -> tuple[Size, list[Box], int | None, int | None]:
    """A scene with faces and a target; half the time the target has the image's own aspect
    ratio (the case where a zoom=0 crop has no room to move)."""
    image, faces = draw(images_with_faces())
    if draw(st.booleans()):
        scale = draw(st.floats(min_value=0.05, max_value=2.0))
        width = max(1, round(image.width * scale))
        height = max(1, round(image.height * scale))
        return image, faces, width, height
    return image, faces, draw(targets), draw(targets)


@settings(deadline=None, max_examples=400)
@given(scene=scenes_and_boxes(), fit=fits, zoom=zooms, candidates=st.booleans())
@example(
    scene=(Size(1536, 1536), [Box(100, 100, 300, 350)], 256, 256),
    fit=Fit.COVER,
    zoom=0.0,
    candidates=False,
)
def test_where_faces_cannot_move_the_crop_every_face_set_gives_the_plan_without_faces(
    scene: tuple[Size, list[Box], int | None, int | None],
    fit: Fit,
    zoom: float,
    candidates: bool,
) -> None:
    image, faces, width, height = scene
    if faces_can_move_crop(image, width, height, fit, zoom):
        return
    weak = faces[1:] if candidates else []
    found = plan(
        image, width, height, fit, G["face"], faces=faces[:1] or faces, zoom=zoom, candidates=weak
    )
    everyone = plan(image, width, height, fit, G["face"], faces=faces, zoom=zoom)
    nobody = plan(image, width, height, fit, G["face"], faces=[], zoom=zoom)
    for result in (found, everyone):
        assert (result.crop, result.resize, result.canvas, result.offset) == (
            nobody.crop,
            nobody.resize,
            nobody.canvas,
            nobody.offset,
        )


@pytest.mark.parametrize(
    ("image", "width", "height", "fit", "zoom", "moves"),
    [
        (Size(1536, 1536), 256, 256, Fit.COVER, 0.0, False),  # square to square: the whole image
        (Size(2000, 1000), 400, 200, Fit.CROP, 0.0, False),  # the image's own aspect ratio
        (Size(1536, 1536), 256, None, Fit.COVER, 0.0, False),  # one side: the whole image
        (Size(1000, 500), 200, 200, Fit.SCALE_DOWN, 0.0, False),  # not a cropping fit
        (Size(1000, 500), 200, 200, Fit.COVER, 0.0, True),  # a square slides along x
        (Size(1536, 1536), 256, 256, Fit.COVER, 0.5, True),  # zoom: the faces size the crop
        (Size(1536, 1536), 256, 255, Fit.COVER, 0.0, True),  # one row of room
    ],
)
def test_faces_can_move_the_crop_only_where_the_crop_has_room_or_zoom_sizes_it(
    image: Size, width: int | None, height: int | None, fit: Fit, zoom: float, moves: bool
) -> None:
    assert faces_can_move_crop(image, width, height, fit, zoom) is moves


def test_a_square_face_crop_of_a_square_image_is_the_same_wherever_the_face_is() -> None:
    image = Size(1536, 1536)
    crops = {
        plan(image, 256, 256, Fit.COVER, G["face"], faces=[face]).crop
        for face in (Box(0, 0, 50, 50), Box(1400, 1400, 1536, 1536), Box(700, 0, 800, 90))
    }
    assert crops == {Rect(0, 0, 1536, 1536)}
    moved = {
        plan(Size(1536, 1535), 256, 256, Fit.COVER, G["face"], faces=[face]).crop
        for face in (Box(0, 0, 50, 50), Box(1400, 1400, 1536, 1535))
    }
    assert len(moved) == 2  # one pixel less: the face places the crop
