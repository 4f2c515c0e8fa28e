"""`focal eval widerface`: face detection accuracy on the WIDER FACE images of an evaluation set.

Reads ``<data>/manifest.jsonl`` and the official ground truth in
``<data>/wider_face/eval_ground_truth/*.mat``, runs the detector over every WIDER FACE image the
manifest lists, at the 1024 px cap (SPEC section 2) and at original scale, and reports:

- AP on the official easy / medium / hard subsets (focal.face.evaluation; low score threshold),
- precision and recall at the operating threshold over every valid labelled face,
- detections on the manifest's negatives (the ambiguous ones apart) and on its single portraits,
- with ``--reference``, the same AP through the original frozen graph, run by OpenVINO's
  TensorFlow frontend with focal's own decoding and NMS.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from focal.commands.eval_data import GROUND_TRUTH_DIR, Entry, load_ground_truth, read_manifest
from focal.detection import Face
from focal.errors import FocalError, ModelMissingError
from focal.face import evaluation as ev
from focal.face import models, retinaface
from focal.face.detector import RetinaFace, load_inference_image, oriented_size
from focal.face.sessions import (
    CPU_RUNTIMES,
    MIN_MAX_SIDE,
    PRECISIONS,
    FrozenGraphHeads,
    load_detector,
)
from focal.geometry import INFERENCE_CAP

DEFAULT_DATA = Path("../shared/facedata")
DEFAULT_OUT = Path("benchmarks/results/widerface.json")
CAPS = (INFERENCE_CAP, 0)
LOW_THRESHOLD = 0.02
OPERATING_THRESHOLD = 0.5
REFERENCE_TOLERANCE = 0.5  # AP points
MAX_SIDE = INFERENCE_CAP
PUBLISHED_AP = {"easy": 93.35, "medium": 91.78, "hard": 79.51}
PUBLISHED = {
    "model": "RetinaFace MobileNetV2, peteryuX/retinaface-tf2 README",
    "set": "WIDER FACE val, all 3,226 images, original scale",
    "ap": PUBLISHED_AP,
}


def detect_path(detector: RetinaFace, path: Path, cap: int) -> list[Face]:
    """Faces in the image's own (EXIF-oriented) coordinates, detected on it scaled to fit
    ``cap`` x ``cap`` when larger (focal's own loading), or at original scale when cap is 0."""
    width, height = oriented_size(path)
    image, _ = load_inference_image(path, cap or max(width, height))
    found = detector.detect_prepared([image])[0]
    return retinaface.to_faces(found, width / image.shape[1], height / image.shape[0])


@dataclass(frozen=True)
class Run:
    """Detections of one detector over a list of images at one cap."""

    faces: list[list[Face]]
    seconds: float


def run_detector(
    detector: RetinaFace,
    paths: Sequence[Path],
    cap: int,
    reuse: Run | None = None,
    fits: Sequence[bool] = (),
    progress: Callable[[str], None] | None = None,
) -> Run:
    """Detect on every image. With ``reuse`` (a run of the same detector at the other cap),
    images that ``fits`` marks as within the cap are taken from it: their pixels are the same."""
    start = time.perf_counter()
    faces: list[list[Face]] = []
    for index, path in enumerate(paths):
        if reuse is not None and fits[index]:
            faces.append(reuse.faces[index])
        else:
            faces.append(detect_path(detector, path, cap))
        if progress and (index + 1) % 50 == 0:
            progress(f"  {index + 1}/{len(paths)} images")
    return Run(faces, time.perf_counter() - start)


def _round_box(box: Sequence[float]) -> list[float]:
    return [round(float(v), 1) for v in box]


def _face_rows(faces: Sequence[Face], threshold: float) -> list[dict[str, Any]]:
    return [
        {"box": _round_box(f.box), "score": round(f.score, 4)} for f in faces if f.score > threshold
    ]


def _points(ap: dict[str, float]) -> dict[str, float]:
    return {k: round(100 * v, 2) for k, v in ap.items()}


def wider_report(
    entries: Sequence[Entry],
    truths: dict[str, ev.ImageTruth],
    faces: Sequence[list[Face]],
    threshold: float,
) -> dict[str, Any]:
    preds = [ev.predictions(f) for f in faces]
    ordered = [truths[e.name] for e in entries]
    events = sorted({e.event for e in entries})
    by_event = {
        event: point_report(
            ev.operating_point(
                [p for p, e in zip(preds, entries, strict=True) if e.event == event],
                [t for t, e in zip(ordered, entries, strict=True) if e.event == event],
                threshold,
            ),
            truths,
            listed=False,
        )
        for event in events
    }
    return {
        "images": len(entries),
        "faces": {s: int(sum(t.counted(s).sum() for t in ordered)) for s in ev.SUBSETS},
        "ap": _points(ev.average_precisions(preds, ordered)),
        "operating_point": point_report(ev.operating_point(preds, ordered, threshold), truths),
        "operating_point_by_event": by_event,
    }


def point_report(
    point: ev.OperatingPoint, truths: dict[str, ev.ImageTruth], listed: bool = True
) -> dict[str, Any]:
    """Counts at the operating threshold; false detections by kind and size (and listed)."""
    kinds = Counter(ev.false_detection_kind(d, truths[d.image]) for d in point.false_detections)
    sizes = Counter(ev.size_band(d.box) for d in point.false_detections)
    report: dict[str, Any] = {
        "threshold": point.threshold,
        "labelled_faces": point.faces,
        "true_positives": point.true_positives,
        "false_positives": point.false_positives,
        "ignored": point.ignored,
        "precision": round(100 * point.precision, 2),
        "recall": round(100 * point.recall, 2),
        "false_by_kind": dict(sorted(kinds.items())),
        "false_by_size": dict(sorted(sizes.items())),
    }
    if listed:
        report["false_detections"] = [
            {
                "image": d.image,
                "box": _round_box(d.box),
                "score": round(d.score, 4),
                "kind": ev.false_detection_kind(d, truths[d.image]),
            }
            for d in point.false_detections
        ]
    return report


def negatives_report(
    entries: Sequence[Entry], faces: Sequence[list[Face]], threshold: float
) -> dict[str, Any]:
    """Detections above the threshold on images without faces; ambiguous images apart."""
    plain: list[dict[str, Any]] = []
    ambiguous: list[dict[str, Any]] = []
    for entry, found in zip(entries, faces, strict=True):
        rows = _face_rows(found, threshold)
        if entry.ambiguous:
            ambiguous.append({"image": entry.path, "detections": rows})
        elif rows:
            plain.append({"image": entry.path, "detections": rows})
    return {
        "images": sum(not e.ambiguous for e in entries),
        "images_with_detections": len(plain),
        "detections": sum(len(p["detections"]) for p in plain),
        "with_detections": plain,
        "ambiguous": ambiguous,
    }


def sweep_report(
    images: Images, truths: dict[str, ev.ImageTruth], runs: dict[str, Run], values: Sequence[float]
) -> list[dict[str, Any]]:
    """Per threshold: WIDER FACE precision and recall, and detections on every image without a
    face (the ambiguous one included), from the low-threshold run (it holds the detections above
    each threshold: greedy NMS never lets a lower score remove a higher one)."""
    preds = [ev.predictions(f) for f in runs["wider"].faces]
    ordered = [truths[e.name] for e in images.wider]
    report = []
    for value in values:
        point = ev.operating_point(preds, ordered, value)
        on_negatives = [_face_rows(found, value) for found in runs["negatives"].faces]
        report.append(
            {
                "threshold": value,
                "precision": round(100 * point.precision, 2),
                "recall": round(100 * point.recall, 2),
                "true_positives": point.true_positives,
                "false_positives": point.false_positives,
                "negative_images": len(images.negatives),
                "negative_detections": sum(len(rows) for rows in on_negatives),
                "negatives_with_detections": [
                    {"image": e.path, "scores": [r["score"] for r in rows]}
                    for e, rows in zip(images.negatives, on_negatives, strict=True)
                    if rows
                ],
            }
        )
    return report


def singles_report(
    entries: Sequence[Entry], faces: Sequence[list[Face]], threshold: float
) -> list[dict[str, Any]]:
    """Per portrait: its detections above the threshold and the best IoU of each labelled face
    (hand-drawn boxes, about +-10%); found when every face has IoU >= 0.5 and nothing else is."""
    report = []
    for entry, found in zip(entries, faces, strict=True):
        kept = [f for f in found if f.score > threshold]
        labelled = np.asarray(entry.faces, dtype=np.float64).reshape(-1, 4)
        boxes = np.asarray([f.box for f in kept], dtype=np.float64).reshape(-1, 4)
        overlaps = ev.box_overlaps(labelled, boxes)
        best = [float(row.max()) if row.size else 0.0 for row in overlaps]
        report.append(
            {
                "image": entry.path,
                "labelled": [_round_box(b) for b in entry.faces],
                "detections": _face_rows(found, threshold),
                "best_iou": [round(b, 3) for b in best],
                "found": len(kept) == len(labelled) and all(b >= ev.IOU_THRESHOLD for b in best),
            }
        )
    return report


def reference_report(
    entries: Sequence[Entry],
    truths: dict[str, ev.ImageTruth],
    faces: Sequence[list[Face]],
    ours: dict[str, float],
    ours_faces: Sequence[list[Face]],
) -> dict[str, Any]:
    """AP of the original graph's detections, and ours minus it, in AP points."""
    preds = [ev.predictions(f) for f in faces]
    ap = _points(ev.average_precisions(preds, [truths[e.name] for e in entries]))
    difference = {s: round(ours[s] - ap[s], 2) for s in ev.SUBSETS}
    return {
        "agreement": agreement(ours_faces, faces),
        "graph": "retinaface==1.1.1 frozen_graph.pb through OpenVINO's TensorFlow frontend, fp32, "
        "cut at the heads; focal's anchors, decoding and NMS",
        "ap": ap,
        "difference": difference,
        "tolerance": REFERENCE_TOLERANCE,
        "within_tolerance": all(abs(d) <= REFERENCE_TOLERANCE for d in difference.values()),
    }


def agreement(ours: Sequence[list[Face]], theirs: Sequence[list[Face]]) -> dict[str, Any]:
    """How closely two detectors' raw detections agree, image by image: detection counts, and,
    pairing each of ours with the other's box of highest IoU, the largest score and box-corner
    differences."""
    score_diff = box_diff = 0.0
    for a, b in zip(ours, theirs, strict=True):
        pa, pb = ev.predictions(a), ev.predictions(b)
        if len(pa) == 0 or len(pb) == 0:
            continue
        pair = ev.box_overlaps(pa[:, :4], pb[:, :4]).argmax(axis=1)
        score_diff = max(score_diff, float(np.abs(pa[:, 4] - pb[pair, 4]).max()))
        box_diff = max(box_diff, float(np.abs(pa[:, :4] - pb[pair, :4]).max()))
    return {
        "detections": [sum(len(a) for a in ours), sum(len(b) for b in theirs)],
        "images_with_other_counts": sum(
            len(a) != len(b) for a, b in zip(ours, theirs, strict=True)
        ),
        "max_score_difference": float(f"{score_diff:.3g}"),
        "max_box_difference_px": float(f"{box_diff:.3g}"),
    }


def command_line(args: argparse.Namespace) -> str:
    parts = ["focal eval widerface", f"--data {args.data}"]
    parts += [f"--max-side {cap}" for cap in args.max_side or ()]
    parts += [f"--runtime {args.runtime}"] if args.runtime != "auto" else []
    parts += [f"--precision {args.precision}"] if args.precision != "fp32" else []
    parts += ["--reference"] if args.reference else []
    parts += [f"--sweep {','.join(str(v) for v in args.sweep)}"] if args.sweep else []
    parts += [f"--out {args.out}"]
    return " ".join(parts)


def setting_label(cap: int) -> str:
    return f"{cap} cap" if cap else "original scale"


def markdown_table(report: dict[str, Any]) -> str:
    """The AP / precision / recall table of docs/accuracy.md."""
    rows = [
        "| detector | setting | AP easy | AP medium | AP hard | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting in report["settings"]:
        wider, label = setting["wider"], setting_label(setting["max_side"])
        op = wider["operating_point"]
        ap = wider["ap"]
        rows.append(
            f"| focal ({report['runtime']}) | {label} | {ap['easy']:.2f} | {ap['medium']:.2f} | "
            f"{ap['hard']:.2f} | {op['precision']:.2f}% | {op['recall']:.2f}% |"
        )
        if "reference" in setting:
            ap = setting["reference"]["ap"]
            rows.append(
                f"| original frozen graph (OpenVINO TF frontend) | {label} | {ap['easy']:.2f} | "
                f"{ap['medium']:.2f} | {ap['hard']:.2f} | | |"
            )
    ap = PUBLISHED_AP
    rows.append(
        f"| published MobileNetV2 (full val set) | original scale | {ap['easy']:.2f} | "
        f"{ap['medium']:.2f} | {ap['hard']:.2f} | | |"
    )
    return "\n".join(rows)


def summary(setting: dict[str, Any], resized: int) -> str:
    wider, neg = setting["wider"], setting["negatives"]
    op = wider["operating_point"]
    ap = wider["ap"]
    lines = [
        f"{setting_label(setting['max_side'])}: AP easy {ap['easy']:.2f} medium {ap['medium']:.2f} "
        f"hard {ap['hard']:.2f}",
        f"  score > {op['threshold']}: precision {op['precision']:.2f}% recall {op['recall']:.2f}% "
        f"({op['true_positives']} of {op['labelled_faces']} faces, "
        f"{op['false_positives']} false detections)",
        f"  negatives: {neg['detections']} detections on {neg['images_with_detections']} of "
        f"{neg['images']} images; ambiguous: "
        + ", ".join(f"{a['image']} {len(a['detections'])}" for a in neg["ambiguous"]),
        "  singles found: " + ", ".join(f"{s['image']} {s['found']}" for s in setting["singles"]),
    ]
    if setting["max_side"] == MAX_SIDE:
        lines.append(
            f"  {resized} of {wider['images']} WIDER FACE images are larger than {MAX_SIDE} px on "
            "a side: only these differ between the cap and original scale"
        )
    if "reference" in setting:
        ref = setting["reference"]
        lines.append(
            f"  original graph: AP {ref['ap']['easy']:.2f} / {ref['ap']['medium']:.2f} / "
            f"{ref['ap']['hard']:.2f}; ours minus it {ref['difference']}; "
            f"within {REFERENCE_TOLERANCE}: {ref['within_tolerance']}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Images:
    """The manifest's images by kind."""

    wider: list[Entry]
    negatives: list[Entry]
    singles: list[Entry]

    def paths(self, data: Path, kind: str) -> list[Path]:
        return [data / e.path for e in getattr(self, kind)]


def within(longest: int, cap: int) -> bool:
    """Whether an image of this longest side is detected as is at ``cap`` (0: original scale)."""
    return cap == 0 or longest <= cap


def max_side(text: str) -> int:
    """--max-side: 0 (original scale) or a detection side focal offers."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value != 0 and not MIN_MAX_SIDE <= value <= INFERENCE_CAP:
        raise argparse.ArgumentTypeError(
            f"expected 0 or {MIN_MAX_SIDE} to {INFERENCE_CAP}, received {text!r}"
        )
    return value


def evaluate(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    entries = read_manifest(args.data)
    images = Images(
        wider=[e for e in entries if e.kind == "wider"],
        negatives=[e for e in entries if e.kind == "negative"],
        singles=[e for e in entries if e.kind == "single"],
    )
    truths = load_ground_truth(args.data / GROUND_TRUTH_DIR, [e.name for e in images.wider])
    detector = load_detector(
        args.model_dir, args.runtime, args.precision, score_threshold=args.low_threshold
    )
    reference = None
    if args.reference:
        graph = models.require(args.model_dir).graph_path
        reference = RetinaFace(FrozenGraphHeads(graph), "frozen-graph", detector.settings)
    paths = {kind: images.paths(args.data, kind) for kind in ("wider", "negatives", "singles")}
    longest = {kind: [max(oriented_size(p)) for p in found] for kind, found in paths.items()}
    fits = {kind: [within(n, MAX_SIDE) for n in sides] for kind, sides in longest.items()}
    # the first setting's runs, reused where an image fits both caps (the same pixels)
    first: dict[str, tuple[int, Run]] = {}

    def reused(kind: str, cap: int) -> tuple[Run | None, list[bool]]:
        if kind not in first:
            return None, []
        prior, run = first[kind]
        return run, [within(n, cap) and within(n, prior) for n in longest[kind]]

    settings = []
    for cap in args.max_side or list(CAPS):
        say(f"{setting_label(cap)}: {len(paths['wider'])} WIDER FACE images")
        runs = {}
        for kind in paths:
            runs[kind] = run_detector(detector, paths[kind], cap, *reused(kind, cap), say)
            first.setdefault(kind, (cap, runs[kind]))
        setting: dict[str, Any] = {
            "max_side": cap,
            "wider": wider_report(images.wider, truths, runs["wider"].faces, args.threshold),
            "negatives": negatives_report(
                images.negatives, runs["negatives"].faces, args.threshold
            ),
            "singles": singles_report(images.singles, runs["singles"].faces, args.threshold),
            "seconds": round(sum(r.seconds for r in runs.values()), 1),
        }
        if args.sweep:
            setting["sweep"] = sweep_report(images, truths, runs, args.sweep)
        if reference is not None:
            longest["reference"] = longest["wider"]
            ref_run = run_detector(reference, paths["wider"], cap, *reused("reference", cap))
            first.setdefault("reference", (cap, ref_run))
            ours = setting["wider"]["ap"]
            setting["reference"] = reference_report(
                images.wider, truths, ref_run.faces, ours, runs["wider"].faces
            )
        settings.append(setting)
        say(summary(setting, fits["wider"].count(False)))
    return {
        "command": command_line(args),
        "model_id": detector.model_id,
        "runtime": detector.session.runtime,
        "precision": detector.session.precision,
        "low_threshold": args.low_threshold,
        "images_larger_than_cap": fits["wider"].count(False),
        "python": platform.python_version(),
        "published": PUBLISHED,
        "note": "a WIDER FACE val subset (the manifest's images), not the full 3,226-image val "
        "set: AP is not directly comparable with the published figures",
        "settings": settings,
    }


def register(sub: Any) -> None:
    p = sub.add_parser("eval", help="measure face detection accuracy")
    benchmarks = p.add_subparsers(dest="benchmark", required=True)
    w = benchmarks.add_parser(
        "widerface", help="WIDER FACE AP (official protocol), precision, negatives, singles"
    )
    w.add_argument("--data", type=Path, default=DEFAULT_DATA, help="evaluation data folder")
    w.add_argument(
        "--max-side",
        type=max_side,
        action="append",
        help="1024: scale to fit 1024x1024 (as focal detects by default); a smaller side as "
        "detector_max_side does; 0: original scale (default: 1024 and 0)",
    )
    w.add_argument("--runtime", default="auto", choices=CPU_RUNTIMES)
    w.add_argument("--precision", default="fp32", choices=PRECISIONS)
    w.add_argument("--model-dir", type=Path, default=None)
    w.add_argument(
        "--reference",
        action="store_true",
        help="also run the original frozen graph through OpenVINO's TensorFlow frontend",
    )
    w.add_argument("--low-threshold", type=float, default=LOW_THRESHOLD, help="for AP")
    w.add_argument("--threshold", type=float, default=OPERATING_THRESHOLD, help="operating point")
    w.add_argument(
        "--sweep",
        type=_thresholds,
        default=(),
        help="also these thresholds (comma-separated): precision, recall, detections on negatives",
    )
    w.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    w.set_defaults(func=run)


def _thresholds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected thresholds like 0.5,0.4, got {text!r}"
        ) from None
    if any(not 0 <= v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"thresholds must be within 0..1, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        report = evaluate(args, say)
    except ModelMissingError as error:
        say(f"focal eval: {error.public}")
        return 3
    except FocalError as error:
        say(f"focal eval: {error.public}")
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report))
    say(f"results written to {args.out}")
    return 0
