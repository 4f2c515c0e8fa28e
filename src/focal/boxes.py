"""Pixel boxes and sizes, and the one rounding rule every geometry module uses.

Sizes round to the nearest integer (halves up) and are at least 1; positions round to the
nearest integer, halves down (an odd excess puts the extra pixel on the right or bottom). An
integer region holding a float box is rounded outwards, so it always holds the box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from focal.errors import ImageError

EPS = 1e-9  # absorbs float noise before floor/ceil (a computed 3.0000000001 is 3)


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


def round_size(value: float) -> int:
    """A size: nearest integer, halves up, at least 1."""
    return max(1, math.floor(value + 0.5 + EPS))


def floor_pos(value: float) -> int:
    """An edge rounded outwards on the left or top."""
    return math.floor(value + EPS)


def ceil_pos(value: float) -> int:
    return math.ceil(value - EPS)


def round_pos(value: float) -> int:
    """A position: nearest integer, halves down (an odd excess puts the extra pixel on the
    right or bottom, as ``excess // 2`` does)."""
    return math.ceil(value - 0.5 - EPS)


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


def share_inside(box: Box, rect: Rect) -> float:
    """The share of ``box``'s area inside ``rect`` (1 for an empty box)."""
    if box.area <= 0:
        return 1.0
    width = min(box.right, rect.right) - max(box.left, rect.left)
    height = min(box.bottom, rect.bottom) - max(box.top, rect.top)
    return max(width, 0.0) * max(height, 0.0) / box.area


def check_size(size: Size) -> None:
    """An image of at least 1 x 1 pixels (else an ImageError)."""
    if size.width < 1 or size.height < 1:
        raise ImageError(
            f"Expected an image of at least 1x1 pixels but received {size.width}x{size.height}"
        )
