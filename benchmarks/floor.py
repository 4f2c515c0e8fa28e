"""focal's overhead over the libvips floor: CPU time per image for the same jobs.

Two comparisons, on the 2400 px JPEGs of benchmarks/work/inputs/large (and, in process only,
the 24-frame animated GIF of inputs/anim, every frame kept):

  in-process  focal.pipeline.transform against libvips' own thumbnail + save through pyvips, in
              one Python process on the same libvips (8.18, from pyvips-binary); CPU time of the
              process (all threads) per call, libvips' operation cache off for both. This is the
              ratio the goal (<= 1.25x) is about.
  cli         ``focal transform FOLDER`` against Debian's ``vipsthumbnail`` (libvips-tools,
              libvips 8.14) over a folder of 40 images, CPU time of the child processes divided
              by the number of images (start-up included, spread over the 40).

    .venv/bin/python benchmarks/floor.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyvips

import harness
import prepare

COMMAND = ".venv/bin/python benchmarks/floor.py"
GOAL = 1.25
COPIES = 10
# The savers' settings are focal's own (focal.encode): progressive JPEG with optimised Huffman
# tables, WebP effort 2; the floor uses the same so that the ratio is the pipeline's overhead.
JPEG_SUFFIX = ".jpg[Q=80,strip,interlace,optimize_coding]"
WEBP_SUFFIX = ".webp[Q=80,strip,effort=2]"


@dataclass(frozen=True)
class Job:
    name: str
    focal: str  # Cloudflare-style options
    floor: Callable[[bytes], bytes]  # libvips' thumbnail + save, in process
    vipsthumbnail: list[str]  # the CLI's arguments (before the files)
    suffix: str


def _fit512(data: bytes) -> pyvips.Image:
    return pyvips.Image.thumbnail_buffer(data, 512, height=512, size="down")


def _cover256(data: bytes) -> pyvips.Image:
    return pyvips.Image.thumbnail_buffer(data, 256, height=256, crop="centre")


def _jpeg(image: pyvips.Image) -> bytes:
    out: bytes = image.jpegsave_buffer(Q=80, interlace=True, optimize_coding=True, keep="none")
    return out


def _webp(image: pyvips.Image) -> bytes:
    out: bytes = image.webpsave_buffer(Q=80, effort=2, keep="none")
    return out


JOBS = (
    Job(
        "fit512-jpeg",
        "width=512,height=512,fit=scale-down,format=jpeg,quality=80,metadata=none",
        lambda d: _jpeg(_fit512(d)),
        ["--size", "512x512>"],
        JPEG_SUFFIX,
    ),
    Job(
        "cover256-jpeg",
        "width=256,height=256,fit=cover,format=jpeg,quality=80,metadata=none",
        lambda d: _jpeg(_cover256(d)),
        ["--size", "256x256", "--smartcrop", "centre"],
        JPEG_SUFFIX,
    ),
    Job(
        "fit512-webp",
        "width=512,height=512,fit=scale-down,format=webp,quality=80,metadata=none",
        lambda d: _webp(_fit512(d)),
        ["--size", "512x512>"],
        WEBP_SUFFIX,
    ),
)


def _anim160(data: bytes) -> pyvips.Image:
    return pyvips.Image.thumbnail_buffer(data, 160, option_string="n=-1")


def _gif(image: pyvips.Image) -> bytes:
    out: bytes = image.gifsave_buffer(keep="none")
    return out


# The animated GIF of benchmarks/work/inputs/anim, every frame kept (in process only).
ANIM_JOBS = (
    Job(
        "anim160-gif",
        "width=160,format=gif,metadata=none",
        lambda d: _gif(_anim160(d)),
        [],
        "",
    ),
    Job(
        "anim160-webp",
        "width=160,format=webp,quality=80,metadata=none",
        lambda d: _webp(_anim160(d)),
        [],
        "",
    ),
)


def cpu_of(call: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) spent in one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    call()
    return time.process_time() - cpu, time.perf_counter() - wall


def in_process(job: Job, sources: Sequence[bytes], repeat: int) -> dict[str, Any]:
    from focal.options import parse_options
    from focal.pipeline import transform

    options = parse_options(job.focal)
    focal_cpu: list[float] = []
    floor_cpu: list[float] = []
    focal_wall: list[float] = []
    floor_wall: list[float] = []
    outputs = []
    for data in sources:  # warm both paths once; note what each made
        made = transform(data, options)
        floor_out = pyvips.Image.new_from_buffer(job.floor(data), "")
        outputs.append(
            {
                "focal": [made.width, made.height, len(made.data)],
                "libvips": [floor_out.width, floor_out.height, len(job.floor(data))],
            }
        )
    for _ in range(repeat):
        for data in sources:  # alternate A/B
            cpu, wall = cpu_of(lambda d=data: transform(d, options))  # type: ignore[misc]
            focal_cpu.append(cpu)
            focal_wall.append(wall)
            cpu, wall = cpu_of(lambda d=data: job.floor(d))  # type: ignore[misc]
            floor_cpu.append(cpu)
            floor_wall.append(wall)
    focal_ms, floor_ms = 1000 * harness.median(focal_cpu), 1000 * harness.median(floor_cpu)
    return {
        "focal_cpu_ms": round(focal_ms, 2),
        "libvips_cpu_ms": round(floor_ms, 2),
        "focal_wall_ms": round(1000 * harness.median(focal_wall), 2),
        "libvips_wall_ms": round(1000 * harness.median(floor_wall), 2),
        "ratio": round(focal_ms / floor_ms, 3) if floor_ms else None,
        "samples": len(focal_cpu),
        "outputs_width_height_bytes": outputs,
    }


def children_cpu(cmd: Sequence[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=600, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr[-800:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cli(job: Job, folder: Path, count: int, repeat: int) -> dict[str, Any]:
    files = sorted(str(p) for p in folder.iterdir())
    focal_cpu, floor_cpu = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="focal-floor-") as out:
            focal_cmd = [sys.executable, "-m", "focal", "transform", str(folder), "-o", out]
            focal_cpu.append(children_cpu([*focal_cmd, "--options", job.focal]))
        with tempfile.TemporaryDirectory(prefix="focal-floor-") as out:
            vips_cmd = ["vipsthumbnail", *job.vipsthumbnail, "-o", f"{out}/%s{job.suffix}", *files]
            floor_cpu.append(children_cpu(vips_cmd))
    focal_ms = 1000 * harness.median(focal_cpu) / count
    floor_ms = 1000 * harness.median(floor_cpu) / count
    return {
        "focal_cpu_ms_per_image": round(focal_ms, 2),
        "vipsthumbnail_cpu_ms_per_image": round(floor_ms, 2),
        "ratio": round(focal_ms / floor_ms, 3) if floor_ms else None,
        "images": count,
        "runs": repeat,
    }


def cli_folder() -> tuple[Path, int]:
    """COPIES copies of each large input, in one folder."""
    folder = harness.WORK / "floor-folder"
    sources = [harness.INPUTS / r for r in prepare.inputs("large")]
    wanted = {f"{s.stem}_{i:02d}.jpg": s for s in sources for i in range(COPIES)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in wanted.items():
        if not (folder / name).exists():
            shutil.copyfile(source, folder / name)
    return folder, len(wanted)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="focal vs the libvips floor (CPU per image).")
    parser.add_argument("--repeat", type=int, default=7, help="measured passes (in process)")
    parser.add_argument("--cli-repeat", type=int, default=3, help="measured passes (CLI)")
    parser.add_argument("--anim-repeat", type=int, default=3, help="passes (animated GIF)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    prepare.prepare()
    pyvips.cache_set_max(0)
    sources = [(harness.INPUTS / r).read_bytes() for r in prepare.inputs("large")]
    started = time.monotonic()
    results: dict[str, Any] = {"in_process": {}, "cli": {}}
    anim = [(harness.INPUTS / r).read_bytes() for r in prepare.inputs("anim")]
    runs = [(job, sources, args.repeat) for job in JOBS]
    runs += [(job, anim, args.anim_repeat) for job in ANIM_JOBS]
    for job, inputs, repeat in runs:
        row = in_process(job, inputs, repeat)
        results["in_process"][job.name] = row
        print(
            f"  in-process {job.name:14s} focal {row['focal_cpu_ms']:7.1f} ms  libvips "
            f"{row['libvips_cpu_ms']:7.1f} ms  ratio {row['ratio']}",
            flush=True,
        )
    folder, count = cli_folder()
    cli_ok = shutil.which("vipsthumbnail") is not None
    for job in JOBS if cli_ok else ():
        row = cli(job, folder, count, args.cli_repeat)
        results["cli"][job.name] = row
        print(
            f"  cli        {job.name:14s} focal {row['focal_cpu_ms_per_image']:7.1f} ms  "
            f"vipsthumbnail {row['vipsthumbnail_cpu_ms_per_image']:7.1f} ms  "
            f"ratio {row['ratio']}",
            flush=True,
        )
    if args.no_write:
        return 0
    data = {
        "goal_ratio": GOAL,
        "floor": {
            "in_process": "pyvips Image.thumbnail_buffer + jpegsave_buffer/webpsave_buffer "
            "(libvips 8.18, pyvips-binary), operation cache off, "
            "savers set as focal.encode sets them",
            "cli": "Debian libvips-tools vipsthumbnail (libvips 8.14)"
            if cli_ok
            else "vipsthumbnail not installed",
        },
        "inputs": prepare.inputs("large") + prepare.inputs("anim"),
        "seconds": round(time.monotonic() - started, 1),
        **results,
    }
    harness.write_result("floor", data, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
