"""`focal batch SRC DEST --options ...`: a folder of images, or an object-storage prefix
(``s3://bucket/prefix/``), on Ray Data (the ``batch`` extra; ``s3`` too for a prefix).

Stages, streamed (Ray Data's backpressure bounds what waits between them):

    list SRC (skip finished outputs) -> read, decode and cap [CPU tasks: the pipeline's phase 1]
      -> detect [pool of detector actors, batches of --batch; one GPU each with --gpus]
      -> crop, encode and write atomically [CPU tasks: phase 2] -> manifest + summary [here]

The pipeline's two phases (focal.detection_input, then focal.pipeline.transform with the faces
the actors found) are those `focal transform` runs in one call, so the outputs are its outputs
for the same options. Images are detected grouped by padded canvas,
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
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from focal.commands import common
from focal.commands.common import (
    add_command,
    add_job_arguments,
    detector_kwargs,
    is_image_name,
    output_name,
    positive_int,
    reason,
)
from focal.detection import DetectionFailed, Detector, faces_and_candidates
from focal.detection_input import Answer, DetectionInput, detection_input
from focal.errors import FocalError, ModelMissingError, OptionError
from focal.face.retinaface import PAD_MULTIPLE
from focal.files import write_atomic
from focal.geometry import FACE_CROP_SIDE, INFERENCE_CAP
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
    about = "transform a folder or s3:// prefix of images on Ray (local or a cluster)"
    p = add_command(sub, "batch", about, __doc__)
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
        "benchmarks/experiments/batch.py)",
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
        return common.read_file(Path(self.folder) / relative, max_bytes)

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
    face_crop_side: str = FACE_CROP_SIDE  # focal.geometry.FACE_CROP_SIDES

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


# ---- stage 1: read, and phase 1 of the pipeline (CPU) ----------------------------------------


def prepare(row: dict[str, Any], job: Job) -> dict[str, Any]:
    """The source's bytes and, when the options need faces, the pipeline's detection input (the
    images the detector sees, and what maps its faces back), pickled: Ray pickles what moves
    between its stages anyway, and these rows never leave the job."""
    out = {"src": row["src"], "rel": row["rel"], "data": b"", "input": b"", "error": ""}
    try:
        limits = job.limits
        out["data"] = data = job.src.read(row["rel"], limits.max_bytes)
        if job.options.needs_faces:
            inputs = detection_input(
                data,
                job.options,
                cap=job.max_side,
                limits=limits,
                face_crop_side=job.face_crop_side,
            )
            out["input"] = pickle.dumps(inputs)
    except (FocalError, OSError) as error:
        out["error"] = reason(error)
    return out


# ---- stage 2: detect (actors) -----------------------------------------------------------------


class DetectActor:
    """One detector per actor, built once; answers a batch of rows with each row's Faces
    (pickled), from the detector's answers for every image of its detection input."""

    def __init__(self, detector_kwargs: dict[str, Any], detector_url: str = "") -> None:
        self.detector = (
            service_detector(detector_url) if detector_url else open_face_detector(detector_kwargs)
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        count = len(batch["src"])
        inputs: dict[int, DetectionInput] = {
            i: pickle.loads(batch["input"][i]) for i in range(count) if batch["input"][i]
        }
        answers = self.answers(inputs)
        faces = [b""] * count
        for i, row_input in inputs.items():
            faces[i] = pickle.dumps(row_input.faces(answers[i]))
        result = {k: v for k, v in batch.items() if k != "input"}
        result["faces"] = np.array(faces, dtype=object)
        return result

    def answers(
        self, inputs: dict[int, DetectionInput]
    ) -> dict[int, list[Answer | DetectionFailed]]:
        """Every image of every row detected, grouped by padded canvas; a failed call fails each
        of its images."""
        answers: dict[int, list[Answer | DetectionFailed]] = {}
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i, row_input in inputs.items():
            answers[i] = [DetectionFailed("not detected")] * len(row_input.images)
            for j, image in enumerate(row_input.images):
                height, width = image.shape[:2]
                key = (-(-height // CANVAS_MULTIPLE), -(-width // CANVAS_MULTIPLE))
                groups.setdefault(key, []).append((i, j))
        for members in groups.values():
            images = [inputs[i].images[j] for i, j in members]
            try:
                found: list[Answer | DetectionFailed] = list(
                    faces_and_candidates(self.detector, images)
                )
            except Exception as error:  # every image of the call falls back, marked
                found = [DetectionFailed(f"{type(error).__name__}: {error}")] * len(members)
            for (i, j), answer in zip(members, found, strict=True):
                answers[i][j] = answer
        return answers


# ---- stage 3: phase 2 of the pipeline, encode and write (CPU) ---------------------------------


def finish(row: dict[str, Any], job: Job) -> dict[str, Any]:
    from focal.pipeline import transform

    record: dict[str, Any] = {"source": row["src"]}
    if row["error"]:
        return record | {"status": "failed", "reason": row["error"]}
    options = job.options
    out = output_name(row["rel"], options)
    faces = pickle.loads(row["faces"]) if row.get("faces") else None
    try:
        result = transform(row["data"], options, faces=faces, limits=job.limits)
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
        if common.up_to_date(done_at, sources[relative], whole_seconds=whole_seconds):
            plan.skipped += 1
        else:
            plan.todo.append(relative)
    return plan


def run(args: argparse.Namespace) -> int:
    try:
        options = parse_options(args.options)
    except OptionError as error:
        print(f"focal: {error.public}", file=sys.stderr)
        return common.USAGE
    if options.draw:
        print(
            "focal batch: draw is not supported here: overlays are drawn by focal serve and "
            "focal transform",
            file=sys.stderr,
        )
        return common.USAGE
    in_store = objectstore.is_s3(args.src) or objectstore.is_s3(args.dest)
    try:
        store = store_settings(args) if in_store else None
        src, dest = Tree.of(args.src, store), Tree.of(args.dest, store)
    except FocalError as error:  # a malformed s3:// prefix, or a bad s3_* setting
        print(f"focal batch: {error.public}", file=sys.stderr)
        return common.USAGE
    if not src.in_store and not Path(args.src).is_dir():
        print(f"focal batch: {args.src} is not a folder", file=sys.stderr)
        return common.USAGE
    if in_store:
        try:
            import obstore  # noqa: F401
        except ImportError:
            message = "focal batch: obstore is not installed (pip install 'focal-images[s3]')"
            print(message, file=sys.stderr)
            return common.NOT_INSTALLED
    try:
        import ray
    except ImportError:
        message = "focal batch: Ray is not installed (pip install 'focal-images[batch]')"
        print(message, file=sys.stderr)
        return common.NOT_INSTALLED
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
            return common.USAGE
        except RuntimeError as error:
            print(f"focal batch: {error}", file=sys.stderr)
            return common.FAILED
    elif options.needs_faces:
        try:
            require_face_model(args.model_dir)
        except ModelMissingError as error:
            print(f"focal: {error.public}", file=sys.stderr)
            return common.NO_MODEL
    try:
        plan = pending(src, dest, options, args.force)
    except (FocalError, OSError) as error:
        message = f"focal batch: cannot list {args.src} or {args.dest}: {reason(error)}"
        detail = getattr(error, "detail", "") or ""
        if detail and detail != getattr(error, "public", ""):  # the store's own words
            message += "\n  " + detail.splitlines()[0][:500]
        print(message, file=sys.stderr)
        return common.FAILED
    job = Job(
        options_text=args.options,
        src=src,
        dest=dest,
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
        detector_kwargs=detector_kwargs(args),
        detector_url=args.detector_url,
        face_crop_side=args.face_crop_side,
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
    failed = [(r["source"], r["reason"]) for r in ordered if r["status"] != "done"]
    code = common.summarize(done, skipped, failed, f"; manifest: {manifest}")
    return common.FAILED if manifest == "not written" else code


def _plain(value: Any) -> Any:
    """numpy scalars (as Ray hands rows back) as plain numbers."""
    return value.item() if hasattr(value, "item") else str(value)
