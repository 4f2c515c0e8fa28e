"""Face detector speed and accuracy, per inference runtime and precision.

Configurations: ONNX Runtime fp32 (the baseline), OpenVINO fp32, and OpenVINO bf16 / f16 where
the CPU supports them. Measured in one run, interleaved (one repeat of every configuration in
turn), so that load from other processes falls on all of them alike:

  model       the network alone on a 1 x S x S x 3 batch (S = 640, 1024): first call and median
  end_to_end  focal.face.detector.detect_file on a 2048 x 2048 JPEG portrait (libvips decode with
              shrink to the 1024 cap, network, decode + NMS): median
  accuracy    detections on the labelled portraits and 12 WIDER FACE images of
              ../shared/facedata and the 2048 portrait, against ONNX Runtime fp32: images
              whose face count differs, largest score difference and smallest box IoU among
              matched faces, largest raw score difference over all anchors

Times are medians in milliseconds; ratios are to ONNX Runtime fp32 of the same run.

    .venv/bin/python benchmarks/experiments/detector.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness
import prepare
from focal.face import detector as det
from focal.face import models
from focal.face import retinaface as rf
from focal.face import sessions as rt

COMMAND = ".venv/bin/python benchmarks/experiments/detector.py"
SIZES = (640, 1024)
PORTRAIT = "portrait_2048.jpg"
WIDER_IMAGES = 12


def configurations() -> list[tuple[str, str]]:
    lower = [("openvino", p) for p in rt.openvino_precisions() if p != "fp32"]
    return [("onnxruntime", "fp32"), ("openvino", "fp32"), *lower]


def label(config: tuple[str, str]) -> str:
    return f"{config[0]} {config[1]}"


def interleaved(calls: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median milliseconds of each call, one call of each in turn per round."""
    times = harness.interleaved_ms(calls, repeat)
    return {name: harness.median(values) for name, values in times.items()}


def first_call(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def with_ratios(medians: dict[str, float], baseline: str) -> dict[str, dict[str, float]]:
    return {
        name: {"median_ms": round(ms, 2), "ratio": round(ms / medians[baseline], 3)}
        for name, ms in medians.items()
    }


def runner(session: rf.Session, batch: rf.FloatArray) -> Callable[[], object]:
    return lambda: session.run(batch)


def model_speed(sessions: dict[str, rf.Session], repeat: int) -> dict[str, Any]:
    portrait = det.load_inference_image(harness.INPUTS / PORTRAIT)[0]
    results: dict[str, Any] = {}
    for size in SIZES:
        batch = rf.preprocess([det.fit_to_cap(portrait, size)])
        calls = {name: runner(s, batch) for name, s in sessions.items()}
        firsts = {name: first_call(call) for name, call in calls.items()}
        medians = interleaved(calls, repeat)
        table = with_ratios(medians, label(("onnxruntime", "fp32")))
        for name in table:
            table[name]["first_call_ms"] = round(firsts[name], 1)
        results[str(size)] = table
    return results


def file_runner(detector: det.RetinaFace, path: Path) -> Callable[[], object]:
    return lambda: det.detect_file(detector, path)


def end_to_end(detectors: dict[str, det.RetinaFace], repeat: int) -> dict[str, Any]:
    path = harness.INPUTS / PORTRAIT
    calls = {name: file_runner(d, path) for name, d in detectors.items()}
    for call in calls.values():
        call()
    return with_ratios(interleaved(calls, repeat), label(("onnxruntime", "fp32")))


def accuracy_images() -> list[Path]:
    rows = harness.load_manifest()
    singles = [r["path"] for r in rows if r["dataset"] == "singles"]
    wider = [r["path"] for r in rows if r["path"].startswith("wider") and len(r["faces"]) >= 3]
    paths = [harness.FACEDATA / p for p in singles + wider[:: max(1, len(wider) // WIDER_IMAGES)]]
    return [*paths[: len(singles) + WIDER_IMAGES], harness.INPUTS / PORTRAIT]


def compare(found: rf.Detections, baseline: rf.Detections) -> tuple[bool, float, float]:
    """(same count, largest score difference, smallest IoU) matching each baseline face to its
    best-overlapping face."""
    if len(found.scores) != len(baseline.scores):
        return False, float("nan"), float("nan")
    worst_score, worst_iou = 0.0, 1.0
    for box, score in zip(baseline.boxes, baseline.scores, strict=True):
        overlaps = rf.iou(box, found.boxes)
        best = int(np.argmax(overlaps))
        worst_iou = min(worst_iou, float(overlaps[best]))
        worst_score = max(worst_score, abs(float(found.scores[best]) - float(score)))
    return True, worst_score, worst_iou


def accuracy(detectors: dict[str, det.RetinaFace]) -> dict[str, Any]:
    base = label(("onnxruntime", "fp32"))
    images = [det.load_inference_image(p)[0] for p in accuracy_images()]
    found = {name: [d.detect_prepared([i])[0] for i in images] for name, d in detectors.items()}
    raw = {
        name: [d.session.run(rf.preprocess([i])).scores for i in images]
        for name, d in detectors.items()
    }
    results: dict[str, Any] = {
        "images": len(images),
        "faces": int(sum(len(f.scores) for f in found[base])),
    }
    for name in detectors:
        compared = [compare(f, b) for f, b in zip(found[name], found[base], strict=True)]
        matched = [c for c in compared if c[0]]
        results[name] = {
            "count_mismatches": len(compared) - len(matched),
            "max_score_diff": round(max((c[1] for c in matched), default=0.0), 5),
            "min_iou": round(min((c[2] for c in matched), default=1.0), 5),
            "max_raw_score_diff": round(
                max(float(np.abs(r - b).max()) for r, b in zip(raw[name], raw[base], strict=True)),
                5,
            ),
        }
    return results


def print_report(result: dict[str, Any]) -> None:
    for size, table in result["model"].items():
        print(f"model only, {size} x {size}:")
        for name, row in table.items():
            first = row["first_call_ms"]
            print(
                f"  {name:20} {row['median_ms']:8.1f} ms  x{row['ratio']:.2f}  first {first:.0f} ms"
            )
    print("end to end, 2048 x 2048 JPEG at the 1024 cap:")
    for name, row in result["end_to_end"].items():
        print(f"  {name:20} {row['median_ms']:8.1f} ms  x{row['ratio']:.2f}")
    acc = result["accuracy"]
    print(f"accuracy against onnxruntime fp32 ({acc['images']} images, {acc['faces']} faces):")
    for name, row in acc.items():
        if isinstance(row, dict):
            print(
                f"  {name:20} count mismatches {row['count_mismatches']}, "
                f"max score diff {row['max_score_diff']}, min IoU {row['min_iou']}, "
                f"max raw score diff {row['max_raw_score_diff']}"
            )


def shape_speed(repeat: int) -> dict[str, Any]:
    """OpenVINO fp32 with and without fixed-shape compilation, against ONNX Runtime fp32: the
    model alone on one 1024 x 1024 input, interleaved (three sessions only)."""
    path = models.require().model_path
    sessions: dict[str, rf.Session] = {
        "onnxruntime fp32": rt.OnnxRuntimeSession(path),
        "openvino fp32 dynamic shape": rt.OpenVinoSession(path, "fp32", static_shapes=0),
        "openvino fp32 fixed shape": rt.OpenVinoSession(path, "fp32", static_shapes=8),
    }
    batch = (np.random.default_rng(0).random((1, 1024, 1024, 3)) * 255).astype(np.float32)
    calls = {name: runner(s, batch) for name, s in sessions.items()}
    for call in calls.values():  # the second call of a shape compiles it (fixed shape)
        call()
        call()
    return with_ratios(interleaved(calls, repeat), "onnxruntime fp32")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per configuration")
    parser.add_argument(
        "--shapes", action="store_true", help="only: OpenVINO fixed vs dynamic input shape"
    )
    args = parser.parse_args(argv)
    if args.shapes:
        shapes = shape_speed(args.repeat)
        for name, row in shapes.items():
            print(f"  {name:28} {row['median_ms']:7.1f} ms  x{row['ratio']:.2f}")
        harness.write_result(
            "detector_shapes", {"repeat": args.repeat, "model_1024": shapes}, COMMAND
        )
        return 0
    prepare.prepare()
    path = models.require().model_path
    sha = models.require().manifest.model_sha256
    configs = configurations()
    sessions = {label(c): rt.open_session(path, *c) for c in configs}
    detectors = {name: det.RetinaFace(s, sha) for name, s in sessions.items()}
    result = {
        "repeat": args.repeat,
        "default": label(rt.resolve("auto", rt.DEFAULT_PRECISION)),
        "model": model_speed(sessions, args.repeat),
        "end_to_end": end_to_end(detectors, args.repeat),
        "accuracy": accuracy(detectors),
    }
    print_report(result)
    harness.write_result("detector", result, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
