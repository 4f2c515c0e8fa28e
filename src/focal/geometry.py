"""The plan of one request: from a source size, a requested width/height, a fit and a gravity to a
:class:`Plan` (the integer region to keep, the size to scale it to, the canvas it sits on). Pure:
no image library, no I/O.

The published face crop is focal.published_crop, where crops go is focal.placement, boxes and the
rounding rule focal.boxes; this module is the public import for all of them. docs/cropping.md
describes every decision made here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from focal.boxes import EPS, Rect, check_size, round_size
from focal.boxes import Box as Box
from focal.boxes import Size as Size
from focal.boxes import clip as clip
from focal.boxes import enclosing_rect as enclosing_rect
from focal.boxes import share_inside as share_inside
from focal.errors import expected
from focal.options import Fit, Gravity, GravityMode
from focal.placement import KEPT_SHARE as KEPT_SHARE
from focal.placement import Steering as Steering
from focal.placement import anchored, around, face_crop
from focal.placement import faces_that_fit as faces_that_fit
from focal.placement import largest_crop as largest_crop
from focal.placement import steer as steer
from focal.published_crop import INFERENCE_CAP as INFERENCE_CAP
from focal.published_crop import FaceRegion as FaceRegion
from focal.published_crop import check_zoom
from focal.published_crop import face_crop_size as face_crop_size
from focal.published_crop import face_region as face_region
from focal.published_crop import focal_point as focal_point
from focal.published_crop import inference_size as inference_size
from focal.published_crop import outer_box as outer_box

# Why gravity=face fell back to the centre, as the Focal-Gravity-Fallback header and the json
# "fallback" field say it (the one place these texts are written).
NO_FACE = "no face found"
NO_DETECTOR = "face detection is not available"
DETECTION_FAILED = "face detection failed: "
NO_FOCUS = "no focus point"
FACES_CANNOT_MOVE = "not detected: the crop is the whole image, so no face can move it"
# Why a face was left out of a face crop (the json "left_out" faces' reason)
LEFT_OUT = "smaller than the faces kept, and not all faces fit the output's aspect ratio"

CROPPING_FITS = frozenset({Fit.COVER, Fit.CROP, Fit.ASPECT_CROP})
NEVER_ENLARGE = frozenset({Fit.SCALE_DOWN, Fit.CROP, Fit.ASPECT_CROP})


class FacePolicy(StrEnum):
    """What a face crop does when the output's aspect ratio cannot hold every face."""

    FIT = "fit"  # keep the largest faces that fit (docs/cropping.md)
    PUBLISHED = "published"  # centre on all of them anyway, cutting some


@dataclass(frozen=True)
class Plan:
    """What to do with the source: keep ``crop``, scale it to ``resize``, place that at ``offset``
    on a ``canvas`` (``canvas == resize`` and ``offset == (0, 0)`` except for fit=pad)."""

    crop: Rect
    resize: Size
    canvas: Size
    offset: tuple[int, int]
    gravity_used: str
    fallback: str | None
    face: FaceRegion | None
    steering: Steering | None = None  # with weak candidates and a cropping fit (docs/cropping.md)


# --- output sizes -----------------------------------------------------------------------------


def _scaled(crop: Size, factor: float) -> Size:
    return Size(round_size(crop.width * factor), round_size(crop.height * factor))


def _one_side(crop: Size, width: int | None, height: int | None, fit: Fit) -> Size:
    """Only one side requested: scale the crop so that side matches (never up for scale-down
    and crop); the other side follows the crop's aspect ratio."""
    if width is not None:
        factor = width / crop.width
    elif height is not None:
        factor = height / crop.height
    else:
        return crop
    if (fit in NEVER_ENLARGE and factor > 1) or (fit is Fit.SCALE_UP and factor < 1):
        return crop
    size = _scaled(crop, factor)
    return Size(width or size.width, height or size.height)


def _inside(crop: Size, box: Size, fit: Fit) -> Size:
    """scale-down / contain / pad / scale-up: the largest size of the crop's aspect inside
    ``box`` (scale-down never enlarges, scale-up never shrinks)."""
    factor = min(box.width / crop.width, box.height / crop.height)
    if (fit is Fit.SCALE_DOWN and factor >= 1) or (fit is Fit.SCALE_UP and factor <= 1):
        return crop
    return _scaled(crop, factor)


def _cover_size(crop: Size, box: Size, fit: Fit) -> Size:
    """cover / crop / aspect-crop: the crop already has the box's aspect; crop and aspect-crop
    never enlarge it."""
    if fit in NEVER_ENLARGE and (crop.width < box.width or crop.height < box.height):
        return crop
    return box


def crop_target(source: Size, box: Size, fit: Fit) -> Size:
    """The box a cropping fit fills: the requested box, or for fit=crop the requested box
    limited to the source on each side (never enlarging), or for fit=aspect-crop the requested
    box shrunk, keeping its aspect ratio, until it fits inside the source (never enlarging)."""
    if fit is Fit.CROP:
        return Size(min(box.width, source.width), min(box.height, source.height))
    if fit is Fit.ASPECT_CROP:
        factor = min(1.0, source.width / box.width, source.height / box.height)
        return Size(round_size(box.width * factor), round_size(box.height * factor))
    return box


# --- the detection side of a face crop ----------------------------------------------------------

# "output" follows the output's scale (crop_detection_side), "cap" is always the detector's side.
# Redaction always detects at the detector's side.
FACE_CROP_SIDES = ("output", "cap")
FACE_CROP_SIDE = "cap"
MIN_DETECTION_SIDE = 256  # the smallest side a face crop detects at (detector_max_side's floor)
OUTPUT_SCALE_FACTOR = 2  # a face shown 16 px tall in the output is 32 px in the detection image


def crop_detection_side(source: Size, box: Size, fit: Fit, cap: int = INFERENCE_CAP) -> int:
    """The side a zoom=0 face crop of ``source`` to ``box`` (a cropping fit) detects at: twice
    the scale the output shows the source at, within MIN_DETECTION_SIDE and ``cap``
    (docs/detector.md). The crop is the largest one of the box's aspect ratio."""
    check_size(source)
    target = crop_target(source, box, fit)
    width, height = largest_crop(source.width, source.height, target.width / target.height)
    resize = _cover_size(Size(width, height), target, fit)
    scale = min(resize.width / width, resize.height / height)
    side = math.ceil(OUTPUT_SCALE_FACTOR * scale * max(source.width, source.height) - EPS)
    return max(min(side, cap), min(MIN_DETECTION_SIDE, cap))


def faces_can_move_crop(
    source: Size, width: int | None, height: int | None, fit: Fit, zoom: float
) -> bool:
    """Whether the faces found could change a gravity=face plan of ``source`` (``width`` and
    ``height`` already times dpr). At zoom=0 the face region is the whole image (published step
    5 caps the crop at the image), so the crop is the whole image, or, with a cropping fit and
    both sides, the largest crop of the box's aspect ratio, which the faces only place. When
    that crop is the whole image as well, no face can move it: detection would change no
    output pixel (docs/detector.md)."""
    if zoom != 0:
        return True
    if width is None or height is None or fit not in CROPPING_FITS:
        return False
    box = crop_target(source, Size(width, height), fit)
    crop = largest_crop(source.width, source.height, box.width / box.height)
    return crop != (source.width, source.height)


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Choice:
    mode: str
    point: tuple[float, float] | None
    fallback: str | None
    face: FaceRegion | None


def _choose(
    source: Size,
    gravity: Gravity,
    faces: Sequence[Box],
    zoom: float,
    focus: tuple[float, float] | None,
    cap: int,
) -> _Choice:
    mode = gravity.mode
    if mode == "face":
        region = face_region(faces, zoom, source, cap)
        if region is None:
            return _Choice("center", None, NO_FACE, None)
        return _Choice("face", region.focal, None, region)
    if mode == "auto":
        if focus is None:
            return _Choice("center", None, NO_FOCUS, None)
        return _Choice("auto", focus, None, None)
    if mode == "point":
        return _Choice("point", (gravity.x * source.width, gravity.y * source.height), None, None)
    if mode in {"center", "left", "right", "top", "bottom"}:
        return _Choice(mode, None, None, None)
    raise expected("gravity", "one of " + ", ".join(GravityMode), mode)


def plan(
    source: Size,
    width: int | None,
    height: int | None,
    fit: Fit,
    gravity: Gravity,
    *,
    faces: Sequence[Box] = (),
    zoom: float = 0.0,
    focus: tuple[float, float] | None = None,
    cap: int = INFERENCE_CAP,
    face_policy: FacePolicy = FacePolicy.FIT,
    candidates: Sequence[Box] = (),
) -> Plan:
    """The crop, resize and canvas for one request (``width``/``height`` already times dpr).

    ``face_policy``: with a cropping fit whose aspect ratio cannot hold every face, FIT keeps the
    largest faces that fit (:func:`faces_that_fit`), PUBLISHED centres on all of them anyway.
    ``candidates``: weak detections (below the face threshold). They never make a face crop nor
    count as faces; with gravity=face and a cropping fit they choose among the placements that
    keep the kept faces (:func:`steer`, docs/cropping.md)."""
    check_size(source)
    check_zoom(zoom)
    for name, value in (("width", width), ("height", height)):
        if value is not None and value < 1:
            raise expected(name, "an integer of at least 1", value)
    choice = _choose(source, gravity, faces, zoom, focus, cap)
    whole = Rect(0, 0, source.width, source.height)
    if width is not None and height is not None and fit in CROPPING_FITS:
        box = crop_target(source, Size(width, height), fit)
        if choice.face is not None and face_policy is FacePolicy.FIT:
            choice = _fit_faces(choice, faces, zoom, source, cap, box.width / box.height)
        if choice.face is not None:
            slide = face_policy is FacePolicy.FIT
            crop, steering = face_crop(
                source, box.width / box.height, choice.face, candidates, slide=slide
            )
        else:
            crop, steering = _cropping_region(source, box, choice, whole), None
        resize = _cover_size(crop.size, box, fit)
        return replace(_finish(crop, resize, resize, choice), steering=steering)
    crop = whole if choice.face is None else enclosing_rect(choice.face.crop, source)
    if width is None or height is None:
        resize = _one_side(crop.size, width, height, fit)
        return _finish(crop, resize, resize, choice)
    box = Size(width, height)
    if fit is Fit.SQUEEZE:
        return _finish(crop, box, box, choice)
    resize = _inside(crop.size, box, fit)
    return _finish(crop, resize, box if fit is Fit.PAD else resize, choice)


def _cropping_region(source: Size, box: Size, choice: _Choice, whole: Rect) -> Rect:
    aspect = box.width / box.height
    width, height = largest_crop(source.width, source.height, aspect)
    if choice.point is not None:
        return around(choice.point, whole, width, height)
    return anchored(choice.mode, whole, width, height)


def _fit_faces(
    choice: _Choice, faces: Sequence[Box], zoom: float, source: Size, cap: int, aspect: float
) -> _Choice:
    """The choice for the faces that fit ``aspect`` (the same choice when all of them do)."""
    clipped = [b for b in (clip(face, source) for face in faces) if b is not None]
    kept = faces_that_fit(clipped, source, aspect, zoom, cap)
    if len(kept) == len(clipped):
        return choice
    region = face_region(kept, zoom, source, cap)
    if region is None:  # unreachable: the largest face is always kept
        return choice
    left_out = tuple(face for face in clipped if face not in kept)
    region = replace(region, left_out=left_out)
    return replace(choice, point=region.focal, face=region)


def _finish(crop: Rect, resize: Size, canvas: Size, choice: _Choice) -> Plan:
    offset = ((canvas.width - resize.width) // 2, (canvas.height - resize.height) // 2)
    return Plan(crop, resize, canvas, offset, choice.mode, choice.fallback, choice.face)


def output_box(box: Box, plan: Plan) -> Box:
    """Where a box of the source (the plan's coordinates) lands on the output canvas."""
    crop, resize = plan.crop, plan.resize
    sx, sy = resize.width / crop.width, resize.height / crop.height
    ox, oy = plan.offset
    return Box(
        (box.left - crop.left) * sx + ox,
        (box.top - crop.top) * sy + oy,
        (box.right - crop.left) * sx + ox,
        (box.bottom - crop.top) * sy + oy,
    )
