"""`focal batch SRC DEST --options ...`: a folder of images, or an object-storage prefix
(``s3://bucket/prefix/``), on Ray Data (the ``batch`` extra; ``s3`` too for a prefix).

Stages, streamed (Ray Data's backpressure bounds what waits between them):

    list SRC (skip finished outputs) -> read, decode and cap [CPU tasks]
      -> detect [pool of detector actors, batches of --batch; one GPU each with --gpus]
      -> crop, encode and write atomically [CPU tasks] -> manifest + summary [this process]

The crop stage runs focal's own pipeline with the faces found by the actors, so the outputs are
those of `focal transform` for the same options. Images are detected grouped by padded canvas,
as `focal transform` groups them, so an image's faces never depend on its batch neighbours.
Outputs are named as `focal transform` names them; one already there and newer than its source
is skipped (resumable; --force redoes it): for an s3 DEST the prefix is listed once, no object is
read. DEST/manifest.jsonl gets one JSON line per image produced or failed in this run, written
after every output (on object storage: the manifest object is read, extended and put again).
An output on object storage is one PUT, so it is either whole or absent. Object storage is
reached as `focal serve` reaches it: the s3_* settings (--config, FOCAL_S3_*, or the --s3-*
flags below) and the standard credential chain. Without --address a local Ray is started with
--num-cpus.

Exit codes: 0 all done; 1 an input failed (listed with its reason), SRC or DEST could not be
listed, or the manifest could not be written; 2 usage or option error; 3 the face model is not
installed; 4 Ray (or, for an s3:// SRC or DEST, obstore) is not installed.
"""

from __future__ import annotations

import argparse
import json
import math
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

from focal.commands.common import (
    add_job_arguments,
    detector_kwargs,
    is_image_name,
    output_name,
    positive_int,
    reason,
)
from focal.detection import (
    DetectionFailed,
    Detector,
    Face,
    RGBImage,
    face_rows,
    faces_and_candidates,
    faces_from_rows,
)
from focal.errors import FocalError, ModelMissingError, OptionError
from focal.face.retinaface import PAD_MULTIPLE
from focal.files import write_atomic
from focal.geometry import INFERENCE_CAP
from focal.options import Options, parse_options
from focal.pipeline import Limits
from focal.server import objectstore
from focal.server.objectstore import Location, StoreSettings

CANVAS_MULTIPLE = PAD_MULTIPLE  # images are grouped by their padded network input size


# ---- focal's face modules, by their current names: the one place to change when they move ----


def open_face_detector(detector_kwargs: dict[str, Any]) -> Detector:
    from focal.face.sessions import DetectorConfig, open_detector  # in the actors only

    return open_detector(DetectorConfig(**detector_kwargs))


SERVICE_DEADLINE_S = 120.0  # a batch job waits for the service; a request has its own


def service_detector(url: str) -> Any:
    """The detector service's client (focal.server.service_client), or RuntimeError when the
    service does not answer."""
    from focal.server.service_client import ServiceDetector

    detector = ServiceDetector(url, SERVICE_DEADLINE_S)
    if not detector.check():
        detector.stop()
        raise RuntimeError(f"the detector service at {url} does not answer (--detector-url)")
    detector.start()
    return detector


def require_face_model(model_dir: Path | None) -> None:
    from focal.face.models import require

    require(model_dir)


MANIFEST = "manifest.jsonl"
CPU_STAGE_MEMORY = 256 * 1024 * 1024  # bytes reserved by each decode or encode task


S3_SETTINGS = (
    "s3_endpoint_url",
    "s3_region",
    "s3_credentials",
    "s3_connect_timeout_s",
    "s3_read_timeout_s",
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="transform a folder or s3:// prefix of images on Ray (local or a cluster)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="a folder of images, or s3://bucket/prefix/")
    p.add_argument("dest", help="the output folder, or s3://bucket/prefix/")
    add_job_arguments(p)
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: local)")
    p.add_argument(
        "--num-cpus",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="CPUs of the local Ray (default: CPU count)",
    )
    p.add_argument("--detectors", type=positive_int, default=1, help="detector actors")
    p.add_argument(
        "--detector-url",
        default="",
        help="the face detector service (`focal detector serve`, docs/scaling.md) to ask "
        "instead of loading the model in detector actors of this job; the actors then only "
        "send images",
    )
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
    p.add_argument("--stats", type=Path, default=None, help="write Ray Data's stage times here")
    add_store_arguments(p.add_argument_group("object storage (an s3:// SRC or DEST)"))
    p.set_defaults(func=run)


def add_store_arguments(group: Any) -> None:
    """The server's s3_* settings as flags; unset ones come from --config or FOCAL_S3_*."""
    from focal.server import settings

    group.add_argument("--config", type=Path, default=None, help="TOML config (FOCAL_CONFIG)")
    for name in S3_SETTINGS:
        setting = settings.BY_NAME[name]
        group.add_argument(
            setting.flag,
            default=argparse.SUPPRESS,
            metavar=setting.kind.upper(),
            help=f"{setting.help} Default: {setting.shown_default()}. Env {setting.env}.",
        )


def store_settings(args: argparse.Namespace) -> StoreSettings:
    """How `focal serve` with the same config and environment would reach the store."""
    from focal.server import settings

    given = {name: getattr(args, name) for name in S3_SETTINGS if hasattr(args, name)}
    loaded = settings.load(config=args.config, args=argparse.Namespace(**given))
    return objectstore.store_settings(loaded)


# ---- where sources are read and outputs written -------------------------------------------------


def safe_relative(relative: str) -> bool:
    """A relative name that stays inside the folder or prefix it is joined to (object keys are
    any text: ``a/../../etc/x.jpg`` is a valid key, but never a path to write)."""
    if not relative or "\x00" in relative or relative.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in relative.split("/"))


@dataclass(frozen=True)
class Tree:
    """A folder, or a prefix in object storage: the SRC or DEST of a batch (picklable: each Ray
    worker process reaches the store through its own clients)."""

    folder: str = ""
    prefix: Location | None = None
    store_settings: StoreSettings | None = None

    @classmethod
    def of(cls, text: str, store: StoreSettings | None) -> Tree:
        if objectstore.is_s3(text):
            return cls(prefix=objectstore.parse_prefix(text), store_settings=store)
        return cls(folder=text)

    @property
    def in_store(self) -> bool:
        return self.prefix is not None

    def _store(self) -> Any:
        assert self.prefix is not None and self.store_settings is not None
        return objectstore.process_stores(self.store_settings).store(self.prefix.bucket)

    def _location(self, relative: str) -> Location:
        assert self.prefix is not None
        return Location(self.prefix.bucket, self.prefix.key + relative)

    def name(self, relative: str) -> str:
        """The path or s3:// URL of a relative name, as the summary and manifest show it."""
        if self.prefix is not None:
            return str(self._location(relative))
        return str(Path(self.folder) / relative)

    def listing(self) -> dict[str, float]:
        """Every file or object below: relative name (``/``-separated) -> modification time."""
        if self.prefix is None:
            root = Path(self.folder)
            return {
                p.relative_to(root).as_posix(): p.stat().st_mtime
                for p in root.rglob("*")
                if p.is_file()
            }
        start = len(self.prefix.key)
        found = objectstore.list_prefix(self._store(), self.prefix)
        return {info.key[start:]: info.modified for info in found}

    def read(self, relative: str, max_bytes: int) -> bytes:
        """The bytes, refused (413) past ``max_bytes`` before they are read whole."""
        if self.prefix is not None:
            return objectstore.read_object(self._store(), self._location(relative), max_bytes)
        path = Path(self.folder) / relative
        size = path.stat().st_size
        if size > max_bytes:
            raise FocalError(
                f"The source is {size} bytes: expected at most {max_bytes}", status=413
            )
        return path.read_bytes()

    def write(self, relative: str, data: bytes, content_type: str = "") -> None:
        """Whole or not at all: a rename into place, or one PUT."""
        if self.prefix is not None:
            objectstore.write_object(self._store(), self._location(relative), data, content_type)
        else:
            write_atomic(Path(self.folder) / relative, data)

    def append_manifest(self, lines: list[str]) -> None:
        if self.prefix is None:
            folder = Path(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / MANIFEST, "a", encoding="utf-8") as manifest:
                manifest.writelines(lines)
            return
        before = objectstore.read_optional(self._store(), self._location(MANIFEST)) or b""
        if before and not before.endswith(b"\n"):
            before += b"\n"
        body = before + "".join(lines).encode("utf-8")
        self.write(MANIFEST, body, "application/x-ndjson")


@dataclass(frozen=True)
class Job:
    """What every stage needs, sent to the Ray workers (picklable)."""

    options_text: str
    src: Tree
    dest: Tree
    max_pixels: int
    max_bytes: int = Limits.max_bytes
    detector_kwargs: dict[str, Any] = field(default_factory=dict)
    detector_url: str = ""  # the detector service, instead of a model in the actors

    @property
    def options(self) -> Options:
        return parse_options(self.options_text)

    @property
    def limits(self) -> Limits:
        return Limits(max_pixels=self.max_pixels, max_bytes=self.max_bytes)

    @property
    def max_side(self) -> int:
        """The detection side the actors' detector runs at (DetectorConfig.max_side)."""
        return int(self.detector_kwargs.get("max_side", INFERENCE_CAP))


# ---- stage 1: read, decode and cap (CPU) ------------------------------------------------------


def prepare(row: dict[str, Any], job: Job) -> dict[str, Any]:
    """The source's bytes and, with gravity=face, the capped RGB copy the detector sees (exactly
    the pipeline's: focal.pipeline._detect)."""
    out = {"src": row["src"], "rel": row["rel"], "data": b"", "pixels": b"", "height": 0}
    out |= {"width": 0, "error": "", "digest": ""}
    try:
        limits = job.limits
        data = job.src.read(row["rel"], limits.max_bytes)
        out["data"] = data
        array = inference_array(data, job.options, limits, job.max_side)
    except (FocalError, OSError) as error:
        out["error"] = reason(error)
        return out
    if array is not None:
        out |= {"pixels": array.tobytes(), "height": array.shape[0], "width": array.shape[1]}
        out["digest"] = digest(array)
    return out


def inference_array(
    data: bytes, options: Options, limits: Limits, cap: int = INFERENCE_CAP
) -> RGBImage | None:
    import pyvips

    from focal import geometry, pipeline, steps
    from focal.decode import check, jpeg_shrink, load, read_header

    if not options.needs_faces or (options.trim is not None and options.trim.border):
        return None
    header = read_header(data)
    check(header, max_pixels=limits.max_pixels, max_frames=limits.max_frames)
    working = pipeline._working_size(header, options)
    side = pipeline.detection_side(options, working, cap, pipeline.FACE_CROP_SIDE)
    inference, factor = geometry.inference_size(working, side)
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

    def __init__(self, detector_kwargs: dict[str, Any], detector_url: str = "") -> None:
        self.detector = (
            service_detector(detector_url) if detector_url else open_face_detector(detector_kwargs)
        )

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
                found = faces_and_candidates(self.detector, [images[i] for i in members])
                for i, (answer, weak) in zip(members, found, strict=True):
                    faces[i] = json.dumps(
                        {"faces": face_rows(answer), "candidates": face_rows(weak)}
                    )
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

    def __init__(self, faces_json: str, expected_digest: str, max_side: int) -> None:
        self.faces_json = faces_json
        self.expected_digest = expected_digest
        self.max_side = max_side  # the pipeline prepares the image the actors saw

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        return [faces for faces, _ in self.detect_with_candidates(images)]

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        answer = json.loads(self.faces_json) if self.faces_json else {}
        if "failed" in answer:
            raise DetectionFailed(answer["failed"])
        if len(images) != 1 or digest(images[0]) != self.expected_digest:
            raise DetectionFailed("the image differs from the one detected")
        found = answer.get("faces", []), answer.get("candidates", [])
        return [(faces_from_rows(found[0]), faces_from_rows(found[1]))]


def finish(row: dict[str, Any], job: Job) -> dict[str, Any]:
    from focal.pipeline import transform

    record: dict[str, Any] = {"source": row["src"]}
    if row["error"]:
        return record | {"status": "failed", "reason": row["error"]}
    options = job.options
    out = output_name(row["rel"], options)
    detector = None
    if options.needs_faces:
        detector = Found(row.get("faces", ""), row["digest"], job.max_side)
    try:
        result = transform(row["data"], options, detector=detector, limits=job.limits)
        job.dest.write(out, result.data, result.content_type)
    except (FocalError, OSError) as error:
        return record | {"status": "failed", "reason": reason(error)}
    description = result.description
    return record | {
        "status": "done",
        "output": job.dest.name(out),
        "width": result.width,
        "height": result.height,
        "bytes": len(result.data),
        "gravity": result.gravity_used,
        "fallback": result.fallback or "",
        "crop": json.dumps(description.get("crop")),
        "faces": len(description.get("faces", [])),
    }


# ---- the driver ---------------------------------------------------------------------------------


@dataclass
class Plan:
    todo: list[str]  # relative names of the sources to transform
    skipped: int  # sources whose output is there and newer
    refused: list[dict[str, Any]]  # manifest records of sources that are never read


def pending(src: Tree, dest: Tree, options: Options, force: bool) -> Plan:
    """What to do, from one listing of SRC and one of DEST (no source or output is read). A
    time on object storage has whole seconds, so with one there both are compared so."""
    sources = {rel: t for rel, t in src.listing().items() if is_image_name(rel)}
    outputs = {} if force else dest.listing()
    whole_seconds = src.in_store or dest.in_store
    plan = Plan([], 0, [])
    for relative in sorted(sources):
        if not safe_relative(relative):
            why = "the object name leaves the prefix (empty, . or .. segments)"
            plan.refused.append({"source": src.name(relative), "status": "failed", "reason": why})
            continue
        done_at = outputs.get(output_name(relative, options))
        since = math.floor(sources[relative]) if whole_seconds else sources[relative]
        if done_at is not None and done_at >= since:
            plan.skipped += 1
        else:
            plan.todo.append(relative)
    return plan


def run(args: argparse.Namespace) -> int:
    try:
        options = parse_options(args.options)
    except OptionError as error:
        print(f"focal: {error.public}", file=sys.stderr)
        return 2
    if options.draw:
        print(
            "focal batch: draw is not supported here: overlays are drawn by focal serve and "
            "focal transform",
            file=sys.stderr,
        )
        return 2
    in_store = objectstore.is_s3(args.src) or objectstore.is_s3(args.dest)
    try:
        store = store_settings(args) if in_store else None
        src, dest = Tree.of(args.src, store), Tree.of(args.dest, store)
    except FocalError as error:  # a malformed s3:// prefix, or a bad s3_* setting
        print(f"focal batch: {error.public}", file=sys.stderr)
        return 2
    if not src.in_store and not Path(args.src).is_dir():
        print(f"focal batch: {args.src} is not a folder", file=sys.stderr)
        return 2
    if in_store:
        try:
            import obstore  # noqa: F401
        except ImportError:
            message = "focal batch: obstore is not installed (pip install 'focal-images[s3]')"
            print(message, file=sys.stderr)
            return 4
    try:
        import ray
    except ImportError:
        message = "focal batch: Ray is not installed (pip install 'focal-images[batch]')"
        print(message, file=sys.stderr)
        return 4
    if options.needs_faces and args.detector_url:
        try:
            from focal.server.settings import check_service_url

            check_service_url(args.detector_url)
            service_detector(args.detector_url).stop()
        except FocalError as error:
            print(
                f"focal batch: {error.public.replace('detector_url', '--detector-url')}",
                file=sys.stderr,
            )
            return 2
        except RuntimeError as error:
            print(f"focal batch: {error}", file=sys.stderr)
            return 1
    elif options.needs_faces:
        try:
            require_face_model(args.model_dir)
        except ModelMissingError as error:
            print(f"focal: {error.public}", file=sys.stderr)
            return 3
    try:
        plan = pending(src, dest, options, args.force)
    except (FocalError, OSError) as error:
        message = f"focal batch: cannot list {args.src} or {args.dest}: {reason(error)}"
        detail = getattr(error, "detail", "") or ""
        if detail and detail != getattr(error, "public", ""):  # the store's own words
            message += "\n  " + detail.splitlines()[0][:500]
        print(message, file=sys.stderr)
        return 1
    job = Job(
        options_text=args.options,
        src=src,
        dest=dest,
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
        detector_kwargs=detector_kwargs(args),
        detector_url=args.detector_url,
    )
    started_here = not ray.is_initialized() and bool(plan.todo)
    if started_here:
        if args.address:
            ray.init(address=args.address, log_to_driver=False)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        records = execute(plan.todo, job, args, options) if plan.todo else []
    finally:
        if started_here:
            ray.shutdown()
    return report(records + plan.refused, plan.skipped, dest)


def execute(
    todo: list[str], job: Job, args: argparse.Namespace, options: Options
) -> list[dict[str, Any]]:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    blocks = max(1, min(len(todo), 4 * int(args.num_cpus)))
    items = [{"src": job.src.name(rel), "rel": rel} for rel in todo]
    ds: Any = ray.data.from_items(items, override_num_blocks=blocks)
    # the CPU stages reserve memory for a decoded image; that also keeps Ray from fusing them
    # into the detector actors (decoding and encoding would then wait on detection)
    ds = ds.map(partial(prepare, job=job), memory=CPU_STAGE_MEMORY)
    if options.needs_faces:
        ds = ds.map_batches(
            DetectActor,
            fn_constructor_kwargs={
                "detector_kwargs": job.detector_kwargs,
                "detector_url": job.detector_url,
            },
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


def report(records: list[dict[str, Any]], skipped: int, dest: Tree) -> int:
    """The manifest (after every output is written), then the summary; the exit code."""
    ordered = sorted(records, key=lambda r: r["source"])
    lines = [json.dumps(r, sort_keys=True, default=_plain) + "\n" for r in ordered]
    manifest = dest.name(MANIFEST)
    try:
        if lines:
            dest.append_manifest(lines)
    except (FocalError, OSError) as error:
        print(f"focal batch: the manifest was not written: {reason(error)}", file=sys.stderr)
        manifest = "not written"
    done = sum(1 for r in records if r["status"] == "done")
    failed = [r for r in ordered if r["status"] != "done"]
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"{done} done, {skipped} skipped (already there), {len(failed)} failed; "
        f"manifest: {manifest}",
        file=sys.stderr,
    )
    for record in failed:
        print(f"  failed: {record['source']}: {record['reason']}", file=sys.stderr)
    return 1 if failed or manifest == "not written" else 0


def _plain(value: Any) -> Any:
    """numpy scalars (as Ray hands rows back) as plain numbers."""
    return value.item() if hasattr(value, "item") else str(value)
