"""What one face crop costs in process, per detector configuration: wall and CPU time.

The job of the three-way run's face column (benchmarks/threeway.py): every JPEG of
benchmarks/work/inputs/face/ to a 256 x 256 gravity=face crop, JPEG q80, through
focal.pipeline.transform with focal's ONNX Runtime detector and no cache. CPU time is the
process's own (every thread: libvips', ONNX Runtime's), so it is what a busy server pays per
crop; wall time is what one request waits when the machine is otherwise idle.

Configurations, measured in rotating rounds (a round runs every configuration once, the order
rotating from round to round, so drift on the shared cores falls on all alike):

  side=S           detector_max_side S (1024, the default and the published cap, down to 512)
  1024 spinning    the default side with ONNX Runtime's worker threads spinning between runs
                   (ONNX Runtime's own default; focal turns it off)
  1024 1 thread    the default side on one ONNX Runtime thread (the default is one per core):
                   what a detector process costs per crop when each has one core of its own
  1024 side by output   the detector at 1024, face crops detecting at twice the output's scale
                   (face_crop_side=output, docs/detector.md)

Reported per configuration: median over rounds of the wall and CPU milliseconds per crop,
their ratio to the default (side=1024) within each round (min / median / max), and the median
split of one crop (decode, detect, process, encode: focal's Result.timings).

    .venv/bin/python benchmarks/face_cost.py [--rounds 5] [--sides 1024,896,768,640,512]
        [--no-threads] [--out NAME]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import harness
import prepare
from focal.detection import Detector

COMMAND = ".venv/bin/python benchmarks/face_cost.py"
OPTIONS = "width=256,height=256,fit=cover,gravity=face,format=jpeg,quality=80,metadata=none"
DEFAULT = "side=1024"
SPINNING = "1024 spinning"
ONE_THREAD = "1024 1 thread"
BY_OUTPUT = "1024 side by output"


@dataclass(frozen=True)
class Config:
    name: str
    max_side: int
    spinning: bool = False
    threads: int = 0  # ONNX Runtime's intra-op threads; 0: its default, one per core
    face_crop_side: str = "cap"  # focal.pipeline.FACE_CROP_SIDES


def configurations(sides: Sequence[int], threads: bool = True) -> list[Config]:
    extras = [Config(SPINNING, 1024, spinning=True), Config(ONE_THREAD, 1024, threads=1)]
    return [
        *(Config(f"side={s}", s) for s in sides),
        Config(BY_OUTPUT, 1024, face_crop_side="output"),
        *(extras if threads else []),
    ]


def build(config: Config) -> Detector:
    from focal.face import models
    from focal.face.detector import RetinaFace
    from focal.face.retinaface import Settings
    from focal.face.sessions import OnnxRuntimeSession

    installed = models.require(None)
    session = OnnxRuntimeSession(
        installed.model_path, threads=config.threads, spinning=config.spinning
    )
    return RetinaFace(session, installed.manifest.model_sha256, Settings(max_side=config.max_side))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_round(
    detector: Detector, sources: Sequence[bytes], passes: int, side: str = "cap"
) -> dict[str, Any]:
    """Every source ``passes`` times: wall and CPU ms per crop, and each crop's timings."""
    from focal.options import parse_options
    from focal.pipeline import transform

    options = parse_options(OPTIONS)
    timings: list[dict[str, float]] = []
    cpu, start = cpu_seconds(), time.perf_counter()
    for _ in range(passes):
        for data in sources:
            result = transform(data, options, detector=detector, face_crop_side=side)
            timings.append(result.timings)
    crops = passes * len(sources)
    return {
        "wall_ms": (time.perf_counter() - start) * 1000 / crops,
        "cpu_ms": (cpu_seconds() - cpu) * 1000 / crops,
        "timings": timings,
    }


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    names = list(rounds[0])
    out: dict[str, Any] = {}
    for name in names:
        stages = sorted({k for r in rounds for t in r[name]["timings"] for k in t})
        split = {
            s: round(harness.median([t.get(s, 0.0) for r in rounds for t in r[name]["timings"]]), 1)
            for s in stages
        }
        row: dict[str, Any] = {"split_ms": split}
        for key in ("wall_ms", "cpu_ms"):
            row[key] = round(harness.median([r[name][key] for r in rounds]), 1)
            ratios = sorted(r[name][key] / r[DEFAULT][key] for r in rounds)
            row[key.replace("_ms", "_ratio")] = {
                "min": round(ratios[0], 3),
                "median": round(harness.median(ratios), 3),
                "max": round(ratios[-1], 3),
            }
        out[name] = row
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Face-crop cost per detector configuration.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=2, help="passes over the sources a round")
    parser.add_argument("--sides", default="1024,896,768,640,512")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--no-threads", action="store_true", help="leave out the thread configs")
    parser.add_argument("--out", default="face_cost", help="result name")
    args = parser.parse_args(argv)
    sides = [int(s) for s in args.sides.split(",")]
    if 1024 not in sides:
        parser.error("--sides must hold 1024, the default the ratios are taken to")
    prepare.prepare()
    files = sorted((harness.INPUTS / "face").glob("*.jpg"))
    sources = [f.read_bytes() for f in files]
    configs = configurations(sides, threads=not args.no_threads)
    detectors = {c.name: build(c) for c in configs}
    for detector in detectors.values():  # warm: sessions, arenas, libvips
        one_round(detector, sources, 1)  # the side choice does not change what is warmed
    started = time.monotonic()
    rounds: list[dict[str, dict[str, Any]]] = []
    for index in range(args.rounds):
        k = index % len(configs)
        order = [*configs[k:], *configs[:k]]
        rounds.append(
            {
                c.name: one_round(detectors[c.name], sources, args.passes, c.face_crop_side)
                for c in order
            }
        )
        print(f"  round {index + 1}/{args.rounds} done", flush=True)
    summary = summarise(rounds)
    for name, row in summary.items():
        print(
            f"  {name:14} wall {row['wall_ms']:6.1f} ms ({row['wall_ratio']['median']:.2f}x)  "
            f"cpu {row['cpu_ms']:6.1f} ms ({row['cpu_ratio']['median']:.2f}x)  {row['split_ms']}"
        )
    if args.no_write:
        return 0
    data = {
        "job": OPTIONS,
        "sources": [f"benchmarks/work/inputs/face/{f.name}" for f in files],
        "detector": "ONNX Runtime fp32 (focal's default runtime), no detection cache",
        "rounds": args.rounds,
        "passes": args.passes,
        "configurations": {
            c.name: {
                "max_side": c.max_side,
                "spinning": c.spinning,
                "threads": c.threads,
                "face_crop_side": c.face_crop_side,
            }
            for c in configs
        },
        "summary": summary,
        "seconds": round(time.monotonic() - started, 1),
    }
    harness.write_result(args.out, data, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
