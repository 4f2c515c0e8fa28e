"""The boundary between the image pipeline and any face detector.

A detector takes a batch of RGB images (H x W x 3, uint8) and returns, for each image in order,
the faces found in that image's own pixel coordinates. Nothing here imports an inference runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from focal.geometry import INFERENCE_CAP

RGBImage = npt.NDArray[np.uint8]
Point = tuple[float, float]


@dataclass(frozen=True)
class Face:
    """One detected face: box (x1, y1, x2, y2; x2/y2 exclusive), confidence, five landmarks
    (left eye, right eye, nose, left mouth corner, right mouth corner)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[Point, ...] = ()

    def box_and_score(self) -> Face:
        """This face without its landmarks: what a cache may keep (docs/cropping.md, Privacy)."""
        return Face(box=self.box, score=self.score)

    def scaled(self, factor: float) -> Face:
        x1, y1, x2, y2 = self.box
        return Face(
            box=(x1 * factor, y1 * factor, x2 * factor, y2 * factor),
            score=self.score,
            landmarks=tuple((x * factor, y * factor) for x, y in self.landmarks),
        )


class Detector(Protocol):
    """Anything that finds faces in a batch of images."""

    @property
    def model_id(self) -> str:
        """Identifies the model and its settings (part of cache keys)."""
        ...

    @property
    def max_side(self) -> int:
        """The most pixels per side it runs on (``detector_max_side``; see
        :func:`inference_cap`). A wrapper answers its inner detector's."""
        ...

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        """Faces for each image, in the order given."""
        ...


@runtime_checkable
class CandidateDetector(Protocol):
    """What a detector that also hands over weak candidates has beside :class:`Detector`:
    detections of the same pass scoring below its face threshold. They are never faces: they
    only choose among the face crops that keep the faces (focal.geometry.steer,
    docs/cropping.md)."""

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        """(faces, candidates) for each image, in the order given."""
        ...


def face_rows(faces: Sequence[Face]) -> list[list[Any]]:
    """Faces as JSON-ready rows ``[[x1, y1, x2, y2], score]``: boxes and scores, no landmarks."""
    return [[list(face.box), face.score] for face in faces]


def faces_from_rows(rows: Any) -> list[Face]:
    """Faces from :func:`face_rows`' rows (ValueError, TypeError or IndexError for anything
    else)."""
    return [
        Face(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), score=float(score))
        for b, score in rows
    ]


def inference_cap(detector: Detector) -> int:
    """The most pixels per side this detector runs on: its ``max_side`` where it has one
    (``detector_max_side``: smaller is faster and finds fewer small faces, docs/detector.md),
    never more than the published cap (SPEC section 2, step 1). A detector written before
    ``max_side`` joined the protocol runs at the published cap."""
    side = getattr(detector, "max_side", INFERENCE_CAP)
    return min(INFERENCE_CAP, int(side))


def faces_and_candidates(
    detector: Detector, images: Sequence[RGBImage]
) -> list[tuple[list[Face], list[Face]]]:
    """(faces, weak candidates) for each image: the detector's own when it hands candidates
    over, else its faces and no candidates."""
    if isinstance(detector, CandidateDetector):
        return detector.detect_with_candidates(images)
    return [(faces, []) for faces in detector.detect(images)]


class DetectionFailed(Exception):
    """Raised by a detector that could not answer (deadline passed, worker died). The pipeline then
    falls back to centre gravity, marks the result degraded, and the server does not cache it."""
