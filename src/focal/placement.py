"""Where a crop goes: spans placed around a point and kept inside the image, face crops grown to
the output's aspect ratio (holding the faces, or the largest ones that fit), and steering among
equally good placements towards the most weak candidates (detections below the face threshold),
ties toward the published placement. docs/cropping.md describes every decision made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from focal.boxes import (
    EPS,
    Box,
    Rect,
    Size,
    ceil_pos,
    clip,
    enclosing_rect,
    floor_pos,
    round_pos,
    round_size,
    share_inside,
)
from focal.published_crop import INFERENCE_CAP, FaceRegion, face_region

# A face counts as kept by a crop with at least this share of its box inside: the tolerance of
# the crop-quality metric (benchmarks/crop_quality.py KEPT_SHARE), not a tuned value.
KEPT_SHARE = 0.9


@dataclass(frozen=True)
class Steering:
    """What weak candidates did to a face crop: how many there were (inside the image), how many
    the crop holds whole, and whether they moved it from the published placement."""

    candidates: int
    held: int
    moved: bool


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


def anchored(mode: str, region: Rect, width: int, height: int) -> Rect:
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


def around(point: tuple[float, float], region: Rect, width: int, height: int) -> Rect:
    """A ``width`` x ``height`` crop of ``region`` centred on ``point``, shifted inside."""
    left = region.left + place(point[0] - region.left, width, region.width)
    top = region.top + place(point[1] - region.top, height, region.height)
    return Rect(left, top, width, height)


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
    crop, _ = face_crop(image, aspect, region, slide=True)
    return _keeps_all(crop, faces)


def _keeps_all(crop: Rect, faces: Sequence[Box]) -> bool:
    return all(share_inside(face, crop) >= KEPT_SHARE - EPS for face in faces)


def keeping_starts(
    spans: Sequence[tuple[float, float, float]], length: int, limit: int
) -> tuple[int, int] | None:
    """The integer starts (lowest, highest) of a ``length`` span inside ``0..limit`` keeping, for
    each ``(lo, hi, need)``, at least ``need`` (a share, 0..1) of ``lo..hi`` inside; None when no
    start keeps them all."""
    low, high = 0.0, float(limit - length)
    for lo, hi, need in spans:
        size = hi - lo
        if need > 1 + EPS or need * size > length + EPS:
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


def face_crop(
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
