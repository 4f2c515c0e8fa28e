"""RetinaFace (MobileNetV2) pre- and post-processing in numpy: no inference runtime here.

    preprocess   RGB uint8 images -> one float32 NHWC batch (0..255), padded to multiples of 32
    Session      what runs the network (focal.face.sessions makes them) -> RawOutputs
    postprocess  anchors + deltas -> boxes and landmarks; score threshold; NMS

The model's facts (anchors, steps, variances, the padding multiple, the model id's format) live
here once; the CPU detector (focal.face.detector) and the torch detector
(focal.face.torch_detector) both read them. Inputs larger than the inference cap
(focal.geometry.INFERENCE_CAP) are scaled to fit it first (SPEC section 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from focal import geometry
from focal.detection import Face, RGBImage

FloatArray = npt.NDArray[np.float32]
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
PAD_MULTIPLE = 32  # the network's input sides are multiples of its largest stride
OUTPUT_NAMES = ("boxes", "landmarks", "scores")
MODEL_NAME = "retinaface-mnv2"


CANDIDATE_THRESHOLD = 0.05  # weak candidates: detections scoring above this, below a face
CROP_THRESHOLD = 0.3  # the crop-time threshold chosen by the rule in docs/cropping.md


@dataclass(frozen=True)
class Settings:
    """Detection thresholds: a face scores above score_threshold; overlapping boxes (IoU above
    nms_iou) keep only the highest-scoring one. For a face crop (asked for apart), a face scores
    above crop_threshold, and a weak candidate above candidate_threshold but not above
    crop_threshold (it is never a face). flip: a second pass on the mirrored image, merged with
    the first by the same NMS. max_side: the most pixels per side detection runs on (at most
    the published 1024 cap; larger images are scaled to fit it first)."""

    score_threshold: float = 0.5
    nms_iou: float = 0.4
    crop_threshold: float = CROP_THRESHOLD
    candidate_threshold: float = CANDIDATE_THRESHOLD
    flip: bool = False
    max_side: int = geometry.INFERENCE_CAP


def model_id(model_sha256: str, settings: Settings, tag: str = "") -> str:
    """The detector's identity (cache keys hold it): model file, thresholds (the crop-time one
    when it is not the default), ``flip`` when the mirrored pass is on, the detection side when
    it is below the published cap, and a tag for any runtime or precision whose faces may differ
    from the fp32 reference ("" for those)."""
    s = settings
    crop = f":c{s.crop_threshold}" if s.crop_threshold != CROP_THRESHOLD else ""
    side = f":m{s.max_side}" if s.max_side != geometry.INFERENCE_CAP else ""
    suffix = crop + (":flip" if s.flip else "") + side + (f":{tag}" if tag else "")
    return f"{MODEL_NAME}:{model_sha256[:16]}:s{s.score_threshold}:n{s.nms_iou}{suffix}"


@dataclass(frozen=True)
class RawOutputs:
    """Network outputs for a batch: per-anchor box deltas, landmark deltas, face scores."""

    boxes: FloatArray  # [batch, anchors, 4]
    landmarks: FloatArray  # [batch, anchors, 10]
    scores: FloatArray  # [batch, anchors]


def raw_outputs(values: Sequence[Any]) -> RawOutputs:
    """RawOutputs from the network's three outputs, in OUTPUT_NAMES order."""
    boxes, landmarks, scores = (np.asarray(v, dtype=np.float32) for v in values)
    return RawOutputs(boxes=boxes, landmarks=landmarks, scores=scores)


class Session(Protocol):
    """Runs the converted network (focal.face.sessions opens one per runtime)."""

    @property
    def runtime(self) -> str: ...

    @property
    def precision(self) -> str: ...

    def run(self, batch: FloatArray) -> RawOutputs:
        """Outputs for an NHWC float32 batch (RGB 0..255, sides multiples of 32)."""
        ...


@dataclass(frozen=True)
class Detections:
    """The faces of one padded inference image, in its pixel coordinates."""

    boxes: FloatArray  # [n, 4] x1, y1, x2, y2
    landmarks: FloatArray  # [n, 5, 2]
    scores: FloatArray  # [n]


def padded_size(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
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
    outputs: RawOutputs,
    index: int,
    priors: FloatArray,
    settings: Settings,
    threshold: float | None = None,
    mirrored: int | None = None,
    width: int = 0,
) -> Detections:
    """Faces of one batch item: threshold the scores (``threshold``, default the settings'
    score_threshold), decode, suppress overlaps. ``mirrored``: the batch index of the same image
    flipped horizontally (in a padded batch ``width`` wide), whose detections are flipped back
    and suppressed together with the item's own."""
    limit = settings.score_threshold if threshold is None else threshold
    found = [decoded(outputs, index, priors, limit)]
    if mirrored is not None:
        found.append(mirror(decoded(outputs, mirrored, priors, limit), width))
    boxes = np.concatenate([f.boxes for f in found])
    points = np.concatenate([f.landmarks for f in found])
    scores = np.concatenate([f.scores for f in found])
    keep = nms(boxes, scores, settings.nms_iou)
    return Detections(boxes=boxes[keep], landmarks=points[keep], scores=scores[keep])


def decoded(outputs: RawOutputs, index: int, priors: FloatArray, threshold: float) -> Detections:
    """Every anchor of one batch item scoring above ``threshold``, decoded (before NMS)."""
    scores = outputs.scores[index]
    chosen = np.flatnonzero(scores > threshold)
    boxes = decode_boxes(outputs.boxes[index][chosen], priors[chosen])
    points = decode_landmarks(outputs.landmarks[index][chosen], priors[chosen])
    return Detections(boxes=boxes, landmarks=points, scores=scores[chosen])


MIRRORED_LANDMARKS = (1, 0, 2, 4, 3)  # left and right eye, left and right mouth corner swap


def mirror(found: Detections, width: int) -> Detections:
    """Detections on an image flipped horizontally (``width`` wide), in the unflipped image."""
    boxes = found.boxes.copy()
    boxes[:, 0], boxes[:, 2] = width - found.boxes[:, 2], width - found.boxes[:, 0]
    points = found.landmarks[:, MIRRORED_LANDMARKS].copy()
    points[..., 0] = width - points[..., 0]
    return Detections(boxes=boxes, landmarks=points, scores=found.scores)


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


def inference_size(width: int, height: int, cap: int = geometry.INFERENCE_CAP) -> tuple[int, int]:
    """The size detection runs at: as is when both sides fit the cap, else scaled to fit."""
    size, _ = geometry.inference_size(geometry.Size(width, height), cap)
    return size.width, size.height
