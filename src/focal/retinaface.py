"""RetinaFace (MobileNetV2): pre-processing, anchor decoding and NMS in numpy, and the detector.

    preprocess   RGB uint8 images -> one float32 NHWC batch (0..255), padded to multiples of 32
    infer        the converted network (focal.runtime) -> per-anchor deltas and scores
    postprocess  anchors + deltas -> boxes and landmarks; score threshold; NMS

Inputs larger than 1024 pixels on a side are first scaled to fit 1024 x 1024 (SPEC section 2)
and the faces mapped back to the input's coordinates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyvips

from focal import geometry, models
from focal import runtime as rt
from focal.detection import Detector, Face, RGBImage

FloatArray = npt.NDArray[np.float32]
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
MULTIPLE = 32
MAX_SIDE = 1024


@dataclass(frozen=True)
class Settings:
    """Detection thresholds: a face scores above score_threshold; overlapping boxes (IoU above
    nms_iou) keep only the highest-scoring one."""

    score_threshold: float = 0.5
    nms_iou: float = 0.4


@dataclass(frozen=True)
class Detections:
    """The faces of one padded inference image, in its pixel coordinates."""

    boxes: FloatArray  # [n, 4] x1, y1, x2, y2
    landmarks: FloatArray  # [n, 5, 2]
    scores: FloatArray  # [n]


def padded_size(height: int, width: int, multiple: int = MULTIPLE) -> tuple[int, int]:
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def preprocess(images: Sequence[RGBImage]) -> FloatArray:
    """One NHWC float32 batch, every image at the top-left of a zero canvas whose sides are the
    batch's largest, rounded up to a multiple of 32."""
    height, width = padded_size(max(i.shape[0] for i in images), max(i.shape[1] for i in images))
    batch = np.zeros((len(images), height, width, 3), dtype=np.float32)
    for index, image in enumerate(images):
        batch[index, : image.shape[0], : image.shape[1]] = image[..., :3]
    return batch


def anchors(height: int, width: int) -> FloatArray:
    """Anchor boxes [n, 4] as (cx, cy, size, size) in pixels, in the network's output order:
    level by level (strides 8, 16, 32), row by row, two sizes per cell."""
    levels = []
    for sizes, step in zip(MIN_SIZES, STEPS, strict=True):
        rows, cols = -(-height // step), -(-width // step)
        cy, cx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres = np.stack([(cx + 0.5) * step, (cy + 0.5) * step], axis=-1).reshape(-1, 1, 2)
        side = np.asarray(sizes, dtype=np.float64).reshape(1, -1, 1)
        grid = np.broadcast_to(centres, (centres.shape[0], len(sizes), 2))
        wh = np.broadcast_to(side, (centres.shape[0], len(sizes), 2))
        levels.append(np.concatenate([grid, wh], axis=-1).reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def decode_boxes(deltas: FloatArray, priors: FloatArray) -> FloatArray:
    """Box deltas (dx, dy, dw, dh) against anchors (cx, cy, w, h) -> x1, y1, x2, y2."""
    centres = priors[:, :2] + deltas[:, :2] * VARIANCES[0] * priors[:, 2:]
    sides = priors[:, 2:] * np.exp(deltas[:, 2:] * VARIANCES[1])
    return np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)


def decode_landmarks(deltas: FloatArray, priors: FloatArray) -> FloatArray:
    """Landmark deltas [n, 10] -> points [n, 5, 2]."""
    points = deltas.reshape(-1, 5, 2)
    result: FloatArray = priors[:, None, :2] + points * VARIANCES[0] * priors[:, None, 2:]
    return result


def iou(box: FloatArray, others: FloatArray) -> FloatArray:
    """Intersection over union of one box with each of others (x1, y1, x2, y2)."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    result: FloatArray = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
    return result


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression: indices kept, best score first. A box is dropped when
    its IoU with a kept box is above iou_threshold."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def postprocess(
    outputs: rt.RawOutputs, index: int, priors: FloatArray, settings: Settings
) -> Detections:
    """Faces of one batch item: threshold the scores, decode, suppress overlaps."""
    scores = outputs.scores[index]
    chosen = np.flatnonzero(scores > settings.score_threshold)
    boxes = decode_boxes(outputs.boxes[index][chosen], priors[chosen])
    points = decode_landmarks(outputs.landmarks[index][chosen], priors[chosen])
    keep = nms(boxes, scores[chosen], settings.nms_iou)
    return Detections(boxes=boxes[keep], landmarks=points[keep], scores=scores[chosen][keep])


def to_faces(found: Detections, scale_x: float = 1.0, scale_y: float = 1.0) -> list[Face]:
    """Detections as Face records, multiplying x by scale_x and y by scale_y."""
    faces = []
    for box, points, score in zip(found.boxes, found.landmarks, found.scores, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        faces.append(
            Face(
                box=(x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y),
                score=float(score),
                landmarks=tuple((float(x) * scale_x, float(y) * scale_y) for x, y in points),
            )
        )
    return faces


def inference_size(width: int, height: int, cap: int = MAX_SIDE) -> tuple[int, int]:
    """The size detection runs at: as is when both sides fit the cap, else scaled to fit."""
    size, _ = geometry.inference_size(geometry.Size(width, height), cap)
    return size.width, size.height


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


def fit_to_cap(image: RGBImage, cap: int = MAX_SIDE) -> RGBImage:
    """The image itself when both sides fit the cap, else a copy scaled to fit cap x cap."""
    height, width = image.shape[:2]
    new_width, new_height = inference_size(width, height, cap)
    if (new_width, new_height) == (width, height):
        return image
    resized = _from_numpy(image).resize(new_width / width, vscale=new_height / height)
    return _to_numpy(resized)


class RetinaFace:
    """The RetinaFace detector (focal.detection.Detector) over an inference session."""

    def __init__(
        self, session: rt.Session, model_sha256: str, settings: Settings = Settings()
    ) -> None:
        self.session = session
        self.settings = settings
        self._model_sha256 = model_sha256

    @property
    def model_id(self) -> str:
        s = self.settings
        tag = "" if self.session.precision == "fp32" else f":{self.session.precision}"
        return f"retinaface-mnv2:{self._model_sha256[:16]}:s{s.score_threshold}:n{s.nms_iou}{tag}"

    def detect_prepared(self, images: Sequence[RGBImage]) -> list[Detections]:
        """Detections for images already within the cap, in their own pixel coordinates."""
        if not images:
            return []
        batch = preprocess(images)
        outputs = self.session.run(batch)
        priors = anchors(batch.shape[1], batch.shape[2])
        return [postprocess(outputs, i, priors, self.settings) for i in range(len(images))]

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        """Faces for each RGB image (H x W x 3 uint8), in that image's own coordinates."""
        prepared = [fit_to_cap(image) for image in images]
        found = self.detect_prepared(prepared)
        return [
            to_faces(d, i.shape[1] / p.shape[1], i.shape[0] / p.shape[0])
            for d, i, p in zip(found, images, prepared, strict=True)
        ]


def load_detector(
    model_dir: Path | None = None,
    runtime: str = "auto",
    precision: str = "fp32",
    score_threshold: float = 0.5,
    nms_iou: float = 0.4,
) -> RetinaFace:
    """The CPU detector over the installed model (ModelMissingError when `focal models fetch`
    has not been run). runtime: auto, onnxruntime or openvino; precision: fp32, bf16 or f16
    (openvino only)."""
    installed = models.require(model_dir)
    session = rt.open_session(installed.model_path, runtime, precision)
    settings = Settings(score_threshold=score_threshold, nms_iou=nms_iou)
    return RetinaFace(session, installed.manifest.model_sha256, settings)


def open_detector(
    model_dir: Path | None = None,
    runtime: str = "auto",
    precision: str = "fp32",
    score_threshold: float = 0.5,
    nms_iou: float = 0.4,
    device: str = "auto",
    idle_offload_s: float = 300.0,
    max_batch: int = 32,
) -> Detector:
    """Any runtime's detector: ``torch`` (focal.torch_runtime, for GPUs; needs the ``gpu``
    extra; device, idle_offload_s and max_batch, the most images in one forward pass, apply to
    it only) or a CPU runtime (load_detector)."""
    if runtime != "torch":
        return load_detector(model_dir, runtime, precision, score_threshold, nms_iou)
    from focal.torch_runtime import load_torch_detector  # optional dependency

    return load_torch_detector(
        model_dir,
        device=device,
        precision=precision,
        score_threshold=score_threshold,
        nms_iou=nms_iou,
        idle_offload_s=idle_offload_s if idle_offload_s > 0 else None,
        max_batch=max_batch,
    )


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


def load_inference_image(path: Path, cap: int = MAX_SIDE) -> tuple[RGBImage, tuple[int, int]]:
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
        faces=to_faces(found, scale_x, scale_y),
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
