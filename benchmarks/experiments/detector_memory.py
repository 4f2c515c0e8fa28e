"""Resident memory of the detector worker under a mixed-size face load, per configuration.

Each configuration starts a real detector pool (one worker process, fp32, the installed model),
sends it the same sequence of single-image detections, and reads the worker's RSS
(/proc/PID/status VmRSS) after every detection. The images are WIDER FACE photos of
../shared/facedata resized (libvips, in this process) to many sizes and aspect ratios, as the
server's inference copies are: half of them photos at the 1024 cap (the long side 1024, the
other 40% to 100% of it), half smaller images (both sides 160 to 1024), so that the padded input
shapes vary. The sequence is the distinct sizes in order, repeated `--rounds` times (a shape
seen twice is what makes OpenVINO compile a static model for it).

Configurations (see docs/detector.md, "The detector worker's memory"); the first seven and
dynamic-mmap are OpenVINO:

    static-8          8 static compilations kept besides the dynamic one (focal before)
    static-2          2 static compilations kept
    dynamic           the dynamic compilation only (static_shapes=0)
    dynamic-cache-0   dynamic, OpenVINO's CPU runtime cache off (CPU_RUNTIME_CACHE_CAPACITY=0)
    dynamic-arena-2   dynamic, MALLOC_ARENA_MAX=2 in the worker
    static-8-bucket   8 static compilations, inputs padded up to multiples of 256 first (a
                      bounded set of shapes; changes scores near the bottom and right edges)
    throughput-hint   dynamic, PERFORMANCE_HINT=THROUGHPUT (more streams) instead of LATENCY
    onnxruntime-pattern    ONNX Runtime with its memory pattern (a buffer plan per input shape)
    onnxruntime       ONNX Runtime with its arena, without the memory pattern (focal's default)
    onnxruntime-no-arena   ONNX Runtime without the arena
    onnxruntime-no-arena-mmap   the same, with glibc's mmap threshold fixed at 128 KiB
                      (MALLOC_MMAP_THRESHOLD_), so that large freed buffers go back at once
    dynamic-mmap      dynamic OpenVINO with the same fixed mmap threshold
    default           focal's defaults now (focal.face.sessions.DetectorConfig())

Reported per configuration: RSS after the worker started, after each detection, peak, steady
(median over the last third), and the load's wall time. With --speed, also the seconds the
network alone takes over the same input shapes in OpenVINO (8 static compilations, dynamic) and
ONNX Runtime (with and without its memory pattern), one call of each in turn per input. Written to
benchmarks/results/detector_memory.json (configurations and timings of an earlier run of the
same load that this run did not redo are kept).

    .venv/bin/python benchmarks/experiments/detector_memory.py [--distinct 20] [--rounds 3]
        [--speed] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness
from focal.detection import Detector, Face, RGBImage
from focal.face import models
from focal.face.detector import RetinaFace
from focal.face.retinaface import Session, padded_size
from focal.face.sessions import FACTORY, OnnxRuntimeSession, OpenVinoSession
from focal.geometry import INFERENCE_CAP
from focal.server.detection.pool import DetectorPool, PoolSettings

COMMAND = ".venv/bin/python benchmarks/experiments/detector_memory.py"
MIB = 1024 * 1024
CAP = INFERENCE_CAP
FACTORY_HERE = "detector_memory:build"
WIDER = harness.FACEDATA / "wider_face" / "WIDER_val" / "images"

CONFIGS: dict[str, dict[str, Any]] = {
    "static-8": {"static_shapes": 8},  # focal's default before
    "static-2": {"static_shapes": 2},
    "dynamic": {"static_shapes": 0},
    "dynamic-cache-0": {"static_shapes": 0, "openvino": {"CPU_RUNTIME_CACHE_CAPACITY": 0}},
    "dynamic-arena-2": {"static_shapes": 0, "env": {"MALLOC_ARENA_MAX": "2"}},
    "static-8-bucket": {"static_shapes": 8, "bucket": 256},
    "throughput-hint": {"static_shapes": 0, "openvino": {"PERFORMANCE_HINT": "THROUGHPUT"}},
    "onnxruntime-pattern": {"runtime": "onnxruntime", "memory_pattern": True},
    "onnxruntime": {"runtime": "onnxruntime"},
    "onnxruntime-no-arena": {"runtime": "onnxruntime", "memory_arena": False},
    "onnxruntime-no-arena-mmap": {
        "runtime": "onnxruntime",
        "memory_arena": False,
        "env": {"MALLOC_MMAP_THRESHOLD_": "131072"},
    },
    "dynamic-mmap": {"static_shapes": 0, "env": {"MALLOC_MMAP_THRESHOLD_": "131072"}},
    "default": {},
}


class Bucketed:
    """A detector that pads each image with zeros up to a multiple of `multiple` first (faces
    keep their coordinates: the image stays at the top-left)."""

    def __init__(self, inner: Detector, multiple: int) -> None:
        self.inner = inner
        self.multiple = multiple

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        padded = []
        for image in images:
            height, width = padded_size(image.shape[0], image.shape[1], self.multiple)
            canvas = np.zeros((height, width, 3), dtype=np.uint8)
            canvas[: image.shape[0], : image.shape[1]] = image[..., :3]
            padded.append(canvas)
        return self.inner.detect(padded)


def build(
    runtime: str = "openvino",
    static_shapes: int = 0,
    openvino: dict[str, Any] | None = None,
    memory_arena: bool = True,
    memory_pattern: bool = False,
    bucket: int = 0,
) -> Detector:
    """The worker's factory for one configuration: the CPU detector on one session."""
    installed = models.require()
    session: Session
    if runtime == "onnxruntime":
        session = OnnxRuntimeSession(
            installed.model_path, memory_arena=memory_arena, memory_pattern=memory_pattern
        )
    else:
        openvino_session = OpenVinoSession(installed.model_path, static_shapes=static_shapes)
        if openvino:
            openvino_session.configure(openvino)
        session = openvino_session
    detector: Detector = RetinaFace(session, installed.manifest.model_sha256)
    return Bucketed(detector, bucket) if bucket else detector


def sizes(distinct: int, seed: int = 0) -> list[tuple[int, int]]:
    """(width, height) pairs, all different: half at the cap, half smaller."""
    rng = np.random.default_rng(seed)
    found: list[tuple[int, int]] = []
    while len(found) < distinct:
        if len(found) % 2 == 0:
            short = int(rng.integers(int(CAP * 0.4), CAP + 1))
            size = (CAP, short) if rng.random() < 0.5 else (short, CAP)
        else:
            size = (int(rng.integers(160, CAP + 1)), int(rng.integers(160, CAP + 1)))
        if size not in found:
            found.append(size)
    return found


def photos(count: int) -> list[Path]:
    paths = sorted(WIDER.glob("*/*.jpg"))[:count]
    if not paths:
        raise SystemExit(f"no WIDER FACE images under {WIDER}")
    return paths


def images(distinct: int, rounds: int) -> Iterator[RGBImage]:
    """The load: each distinct size once per round, from a rotating set of photos."""
    chosen = photos(10)
    for round_ in range(rounds):
        for k, (width, height) in enumerate(sizes(distinct)):
            path = chosen[(k + round_) % len(chosen)]
            image = pyvips.Image.thumbnail(str(path), width, height=height, size="force")
            shape = (image.height, image.width, image.bands)
            yield np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=shape)


def worker_rss(pool: DetectorPool) -> float:
    return pool.stats().worker_rss_bytes[0] / MIB


def measure(
    config: dict[str, Any], distinct: int, rounds: int, factory: str = FACTORY_HERE
) -> dict[str, Any]:
    """Start a pool for one configuration, run the load, return the worker's RSS series."""
    args = {k: v for k, v in config.items() if k != "env"}
    if not args and factory == FACTORY_HERE:
        factory, args = FACTORY, {}  # focal's own factory and defaults
    settings = PoolSettings(
        workers=1,
        queue_size=4,
        deadline_s=120.0,
        max_batch=1,
        rss_limit_mb=1 << 20,
        factory=factory,
        factory_args=tuple(args.items()),
    )
    saved = {k: os.environ.get(k) for k in config.get("env", {})}
    os.environ.update(config.get("env", {}))
    pool = DetectorPool(settings)
    try:
        pool.start()
        started = worker_rss(pool)
        series = []
        faces = 0
        begin = time.perf_counter()
        for image in images(distinct, rounds):
            faces += len(pool.detect([image])[0])
            series.append(round(worker_rss(pool), 1))
        seconds = time.perf_counter() - begin
    finally:
        pool.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    tail = series[-max(1, len(series) // 3) :]
    return {
        "config": config,
        "rss_started_mib": round(started, 1),
        "rss_mib": series,
        "rss_peak_mib": max(series),
        "rss_steady_mib": round(statistics.median(tail), 1),
        "rss_final_mib": series[-1],
        "detections": len(series),
        "faces": faces,
        "seconds": round(seconds, 2),
    }


SPEED_SESSIONS = ("openvino static-8", "openvino dynamic", "onnxruntime pattern", "onnxruntime")


def speed(distinct: int, rounds: int) -> dict[str, float]:
    """Seconds the network alone takes over the load's input shapes (random pixels), each
    session in turn per input, in this process: the speed side of the memory figures."""
    path = models.require().model_path
    sessions: dict[str, Session] = {
        "openvino static-8": OpenVinoSession(path, static_shapes=8),
        "openvino dynamic": OpenVinoSession(path, static_shapes=0),
        "onnxruntime pattern": OnnxRuntimeSession(path, memory_pattern=True),
        "onnxruntime": OnnxRuntimeSession(path),
    }
    totals = dict.fromkeys(sessions, 0.0)
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for width, height in sizes(distinct):
            padded = padded_size(height, width)
            batch = (rng.random((1, *padded, 3), dtype=np.float32) * 255).astype(np.float32)
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(batch)
                totals[name] += time.perf_counter() - start
    return {name: round(total, 2) for name, total in totals.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distinct", type=int, default=20, help="distinct image sizes")
    parser.add_argument("--rounds", type=int, default=3, help="times the sizes are repeated")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="configurations")
    parser.add_argument(
        "--speed", action="store_true", help="also time the network alone, sessions interleaved"
    )
    args = parser.parse_args(argv)
    chosen = args.only or list(CONFIGS)
    timed = {}
    if args.speed:
        timed = speed(args.distinct, args.rounds)
        print("network alone, s for the load:", timed, flush=True)
    results = {}
    for name in chosen:
        found = measure(CONFIGS[name], args.distinct, args.rounds)
        results[name] = found
        print(
            f"{name:16} started {found['rss_started_mib']:6.0f} MiB  peak "
            f"{found['rss_peak_mib']:6.0f}  steady {found['rss_steady_mib']:6.0f}  final "
            f"{found['rss_final_mib']:6.0f}  {found['detections']} detections "
            f"({found['faces']} faces) in {found['seconds']:.1f} s",
            flush=True,
        )
    load = {"distinct_sizes": args.distinct, "rounds": args.rounds, "sizes": sizes(args.distinct)}
    earlier = harness.read_result("detector_memory") or {}
    if earlier.get("load") == json.loads(json.dumps(load)):  # same load: keep what was not redone
        results = {**earlier.get("configs", {}), **results}
        timed = timed or earlier.get("speed_s", {})
    body = {"load": load, "configs": results, "speed_s": timed}
    harness.write_result("detector_memory", body, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
