"""Pure geometry: where to crop and what size to make the output. No image library, no I/O.

Two parts:

* The published face-cropping algorithm (``inference_size``, ``outer_box``, ``focal_point``,
  ``face_crop_size``, ``face_region``), computed exactly as published: on the inference image
  (at most ``cap`` pixels per side), then scaled back to the original.
* ``steer``: among the placements that keep what the published placement keeps, the one holding
  the most weak candidates (detections below the face threshold), ties toward the published one.
* ``plan``: turns a source size, a requested width/height, a fit and a gravity into a
  :class:`Plan` (the integer region to keep, the size to scale it to, the canvas it sits on).

Rounding, everywhere the same: sizes round to the nearest integer (halves up) and are at least 1;
positions round to the nearest integer, halves down (an odd excess puts the extra pixel on the
right or bottom). The integer crop of a face region is rounded outwards, so it always holds the
region. docs/cropping.md
describes every decision made here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from focal.options import Fit, Gravity

_EPS = 1e-9  # absorbs float noise before floor/ceil (a computed 3.0000000001 is 3)

INFERENCE_CAP = 1024  # SPEC §2 step 1: detection never runs on more than 1024 px per side
# Why gravity=face fell back to the centre, as the Focal-Gravity-Fallback header and the json
# "fallback" field say it (the one place these texts are written).
NO_FACE = "no face found"
NO_DETECTOR = "face detection is not available"
DETECTION_FAILED = "face detection failed: "
NO_FOCUS = "no focus point"

LEFT_OUT = "smaller than the faces kept, and not all faces fit the output's aspect ratio"
# A face counts as kept by a crop with at least this share of its box inside: the tolerance of
# the crop-quality metric (benchmarks/crop_quality.py KEPT_SHARE), not a tuned value.
KEPT_SHARE = 0.9

CROPPING_FITS = frozenset({Fit.COVER, Fit.CROP, Fit.ASPECT_CROP})
NEVER_ENLARGE = frozenset({Fit.SCALE_DOWN, Fit.CROP, Fit.ASPECT_CROP})


class FacePolicy(StrEnum):
    """What a face crop does when the output's aspect ratio cannot hold every face."""

    FIT = "fit"  # keep the largest faces that fit (docs/cropping.md)
    PUBLISHED = "published"  # centre on all of them anyway, cutting some


@dataclass(frozen=True)
class Size:
    width: int
    height: int


@dataclass(frozen=True)
class Box:
    """A box in pixel coordinates; ``right`` and ``bottom`` are exclusive."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def center(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2, (self.top + self.bottom) / 2)

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, factor: float) -> Box:
        return Box(self.left * factor, self.top * factor, self.right * factor, self.bottom * factor)


@dataclass(frozen=True)
class Rect:
    """An integer region of an image."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def size(self) -> Size:
        return Size(self.width, self.height)


@dataclass(frozen=True)
class FaceRegion:
    """The published face crop, in original pixels: the outer box of the faces, its centre (the
    focal point), and the crop placed centred on it and shifted to stay inside the image.
    ``inference`` and ``scale`` (original / inference, >= 1) say where detection ran."""

    outer: Box
    focal: tuple[float, float]
    crop: Box
    inference: Size
    scale: float
    left_out: tuple[Box, ...] = ()  # faces that could not fit the output's aspect with the rest
    faces: tuple[Box, ...] = ()  # the faces the region is computed from (clipped to the image)


@dataclass(frozen=True)
class Steering:
    """What weak candidates did to a face crop: how many there were (inside the image), how many
    the crop holds whole, and whether they moved it from the published placement."""

    candidates: int
    held: int
    moved: bool


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


# --- rounding -------------------------------------------------------------------------------


def round_size(value: float) -> int:
    """A size: nearest integer, halves up, at least 1."""
    return max(1, math.floor(value + 0.5 + _EPS))


def floor_pos(value: float) -> int:
    """An edge rounded outwards on the left or top."""
    return math.floor(value + _EPS)


def ceil_pos(value: float) -> int:
    return math.ceil(value - _EPS)


def round_pos(value: float) -> int:
    """A position: nearest integer, halves down (an odd excess puts the extra pixel on the
    right or bottom, as ``excess // 2`` does)."""
    return math.ceil(value - 0.5 - _EPS)


# --- the published algorithm (SPEC §2) --------------------------------------------------------


def inference_size(source: Size, cap: int = INFERENCE_CAP) -> tuple[Size, float]:
    """Step 1: the size detection runs at, and the factor original / inference (>= 1).

    A source at most ``cap`` on both sides is used as is; otherwise it is scaled to fit
    ``cap`` x ``cap`` keeping its aspect ratio (the factor is the long side over ``cap``)."""
    _check_size(source)
    longest = max(source.width, source.height)
    if longest <= cap:
        return source, 1.0
    factor = longest / cap
    size = Size(round_size(source.width / factor), round_size(source.height / factor))
    return size, factor


def outer_box(boxes: Sequence[Box]) -> Box | None:
    """Step 3: the smallest box holding every box (None for no boxes)."""
    if not boxes:
        return None
    return Box(
        left=min(b.left for b in boxes),
        top=min(b.top for b in boxes),
        right=max(b.right for b in boxes),
        bottom=max(b.bottom for b in boxes),
    )


def focal_point(box: Box) -> tuple[float, float]:
    """Step 4: the centre of the outer box."""
    return box.center


def face_crop_size(outer: Box, zoom: float, bounds: Size) -> tuple[float, float]:
    """Step 5, on the inference image: ``(1 / zoom) * d`` per side, each side capped by
    ``bounds`` (``min``). ``zoom == 0`` keeps as much as possible: the bounds themselves."""
    _check_zoom(zoom)
    if zoom == 0:
        return float(bounds.width), float(bounds.height)
    return (
        min(outer.width / zoom, float(bounds.width)),
        min(outer.height / zoom, float(bounds.height)),
    )


def face_region(
    faces: Sequence[Box], zoom: float, image: Size, cap: int = INFERENCE_CAP
) -> FaceRegion | None:
    """Steps 1, 3, 4, 5 and 6 for faces given in original pixels (None when there are none).

    Faces are first clipped to the image (detectors may return boxes that overhang it); a face
    with nothing left inside the image is dropped. The crop size is computed on the inference
    image and scaled back; a side capped at the inference image's side becomes the original
    image's side. The crop is centred on the focal point and shifted to stay inside the image."""
    clipped = [b for b in (clip(face, image) for face in faces) if b is not None]
    if not clipped:
        return None
    inference, factor = inference_size(image, cap)
    # Scaling commutes with min/max: the outer box of the scaled faces is the scaled outer box.
    # It is kept in original pixels, free of the float noise of scaling there and back.
    outer = outer_box(clipped)
    if outer is None:  # unreachable: clipped is not empty
        return None
    crop_w, crop_h = face_crop_size(outer.scaled(1 / factor), zoom, inference)
    width = _scale_back(crop_w, inference.width, image.width, factor)
    height = _scale_back(crop_h, inference.height, image.height, factor)
    focal = focal_point(outer)
    left = _shift_inside(focal[0] - width / 2, width, image.width)
    top = _shift_inside(focal[1] - height / 2, height, image.height)
    crop = Box(left, top, left + width, top + height)
    return FaceRegion(
        outer=outer,
        focal=focal,
        crop=crop,
        inference=inference,
        scale=factor,
        faces=tuple(clipped),
    )


def _scale_back(side: float, inference_side: int, image_side: int, factor: float) -> float:
    if side >= inference_side:
        return float(image_side)
    return min(side * factor, float(image_side))


def _shift_inside(start: float, length: float, limit: int) -> float:
    return min(max(start, 0.0), limit - length)


def clip(box: Box, image: Size) -> Box | None:
    """The part of ``box`` inside the image (None when nothing is)."""
    left, top = max(box.left, 0.0), max(box.top, 0.0)
    right, bottom = min(box.right, float(image.width)), min(box.bottom, float(image.height))
    if right <= left or bottom <= top:
        return None
    return Box(left, top, right, bottom)


def enclosing_rect(box: Box, image: Size) -> Rect:
    """The integer region holding ``box`` (rounded outwards), inside ``image``."""
    left = min(max(floor_pos(box.left), 0), image.width - 1)
    top = min(max(floor_pos(box.top), 0), image.height - 1)
    right = max(min(ceil_pos(box.right), image.width), left + 1)
    bottom = max(min(ceil_pos(box.bottom), image.height), top + 1)
    return Rect(left, top, right - left, bottom - top)


# --- crop sizes and placement -----------------------------------------------------------------


def largest_crop(width: int, height: int, aspect: float) -> tuple[int, int]:
    """The largest ``aspect`` (width / height) crop of a ``width`` x ``height`` region."""
    if width / height > aspect:
        return min(round_size(height * aspect), width), height
    return width, min(round_size(width / aspect), height)


def grow_to_aspect(width: int, height: int, aspect: float, bounds: Size) -> tuple[int, int]:
    """The smallest ``aspect`` crop holding ``width`` x ``height`` (its short side grown), or,
    when ``bounds`` cannot hold that, the largest ``aspect`` crop of ``bounds``."""
    if width / height < aspect:
        if height * aspect <= bounds.width:
            return min(round_size(height * aspect), bounds.width), height
    elif width / aspect <= bounds.height:
        return width, min(round_size(width / aspect), bounds.height)
    return largest_crop(bounds.width, bounds.height, aspect)


def place(center: float, length: int, limit: int, keep: Sequence[tuple[int, int]] = ()) -> int:
    """Start of a ``length`` span centred on ``center`` and inside ``0..limit``.

    ``keep`` lists spans (start, end) to hold, best first: the first one that fits in
    ``length`` is kept inside the span (the span moves as little as needed)."""
    start = round_pos(center - length / 2)
    for lo, hi in keep:
        if hi - lo <= length:
            start = min(max(start, hi - length), lo)
            break
    return min(max(start, 0), limit - length)


def keep_range(
    center: float, length: int, limit: int, keep: Sequence[tuple[int, int]] = ()
) -> tuple[int, int]:
    """The starts (lowest, highest) of a ``length`` span inside ``0..limit`` that hold what
    :func:`place` holds: the first span of ``keep`` that fits. Only :func:`place`'s own start
    when no span of ``keep`` fits (nothing is held, so nothing frees the placement)."""
    for lo, hi in keep:
        if hi - lo <= length:
            low, high = max(hi - length, 0), min(lo, limit - length)
            if low <= high:
                return low, high
            break
    start = place(center, length, limit, keep)
    return start, start


def steer(
    start: int, low: int, high: int, length: int, candidates: Sequence[tuple[float, float]]
) -> tuple[int, int]:
    """The start within ``low..high`` of a ``length`` span holding the most ``candidates`` (spans
    lo, hi) whole; ties go to the start closest to ``start``, then to the lower one. Returns
    (start, candidates held). With no candidate inside any such span, ``start`` itself."""
    bounds = []
    for lo, hi in candidates:
        first, last = ceil_pos(hi) - length, floor_pos(lo)  # starts holding [lo, hi) whole
        if first <= last and first <= high and last >= low:
            bounds.append((max(first, low), min(last, high)))

    def held(at: int) -> int:
        return sum(1 for first, last in bounds if first <= at <= last)

    options = {start, *(b for pair in bounds for b in pair)}
    best = min(options, key=lambda at: (-held(at), abs(at - start), at))
    return best, held(best)


def _anchored(mode: str, region: Rect, width: int, height: int) -> Rect:
    """A ``width`` x ``height`` crop of ``region`` for gravity left/right/top/bottom/center."""
    left = region.left + (region.width - width) // 2
    top = region.top + (region.height - height) // 2
    if mode == "left":
        left = region.left
    elif mode == "right":
        left = region.right - width
    elif mode == "top":
        top = region.top
    elif mode == "bottom":
        top = region.bottom - height
    return Rect(left, top, width, height)


def _around(point: tuple[float, float], region: Rect, width: int, height: int) -> Rect:
    """A ``width`` x ``height`` crop of ``region`` centred on ``point``, shifted inside."""
    left = region.left + place(point[0] - region.left, width, region.width)
    top = region.top + place(point[1] - region.top, height, region.height)
    return Rect(left, top, width, height)


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

MIN_DETECTION_SIDE = 256  # the smallest side a face crop detects at (detector_max_side's floor)
OUTPUT_SCALE_FACTOR = 2  # a face shown 16 px tall in the output is 32 px in the detection image


def crop_detection_side(source: Size, box: Size, fit: Fit, cap: int = INFERENCE_CAP) -> int:
    """The side a zoom=0 face crop of ``source`` to ``box`` (a cropping fit) detects at: twice
    the scale the output shows the source at, within MIN_DETECTION_SIDE and ``cap``
    (docs/detector.md). The crop is the largest one of the box's aspect ratio."""
    _check_size(source)
    target = crop_target(source, box, fit)
    width, height = largest_crop(source.width, source.height, target.width / target.height)
    resize = _cover_size(Size(width, height), target, fit)
    scale = min(resize.width / width, resize.height / height)
    side = math.ceil(OUTPUT_SCALE_FACTOR * scale * max(source.width, source.height) - _EPS)
    return max(min(side, cap), min(MIN_DETECTION_SIDE, cap))


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
    raise ValueError(f"unknown gravity mode {mode!r}")


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
    _check_size(source)
    _check_zoom(zoom)
    for name, value in (("width", width), ("height", height)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    choice = _choose(source, gravity, faces, zoom, focus, cap)
    whole = Rect(0, 0, source.width, source.height)
    if width is not None and height is not None and fit in CROPPING_FITS:
        box = crop_target(source, Size(width, height), fit)
        if choice.face is not None and face_policy is FacePolicy.FIT:
            choice = _fit_faces(choice, faces, zoom, source, cap, box.width / box.height)
        if choice.face is not None:
            slide = face_policy is FacePolicy.FIT
            crop, steering = _face_crop(
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
        return _around(choice.point, whole, width, height)
    return _anchored(choice.mode, whole, width, height)


def faces_that_fit(
    faces: Sequence[Box],
    image: Size,
    aspect: float,
    zoom: float = 0.0,
    cap: int = INFERENCE_CAP,
) -> tuple[Box, ...]:
    """The faces a crop of ``aspect`` keeps. Every face when the published placement (the crop
    centred on the outer box of all of them) keeps each at least KEPT_SHARE inside, even if the
    outer box overflows the crop by a sliver; otherwise the smallest face is dropped until the
    crop placed on the rest keeps each of them so. Never fewer than the largest face. Ties in size
    are broken by position, so the answer does not depend on the order of the detections."""
    kept = sorted(faces, key=lambda b: (-b.area, b.left, b.top, b.right, b.bottom))
    while len(kept) > 1 and not _all_kept(kept, image, aspect, zoom, cap):
        kept.pop()
    return tuple(kept)


def _all_kept(faces: Sequence[Box], image: Size, aspect: float, zoom: float, cap: int) -> bool:
    """Whether the crop placed on ``faces`` keeps each at least KEPT_SHARE inside."""
    region = face_region(faces, zoom, image, cap)
    if region is None:
        return True
    crop, _ = _face_crop(image, aspect, region, slide=True)
    return _keeps_all(crop, faces)


def _keeps_all(crop: Rect, faces: Sequence[Box]) -> bool:
    return all(share_inside(face, crop) >= KEPT_SHARE - _EPS for face in faces)


def keeping_starts(
    spans: Sequence[tuple[float, float, float]], length: int, limit: int
) -> tuple[int, int] | None:
    """The integer starts (lowest, highest) of a ``length`` span inside ``0..limit`` keeping, for
    each ``(lo, hi, need)``, at least ``need`` (a share, 0..1) of ``lo..hi`` inside; None when no
    start keeps them all."""
    low, high = 0.0, float(limit - length)
    for lo, hi, need in spans:
        size = hi - lo
        if need > 1 + _EPS or need * size > length + _EPS:
            return None
        low, high = max(low, lo + need * size - length), min(high, hi - need * size)
    first, last = ceil_pos(low), floor_pos(high)
    return (first, last) if first <= last else None


def _slide(crop: Rect, faces: Sequence[Box], source: Size) -> Rect:
    """The crop moved to the nearest start keeping every face at least KEPT_SHARE inside: along
    x (its rows kept), else along y; the crop itself when neither can."""
    for along_x in (True, False):
        spans = []
        for face in faces:
            other = _overlap_share(face, crop, not along_x)
            if other <= 0:
                break
            lo, hi = (face.left, face.right) if along_x else (face.top, face.bottom)
            spans.append((lo, hi, KEPT_SHARE / other))
        else:
            length = crop.width if along_x else crop.height
            limit = source.width if along_x else source.height
            found = keeping_starts(spans, length, limit)
            if found is not None:
                start = crop.left if along_x else crop.top
                nearest = min(max(start, found[0]), found[1])
                if along_x:
                    return Rect(nearest, crop.top, crop.width, crop.height)
                return Rect(crop.left, nearest, crop.width, crop.height)
    return crop


def _overlap_share(box: Box, crop: Rect, along_x: bool) -> float:
    """The share of ``box``'s extent along one axis inside the crop's extent along it."""
    lo, hi = (box.left, box.right) if along_x else (box.top, box.bottom)
    start, end = (crop.left, crop.right) if along_x else (crop.top, crop.bottom)
    if hi <= lo:
        return 1.0
    return max(min(hi, end) - max(lo, start), 0.0) / (hi - lo)


def share_inside(box: Box, rect: Rect) -> float:
    """The share of ``box``'s area inside ``rect`` (1 for an empty box)."""
    if box.area <= 0:
        return 1.0
    width = min(box.right, rect.right) - max(box.left, rect.left)
    height = min(box.bottom, rect.bottom) - max(box.top, rect.top)
    return max(width, 0.0) * max(height, 0.0) / box.area


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


def _face_crop(
    source: Size,
    aspect: float,
    face: FaceRegion,
    candidates: Sequence[Box] = (),
    *,
    slide: bool = False,
) -> tuple[Rect, Steering | None]:
    """The face region grown to ``aspect`` around the focal point, inside the image; kept whole
    when it fits, else the faces' outer box is kept when that fits (else the faces are cut).
    ``slide``: a crop that keeps some face less than KEPT_SHARE inside moves to the nearest start
    that keeps every face so, where there is one (:func:`_slide`); candidates do not move it then.

    With candidates: the crop slides, first along x (its top where the published placement puts
    it), then along y, within the starts that keep the same span, to hold the most candidates
    whole (:func:`steer`). Without candidates, the published placement itself."""
    region = enclosing_rect(face.crop, source)
    outer = enclosing_rect(face.outer, source)
    width, height = grow_to_aspect(region.width, region.height, aspect, source)
    fx, fy = face.focal
    keep_x, keep_y = [_span_x(region), _span_x(outer)], [_span_y(region), _span_y(outer)]
    left = place(fx, width, source.width, keep_x)
    top = place(fy, height, source.height, keep_y)
    inside = [b for b in (clip(c, source) for c in candidates) if b is not None]
    if slide and not _keeps_all(Rect(left, top, width, height), face.faces):
        crop = _slide(Rect(left, top, width, height), face.faces, source)
        if (crop.left, crop.top) != (left, top):
            held = sum(1 for c in inside if _holds_rect(crop, c))
            return crop, Steering(len(inside), held, False) if inside else None
    if not inside:
        return Rect(left, top, width, height), None
    published = (left, top)
    # faces left out that the published crop holds all the same stay held (candidates never
    # cost a face the crop had)
    extra = [
        b
        for b in face.left_out
        if _holds(left, width, b.left, b.right) and _holds(top, height, b.top, b.bottom)
    ]
    low, high = keep_range(fx, width, source.width, keep_x)
    low, high = _also_holding(low, high, width, [(b.left, b.right) for b in extra])
    rows = [(c.left, c.right) for c in inside if _holds(top, height, c.top, c.bottom)]
    left, _ = steer(left, low, high, width, rows)
    low, high = keep_range(fy, height, source.height, keep_y)
    low, high = _also_holding(low, high, height, [(b.top, b.bottom) for b in extra])
    cols = [(c.top, c.bottom) for c in inside if _holds(left, width, c.left, c.right)]
    top, held = steer(top, low, high, height, cols)
    steering = Steering(len(inside), held, (left, top) != published)
    return Rect(left, top, width, height), steering


def _also_holding(
    low: int, high: int, length: int, spans: Sequence[tuple[float, float]]
) -> tuple[int, int]:
    """The starts within ``low..high`` of a ``length`` span that also hold every span whole
    (``spans`` are held by some start of the range, so the result is never empty)."""
    for lo, hi in spans:
        low, high = max(low, ceil_pos(hi) - length), min(high, floor_pos(lo))
    return low, high


def _holds_rect(rect: Rect, box: Box) -> bool:
    return _holds(rect.left, rect.width, box.left, box.right) and _holds(
        rect.top, rect.height, box.top, box.bottom
    )


def _holds(start: int, length: int, lo: float, hi: float) -> bool:
    """Whether the span ``start .. start + length`` holds ``lo .. hi`` whole (integer pixels)."""
    return start <= floor_pos(lo) and ceil_pos(hi) <= start + length


def _span_x(rect: Rect) -> tuple[int, int]:
    return rect.left, rect.right


def _span_y(rect: Rect) -> tuple[int, int]:
    return rect.top, rect.bottom


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


def _check_size(size: Size) -> None:
    if size.width < 1 or size.height < 1:
        raise ValueError(f"image size must be at least 1x1, got {size.width}x{size.height}")


def _check_zoom(zoom: float) -> None:
    if not 0 <= zoom <= 1:
        raise ValueError(f"zoom must be within 0..1, got {zoom}")
