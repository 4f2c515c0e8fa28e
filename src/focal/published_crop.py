"""The published face-crop algorithm (SPEC section 2), computed exactly as published: on the
inference image (at most ``cap`` pixels per side), then scaled back to the original.

``inference_size`` (step 1), ``outer_box`` (step 3), ``focal_point`` (step 4),
``face_crop_size`` (step 5) and ``face_region`` (steps 1 to 6 together). docs/cropping.md
describes every decision made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from focal.boxes import Box, Size, check_size, clip, round_size
from focal.errors import expected

INFERENCE_CAP = 1024  # SPEC §2 step 1: detection never runs on more than 1024 px per side


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


def inference_size(source: Size, cap: int = INFERENCE_CAP) -> tuple[Size, float]:
    """Step 1: the size detection runs at, and the factor original / inference (>= 1).

    A source at most ``cap`` on both sides is used as is; otherwise it is scaled to fit
    ``cap`` x ``cap`` keeping its aspect ratio (the factor is the long side over ``cap``)."""
    check_size(source)
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
    check_zoom(zoom)
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


def check_zoom(zoom: float) -> None:
    """A zoom from 0 to 1 (else the OptionError naming zoom)."""
    if not 0 <= zoom <= 1:
        raise expected("zoom", "a number from 0 to 1", zoom)
