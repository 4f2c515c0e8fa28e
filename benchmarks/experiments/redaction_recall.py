"""Redaction recall: the share of labelled faces that redact=faces hides, per face size.

For every WIDER FACE image of ../shared/facedata, the detector runs as redaction runs it (the
image scaled to fit the detection side, boxes mapped back), each box grown by the redaction
margin (focal.steps.REDACT_MARGIN, as focal.steps.redact hides it). A labelled face (valid, not
marked invalid) counts as **covered** when at least 90% of its pixels lie inside the union of
the grown boxes (the crop-quality metric's tolerance). Reported per configuration: covered
faces among the labelled faces at least 10, 16 and 32 px tall, the redaction boxes that overlap
no labelled face (IoU below 0.3 with every label: an unlabelled face or not a face), and the
detector's time.

Configurations (one detector pass per side and flip; the thresholds filter the same pass, as
greedy NMS never lets a lower score suppress a higher one):

  side S, score above T, flip or not      S in --sides (1024: the published cap), T in 0.5 (the
                                          detection threshold) and 0.3 (the crop threshold)

    .venv/bin/python benchmarks/experiments/redaction_recall.py [--limit N] [--sides 1024,768]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness
from focal.face.evaluation import box_iou

COMMAND = ".venv/bin/python benchmarks/experiments/redaction_recall.py"
SIZES = (10, 16, 32)
COVERED_SHARE = 0.9
THRESHOLDS = (0.5, 0.3)
MATCH_IOU = 0.3
Box4 = tuple[float, float, float, float]


def labelled(entry: dict[str, Any]) -> list[Box4]:
    """The valid labelled faces of a manifest row (not marked invalid, not empty)."""
    attrs = entry.get("face_attrs") or [{} for _ in entry["faces"]]
    faces = []
    for box, attr in zip(entry["faces"], attrs, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        if attr.get("invalid") or x2 <= x1 or y2 <= y1:
            continue
        faces.append((x1, y1, x2, y2))
    return faces


def grown(box: Box4, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The integer region focal.steps.redact hides for ``box``."""
    x1, y1, x2, y2 = box
    gx, gy = (x2 - x1) * margin, (y2 - y1) * margin
    return (
        max(0, int(np.floor(x1 - gx))),
        max(0, int(np.floor(y1 - gy))),
        min(width, int(np.ceil(x2 + gx))),
        min(height, int(np.ceil(y2 + gy))),
    )


def covered(faces: Sequence[Box4], boxes: Sequence[Box4], size: tuple[int, int]) -> list[bool]:
    """Per labelled face: at least COVERED_SHARE of its pixels inside the grown boxes."""
    from focal.steps import REDACT_MARGIN

    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        left, top, right, bottom = grown(box, REDACT_MARGIN, width, height)
        mask[top:bottom, left:right] = True
    result = []
    for x1, y1, x2, y2 in faces:
        left, top = max(0, int(x1)), max(0, int(y1))
        right, bottom = (
            min(width, max(left + 1, int(np.ceil(x2)))),
            min(height, max(top + 1, int(np.ceil(y2)))),
        )
        region = mask[top:bottom, left:right]
        result.append(bool(region.size) and float(region.mean()) >= COVERED_SHARE)
    return result


def run_pass(
    rows: Sequence[dict[str, Any]], side: int, flip: bool
) -> tuple[list[list[tuple[Box4, float]]], float]:
    """Detections (box in original pixels, score) above the lowest threshold, per row, and the
    detector's seconds."""
    from focal.face.detector import load_inference_image
    from focal.face.sessions import load_detector

    detector = load_detector(score_threshold=min(THRESHOLDS), flip=flip, max_side=side)
    found: list[list[tuple[Box4, float]]] = []
    seconds = 0.0
    for row in rows:
        image, (width, height) = load_inference_image(harness.FACEDATA / row["path"], side)
        started = time.perf_counter()
        (faces,) = detector.detect([image])
        seconds += time.perf_counter() - started
        sx, sy = width / image.shape[1], height / image.shape[0]
        found.append(
            [((f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy), f.score) for f in faces]
        )
    return found, seconds


def score(
    rows: Sequence[dict[str, Any]], found: Sequence[list[tuple[Box4, float]]], threshold: float
) -> dict[str, Any]:
    hit = {size: 0 for size in SIZES}
    total = {size: 0 for size in SIZES}
    boxes_count = unmatched = 0
    for row, detections in zip(rows, found, strict=True):
        faces = labelled(row)
        boxes = [box for box, s in detections if s > threshold]
        boxes_count += len(boxes)
        unmatched += sum(1 for b in boxes if all(box_iou(b, f) < MATCH_IOU for f in faces))
        for face, ok in zip(
            faces, covered(faces, boxes, (row["width"], row["height"])), strict=True
        ):
            tall = face[3] - face[1]
            for size in SIZES:
                if tall >= size:
                    total[size] += 1
                    hit[size] += ok
    return {
        "recall": {
            f"{size}px": {
                "covered": hit[size],
                "faces": total[size],
                "share": round(hit[size] / total[size], 4) if total[size] else None,
            }
            for size in SIZES
        },
        "boxes": boxes_count,
        "boxes_matching_no_label": unmatched,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (smoke run)")
    parser.add_argument("--sides", default="1024,768")
    parser.add_argument("--no-flip", action="store_true", help="leave out the mirrored pass")
    args = parser.parse_args(argv)
    rows = [
        r for r in harness.load_manifest() if r["path"].startswith("wider_face/") and r["faces"]
    ]
    if args.limit:
        rows = rows[: args.limit]
    started = time.monotonic()
    configs: list[dict[str, Any]] = []
    for side in (int(s) for s in args.sides.split(",")):
        for flip in (False,) if args.no_flip or side != 1024 else (False, True):
            found, seconds = run_pass(rows, side, flip)
            for threshold in THRESHOLDS:
                result = score(rows, found, threshold)
                configs.append(
                    {
                        "side": side,
                        "flip": flip,
                        "threshold": threshold,
                        "detector_seconds": round(seconds, 1),
                        **result,
                    }
                )
                cells = "  ".join(
                    f">={k}: {100 * v['share']:.1f}% ({v['covered']}/{v['faces']})"
                    for k, v in result["recall"].items()
                )
                print(
                    f"side {side} flip {flip!s:5} score>{threshold}: {cells}  "
                    f"boxes {result['boxes']} (no label {result['boxes_matching_no_label']})  "
                    f"detector {seconds:.0f} s",
                    flush=True,
                )
    if args.limit:
        return 0
    data = {
        "definition": {
            "faces": "valid labelled faces of the WIDER FACE images (not marked invalid)",
            "covered": f"at least {COVERED_SHARE:.0%} of the face's pixels inside the union of "
            "the redaction boxes, each grown by focal.steps.REDACT_MARGIN",
            "sizes": "faces at least N px tall (box height in the original image)",
        },
        "images": len(rows),
        "seconds": round(time.monotonic() - started, 1),
        "configurations": configs,
    }
    harness.write_result("redaction_recall", data, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
