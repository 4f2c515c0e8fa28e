"""The RetinaFace detector on a CPU inference session, and detection on image files.

    RetinaFace     focal.detection.Detector over a focal.face.retinaface.Session: images fitted
                   to the inference cap (libvips), pre-processed, run, post-processed, mapped
                   back to each image's own pixels
    detect_file    decode an image file at the cap (EXIF orientation applied) and detect

Sessions come from focal.face.sessions, which chooses the runtime; this module imports none.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from focal.detection import Face, RGBImage
from focal.face import retinaface as rf
from focal.face.retinaface import Detections, Session, Settings
from focal.geometry import INFERENCE_CAP

DEFAULT_SETTINGS = Settings()
# Most input pixels in one run of the network. A CPU runtime keeps the activations of the largest
# run it has seen (ONNX Runtime's arena: about 200 MiB for one 1024 x 1024 image, 1.9 GiB of
# worker memory for eight), and on a CPU a larger batch is not faster, so a batch is run in
# pieces of at most this many pixels: one image at the cap, several smaller ones together.
MAX_RUN_PIXELS = INFERENCE_CAP * INFERENCE_CAP


def run_in_pieces(session: Session, batch: Any, max_pixels: int = MAX_RUN_PIXELS) -> rf.RawOutputs:
    """``session.run(batch)``, in pieces of at most ``max_pixels`` input pixels (at least one
    image each), joined back in batch order."""
    per_image = int(batch.shape[1]) * int(batch.shape[2])
    step = max(1, max_pixels // max(1, per_image))
    if len(batch) <= step:
        return session.run(batch)
    parts = [session.run(batch[start : start + step]) for start in range(0, len(batch), step)]
    return rf.RawOutputs(
        boxes=np.concatenate([part.boxes for part in parts]),
        landmarks=np.concatenate([part.landmarks for part in parts]),
        scores=np.concatenate([part.scores for part in parts]),
    )


def _from_numpy(image: RGBImage) -> pyvips.Image:
    height, width = image.shape[:2]
    data = np.ascontiguousarray(image[..., :3])
    return pyvips.Image.new_from_memory(data.tobytes(), width, height, 3, "uchar")


def _to_numpy(image: pyvips.Image) -> RGBImage:
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb").cast("uchar")
    image = image[:3] if image.bands > 3 else image
    shape = (image.height, image.width, image.bands)
    array: RGBImage = np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=shape)
    return array


def fit_to_cap(image: RGBImage, cap: int = INFERENCE_CAP) -> RGBImage:
    """The image itself when both sides fit the cap, else a copy scaled to fit cap x cap."""
    height, width = image.shape[:2]
    new_width, new_height = rf.inference_size(width, height, cap)
    if (new_width, new_height) == (width, height):
        return image
    resized = _from_numpy(image).resize(new_width / width, vscale=new_height / height)
    return _to_numpy(resized)


class RetinaFace:
    """The RetinaFace detector (focal.detection.Detector) over an inference session."""

    def __init__(
        self, session: Session, model_sha256: str, settings: Settings = DEFAULT_SETTINGS
    ) -> None:
        self.session = session
        self.settings = settings
        self._model_sha256 = model_sha256

    @property
    def max_side(self) -> int:
        """The most pixels per side detection runs on (focal.detection.inference_cap)."""
        return self.settings.max_side

    @property
    def model_id(self) -> str:
        precision = self.session.precision
        return rf.model_id(
            self._model_sha256, self.settings, "" if precision == "fp32" else precision
        )

    def detect_prepared(
        self, images: Sequence[RGBImage], threshold: float | None = None
    ) -> list[Detections]:
        """Detections for images already within the cap, in their own pixel coordinates, scoring
        above ``threshold`` (default: the settings' score threshold). With ``settings.flip`` the
        batch also holds each image mirrored, and both passes are suppressed together."""
        if not images:
            return []
        batch = rf.preprocess(images)
        count, width = len(images), batch.shape[2]
        if self.settings.flip:
            batch = np.concatenate([batch, np.ascontiguousarray(batch[:, :, ::-1])])
        outputs = run_in_pieces(self.session, batch)
        priors = rf.anchors(batch.shape[1], batch.shape[2])
        return [
            rf.postprocess(
                outputs,
                i,
                priors,
                self.settings,
                threshold,
                mirrored=count + i if self.settings.flip else None,
                width=width,
            )
            for i in range(count)
        ]

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        """Faces for each RGB image (H x W x 3 uint8), in that image's own coordinates."""
        limit = self.settings.score_threshold
        return [faces for faces, _ in self._detect(images, limit, limit)]

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        """For each image, from one pass, what a face crop uses: its faces (scoring above
        ``settings.crop_threshold``) and its weak candidates (above
        ``settings.candidate_threshold``, not above the crop threshold; what NMS leaves of them
        once the faces are kept, which it never changes: a lower score never suppresses a higher
        one)."""
        s = self.settings
        return self._detect(images, min(s.candidate_threshold, s.crop_threshold), s.crop_threshold)

    def _detect(
        self, images: Sequence[RGBImage], floor: float, face_threshold: float
    ) -> list[tuple[list[Face], list[Face]]]:
        """(faces above face_threshold, the rest above floor) for each image."""
        prepared = [fit_to_cap(image, self.settings.max_side) for image in images]
        found = self.detect_prepared(prepared, floor)
        results = []
        for d, i, p in zip(found, images, prepared, strict=True):
            faces = rf.to_faces(d, i.shape[1] / p.shape[1], i.shape[0] / p.shape[0])
            strong = [f for f in faces if f.score > face_threshold]
            results.append((strong, [f for f in faces if f.score <= face_threshold]))
        return results


@dataclass(frozen=True)
class FileDetection:
    """Faces of one image file, in its EXIF-oriented pixel coordinates."""

    width: int
    height: int
    inference_width: int
    inference_height: int
    faces: list[Face]
    timings: dict[str, float]  # ms: decode, detect


def oriented_size(path: Path) -> tuple[int, int]:
    header = pyvips.Image.new_from_file(str(path))
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):
        return header.height, header.width
    return header.width, header.height


def load_inference_image(path: Path, cap: int = INFERENCE_CAP) -> tuple[RGBImage, tuple[int, int]]:
    """The EXIF-oriented image, shrunk to fit cap x cap (never enlarged), and its full size."""
    width, height = oriented_size(path)
    image = pyvips.Image.thumbnail(str(path), cap, height=cap, size="down")
    return _to_numpy(image), (width, height)


def detect_file(detector: RetinaFace, path: Path) -> FileDetection:
    """Decode (libvips thumbnail at the cap, EXIF orientation applied) and detect."""
    start = time.perf_counter()
    image, (width, height) = load_inference_image(path)
    decoded = time.perf_counter()
    found = detector.detect_prepared([image])[0]
    done = time.perf_counter()
    scale_x, scale_y = width / image.shape[1], height / image.shape[0]
    return FileDetection(
        width=width,
        height=height,
        inference_width=int(image.shape[1]),
        inference_height=int(image.shape[0]),
        faces=rf.to_faces(found, scale_x, scale_y),
        timings={"decode": (decoded - start) * 1000, "detect": (done - decoded) * 1000},
    )


def describe(faces: Sequence[Face]) -> list[dict[str, Any]]:
    """Faces as JSON-ready dicts (box, score, named landmarks)."""
    names = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    return [
        {
            "box": [round(v, 2) for v in face.box],
            "score": round(face.score, 4),
            "landmarks": {
                n: [round(x, 2), round(y, 2)]
                for n, (x, y) in zip(names, face.landmarks, strict=False)
            },
        }
        for face in faces
    ]
