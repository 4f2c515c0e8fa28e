"""RetinaFace post-processing on the torch device: decode, threshold and NMS for a whole batch.

The same arithmetic as focal.face.retinaface's numpy functions (decode_boxes, decode_landmarks,
iou, nms), on tensors, so that only the kept faces leave the device. This module imports torch;
only focal.face.torch_detector imports it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from focal.face import retinaface

Nms = Callable[[Tensor, Tensor, Tensor, float], Tensor]


def decode_boxes(deltas: Tensor, priors: Tensor) -> Tensor:
    """focal.face.retinaface.decode_boxes on tensors: (dx, dy, dw, dh) -> x1, y1, x2, y2."""
    centres = priors[:, :2] + deltas[:, :2] * retinaface.VARIANCES[0] * priors[:, 2:]
    sides = priors[:, 2:] * torch.exp(deltas[:, 2:] * retinaface.VARIANCES[1])
    return torch.cat([centres - sides / 2, centres + sides / 2], dim=1)


def decode_landmarks(deltas: Tensor, priors: Tensor) -> Tensor:
    """focal.face.retinaface.decode_landmarks on tensors: [n, 10] -> [n, 5, 2]."""
    points = deltas.reshape(-1, 5, 2)
    return priors[:, None, :2] + points * retinaface.VARIANCES[0] * priors[:, None, 2:]


def pairwise_iou(boxes: Tensor) -> Tensor:
    """IoU of every box with every box (x1, y1, x2, y2), as focal.face.retinaface.iou does."""
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas[:, None] + areas[None, :] - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, 1), 0)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS as focal.face.retinaface.nms (indices kept, best score first; a box goes when its
    IoU with a kept box is above the threshold), without a loop over boxes: `keep[i]` is true
    when no kept box before i overlaps it. Iterating that rule from "all kept" fixes one more
    leading entry per round, and its only fixed point is the greedy answer."""
    order = torch.argsort(scores, descending=True, stable=True)
    over = torch.triu(pairwise_iou(boxes[order]) > iou_threshold, diagonal=1)
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    while True:
        updated = ~(over & keep[:, None]).any(dim=0)
        if torch.equal(updated, keep):
            return order[keep]
        keep = updated


def batched_nms_torch(
    boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float
) -> Tensor:
    """NMS within each group (batch item); indices kept, best score first."""
    kept = []
    for group in torch.unique(groups):
        members = torch.nonzero(groups == group).flatten()
        kept.append(members[nms(boxes[members], scores[members], iou_threshold)])
    if not kept:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    joined = torch.cat(kept)
    return joined[torch.argsort(scores[joined], descending=True, stable=True)]


_NMS_CHOICE: list[Nms] = []


def _torchvision_nms() -> Nms | None:
    """torchvision.ops.batched_nms when torchvision imports and runs cleanly beside this torch."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchvision.ops import batched_nms

            probe = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.1]])
            devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
            for device in devices:
                scores, groups = torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
                kept = batched_nms(probe.to(device), scores.to(device), groups.to(device), 0.5)
                if kept.tolist() != [0]:
                    return None
    except Exception:
        return None
    chosen: Nms = batched_nms
    return chosen


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's batched NMS where it works, else batched_nms_torch (the same answer)."""
    if not _NMS_CHOICE:
        _NMS_CHOICE.append(_torchvision_nms() or batched_nms_torch)
    return _NMS_CHOICE[0](boxes, scores, groups, iou_threshold)


def nms_backend() -> str:
    batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    return "torch" if _NMS_CHOICE[0] is batched_nms_torch else "torchvision"


@dataclass(frozen=True)
class Found:
    """The faces kept in a batch, on the CPU: batch item, box, landmarks, score per row, rows of
    one item together, best score first."""

    items: np.ndarray[Any, np.dtype[np.int64]]
    boxes: np.ndarray[Any, np.dtype[np.float32]]  # [n, 4]
    landmarks: np.ndarray[Any, np.dtype[np.float32]]  # [n, 5, 2]
    scores: np.ndarray[Any, np.dtype[np.float32]]  # [n]

    def detections(self, item: int) -> retinaface.Detections:
        rows = self.items == item
        return retinaface.Detections(
            boxes=self.boxes[rows], landmarks=self.landmarks[rows], scores=self.scores[rows]
        )


def decode_batch(
    outputs: Sequence[Tensor], priors: Tensor, settings: retinaface.Settings, count: int
) -> Found:
    """Threshold, decode and suppress the first `count` items of a batch's raw outputs on the
    device, then bring the kept rows to the CPU in one transfer."""
    deltas, marks, scores = (o[:count].float() for o in outputs)
    items, anchors = torch.nonzero(scores > settings.score_threshold, as_tuple=True)
    chosen = priors[anchors]
    boxes = decode_boxes(deltas[items, anchors], chosen)
    points = decode_landmarks(marks[items, anchors], chosen).reshape(-1, 10)
    picked = scores[items, anchors]
    keep = batched_nms(boxes, picked, items, settings.nms_iou)
    keep = keep[torch.argsort(items[keep], stable=True)]
    rows = torch.cat(
        [items[keep, None].float(), boxes[keep], points[keep], picked[keep, None]], dim=1
    )
    table = rows.cpu().numpy()
    return Found(
        items=table[:, 0].astype(np.int64),
        boxes=np.ascontiguousarray(table[:, 1:5]),
        landmarks=np.ascontiguousarray(table[:, 5:15]).reshape(-1, 5, 2),
        scores=np.ascontiguousarray(table[:, 15]),
    )
