"""`focal batch SRC DEST --options ...`: a folder of images on Ray Data (the ``batch`` extra).

Stages, streamed (Ray Data's backpressure bounds what waits between them):

    list SRC (skip finished outputs) -> read, decode and cap [CPU tasks]
      -> detect [pool of detector actors, batches of --batch; one GPU each with --gpus]
      -> crop, encode and write atomically [CPU tasks] -> manifest + summary [this process]

The crop stage runs focal's own pipeline with the faces found by the actors, so the outputs are
those of `focal transform` for the same options. Images are detected grouped by padded canvas,
as `focal transform` groups them, so an image's faces never depend on its batch neighbours.
Outputs are named as `focal transform` names them; one already there and newer than its source
is skipped (resumable; --force redoes it). DEST/manifest.jsonl gets one JSON line per image
produced or failed in this run. Without --address a local Ray is started with --num-cpus.

Exit codes: 0 all done; 1 an input failed (listed with its reason); 2 usage or option error;
3 the face model is not installed; 4 Ray is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np

from focal.commands.transform import IMAGE_SUFFIXES, _output_path, _positive_int, _reason
from focal.detection import DetectionFailed, Detector, Face, RGBImage
from focal.errors import FocalError, ModelMissingError, OptionError
from focal.face.retinaface import PAD_MULTIPLE
from focal.face.sessions import PRECISIONS, RUNTIMES
from focal.files import write_atomic
from focal.options import Options, parse_options
from focal.pipeline import Limits

CANVAS_MULTIPLE = PAD_MULTIPLE  # images are grouped by their padded network input size


# ---- focal's face modules, by their current names: the one place to change when they move ----


def open_face_detector(detector_kwargs: dict[str, Any]) -> Detector:
    from focal.face.sessions import DetectorConfig, open_detector  # in the actors only

    return open_detector(DetectorConfig(**detector_kwargs))


def require_face_model(model_dir: Path | None) -> None:
    from focal.face.models import require

    require(model_dir)


MANIFEST = "manifest.jsonl"
CPU_STAGE_MEMORY = 256 * 1024 * 1024  # bytes reserved by each decode or encode task


def register(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="transform a folder of images on Ray (local or a cluster)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", type=Path, help="a folder of images")
    p.add_argument("dest", type=Path, help="the output folder")
    p.add_argument("--options", default="", help="Cloudflare-style options, e.g. width=256")
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: local)")
    p.add_argument(
        "--num-cpus",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="CPUs of the local Ray (default: CPU count)",
    )
    p.add_argument("--detectors", type=_positive_int, default=1, help="detector actors")
    p.add_argument(
        "--gpus",
        type=float,
        default=None,
        help="GPUs per detector actor (0: CPU detectors). Default: 1 with --runtime torch on a "
        "Ray cluster that has GPUs, else 0",
    )
    p.add_argument(
        "--detector-cpus",
        type=float,
        default=0.0,
        help="CPUs Ray reserves for each detector actor (default 0: the inference runtime runs "
        "its own threads, and a reservation would only keep decode and encode tasks waiting; "
        "benchmarks/batch.py)",
    )
    p.add_argument("--batch", type=_positive_int, default=16, help="images per detector call")
    p.add_argument("--model-dir", type=Path, default=None, help="face model cache directory")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto", help="face detector runtime")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="detector precision")
    p.add_argument("--device", default="auto", help="torch runtime only: auto, cuda or cpu")
    p.add_argument("--max-pixels", type=int, default=Limits.max_pixels, help="larger: refused")
    p.add_argument("--force", action="store_true", help="redo outputs that already exist")
    p.add_argument("--stats", type=Path, default=None, help="write Ray Data's stage times here")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Job:
    """What every stage needs, sent to the Ray workers (picklable)."""

    options_text: str
    src_root: str
    dest_root: str
    max_pixels: int
    detector_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> Options:
        return parse_options(self.options_text)

    @property
    def limits(self) -> Limits:
        return Limits(max_pixels=self.max_pixels)


# ---- stage 1: read, decode and cap (CPU) ------------------------------------------------------


def prepare(row: dict[str, Any], job: Job) -> dict[str, Any]:
    """The source's bytes and, with gravity=face, the capped RGB copy the detector sees (exactly
    the pipeline's: focal.pipeline._detect)."""
    out = {"src": row["src"], "data": b"", "pixels": b"", "height": 0, "width": 0}
    out |= {"error": "", "digest": ""}
    try:
        data = Path(row["src"]).read_bytes()
        limits = job.limits
        if len(data) > limits.max_bytes:
            raise FocalError(f"The source is {len(data)} bytes", status=413)
        out["data"] = data
        array = inference_array(data, job.options, limits)
    except (FocalError, OSError) as error:
        out["error"] = _reason(error)
        return out
    if array is not None:
        out |= {"pixels": array.tobytes(), "height": array.shape[0], "width": array.shape[1]}
        out["digest"] = digest(array)
    return out


def inference_array(data: bytes, options: Options, limits: Limits) -> RGBImage | None:
    import pyvips

    from focal import geometry, pipeline, steps
    from focal.decode import check, jpeg_shrink, load, read_header

    if not options.needs_faces or (options.trim is not None and options.trim.border):
        return None
    header = read_header(data)
    check(header, max_pixels=limits.max_pixels, max_frames=limits.max_frames)
    working = pipeline._working_size(header, options)
    inference, factor = geometry.inference_size(working, geometry.INFERENCE_CAP)
    shrink = jpeg_shrink(1 / factor) if header.format == "jpeg" else 1
    for fail_on in ("warning", "none"):  # as the pipeline retries a damaged source
        try:
            page = load(data, header, animated=False, shrink=shrink, fail_on=fail_on)
            page = pipeline._prepare(page, options, header)
            return steps.inference_array(page, inference)
        except pyvips.Error:
            continue
    return None  # undecodable: the crop stage reports it


def digest(array: RGBImage) -> str:
    return blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()


# ---- stage 2: detect (actors) -----------------------------------------------------------------


class DetectActor:
    """One detector per actor, built once; answers a batch of rows with each image's faces (in
    inference coordinates) as JSON, or the reason detection failed."""

    def __init__(self, detector_kwargs: dict[str, Any]) -> None:
        self.detector = open_face_detector(detector_kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        count = len(batch["src"])
        faces = [""] * count
        groups: dict[tuple[int, int], list[int]] = {}
        images: dict[int, RGBImage] = {}
        for i in range(count):
            pixels = batch["pixels"][i]
            if not pixels:
                continue
            height, width = int(batch["height"][i]), int(batch["width"][i])
            images[i] = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 3)
            key = (-(-height // CANVAS_MULTIPLE), -(-width // CANVAS_MULTIPLE))
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            try:
                found = self.detector.detect([images[i] for i in members])
                for i, answer in zip(members, found, strict=True):
                    faces[i] = json.dumps([[list(f.box), f.score] for f in answer])
            except Exception as error:  # every image of the call falls back, marked
                for i in members:
                    faces[i] = json.dumps({"failed": f"{type(error).__name__}: {error}"})
        result = {k: v for k, v in batch.items() if k != "pixels"}
        result["faces"] = np.array(faces, dtype=object)
        return result


# ---- stage 3: crop, encode and write (CPU) ------------------------------------------------------


class Found:
    """A Detector answering the faces the actors found, for the image they were found in."""

    model_id = "batch"

    def __init__(self, faces_json: str, expected_digest: str) -> None:
        self.faces_json = faces_json
        self.expected_digest = expected_digest

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        answer = json.loads(self.faces_json) if self.faces_json else []
        if isinstance(answer, dict):
            raise DetectionFailed(answer.get("failed", "detection failed"))
        if len(images) != 1 or digest(images[0]) != self.expected_digest:
            raise DetectionFailed("the image differs from the one detected")
        return [[Face(box=(b[0], b[1], b[2], b[3]), score=score) for b, score in answer]]


def finish(row: dict[str, Any], job: Job) -> dict[str, Any]:
    from focal.pipeline import transform

    src = Path(row["src"])
    record: dict[str, Any] = {"source": str(src)}
    if row["error"]:
        return record | {"status": "failed", "reason": row["error"]}
    options = job.options
    out = _output_path(src, Path(job.src_root), Path(job.dest_root), options)
    detector = Found(row.get("faces", ""), row["digest"]) if options.needs_faces else None
    try:
        result = transform(row["data"], options, detector=detector, limits=job.limits)
        write_atomic(out, result.data)
    except (FocalError, OSError) as error:
        return record | {"status": "failed", "reason": _reason(error)}
    description = result.description
    return record | {
        "status": "done",
        "output": str(out),
        "width": result.width,
        "height": result.height,
        "bytes": len(result.data),
        "gravity": result.gravity_used,
        "fallback": result.fallback or "",
        "crop": json.dumps(description.get("crop")),
        "faces": len(description.get("faces", [])),
    }


# ---- the driver ---------------------------------------------------------------------------------


def pending(
    src_root: Path, dest_root: Path, options: Options, force: bool
) -> tuple[list[Path], int]:
    """(sources to do, count of those already done)."""
    sources = sorted(
        p for p in src_root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    todo: list[Path] = []
    for src in sources:
        out = _output_path(src, src_root, dest_root, options)
        if not force and out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        todo.append(src)
    return todo, len(sources) - len(todo)


def run(args: argparse.Namespace) -> int:
    try:
        options = parse_options(args.options)
    except OptionError as error:
        print(f"focal: {error.public}", file=sys.stderr)
        return 2
    if not args.src.is_dir():
        print(f"focal batch: {args.src} is not a folder", file=sys.stderr)
        return 2
    try:
        import ray
    except ImportError:
        message = "focal batch: Ray is not installed (pip install 'focal-images[batch]')"
        print(message, file=sys.stderr)
        return 4
    if options.needs_faces:
        try:
            require_face_model(args.model_dir)
        except ModelMissingError as error:
            print(f"focal: {error.public}", file=sys.stderr)
            return 3
    todo, skipped = pending(args.src, args.dest, options, args.force)
    started_here = not ray.is_initialized()
    if started_here:
        if args.address:
            ray.init(address=args.address, log_to_driver=False)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        records = execute(todo, args, options) if todo else []
    finally:
        if started_here:
            ray.shutdown()
    return report(records, skipped, args.dest)


def execute(todo: list[Path], args: argparse.Namespace, options: Options) -> list[dict[str, Any]]:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    job = Job(
        options_text=args.options,
        src_root=str(args.src),
        dest_root=str(args.dest),
        max_pixels=args.max_pixels,
        detector_kwargs={
            "model_dir": args.model_dir,
            "runtime": args.runtime,
            "precision": args.precision,
            "device": args.device,
            "max_batch": args.batch,
        },
    )
    blocks = max(1, min(len(todo), 4 * int(args.num_cpus)))
    ds: Any = ray.data.from_items([{"src": str(p)} for p in todo], override_num_blocks=blocks)
    # the CPU stages reserve memory for a decoded image; that also keeps Ray from fusing them
    # into the detector actors (decoding and encoding would then wait on detection)
    ds = ds.map(partial(prepare, job=job), memory=CPU_STAGE_MEMORY)
    if options.needs_faces:
        ds = ds.map_batches(
            DetectActor,
            fn_constructor_kwargs={"detector_kwargs": job.detector_kwargs},
            batch_size=args.batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=args.detectors),
            num_gpus=gpus_per_detector(args),
            num_cpus=args.detector_cpus,
        )
    ds = ds.map(partial(finish, job=job), memory=CPU_STAGE_MEMORY)
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for index, row in enumerate(ds.iter_rows(), 1):
        records.append(dict(row))
        if sys.stderr.isatty() or index % 50 == 0 or index == len(todo):
            rate = index / max(time.perf_counter() - started, 1e-9)
            end = "" if sys.stderr.isatty() else "\n"
            print(f"\r{index}/{len(todo)} images, {rate:.1f}/s", end=end, file=sys.stderr)
    if args.stats is not None:  # Ray Data's time per stage: where the run spent its time
        args.stats.write_text(ds.stats() + "\n")
    return records


def gpus_per_detector(args: argparse.Namespace) -> float:
    """--gpus, or by default one GPU per actor for the torch runtime when Ray has GPUs."""
    if args.gpus is not None:
        return float(args.gpus)
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    has_gpus = float(resources.get("GPU", 0)) > 0
    return 1.0 if has_gpus and args.runtime == "torch" else 0.0


def report(records: list[dict[str, Any]], skipped: int, dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / MANIFEST, "a", encoding="utf-8") as manifest:
        for record in sorted(records, key=lambda r: r["source"]):
            manifest.write(json.dumps(record, sort_keys=True, default=_plain) + "\n")
    done = sum(1 for r in records if r["status"] == "done")
    failed = [r for r in records if r["status"] != "done"]
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"{done} done, {skipped} skipped (already there), {len(failed)} failed; "
        f"manifest: {dest / MANIFEST}",
        file=sys.stderr,
    )
    for record in sorted(failed, key=lambda r: r["source"]):
        print(f"  failed: {record['source']}: {record['reason']}", file=sys.stderr)
    return 1 if failed else 0


def _plain(value: Any) -> Any:
    """numpy scalars (as Ray hands rows back) as plain numbers."""
    return value.item() if hasattr(value, "item") else str(value)
