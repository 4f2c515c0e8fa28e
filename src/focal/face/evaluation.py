"""The WIDER FACE evaluation protocol, as the official toolkit computes it (pure numpy, no I/O).

This follows the official MATLAB ``wider_eval`` and its widely used Python port step by step:

1. Scores are normalised over the whole evaluated set: ``(s - min) / (max - min)``.
2. Per image, predictions sorted by score (highest first) are matched in turn to the ground-truth
   face of highest IoU (boxes as ``x1, y1, x1 + w, y1 + h`` with the ``+1`` pixel convention).
   At IoU >= 0.5: a face outside the evaluated subset (or marked invalid) makes the prediction
   *ignored* (neither true nor false positive); a counted face not yet found is recalled (a
   true positive); a face already found makes it a duplicate (a false positive). Below 0.5: a
   false positive.
   Images without any ground-truth box, or without predictions, add only their faces to the count.
3. Over 1000 score thresholds ``1 - (k + 1) / 1000``: proposals and recalled faces are summed over
   images; precision = recalled / proposals, recall = recalled / counted faces.
4. Average precision, VOC style: sentinels (0, 0) and (1, 0) added, precision made monotone
   (its envelope from the right), area summed where recall changes.

Also here: how two detectors' faces on the same images compare (``agreement``, faces paired by
``box_iou``), for the equivalence checks between runtimes.

Boxes everywhere here are ``x1, y1, x2, y2`` with ``x2 = x1 + w`` (the manifest's exclusive corner,
and a detector's :class:`~focal.detection.Face` box); a prediction array is ``(n, 5)``, the fifth
column its score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from focal.detection import Face
from focal.face import retinaface

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

SUBSETS = ("easy", "medium", "hard")
IOU_THRESHOLD = 0.5
THRESHOLD_COUNT = 1000

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


@dataclass(frozen=True)
class ImageTruth:
    """The official ground truth of one image: boxes, invalid flags, subset membership."""

    name: str
    boxes: FloatArray  # (n, 4) x1, y1, x1 + w, y1 + h
    invalid: BoolArray  # (n,)
    subsets: Mapping[str, BoolArray] = field(default_factory=dict)  # subset -> (n,) kept

    def counted(self, subset: str) -> BoolArray:
        """Faces that count in ``subset``: kept by its official list and not invalid."""
        keep = self.subsets.get(subset, np.zeros(len(self.boxes), dtype=bool))
        return np.asarray(keep & ~self.invalid, dtype=bool)

    def labelled(self) -> BoolArray:
        """Every valid face with an area: what precision and recall at a threshold count."""
        widths = self.boxes[:, 2] - self.boxes[:, 0]
        heights = self.boxes[:, 3] - self.boxes[:, 1]
        return np.asarray(~self.invalid & (widths > 0) & (heights > 0), dtype=bool)


@dataclass(frozen=True)
class Curve:
    """A precision-recall curve over score thresholds and its VOC-style area."""

    thresholds: FloatArray
    precision: FloatArray
    recall: FloatArray
    faces: int
    ap: float


@dataclass(frozen=True)
class FalseDetection:
    image: str
    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class OperatingPoint:
    """Counts at one fixed score threshold: detections scoring above it (raw scores, as a
    detector with that threshold keeps them)."""

    threshold: float
    faces: int
    true_positives: int
    false_positives: int
    ignored: int
    false_detections: tuple[FalseDetection, ...]

    @property
    def precision(self) -> float:
        proposals = self.true_positives + self.false_positives
        return self.true_positives / proposals if proposals else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.faces if self.faces else 1.0


def predictions(faces: Sequence[Face]) -> FloatArray:
    """Faces as an ``(n, 5)`` array ``x1, y1, x2, y2, score``, highest score first (stable)."""
    rows = np.array([(*face.box, face.score) for face in faces], dtype=np.float64)
    return sort_by_score(rows.reshape(-1, 5))


def sort_by_score(preds: FloatArray) -> FloatArray:
    order = np.argsort(-preds[:, 4], kind="stable")
    return np.asarray(preds[order], dtype=np.float64)


def box_overlaps(boxes: FloatArray, query: FloatArray) -> FloatArray:
    """IoU of every box against every query box, ``(len(boxes), len(query))``, with the
    official ``+1`` convention (a box from x1 to x2 covers ``x2 - x1 + 1`` pixels)."""
    b = boxes[:, None, :]
    q = query[None, :, :]
    iw = np.minimum(b[..., 2], q[..., 2]) - np.maximum(b[..., 0], q[..., 0]) + 1
    ih = np.minimum(b[..., 3], q[..., 3]) - np.maximum(b[..., 1], q[..., 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    area_q = (q[..., 2] - q[..., 0] + 1) * (q[..., 3] - q[..., 1] + 1)
    return np.asarray(inter / (area_b + area_q - inter), dtype=np.float64)


def match_image(
    preds: FloatArray, gt_boxes: FloatArray, counted: BoolArray, iou: float = IOU_THRESHOLD
) -> IntArray:
    """The outcome of each prediction (sorted by score) in one image: TRUE_POSITIVE,
    FALSE_POSITIVE or IGNORED, matching each to its highest-IoU face as the official tool does."""
    outcome = np.full(len(preds), FALSE_POSITIVE, dtype=np.int64)
    if len(preds) == 0 or len(gt_boxes) == 0:
        return outcome
    overlaps = box_overlaps(preds[:, :4], gt_boxes)
    found = np.zeros(len(gt_boxes), dtype=bool)
    for h in range(len(preds)):
        best = int(np.argmax(overlaps[h]))
        if overlaps[h, best] < iou:
            continue
        if not counted[best]:
            outcome[h] = IGNORED
        elif not found[best]:
            found[best] = True
            outcome[h] = TRUE_POSITIVE
    return outcome


def thresholds(count: int = THRESHOLD_COUNT) -> FloatArray:
    """The official thresholds ``1 - (k + 1) / count``, from just under 1 down to 0."""
    return np.asarray(1 - (np.arange(count) + 1) / count, dtype=np.float64)


def image_pr_counts(scores: FloatArray, outcome: IntArray, steps: FloatArray) -> FloatArray:
    """For each threshold: (proposals, recalled faces) among predictions scoring at least it.
    ``scores`` must be sorted highest first."""
    kept = np.searchsorted(-scores, -steps, side="right")
    proposals = np.concatenate(([0], np.cumsum(outcome != IGNORED)))
    recalled = np.concatenate(([0], np.cumsum(outcome == TRUE_POSITIVE)))
    return np.stack([proposals[kept], recalled[kept]], axis=1).astype(np.float64)


def normalise_scores(preds: Sequence[FloatArray]) -> list[FloatArray]:
    """Scores rescaled to 0..1 by the minimum and maximum over all images (official norm_score)."""
    scores = [p[:, 4] for p in preds if len(p)]
    if not scores:
        return [p.copy() for p in preds]
    low = float(min(s.min() for s in scores))
    high = float(max(s.max() for s in scores))
    out = [p.copy() for p in preds]
    if high > low:
        for p in out:
            p[:, 4] = (p[:, 4] - low) / (high - low)
    return out


def voc_ap(recall: FloatArray, precision: FloatArray) -> float:
    """Area under the precision envelope, summed where recall changes (VOC style)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def pr_curve(
    preds: Sequence[FloatArray],
    truths: Sequence[ImageTruth],
    subset: str,
    iou: float = IOU_THRESHOLD,
    threshold_count: int = THRESHOLD_COUNT,
) -> Curve:
    """The official precision-recall curve and AP of ``subset`` over these images.

    ``preds[i]`` holds the raw predictions of ``truths[i]`` (any order; scores any range)."""
    steps = thresholds(threshold_count)
    totals = np.zeros((threshold_count, 2), dtype=np.float64)
    faces = 0
    for pred, truth in zip(normalise_scores(preds), truths, strict=True):
        counted = truth.counted(subset)
        faces += int(counted.sum())
        if len(truth.boxes) == 0 or len(pred) == 0:
            continue
        ordered = sort_by_score(pred)
        outcome = match_image(ordered, truth.boxes, counted, iou)
        totals += image_pr_counts(ordered[:, 4], outcome, steps)
    proposals, recalled = totals[:, 0], totals[:, 1]
    precision = np.divide(recalled, proposals, out=np.zeros_like(recalled), where=proposals > 0)
    recall = recalled / faces if faces else np.zeros_like(recalled)
    return Curve(steps, precision, recall, faces, voc_ap(recall, precision))


def operating_point(
    preds: Sequence[FloatArray],
    truths: Sequence[ImageTruth],
    threshold: float,
    iou: float = IOU_THRESHOLD,
) -> OperatingPoint:
    """True and false positives among detections scoring above ``threshold`` (raw scores),
    against every valid labelled face.

    Matching is the official one; a detection on an invalid face is ignored, a second detection
    of the same face is a false positive."""
    faces = tp = fp = ignored = 0
    false: list[FalseDetection] = []
    for pred, truth in zip(preds, truths, strict=True):
        ordered = sort_by_score(pred)
        ordered = ordered[ordered[:, 4] > threshold]
        labelled = truth.labelled()
        faces += int(labelled.sum())
        outcome = match_image(ordered, truth.boxes, labelled, iou)
        tp += int(np.sum(outcome == TRUE_POSITIVE))
        ignored += int(np.sum(outcome == IGNORED))
        for row in ordered[outcome == FALSE_POSITIVE]:
            fp += 1
            box = (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
            false.append(FalseDetection(truth.name, box, float(row[4])))
    return OperatingPoint(threshold, faces, tp, fp, ignored, tuple(false))


def false_detection_kind(detection: FalseDetection, truth: ImageTruth) -> str:
    """Why a detection counted as false: ``duplicate`` (IoU >= 0.5 with a face another detection
    already found), ``near a face`` (best IoU with any labelled box 0.3 to 0.5: the boxes disagree
    on extent), or ``elsewhere`` (an unlabelled face or not a face)."""
    if len(truth.boxes) == 0:
        return "elsewhere"
    best = float(box_overlaps(np.asarray([detection.box], dtype=np.float64), truth.boxes).max())
    if best >= IOU_THRESHOLD:
        return "duplicate"
    return "near a face" if best >= 0.3 else "elsewhere"


def size_band(box: tuple[float, float, float, float]) -> str:
    """The band of a box's larger side: under 16 px, 16 to 32 px, or 32 px and more."""
    side = max(box[2] - box[0], box[3] - box[1])
    return "<16px" if side < 16 else "16-32px" if side < 32 else ">=32px"


def average_precisions(
    preds: Sequence[FloatArray], truths: Sequence[ImageTruth], iou: float = IOU_THRESHOLD
) -> dict[str, float]:
    """AP of each official subset (easy, medium, hard)."""
    return {subset: pr_curve(preds, truths, subset, iou).ap for subset in SUBSETS}


# --- comparing two detectors ------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How one image's faces from two detectors compare: faces paired by IoU (best first)."""

    reference: int
    candidate: int
    paired: int
    min_iou: float  # over paired faces (1.0 when none)
    max_score_difference: float  # over paired faces (0.0 when none)
    unpaired_scores: tuple[float, ...]  # scores of faces found by one detector only


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two x1, y1, x2, y2 boxes, as NMS computes it (focal.face.retinaface.iou; no +1
    pixel convention, unlike the WIDER FACE protocol's box_overlaps)."""
    found = retinaface.iou(np.asarray(a, dtype=np.float64), np.asarray([b], dtype=np.float64))
    return float(found[0])


def agreement(reference: Sequence[Face], candidate: Sequence[Face], min_iou: float) -> Agreement:
    """Pairs each reference face (best score first) with the unpaired candidate face of highest
    IoU, when that IoU is at least min_iou."""
    free = list(range(len(candidate)))
    ious: list[float] = []
    diffs: list[float] = []
    unpaired: list[float] = []
    for face in sorted(reference, key=lambda f: -f.score):
        scored = [(box_iou(face.box, candidate[j].box), j) for j in free]
        best = max(scored, default=(0.0, -1))
        if best[0] < min_iou:
            unpaired.append(face.score)
            continue
        free.remove(best[1])
        ious.append(best[0])
        diffs.append(abs(face.score - candidate[best[1]].score))
    unpaired.extend(candidate[j].score for j in free)
    return Agreement(
        reference=len(reference),
        candidate=len(candidate),
        paired=len(ious),
        min_iou=min(ious, default=1.0),
        max_score_difference=max(diffs, default=0.0),
        unpaired_scores=tuple(unpaired),
    )
