"""The torch face detector on a GPU: throughput, memory, cold start, equivalence, end to end.

Runs in one go (about 5 minutes) on a machine with PyTorch + CUDA, onnx, onnxruntime (CPU),
opencv and numpy, without internet, focal's install, pyvips or scipy: focal is imported from
this checkout's src/, and the model is the converted ONNX file given with --model.

    python benchmarks/experiments/gpu.py --model ~/.cache/focal/models/retinaface_mnv2.onnx \\
        --facedata ../shared/facedata                     # on the GPU machine
    .venv/bin/python benchmarks/experiments/gpu.py --device cpu --quick  # CPU smoke run

Sections, each saved to the result file as soon as it is done (in this order):

    cold_start   first detect in a fresh process (CUDA start included), and a reload after an
                 idle offload, fp16 and fp32
    memory       (CUDA) GPU memory at batch 1 and the largest batch: after loading, over the
                 first detect of a shape and over a warm one, with cuDNN's benchmark mode off
                 and on; the first detect's time and the warm detect's; the device's memory in
                 use (CUDA context included)
    anatomy      the network's cost counted op by op on the CPU (GFLOP, MB moved, activation
                 peak: they depend on shapes and layouts only, so hold for any device), the time
                 of each kind of step at the largest batch beside the bytes it moves,
                 torch.profiler's busiest kernels, and (CUDA) the device's copy bandwidth
    equivalence  the public-domain photos and the WIDER FACE images of --facedata through the
                 CPU fp32 ONNX Runtime model and the torch model in fp32 and fp16, on the same
                 pixels (images over 1024 px capped with opencv first): faces paired at
                 IoU >= 0.99, score differences; WIDER FACE AP (manifest labels) of each
    throughput   1024x1024 images/s at batch 1, 8, 32, 64 in fp16 and fp32: the model alone on
                 a device batch, and the whole detect (upload, pad, model, decode, NMS, faces);
                 torch.cuda.max_memory_allocated per setting; eager channels_last, then (CUDA)
                 CUDA graphs
    end_to_end   a folder of 2048x2048 JPEGs (made here from the facedata images) to 256x256
                 face crops (gravity=face, zoom 0.5, fit=cover) as JPEG bytes: every CPU core
                 decodes with opencv and crops, the GPU detects in batches
    compile      (CUDA) torch.compile in max-autotune and in its default mode, fp16, while the
                 time budget lasts

Writes benchmarks/results/gpu-<gpu name>.json (gpu-cpu-smoke.json for --device cpu --quick)
and prints a summary. With --merge, the sections of this run replace those of an existing
result file and the others are kept; "runs" lists every run that wrote to it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
import types
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_anatomy as ga

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_FACEDATA = Path(os.environ.get("FOCAL_FACEDATA", ROOT.parent / "shared" / "facedata"))
BATCHES = (1, 8, 32, 64)
QUICK_BATCHES = (1, 2)
SIDE = 1024
E2E_SIDE = 2048
CROP_SIDE = 256
E2E_ZOOM = 0.5
LOW_THRESHOLD = 0.02  # for AP, as `focal eval`
THRESHOLD = 0.5
MIN_IOU = 0.99
SCORE_TOL = 1e-3
AP_TOL = 0.5  # points
# what one setting is allowed to take from the budget (torch.compile settings compile first)
SETTING_COST_S = {"compile": 90.0, "compile-max-autotune": 240.0}
COMPILE_MODES = {"compile": "default", "compile-max-autotune": "max-autotune"}
SECTIONS = (
    "cold_start",
    "memory",
    "anatomy",
    "equivalence",
    "throughput",
    "end_to_end",
    "compile",
)


def _stub_pyvips() -> None:
    """focal.face.detector imports pyvips at module level but needs it only to read and resize
    files; where pyvips is missing, a stand-in that fails when used lets the rest import."""
    if importlib.util.find_spec("pyvips") is not None:
        return
    stub = types.ModuleType("pyvips")

    def missing(name: str) -> Any:
        raise AttributeError(f"pyvips is not installed (pyvips.{name} was asked for)")

    stub.__dict__["__getattr__"] = missing
    sys.modules["pyvips"] = stub


sys.path.insert(0, str(ROOT / "src"))
_stub_pyvips()

import torch  # noqa: E402

from focal import errors, geometry  # noqa: E402
from focal.detection import Face, RGBImage  # noqa: E402
from focal.face import detector as det  # noqa: E402
from focal.face import evaluation as ev  # noqa: E402
from focal.face import models, retinaface  # noqa: E402
from focal.face import sessions as rt  # noqa: E402
from focal.face import torch_detector as tr  # noqa: E402
from focal.face import torch_postprocess as tp  # noqa: E402
from focal.options import Fit, Gravity  # noqa: E402


def _opencv() -> Any:
    """cv2, or None (the GPU machine has opencv; elsewhere pyvips decodes)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


cv2 = _opencv()


# --- small helpers ------------------------------------------------------------------------------


class Clock:
    """The run's time budget."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def say(line: str) -> None:
    print(line, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mib(value: int) -> float:
    return round(value / 2**20, 1)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def read_rgb(path: Path) -> RGBImage:
    """An image file as RGB uint8 (opencv; pyvips where opencv is missing)."""
    if cv2 is not None:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read {path}")
        rgb: RGBImage = np.ascontiguousarray(bgr[..., ::-1])
        return rgb
    import pyvips

    return det._to_numpy(pyvips.Image.new_from_file(str(path)))


def resize_rgb(image: RGBImage, width: int, height: int) -> RGBImage:
    if cv2 is not None:
        interpolation = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_CUBIC
        out: RGBImage = cv2.resize(image, (width, height), interpolation=interpolation)
        return out
    scaled = det._from_numpy(image).resize(width / image.shape[1], vscale=height / image.shape[0])
    return det._to_numpy(scaled)


def cap(image: RGBImage) -> RGBImage:
    """The image itself when it fits 1024 x 1024, else a copy scaled (opencv) to fit."""
    width, height = retinaface.inference_size(image.shape[1], image.shape[0])
    if (width, height) == (image.shape[1], image.shape[0]):
        return image
    return resize_rgb(image, width, height)


def scale_faces(faces: Sequence[Face], sx: float, sy: float) -> list[Face]:
    return [
        Face(
            box=(f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy),
            score=f.score,
            landmarks=tuple((x * sx, y * sy) for x, y in f.landmarks),
        )
        for f in faces
    ]


def above(faces: Sequence[Face], threshold: float) -> list[Face]:
    return [f for f in faces if f.score > threshold]


# --- facts --------------------------------------------------------------------------------------


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown cpu"


def device_facts(device: torch.device) -> dict[str, Any]:
    facts: dict[str, Any] = {"type": device.type, "name": cpu_model()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(
            name=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
        )
    return facts


def software_facts() -> dict[str, Any]:
    import onnxruntime

    torchvision = importlib.util.find_spec("torchvision") is not None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision_installed": torchvision,
        "nms": tp.nms_backend(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": None if cv2 is None else cv2.__version__,
        "numpy": np.__version__,
        "cpu_cores": os.cpu_count(),
        "torch_cpu_threads": torch.get_num_threads(),
        "host_cpu": cpu_model(),
    }


# --- the data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    name: str
    kind: str  # single or wider
    image: RGBImage  # as decoded
    capped: RGBImage  # within 1024 x 1024
    row: dict[str, Any]


def load_photos(facedata: Path, wider_count: int | None) -> list[Photo]:
    manifest = facedata / "manifest.jsonl"
    if not manifest.exists():
        raise SystemExit(f"evaluation data missing: {manifest} (use --facedata)")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    singles = [r for r in rows if r.get("dataset") != "WIDER FACE" and r["faces"]]
    wider = [r for r in rows if r.get("dataset") == "WIDER FACE"]
    if wider_count is not None:
        over = [r for r in wider if max(r["width"], r["height"]) > SIDE][:1]
        wider = [r for r in wider if r not in over][: max(wider_count - len(over), 0)] + over
    photos = []
    for kind, chosen in (("single", singles), ("wider", wider)):
        for row in chosen:
            image = read_rgb(facedata / row["path"])
            photos.append(Photo(Path(row["path"]).stem, kind, image, cap(image), row))
    return photos


def wider_truth(photo: Photo) -> ev.ImageTruth:
    """Official ground truth of a WIDER FACE image from the manifest's labels and attributes."""
    row = photo.row
    boxes = np.asarray(row["faces"], dtype=np.float64).reshape(-1, 4)
    attrs = row.get("face_attrs") or [{} for _ in row["faces"]]
    invalid = np.array([bool(a.get("invalid", 0)) for a in attrs], dtype=bool)
    subsets = {s: np.array([bool(a.get(s, False)) for a in attrs], dtype=bool) for s in ev.SUBSETS}
    return ev.ImageTruth(photo.name, boxes, invalid, subsets)


# --- detectors ----------------------------------------------------------------------------------


def torch_detector(
    args: argparse.Namespace,
    precision: str,
    max_batch: int = 64,
    threshold: float = THRESHOLD,
    mode: str = "eager",
    cudnn_benchmark: bool = True,
) -> tr.TorchDetector:
    """mode: eager, cuda_graphs, or one of COMPILE_MODES."""
    options = tr.TorchSettings(
        device=args.device,
        precision=precision,
        max_batch=max_batch,
        compile=mode in COMPILE_MODES,
        compile_mode=COMPILE_MODES.get(mode, "default"),
        cuda_graphs=mode == "cuda_graphs",
        idle_offload_s=None,
        cudnn_benchmark=cudnn_benchmark,
    )
    settings = retinaface.Settings(score_threshold=threshold)
    return tr.TorchDetector(args.model, args.model_sha256, settings, options)


def release(detector: tr.TorchDetector) -> None:
    detector.close()
    if detector.device.type == "cuda":
        torch.cuda.empty_cache()


# --- cold start ---------------------------------------------------------------------------------


def cold_start(args: argparse.Namespace, photo: Photo) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for precision in args.precisions:
        detector = torch_detector(args, precision, max_batch=1)
        start = time.perf_counter()
        detector.detect([photo.capped])
        first = time.perf_counter() - start
        first_load = detector.cold_start_s or 0.0
        detector.unload()
        start = time.perf_counter()
        detector.detect([photo.capped])
        again = time.perf_counter() - start
        results[precision] = {
            "first_detect_s": round(first, 3),
            "first_load_s": round(first_load, 3),
            "reload_detect_s": round(again, 3),
            "reload_load_s": round(detector.cold_start_s or 0.0, 3),
            "note": "first: the first load (on a GPU, the first precision measured includes the "
            "CUDA start and cuDNN tuning); reload: after an idle offload",
        }
        if detector.device.type == "cuda":
            results[precision]["allocated_before_offload_mib"] = mib(
                torch.cuda.memory_allocated(detector.device)
            )
        release(detector)
        if detector.device.type == "cuda":
            results[precision]["allocated_after_offload_mib"] = mib(
                torch.cuda.memory_allocated(detector.device)
            )
            results[precision]["reserved_after_offload_mib"] = mib(
                torch.cuda.memory_reserved(detector.device)
            )
        say(f"cold start {precision}: first detect {first:.2f} s, after offload {again:.2f} s")
    return results


# --- equivalence --------------------------------------------------------------------------------


def compare(
    reference: Sequence[list[Face]], candidate: Sequence[list[Face]], names: Sequence[str]
) -> dict[str, Any]:
    """Faces above the threshold paired at IoU >= 0.99; a face found by one side only counts as
    borderline when its score is within SCORE_TOL of the threshold."""
    same = 0
    min_iou, max_diff, borderline = 1.0, 0.0, 0
    mismatches = []
    for name, ref, cand in zip(names, reference, candidate, strict=True):
        found = ev.agreement(above(ref, THRESHOLD), above(cand, THRESHOLD), MIN_IOU)
        min_iou = min(min_iou, found.min_iou)
        max_diff = max(max_diff, found.max_score_difference)
        real = [s for s in found.unpaired_scores if abs(s - THRESHOLD) > SCORE_TOL]
        borderline += len(found.unpaired_scores) - len(real)
        if not real:
            same += 1
        else:
            mismatches.append(
                {
                    "image": name,
                    "reference_faces": found.reference,
                    "faces": found.candidate,
                    "unpaired_scores": [round(s, 4) for s in found.unpaired_scores[:8]],
                }
            )
    return {
        "images": len(names),
        "faces": sum(len(above(r, THRESHOLD)) for r in reference),
        "images_same": same,
        "borderline_faces": borderline,
        "min_iou": round(min_iou, 5),
        "max_score_difference": float(f"{max_diff:.3g}"),
        "same_faces": not mismatches,
        "scores_within_tolerance": max_diff <= SCORE_TOL,
        "all_same": not mismatches and max_diff <= SCORE_TOL,
        "mismatches": mismatches[:10],
    }


def average_precision(photos: Sequence[Photo], found: Sequence[list[Face]]) -> dict[str, float]:
    truths, preds = [], []
    for photo, faces in zip(photos, found, strict=True):
        if photo.kind != "wider":
            continue
        sx = photo.image.shape[1] / photo.capped.shape[1]
        sy = photo.image.shape[0] / photo.capped.shape[0]
        truths.append(wider_truth(photo))
        preds.append(ev.predictions(scale_faces(faces, sx, sy)))
    if not truths:
        return {}
    return {k: round(100 * v, 2) for k, v in ev.average_precisions(preds, truths).items()}


def equivalence(args: argparse.Namespace, photos: Sequence[Photo]) -> dict[str, Any]:
    session = rt.OnnxRuntimeSession(args.model)
    settings = retinaface.Settings(score_threshold=LOW_THRESHOLD)
    reference = det.RetinaFace(session, args.model_sha256, settings)
    capped = [p.capped for p in photos]
    names = [p.name for p in photos]
    start = time.perf_counter()
    expected = [retinaface.to_faces(reference.detect_prepared([i])[0]) for i in capped]
    result: dict[str, Any] = {
        "images": {
            "singles": sum(p.kind == "single" for p in photos),
            "wider": sum(p.kind == "wider" for p in photos),
            "over_1024_capped_with_opencv": sum(p.image is not p.capped for p in photos),
        },
        "threshold": THRESHOLD,
        "min_iou": MIN_IOU,
        "score_tolerance": SCORE_TOL,
        "ap_low_threshold": LOW_THRESHOLD,
        "onnxruntime_fp32": {
            "seconds": round(time.perf_counter() - start, 1),
            "ap": average_precision(photos, expected),
        },
    }
    say(f"onnxruntime fp32: {len(photos)} images in {result['onnxruntime_fp32']['seconds']} s")
    for precision in args.precisions:
        # benchmark mode off: with it, each of the many image shapes would be timed first
        detector = torch_detector(
            args, precision, max_batch=16, threshold=LOW_THRESHOLD, cudnn_benchmark=False
        )
        start = time.perf_counter()
        got = detector.detect(capped)
        seconds = time.perf_counter() - start
        section = compare(expected, got, names)
        section["seconds"] = round(seconds, 1)
        section["ap"] = average_precision(photos, got)
        result[precision] = section
        release(detector)
        say(
            f"torch {precision}: {section['images_same']}/{section['images']} images same "
            f"(min IoU {section['min_iou']}, max score diff {section['max_score_difference']}); "
            f"AP {section['ap']}"
        )
    if "fp16" in result and "fp32" in result and result["fp32"]["ap"]:
        delta = {k: round(result["fp16"]["ap"][k] - result["fp32"]["ap"][k], 2) for k in ev.SUBSETS}
        result["fp16_minus_fp32_ap"] = delta
        result["fp16_ap_within_tolerance"] = all(abs(v) <= AP_TOL for v in delta.values())
    result["device_resize"] = device_resize(args, photos, expected)
    return result


def device_resize(
    args: argparse.Namespace, photos: Sequence[Photo], expected: Sequence[list[Face]]
) -> dict[str, Any]:
    """Images over the cap given whole to the torch detector (resized on the device, bicubic)
    against ONNX Runtime on the opencv-capped copy: paired at IoU >= 0.95."""
    over = [(p, e) for p, e in zip(photos, expected, strict=True) if p.image is not p.capped]
    if not over:
        return {"images": 0}
    detector = torch_detector(args, "fp32", max_batch=16)
    got = detector.detect([p.image for p, _ in over])
    release(detector)
    paired = faces = 0
    for (photo, ref), cand in zip(over, got, strict=True):
        sx = photo.image.shape[1] / photo.capped.shape[1]
        sy = photo.image.shape[0] / photo.capped.shape[0]
        found = ev.agreement(scale_faces(above(ref, THRESHOLD), sx, sy), cand, 0.95)
        paired += found.paired
        faces += found.reference
    return {"images": len(over), "reference_faces": faces, "paired_at_iou_0.95": paired}


# --- throughput ---------------------------------------------------------------------------------


def device_batch(detector: tr.TorchDetector, images: Sequence[RGBImage]) -> torch.Tensor:
    """The images as one NHWC batch on the detector's device, as `detect` would build it."""
    shapes = [tr.inference_shape(i) for i in images]
    return detector.prepare(images, shapes, tr.plan_batches(shapes, len(images))[0])


def square_batch(photos: Sequence[Photo], count: int) -> list[RGBImage]:
    sources = [resize_rgb(p.image, SIDE, SIDE) for p in photos[: min(len(photos), 16)]]
    return [sources[i % len(sources)] for i in range(count)]


def timed(run: Callable[[], object], device: torch.device, min_s: float, min_runs: int) -> float:
    """Seconds per call, over at least min_runs calls and min_s seconds."""
    runs = 0
    sync(device)
    start = time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < min_s:
        run()
        runs += 1
    sync(device)
    return (time.perf_counter() - start) / runs


def one_setting(
    args: argparse.Namespace,
    images: Sequence[RGBImage],
    precision: str,
    mode: str,
) -> dict[str, Any]:
    batch = len(images)
    detector = torch_detector(args, precision, batch, mode=mode)
    device = detector.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    faces = detector.detect(images)  # load, tune, capture or compile
    warm = time.perf_counter() - start
    for _ in range(args.warmup):
        detector.detect(images)
    per_detect = timed(lambda: detector.detect(images), device, args.min_s, args.min_runs)
    tensor = device_batch(detector, images)
    per_model = timed(lambda: detector.run_model(tensor), device, args.min_s, args.min_runs)
    result: dict[str, Any] = {
        "precision": precision,
        "mode": mode,
        "batch": batch,
        "detect_images_per_s": round(batch / per_detect, 1),
        "model_images_per_s": round(batch / per_model, 1),
        "detect_ms_per_batch": round(per_detect * 1000, 2),
        "first_call_s": round(warm, 2),
        "faces_per_image": round(sum(len(f) for f in faces) / batch, 2),
    }
    if device.type == "cuda":
        result["peak_memory_mib"] = mib(torch.cuda.max_memory_allocated(device))
        result["peak_reserved_mib"] = mib(torch.cuda.max_memory_reserved(device))
    release(detector)
    return result


def throughput(
    args: argparse.Namespace,
    photos: Sequence[Photo],
    clock: Clock,
    mode: str,
    settings: Sequence[tuple[str, int]],
) -> list[dict[str, Any]]:
    """One row per (precision, batch) setting of `mode`; a setting that the time budget no
    longer allows is recorded as skipped."""
    rows = []
    needed = SETTING_COST_S.get(mode, 10.0)
    for precision, batch in settings:
        if clock.left() < needed:
            left = f"time budget ({clock.left():.0f} s left)"
            rows.append({"precision": precision, "mode": mode, "batch": batch, "skipped": left})
            continue
        rows.append(safe_setting(args, photos, precision, mode, batch))
    return rows


def grid(args: argparse.Namespace) -> list[tuple[str, int]]:
    """Every precision at every batch size (on the CPU, fp16 at batch 1 only: it is slow)."""
    return [
        (precision, batch)
        for precision in args.precisions
        for batch in args.batches
        if args.device_type == "cuda" or precision == "fp32" or batch == 1
    ]


def safe_setting(
    args: argparse.Namespace, photos: Sequence[Photo], precision: str, mode: str, batch: int
) -> dict[str, Any]:
    try:
        row = one_setting(args, square_batch(photos, batch), precision, mode)
    except Exception as exc:  # one failing setting must not stop the run
        if args.device_type == "cuda":
            torch.cuda.empty_cache()
        row = {"precision": precision, "mode": mode, "batch": batch, "error": repr(exc)[:500]}
        say(f"{mode} {precision} batch {batch}: failed: {exc!r}"[:300])
        return row
    memory = f", peak {row['peak_memory_mib']} MiB" if "peak_memory_mib" in row else ""
    say(
        f"{mode} {precision} batch {batch}: detect {row['detect_images_per_s']} img/s, "
        f"model {row['model_images_per_s']} img/s{memory}"
    )
    return row


# --- memory and anatomy -------------------------------------------------------------------------


def memory(args: argparse.Namespace, photos: Sequence[Photo]) -> dict[str, Any]:
    """GPU memory at batch 1 (each precision) and at the largest batch (fp16)."""
    if args.device_type != "cuda":
        return {"skipped": "CUDA only"}
    settings = [(precision, 1) for precision in args.precisions]
    settings.append((args.precisions[0], max(args.batches)))
    result: dict[str, Any] = {
        "note": "MiB; allocator figures are torch.cuda's (tensors and cuDNN workspaces); "
        "device_used is the whole device's (the CUDA context included)"
    }
    for precision, batch in settings:

        def make(
            benchmark: bool, precision: str = precision, batch: int = batch
        ) -> tr.TorchDetector:
            return torch_detector(args, precision, batch, cudnn_benchmark=benchmark)

        rows = ga.memory_breakdown(make, square_batch(photos, batch), args.warmup)
        result[f"{precision} batch {batch}"] = rows
        for name, row in rows.items():
            say(
                f"memory {precision} batch {batch} {name}: first detect peak "
                f"{row['first_detect_peak_mib']} MiB in {row['first_detect_s']} s, warm peak "
                f"{row['warm_detect_peak_mib']} MiB, {row['warm_detect_ms']} ms; device in use "
                f"{row['device_used_after_mib']} MiB"
            )
    return result


def copy_bandwidth(device: torch.device) -> float:
    """GB/s of a 1 GiB device-to-device copy, counting the bytes read and written."""
    source = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = timed(lambda: target.copy_(source), device, 0.5, 10)
    return round(2 * source.numel() / seconds / 1e9, 1)


def anatomy(args: argparse.Namespace, photos: Sequence[Photo]) -> dict[str, Any]:
    device = torch.device(args.device)
    costs = {p: ga.network_cost(args.model, 1, SIDE, tr.DTYPES[p]) for p in args.precisions}
    result: dict[str, Any] = {
        "cost": costs,
        "activation_peak_mib": {  # every activation scales with the batch
            f"{precision} batch {batch}": round(cost["activation_peak_mib"] * batch, 1)
            for precision, cost in costs.items()
            for batch in args.batches
        },
        "note": "cost: per 1024x1024 image, counted op by op on the CPU (each op reads "
        "its inputs and writes its outputs once; ops that return their input count nothing); "
        "step times: device time between CUDA events around each step (wall clock on a CPU)",
    }
    for precision, cost in costs.items():
        say(
            f"cost {precision}: {cost['gflop_per_image']} GFLOP and {cost['mb_moved_per_image']} "
            f"MB moved per image; activation peak at batch 1 {cost['activation_peak_mib']} MiB"
        )
    precision = args.e2e_precision if args.e2e_precision in costs else args.precisions[0]
    batch = max(args.batches)
    detector = torch_detector(args, precision, batch)
    tensor = device_batch(detector, square_batch(photos, batch))
    module = detector.network()
    times = ga.step_times(module, tensor, args.profile_runs)
    cost = costs[precision]
    per_image_s = times["forward_ms"] / 1000 / batch
    result["step_times"] = times
    result["by_kind"] = ga.beside_cost(times, cost)
    result["network_images_per_s"] = round(1 / per_image_s, 1)
    result["achieved_gb_per_s"] = round(cost["mb_moved_per_image"] / 1000 / per_image_s, 1)

    def forward() -> None:
        with torch.inference_mode():
            for _ in range(args.profile_runs):
                module(tensor)

    result["kernels"] = ga.kernel_table(forward, device)
    release(detector)
    if device.type == "cuda":
        result["copy_gb_per_s"] = copy_bandwidth(device)
    say(
        f"anatomy {precision} batch {batch}: {result['network_images_per_s']} images/s, "
        f"{result['achieved_gb_per_s']} GB/s of counted traffic"
        + (f" (device copy: {result['copy_gb_per_s']} GB/s)" if "copy_gb_per_s" in result else "")
    )
    return result


# --- end to end ---------------------------------------------------------------------------------


def make_jpegs(
    photos: Sequence[Photo], folder: Path, count: int, pool: ThreadPoolExecutor
) -> list[Path]:
    """count 2048x2048 JPEGs made from the photos (stretched to square, quality 90)."""
    sources = [p.image for p in photos]

    def write(index: int) -> Path:
        path = folder / f"e2e_{index:05d}.jpg"
        image = resize_rgb(sources[index % len(sources)], E2E_SIDE, E2E_SIDE)
        if cv2 is not None:
            cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        else:
            det._from_numpy(image).jpegsave(str(path), Q=90)
        return path

    return list(pool.map(write, range(count)))


@dataclass(frozen=True)
class Decoded:
    full: RGBImage
    small: RGBImage


def decode_for_detection(path: Path) -> Decoded:
    full = read_rgb(path)
    width, height = retinaface.inference_size(full.shape[1], full.shape[0])
    return Decoded(full, resize_rgb(full, width, height))


def face_crop(decoded: Decoded, faces: Sequence[Face]) -> tuple[int, bool]:
    """The 256x256 gravity=face crop as JPEG bytes: (its size, whether a face was used)."""
    full = decoded.full
    factor = full.shape[1] / decoded.small.shape[1]
    boxes = [geometry.Box(*(v * factor for v in f.box)) for f in faces]
    source = geometry.Size(full.shape[1], full.shape[0])
    plan = geometry.plan(
        source, CROP_SIDE, CROP_SIDE, Fit.COVER, Gravity("face"), faces=boxes, zoom=E2E_ZOOM
    )
    c = plan.crop
    region = np.ascontiguousarray(full[c.top : c.bottom, c.left : c.right])
    crop = resize_rgb(region, plan.resize.width, plan.resize.height)
    if cv2 is not None:
        ok, data = cv2.imencode(".jpg", crop[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        size = len(data) if ok else 0
    else:
        size = len(det._from_numpy(crop).jpegsave_buffer(Q=85))
    return size, plan.face is not None


def ordered_results(
    pool: ThreadPoolExecutor, work: Callable[[Path], Decoded], paths: Sequence[Path], window: int
) -> Iterator[Decoded]:
    """work(path) for each path on the pool, at most `window` in flight, yielded in order."""
    pending: deque[Future[Decoded]] = deque()
    items = iter(paths)
    for path in items:
        pending.append(pool.submit(work, path))
        if len(pending) >= window:
            break
    while pending:
        done = pending.popleft().result()
        nxt = next(items, None)
        if nxt is not None:
            pending.append(pool.submit(work, nxt))
        yield done


def end_to_end(args: argparse.Namespace, photos: Sequence[Photo]) -> dict[str, Any]:
    workers = os.cpu_count() or 1
    batch = args.e2e_batch
    detector = torch_detector(args, args.e2e_precision, max_batch=batch)
    detector.detect(square_batch(photos, batch))  # warm: loaded and tuned for 1024x1024
    with (
        tempfile.TemporaryDirectory(prefix="focal-gpu-e2e-") as temporary,
        ThreadPoolExecutor(workers) as pool,
    ):
        start = time.perf_counter()
        paths = make_jpegs(photos, Path(temporary), args.e2e_images, pool)
        made = time.perf_counter() - start
        megabytes = sum(p.stat().st_size for p in paths) / 2**20
        start = time.perf_counter()
        for _ in ordered_results(pool, decode_for_detection, paths, 4 * workers):
            pass
        decode_only = time.perf_counter() - start
        start = time.perf_counter()
        crops: list[Future[tuple[int, bool]]] = []
        detect_s = 0.0
        chunk: list[Decoded] = []
        stream = ordered_results(pool, decode_for_detection, paths, max(4 * workers, 2 * batch))
        for index, decoded in enumerate(stream, 1):
            chunk.append(decoded)
            if len(chunk) < batch and index < len(paths):
                continue
            began = time.perf_counter()
            found = detector.detect([d.small for d in chunk])
            detect_s += time.perf_counter() - began
            crops.extend(pool.submit(face_crop, d, f) for d, f in zip(chunk, found, strict=True))
            chunk = []
        outcomes = [c.result() for c in crops]
        total = time.perf_counter() - start
    release(detector)
    count = len(paths)
    result = {
        "images": count,
        "jpeg_mib": round(megabytes, 1),
        "make_jpegs_s": round(made, 1),
        "decode_workers": workers,
        "batch": batch,
        "precision": args.e2e_precision,
        "crop": f"{CROP_SIDE}x{CROP_SIDE} fit=cover gravity=face zoom={E2E_ZOOM}, JPEG q85",
        "images_per_s": round(count / total, 1),
        "decode_and_downscale_only_images_per_s": round(count / decode_only, 1),
        "detect_busy_share": round(detect_s / total, 3),
        "face_crops": sum(face for _, face in outcomes),
        "centre_fallbacks": sum(not face for _, face in outcomes),
        "mean_crop_bytes": round(sum(size for size, _ in outcomes) / max(count, 1)),
    }
    decode_rate = result["decode_and_downscale_only_images_per_s"]
    busy = 100 * detect_s / total
    say(
        f"end to end: {result['images_per_s']} images/s ({count} 2048x2048 JPEGs, {workers} "
        f"decode threads, batch {batch}); decode alone {decode_rate} images/s; "
        f"detector busy {busy:.0f}% of the time"
    )
    return result


# --- the run ------------------------------------------------------------------------------------


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the converted retinaface_mnv2.onnx")
    parser.add_argument("--facedata", type=Path, default=DEFAULT_FACEDATA)
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--budget-s", type=float, default=330.0, help="stop optional settings")
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/...)")
    parser.add_argument("--e2e-images", type=int)
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--precisions",
        help="comma-separated precisions to run (default: fp16,fp32 on a GPU or with --quick, "
        "else fp32)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other sections of an existing result file (and its list of runs)",
    )
    args = parser.parse_args(argv)
    args.sections = set(args.sections.split(","))
    unknown = args.sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}: expected some of {','.join(SECTIONS)}")
    if args.model is None:
        args.model = models.default_model_dir() / models.MODEL_FILE
    if not args.model.exists():
        raise SystemExit(f"model file not found: {args.model} (use --model)")
    args.model_sha256 = models.file_sha256(args.model)
    device = tr.resolve_device(args.device)
    args.device = str(device)
    args.device_type = device.type
    gpu = device.type == "cuda"
    args.batches = QUICK_BATCHES if args.quick else BATCHES
    if args.precisions:
        try:
            args.precisions = tuple(tr.resolve_precision(p) for p in args.precisions.split(","))
        except errors.TorchRuntimeError as exc:
            parser.error(f"--precisions: {exc}")
    else:
        args.precisions = ("fp16", "fp32") if gpu or args.quick else ("fp32",)
    args.min_s, args.min_runs, args.warmup = (0.0, 1, 0) if args.quick else (1.5, 3, 2)
    args.profile_runs = 2 if args.quick else 10
    args.wider_count = 4 if args.quick else None
    args.e2e_images = args.e2e_images or (8 if args.quick else 768)
    args.e2e_batch = 4 if args.quick else 64
    args.e2e_precision = "fp16" if gpu else "fp32"
    return args


def result_path(args: argparse.Namespace, device: dict[str, Any]) -> Path:
    if args.out is not None:
        return Path(args.out)
    if args.device_type == "cpu":
        return RESULTS / ("gpu-cpu-smoke.json" if args.quick else "gpu-cpu.json")
    return RESULTS / f"gpu-{slug(device['name'])}.json"


def summary(report: dict[str, Any]) -> str:
    lines = [f"device: {report['device']['name']} ({report['device']['type']})"]
    rows = report.get("throughput", []) + report.get("compile", [])
    for r in (r for r in rows if "detect_images_per_s" in r):
        memory = f", peak {r['peak_memory_mib']} MiB" if "peak_memory_mib" in r else ""
        lines.append(
            f"  {r['mode']:<20} {r['precision']} batch {r['batch']:>2}: detect "
            f"{r['detect_images_per_s']:>7} img/s, model {r['model_images_per_s']:>7} img/s{memory}"
        )
    eq = report.get("equivalence", {})
    for precision in ("fp32", "fp16"):
        if precision in eq:
            s = eq[precision]
            lines.append(
                f"  {precision} vs ONNX Runtime fp32: {s['images_same']}/{s['images']} images "
                f"same, min IoU {s['min_iou']}, max score diff {s['max_score_difference']}, "
                f"AP {s['ap']}"
            )
    if "fp16_minus_fp32_ap" in eq:
        lines.append(f"  fp16 - fp32 AP: {eq['fp16_minus_fp32_ap']}")
    if "end_to_end" in report:
        lines.append(f"  end to end: {report['end_to_end'].get('images_per_s')} images/s")
    anatomy = report.get("anatomy", {})
    if "achieved_gb_per_s" in anatomy:
        kinds = list(anatomy["by_kind"].items())[:3]
        busiest = ", ".join(f"{k} {v['share_of_time']:.0%}" for k, v in kinds)
        lines.append(
            f"  network: {anatomy['network_images_per_s']} images/s, "
            f"{anatomy['achieved_gb_per_s']} GB/s of counted traffic; {busiest}"
        )
    for setting, rows_ in report.get("memory", {}).items():
        if isinstance(rows_, dict):
            for name, row in rows_.items():
                lines.append(
                    f"  memory {setting} {name}: warm peak {row['warm_detect_peak_mib']} MiB, "
                    f"first {row['first_detect_peak_mib']} MiB"
                )
    for precision, cold in report.get("cold_start", {}).items():
        if isinstance(cold, dict) and "first_detect_s" in cold:
            lines.append(
                f"  cold start {precision}: first detect {cold['first_detect_s']} s, "
                f"after offload {cold['reload_detect_s']} s"
            )
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    broken = [r for r in rows if "error" in r]
    failed += [f"{r['mode']} {r['precision']} batch {r['batch']}" for r in broken]
    if failed:
        lines.append(f"  FAILED: {', '.join(failed)}")
    lines.append(f"  total {report['seconds']} s")
    return "\n".join(lines)


def guarded(name: str, run: Callable[[], Any]) -> Any:
    """run(), or a record of how it failed: one broken section must not stop the others."""
    try:
        return run()
    except Exception as exc:
        say(f"{name} failed: {exc!r}"[:500])
        return {"error": repr(exc)[:1000], "traceback": traceback.format_exc()[-4000:]}


def earlier(path: Path, merge: bool) -> dict[str, Any]:
    """What an existing result file holds, when merging into it."""
    if not merge or not path.exists():
        return {}
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    clock = Clock(args.budget_s)
    device = tr.resolve_device(args.device)
    photos = load_photos(args.facedata, args.wider_count)
    say(f"torch {torch.__version__}; {len(photos)} photos from {args.facedata}")
    run: dict[str, Any] = {
        "command": " ".join(
            ["python benchmarks/experiments/gpu.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sections": ",".join(s for s in SECTIONS if s in args.sections),
    }
    fresh: dict[str, Any] = {"model_sha256": args.model_sha256, "quick": args.quick}
    # first, before anything else touches the GPU: the cold start includes CUDA's
    if "cold_start" in args.sections:
        fresh["cold_start"] = guarded("cold start", lambda: cold_start(args, photos[0]))
    facts = device_facts(device)
    path = result_path(args, facts)
    report = earlier(path, args.merge)
    report.update(benchmark="gpu", device=facts, software=software_facts(), **run, **fresh)
    report.setdefault("runs", []).append(run)

    def save() -> None:
        report["seconds"] = run["seconds"] = round(clock.elapsed(), 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")

    say(f"device {report['device']['name']}; NMS by {report['software']['nms']}")
    save()
    for name, section in (
        ("memory", lambda: memory(args, photos)),
        ("anatomy", lambda: anatomy(args, photos)),
        ("equivalence", lambda: equivalence(args, photos)),
    ):
        if name in args.sections:
            report[name] = guarded(name, section)
            save()
    cuda = args.device_type == "cuda"
    if "throughput" in args.sections:
        rows = throughput(args, photos, clock, "eager", grid(args))
        report["throughput"] = rows
        save()
    if "end_to_end" in args.sections:
        report["end_to_end"] = guarded("end to end", lambda: end_to_end(args, photos))
        save()
    if cuda and "throughput" in args.sections:
        report["throughput"] += throughput(args, photos, clock, "cuda_graphs", grid(args))
        save()
    if cuda and "compile" in args.sections:
        big = max(args.batches)
        # max-autotune first: it is the one that can fuse the clips into the convolutions
        compiled = throughput(args, photos, clock, "compile-max-autotune", [("fp16", big)])
        compiled += throughput(args, photos, clock, "compile", [("fp16", big)])
        compiled += throughput(args, photos, clock, "compile-max-autotune", [("fp16", 1)])
        report["compile"] = compiled
    report["settings_note"] = (
        "eager = channels_last, cuDNN benchmark mode; cuda_graphs = one captured graph per batch "
        "shape; compile = torch.compile(mode='default'), compile-max-autotune = "
        "torch.compile(mode='max-autotune'), their compile time in first_call_s"
    )
    save()
    say(summary(report))
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
