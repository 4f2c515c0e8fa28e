"""Detector factories for pool tests, run inside worker processes ("tests.fake_detectors:NAME").

Each fake reads a marker from an image's first pixel (image[0, 0, 0]) and answers one face whose
box records that marker and the size of the batch the image arrived in:
box = (marker, batch_size, marker + 1, batch_size + 1).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from focal.detection import Face, RGBImage
from focal.errors import ModelMissingError

SLOW = 1  # sleepy: sleep before answering
FAIL = 13  # faulty: raise for this image
HELD: list[np.ndarray] = []  # hoarder: memory kept for the life of the process


def marker(image: RGBImage) -> int:
    return int(image[0, 0, 0])


def image_with(value: int, size: int = 8) -> RGBImage:
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[0, 0, 0] = value
    return image


def answer(images: Sequence[RGBImage]) -> list[list[Face]]:
    n = float(len(images))
    return [[Face(box=(marker(i), n, marker(i) + 1.0, n + 1.0), score=0.9)] for i in images]


class Echo:
    model_id = "fake-echo"

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        return answer(images)


class Sleepy(Echo):
    model_id = "fake-sleepy"

    def __init__(self, delay_s: float, signal_dir: str | None) -> None:
        self.delay_s = delay_s
        self.signal_dir = signal_dir

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        if any(marker(i) == SLOW for i in images):
            if self.signal_dir is not None:
                Path(self.signal_dir, f"started-{os.getpid()}").touch()
            time.sleep(self.delay_s)
        return answer(images)


class Faulty(Echo):
    model_id = "fake-faulty"

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        if any(marker(i) == FAIL for i in images):
            raise ValueError("this image cannot be read")
        return answer(images)


class Hoarder(Echo):
    model_id = "fake-hoarder"

    def __init__(self, mb_per_unit: int) -> None:
        self.mb_per_unit = mb_per_unit

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        for image in images:
            HELD.append(np.ones(marker(image) * self.mb_per_unit << 20, dtype=np.uint8))
        return answer(images)


class Weak(Echo):
    """Echo that also answers one weak candidate per image: box (marker, 0, marker + 2, 2)."""

    model_id = "fake-weak"

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        weak = [[Face(box=(marker(i), 0.0, marker(i) + 2.0, 2.0), score=0.1)] for i in images]
        return list(zip(answer(images), weak, strict=True))


class Sided(Echo):
    model_id = "fake-sided"

    def __init__(self, max_side: int) -> None:
        self.max_side = max_side


def sided(max_side: int = 640) -> Sided:
    return Sided(max_side)


def weak() -> Weak:
    return Weak()


def echo() -> Echo:
    return Echo()


def sleepy(delay_s: float = 5.0, signal_dir: str | None = None) -> Sleepy:
    return Sleepy(delay_s, signal_dir)


def faulty() -> Faulty:
    return Faulty()


def hoarder(mb_per_unit: int = 10) -> Hoarder:
    return Hoarder(mb_per_unit)


def missing() -> Echo:
    raise ModelMissingError("the face model is not installed: run `focal models fetch`")
