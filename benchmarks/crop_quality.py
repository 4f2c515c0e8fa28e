"""Crop quality: which crop placement keeps the labelled faces of ../shared/facedata.

For every image with at least one countable face (not marked invalid, at least 16 px tall) and
for each target aspect ratio (1:1, 4:5, 16:9), the largest crop of that aspect is placed by each
method, and a face counts as kept when at least 90% of its labelled box lies inside the crop.

Methods:
  center          the crop centred on the image
  libvips         libvips smartcrop, interesting=attention (the crop found by matching pixels)
  focal-auto      focal gravity=auto (focal.pipeline.transform, format=json)
  thumbor         thumbor 7.8 smart crop with its face detector (/unsafe/meta/WxH/smart/PATH)
  thumbor-feature thumbor smart crop with its face detector, then its feature detector
  focal-face      focal gravity=face, zoom=0, fit=cover (focal.pipeline.transform, format=json):
                  the largest faces that fit, placed to hold the most weak candidates
  focal-face-fit  the same faces, kept as focal-face keeps them, without candidates
  focal-face-saliency   what-if: focal-face, with gravity=auto's crop where no face was found
  focal-face-candidate-fallback  what-if: focal-face, and where no face was found the centre
                  crop slid to hold the most weak candidates (geometry.steer)
  focal-face-published  the same detections placed by the published algorithm alone: centred on
                  the outer box of every face even when the aspect cannot hold them all
  oracle          the placement that keeps the most faces (the best any method could do)

Reported per aspect and method: the share of faces kept, and the share of images where every
face was kept among the images where the oracle keeps them all.

    .venv/bin/python benchmarks/crop_quality.py [--limit N] [--skip-thumbor] [--flip]
        [--crop-threshold T] [--max-side S] [--methods a,b] [--out NAME] [--time-flip N]
        [--output-width W] [--face-crop-side output|cap]

--skip-thumbor reuses the thumbor rows of the saved results (benchmarks/results/crop_quality.json)
where they exist, and says so in the results. --time-flip N times the detector with and without
the mirrored pass, interleaved, on the first N images, and exits.
Rows of the manifest whose faces are unlabelled (``"faces": null``) are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pyvips

import harness
from focal.face.evaluation import box_iou

ASPECTS: dict[str, tuple[int, int]] = {"1:1": (1, 1), "4:5": (4, 5), "16:9": (16, 9)}
MIN_FACE_HEIGHT = 16
KEPT_SHARE = 0.9
METHODS = (
    "center",
    "libvips",
    "focal-auto",
    "thumbor",
    "thumbor-feature",
    "focal-face-published",
    "focal-face-fit",
    "focal-face",
    "focal-face-saliency",
    "focal-face-candidate-fallback",
    "oracle",
)
LABELS = {
    "center": "center",
    "libvips": "libvips attention",
    "focal-auto": "focal gravity=auto",
    "thumbor": "thumbor smart (face detector)",
    "thumbor-feature": "thumbor smart (face + feature detectors)",
    "focal-face-published": "focal gravity=face, published placement only",
    "focal-face-fit": "focal gravity=face, largest faces that fit, no candidates",
    "focal-face": "focal gravity=face",
    "focal-face-saliency": "what-if: focal gravity=face, saliency (gravity=auto) when no face",
    "focal-face-candidate-fallback": "what-if: focal gravity=face, candidates steer the "
    "centre crop when no face",
    "oracle": "oracle (best placement)",
}
FACE_ONLY = ("thumbor.detectors.face_detector",)
FACE_FEATURE = ("thumbor.detectors.face_detector", "thumbor.detectors.feature_detector")
COMMAND = ".venv/bin/python benchmarks/crop_quality.py"


@dataclass(frozen=True)
class Crop:
    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class Item:
    """One evaluation image: its path under facedata, size, and the countable face boxes."""

    path: str
    width: int
    height: int
    faces: tuple[tuple[int, int, int, int], ...]


# --- data -------------------------------------------------------------------------------------


def countable(entry: dict[str, Any]) -> tuple[tuple[int, int, int, int], ...]:
    """Faces not marked invalid and at least MIN_FACE_HEIGHT pixels tall (none for a row whose
    faces are unlabelled, ``"faces": null``: it is skipped, not a negative)."""
    if entry.get("faces") is None:
        return ()
    attrs = entry.get("face_attrs") or [{} for _ in entry["faces"]]
    kept = []
    for box, attr in zip(entry["faces"], attrs, strict=True):
        x1, y1, x2, y2 = (int(v) for v in box)
        if attr.get("invalid") or y2 - y1 < MIN_FACE_HEIGHT:
            continue
        kept.append((x1, y1, x2, y2))
    return tuple(kept)


def items(manifest: Sequence[dict[str, Any]]) -> list[Item]:
    found = []
    for entry in manifest:
        faces = countable(entry)
        if faces:
            found.append(Item(entry["path"], entry["width"], entry["height"], faces))
    return found


# --- geometry of the measure ------------------------------------------------------------------


def largest_crop(width: int, height: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """The largest crop of the aspect inside width x height (a side rounded to nearest)."""
    a, b = aspect
    if width * b > height * a:
        return min(width, round(height * a / b)), height
    return width, min(height, round(width * b / a))


def kept_mask(faces: npt.NDArray[np.float64], crop: Crop) -> npt.NDArray[np.bool_]:
    """Which faces (n x 4: x1, y1, x2, y2) have at least KEPT_SHARE of their area in crop."""
    ix = np.clip(
        np.minimum(faces[:, 2], crop.left + crop.width) - np.maximum(faces[:, 0], crop.left),
        0,
        None,
    )
    iy = np.clip(
        np.minimum(faces[:, 3], crop.top + crop.height) - np.maximum(faces[:, 1], crop.top), 0, None
    )
    area = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
    result: npt.NDArray[np.bool_] = ix * iy >= KEPT_SHARE * area - 1e-9
    return result


def center_crop(item: Item, size: tuple[int, int]) -> Crop:
    w, h = size
    return Crop((item.width - w) // 2, (item.height - h) // 2, w, h)


def oracle_crop(item: Item, size: tuple[int, int]) -> Crop:
    """The placement (of every integer offset along the free axis) keeping the most faces; ties
    go to the offset closest to the centre."""
    w, h = size
    faces = np.asarray(item.faces, dtype=np.float64)
    free_x, free_y = item.width - w, item.height - h
    best: Crop = center_crop(item, size)
    best_count = int(kept_mask(faces, best).sum())
    offsets = range(free_x + 1) if free_x > 0 else range(free_y + 1)
    middle = (free_x if free_x > 0 else free_y) / 2
    for offset in sorted(offsets, key=lambda o: abs(o - middle)):
        crop = Crop(offset, 0, w, h) if free_x > 0 else Crop(0, offset, w, h)
        count = int(kept_mask(faces, crop).sum())
        if count > best_count:
            best, best_count = crop, count
    return best


# --- libvips attention --------------------------------------------------------------------------


def _locate(source: npt.NDArray[np.uint8], crop: npt.NDArray[np.uint8], axis: int) -> int:
    """Offset along ``axis`` (1 = x, 0 = y) at which ``crop`` was cut from ``source``."""
    length = crop.shape[axis]
    if source.shape[axis] == length:
        return 0
    lines = np.linspace(0, crop.shape[1 - axis] - 1, num=min(16, crop.shape[1 - axis])).astype(int)
    candidates: npt.NDArray[np.bool_] | None = None
    for line in lines:
        src = source[line] if axis == 1 else source[:, line]
        want = crop[line] if axis == 1 else crop[:, line]
        windows = np.lib.stride_tricks.sliding_window_view(src, length, axis=0)
        match = np.all(windows == want.T[None, ...], axis=(1, 2))
        candidates = match if candidates is None else candidates & match
    if candidates is None or not candidates.any():
        raise RuntimeError("the libvips crop was not found in its source")
    return int(np.flatnonzero(candidates)[0])


def libvips_crop(path: Path, size: tuple[int, int]) -> Crop:
    image = pyvips.Image.new_from_file(str(path), access="random")
    w, h = size
    cropped = image.smartcrop(w, h, interesting="attention")
    source, result = image.numpy(), cropped.numpy()
    if source.ndim == 2:
        source, result = source[..., None], result[..., None]
    if w < image.width:
        return Crop(_locate(source, result, 1), 0, w, h)
    return Crop(0, _locate(source, result, 0), w, h)


# --- focal ------------------------------------------------------------------------------------


class CachedDetector:
    """Wraps focal's detector; the same inference pixels are detected once (the three aspects of
    one image share a detection). The crop decisions stay focal's own."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: dict[str, Any] = {}
        self.calls = 0
        self.seconds = 0.0
        self.last: tuple[Any, Any] = ([], [])  # the latest (faces, candidates), inference pixels

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    @property
    def max_side(self) -> int:
        return int(self.inner.max_side)

    def detect(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Any]:
        return [faces for faces, _ in self.detect_with_candidates(images)]

    def detect_with_candidates(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Any]:
        keys = [hashlib.sha1(np.ascontiguousarray(i).tobytes()).hexdigest() for i in images]
        missing = [(k, i) for k, i in zip(keys, images, strict=True) if k not in self.seen]
        if missing:
            self.calls += len(missing)
            started = time.perf_counter()
            found = self.inner.detect_with_candidates([i for _, i in missing])
            self.seconds += time.perf_counter() - started
            for (key, _), pair in zip(missing, found, strict=True):
                self.seen[key] = pair
        answers = [self.seen[k] for k in keys]
        if answers:
            self.last = answers[-1]
        return answers


def focal_crop_fn(gravity: str, detector: Any) -> Callable[[Path, tuple[int, int]], Crop]:
    """The crop focal chooses, read from its own JSON description (fit=cover, the crop size as
    the requested width and height, so nothing is scaled)."""
    import json

    from focal.options import Fit, Format, Gravity, Options
    from focal.pipeline import transform

    def crop(path: Path, size: tuple[int, int]) -> Crop:
        width, height = size
        if OUTPUT["width"] and OUTPUT["width"] < width:  # a smaller output of the same crop
            width, height = OUTPUT["width"], max(1, round(OUTPUT["width"] * height / width))
        options = Options(
            width=width,
            height=height,
            fit=Fit.COVER,
            gravity=Gravity(gravity),
            zoom=0.0,
            format=Format.JSON,
        )
        result = transform(
            path.read_bytes(), options, detector=detector, face_crop_side=OUTPUT["side"]
        )
        description = json.loads(result.data)
        if gravity == "face":
            DETECTIONS[path] = [
                (tuple(face["box"]), face["score"]) for face in description.get("faces", [])
            ]
            CANDIDATES[path] = _working_boxes(path, detector.last[1])
        box = description["crop"]
        return Crop(box["left"], box["top"], box["width"], box["height"])

    return crop


def _working_boxes(path: Path, candidates: Sequence[Any]) -> list[tuple[float, ...]]:
    """Candidate boxes from inference pixels to the image's own (as focal.pipeline scales them)."""
    from focal import geometry

    item = _item_of(path)
    _, factor = geometry.inference_size(geometry.Size(item.width, item.height))
    return [tuple(v * factor for v in c.box) for c in candidates]


def planned_crop(policy: str) -> Callable[[Path, tuple[int, int]], Crop]:
    """focal-face's detections (run first, for the same image) placed by geometry.plan without
    candidates: by the published algorithm alone (``published``) or keeping the largest faces
    that fit (``fit``)."""
    from focal import geometry
    from focal.options import Fit, Gravity

    def crop(path: Path, size: tuple[int, int]) -> Crop:
        item = _item_of(path)
        faces = [geometry.Box(*box) for box, _ in DETECTIONS[path]]
        source = geometry.Size(item.width, item.height)
        if not faces:
            return center_crop(item, size)
        chosen = geometry.plan(
            source,
            size[0],
            size[1],
            Fit.COVER,
            Gravity("face"),
            faces=faces,
            zoom=0.0,
            face_policy=geometry.FacePolicy(policy),
        )
        rect = chosen.crop
        return Crop(rect.left, rect.top, rect.width, rect.height)

    return crop


def candidate_fallback_crop(path: Path, size: tuple[int, int]) -> Crop:
    """What-if, where focal-face found no face: the centre crop slid along its free axis to hold
    the most weak candidates whole (geometry.steer, ties toward the centre)."""
    from focal import geometry

    item = _item_of(path)
    crop = center_crop(item, size)
    boxes = CANDIDATES.get(path, [])
    if not boxes:
        return crop
    if size[0] < item.width:
        spans = [(b[0], b[2]) for b in boxes if b[1] >= 0 and b[3] <= item.height]
        left, _ = geometry.steer(crop.left, 0, item.width - size[0], size[0], spans)
        return Crop(left, 0, size[0], size[1])
    spans = [(b[1], b[3]) for b in boxes if b[0] >= 0 and b[2] <= item.width]
    top, _ = geometry.steer(crop.top, 0, item.height - size[1], size[1], spans)
    return Crop(0, top, size[0], size[1])


# --- thumbor ----------------------------------------------------------------------------------


def thumbor_crop_fn(base: str) -> Callable[[Path, tuple[int, int]], Crop]:
    client = httpx.Client(base_url=base, timeout=120)

    def crop(path: Path, size: tuple[int, int]) -> Crop:
        relative = path.relative_to(harness.FACEDATA).as_posix()
        reply = client.get(f"/unsafe/meta/{size[0]}x{size[1]}/smart/{relative}")
        reply.raise_for_status()
        ops = reply.json()["thumbor"]["operations"]
        for op in ops:
            if op["type"] == "crop":
                return Crop(
                    op["left"], op["top"], op["right"] - op["left"], op["bottom"] - op["top"]
                )
        image = pyvips.Image.new_from_file(str(path))
        return Crop(0, 0, image.width, image.height)

    return crop


@contextlib.contextmanager
def thumbor_methods(skip: bool) -> Iterator[dict[str, Callable[[Path, tuple[int, int]], Crop]]]:
    if skip:
        yield {}
        return
    face = harness.thumbor_server(harness.FACEDATA, cache=False, detectors=FACE_ONLY, tag="tq-face")
    feature = harness.thumbor_server(
        harness.FACEDATA, cache=False, detectors=FACE_FEATURE, tag="tq-feature"
    )
    with harness.running(face), harness.running(feature):
        yield {
            "thumbor": thumbor_crop_fn(face.base),
            "thumbor-feature": thumbor_crop_fn(feature.base),
        }


# --- the run ----------------------------------------------------------------------------------


def evaluate(
    item: Item,
    methods: dict[str, Callable[[Path, tuple[int, int]], Crop]],
    errors: dict[str, str],
) -> dict[str, Any]:
    path = harness.FACEDATA / item.path
    faces = np.asarray(item.faces, dtype=np.float64)
    row: dict[str, Any] = {"path": item.path, "faces": len(item.faces), "kept": {}}
    for aspect_name, aspect in ASPECTS.items():
        size = largest_crop(item.width, item.height, aspect)
        kept: dict[str, int] = {}
        for name, method in methods.items():
            try:
                crop = method(path, size)
            except Exception as error:
                errors.setdefault(name, f"{item.path}: {type(error).__name__}: {error}")
                continue
            kept[name] = int(kept_mask(faces, crop).sum())
            if name == "focal-face":
                row.setdefault("focal_face_crop", {})[aspect_name] = [
                    crop.left, crop.top, crop.width, crop.height
                ]  # fmt: skip
        row["kept"][aspect_name] = kept
    return row


# --- why gravity=face lost a face ---------------------------------------------------------------

MATCH_IOU = 0.3
Box4 = tuple[float, float, float, float]


def _span(boxes: Sequence[Box4]) -> tuple[float, float]:
    return max(b[2] for b in boxes) - min(b[0] for b in boxes), max(b[3] for b in boxes) - min(
        b[1] for b in boxes
    )


def _fits(boxes: Sequence[Box4], crop: Crop) -> bool:
    if not boxes:
        return True
    width, height = _span(boxes)
    return width <= crop.width + 0.5 and height <= crop.height + 0.5


def diagnose(item: Item, crop: Crop, detections: Sequence[tuple[Box4, float]]) -> dict[str, Any]:
    """Why focal's face crop lost a labelled face that a better placement would keep."""
    labels: list[Box4] = [tuple(float(v) for v in f) for f in item.faces]  # type: ignore[misc]
    boxes = [d[0] for d in detections]
    mask = kept_mask(np.asarray(item.faces, dtype=np.float64), crop)
    lost = [lab for lab, kept in zip(labels, mask, strict=True) if not kept]
    undetected = [lab for lab in lost if all(box_iou(lab, b) < MATCH_IOU for b in boxes)]
    matching = [b for b in boxes if any(box_iou(b, lab) >= MATCH_IOU for lab in labels)]
    extra = [d for d in detections if all(box_iou(d[0], lab) < MATCH_IOU for lab in labels)]
    if lost and len(undetected) == len(lost):
        cause = "lost faces not detected"
    elif not _fits(boxes, crop) and _fits(matching, crop):
        cause = "detections matching no countable label widen the outer box past the crop"
    elif not _fits(boxes, crop):
        cause = "labelled faces span more than the crop; the centred placement cuts one"
    else:
        cause = "outer box fits; a detection box is smaller than its label"
    return {
        "path": item.path,
        "cause": cause,
        "lost": len(lost),
        "lost_not_detected": len(undetected),
        "detections": len(boxes),
        "extra_detections": [
            {"height": round(b[3] - b[1], 1), "score": round(score, 3)} for b, score in extra
        ],
    }


def failures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per aspect: every image where the oracle keeps all faces and focal-face does not."""
    found: dict[str, Any] = {}
    for aspect in ASPECTS:
        cases = []
        for row in rows:
            kept = row["kept"][aspect]
            if kept.get("oracle") != row["faces"] or kept.get("focal-face") in (None, row["faces"]):
                continue
            path = harness.FACEDATA / row["path"]
            crop = Crop(*row["focal_face_crop"][aspect])
            cases.append(diagnose(_ITEMS[path], crop, DETECTIONS.get(path, [])))
        causes: dict[str, int] = {}
        for case in cases:
            causes[case["cause"]] = causes.get(case["cause"], 0) + 1
        found[aspect] = {"causes": causes, "cases": cases}
    return found


# --- which images changed outcome --------------------------------------------------------------

FLIPPED_METHOD = "focal-face"
BASELINE_METHOD = "focal-face-published"


def all_kept(row: dict[str, Any], aspect: str, method: str) -> bool | None:
    """Whether ``method`` kept every face of the row's image at ``aspect`` (None: not scored)."""
    kept = row["kept"].get(aspect, {}).get(method)
    return None if kept is None else kept == row["faces"]


def flips(
    rows: Sequence[dict[str, Any]],
    before: Sequence[dict[str, Any]],
    method: str,
    before_method: str | None = None,
) -> dict[str, dict[str, list[str]]]:
    """Per aspect, the images (paths) whose all-faces-kept outcome for ``method`` differs from
    ``before_method``'s (default: the same method) in ``before``'s row of the same path:
    ``kept_to_lost`` and ``lost_to_kept``. Images scored on one side only are left out."""
    earlier = {row["path"]: row for row in before}
    found: dict[str, dict[str, list[str]]] = {}
    for aspect in ASPECTS:
        block: dict[str, list[str]] = {"kept_to_lost": [], "lost_to_kept": []}
        for row in rows:
            old_row = earlier.get(row["path"])
            now = all_kept(row, aspect, method)
            then = None if old_row is None else all_kept(old_row, aspect, before_method or method)
            if now is None or then is None or now == then:
                continue
            block["kept_to_lost" if then else "lost_to_kept"].append(row["path"])
        found[aspect] = block
    return found


def flip_report(rows: Sequence[dict[str, Any]], saved: dict[str, Any] | None) -> dict[str, Any]:
    """gravity=face's flips against the published placement alone on the same detections, and
    against the last saved result (every focal method scored in both)."""
    report: dict[str, Any] = {
        "method": FLIPPED_METHOD,
        "against_published": flips(rows, rows, FLIPPED_METHOD, BASELINE_METHOD),
    }
    if saved is not None:
        old_rows = saved.get("images", [])
        methods = [
            m
            for m in METHODS
            if m.startswith("focal")
            and any(m in r["kept"].get(a, {}) for r in rows for a in ASPECTS)
            and any(m in r["kept"].get(a, {}) for r in old_rows for a in ASPECTS)
        ]
        report["against_saved"] = {
            "result": "benchmarks/results/crop_quality.json",
            "measured": saved.get("machine", {}).get("date"),
            "commit": saved.get("machine", {}).get("git_commit"),
            "methods": {m: flips(rows, old_rows, m) for m in methods},
        }
    return report


def print_flips(report: dict[str, Any]) -> None:
    def show(title: str, block: dict[str, dict[str, list[str]]]) -> None:
        for aspect, change in block.items():
            for kind, paths in change.items():
                if paths:
                    names = ", ".join(Path(p).stem for p in paths)
                    print(f"  {title} {aspect} {kind.replace('_', ' ')} ({len(paths)}): {names}")

    print(f"flips of {report['method']} against the published placement alone:")
    show("published", report["against_published"])
    saved = report.get("against_saved")
    if saved:
        print(f"flips against the saved result ({saved['measured']}):")
        for method, block in saved["methods"].items():
            show(method, block)


def summarise(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for aspect in ASPECTS:
        possible = [r for r in rows if r["kept"][aspect].get("oracle") == r["faces"]]
        total_faces = sum(r["faces"] for r in rows)
        per: dict[str, Any] = {}
        for name in names:
            scored = [r for r in rows if name in r["kept"][aspect]]
            if not scored:
                continue
            ok = [r for r in possible if r["kept"][aspect].get(name) == r["faces"]]
            per[name] = {
                "faces_kept_share": round(
                    sum(r["kept"][aspect][name] for r in scored) / total_faces, 4
                ),
                "all_kept_share": round(len(ok) / len(possible), 4) if possible else None,
                "all_kept": len(ok),
                "images_scored": len(scored),
            }
        summary[aspect] = {
            "images": len(rows),
            "possible": len(possible),
            "faces": total_faces,
            "methods": per,
        }
    return summary


def build_methods(
    detector: Any, thumbor: dict[str, Callable[[Path, tuple[int, int]], Crop]]
) -> tuple[dict[str, Callable[[Path, tuple[int, int]], Crop]], dict[str, str]]:
    methods: dict[str, Callable[[Path, tuple[int, int]], Crop]] = {
        "center": lambda p, s: center_crop(_item_of(p), s),
        "libvips": libvips_crop,
    }
    notes: dict[str, str] = {}
    if detector is not None:
        methods["focal-auto"] = focal_crop_fn("auto", detector)
    methods.update(thumbor)
    if detector is not None:
        methods["focal-face"] = focal_crop_fn("face", detector)
        # after focal-face: its detections
        methods["focal-face-published"] = planned_crop("published")
        methods["focal-face-fit"] = planned_crop("fit")
        auto = focal_crop_fn("auto", detector)
        methods["focal-face-saliency"] = lambda p, s: (
            auto(p, s) if not DETECTIONS[p] else methods["focal-face"](p, s)
        )
        methods["focal-face-candidate-fallback"] = lambda p, s: (
            candidate_fallback_crop(p, s) if not DETECTIONS[p] else methods["focal-face"](p, s)
        )
    else:
        notes["focal-face"] = "focal's detector could not be loaded"
    methods["oracle"] = lambda p, s: oracle_crop(_item_of(p), s)
    return methods, notes


# --output-width and --face-crop-side: focal's output width (0: the crop's own size) and the
# detection side of its face crops (focal.pipeline.FACE_CROP_SIDES)
OUTPUT: dict[str, Any] = {"width": 0, "side": "cap"}
_ITEMS: dict[Path, Item] = {}
DETECTIONS: dict[Path, list[tuple[tuple[float, float, float, float], float]]] = {}
CANDIDATES: dict[Path, list[tuple[float, ...]]] = {}


def _item_of(path: Path) -> Item:
    return _ITEMS[path]


def load_focal_detector(
    crop_threshold: float | None = None,
    flip: bool = False,
    max_side: int | None = None,
    precision: str = "fp32",
) -> tuple[Any, str | None]:
    try:
        from focal.face.sessions import load_detector

        chosen: dict[str, Any] = {"flip": flip, "precision": precision}
        if crop_threshold is not None:
            chosen["crop_threshold"] = crop_threshold
        if max_side is not None:
            chosen["max_side"] = max_side
        detector = load_detector(**chosen)
    except Exception as error:
        return None, f"{type(error).__name__}: {error}"
    return CachedDetector(detector), None


def time_flip(selected: Sequence[Item], count: int) -> dict[str, Any]:
    """Detector time with and without the mirrored pass (one session), interleaved per image
    on the first ``count`` images: the median per-image ratio and each side's median."""
    from dataclasses import replace

    from focal.face.detector import RetinaFace, load_inference_image

    detector, error = load_focal_detector()
    if detector is None:
        raise SystemExit(f"focal's detector could not be loaded: {error}")
    plain = detector.inner
    flipped = RetinaFace(plain.session, plain._model_sha256, replace(plain.settings, flip=True))
    plain_ms, flip_ms = [], []
    for item in selected[:count]:
        image, _ = load_inference_image(harness.FACEDATA / item.path)
        for runner, into in ((plain, plain_ms), (flipped, flip_ms), (plain, plain_ms)):
            started = time.perf_counter()
            runner.detect_with_candidates([image])
            into.append((time.perf_counter() - started) * 1000)
    base = [min(a, b) for a, b in zip(plain_ms[::2], plain_ms[1::2], strict=True)]
    ratios = [f / b for f, b in zip(flip_ms, base, strict=True)]
    return {
        "images": len(base),
        "plain_ms_median": round(float(np.median(base)), 1),
        "flip_ms_median": round(float(np.median(flip_ms)), 1),
        "ratio_median": round(float(np.median(ratios)), 2),
    }


THUMBOR_MACHINE = ("thumbor", "opencv_thumbor", "pillow_thumbor")


def merge_thumbor(
    rows: list[dict[str, Any]], notes: dict[str, str], machine: dict[str, Any]
) -> list[str]:
    """With --skip-thumbor: the thumbor rows of the saved results, per image and aspect (the
    same images, by path), and the thumbor versions they were measured with (into ``machine``).
    Returns the methods merged."""
    saved = harness.read_result("crop_quality")
    if saved is None:
        return []
    by_path = {row["path"]: row for row in saved.get("images", [])}
    merged = [m for m in ("thumbor", "thumbor-feature") if m in saved.get("labels", {})]
    for row in rows:
        old = by_path.get(row["path"])
        for aspect, kept in row["kept"].items():
            for method in merged:
                value = None if old is None else old["kept"].get(aspect, {}).get(method)
                if value is not None:
                    kept[method] = value
    for key in THUMBOR_MACHINE if merged else ():
        if key in saved.get("machine", {}):
            machine[key] = saved["machine"][key]
    if merged and "thumbor" in saved.get("notes", {}):  # rows reused before: where they came from
        notes["thumbor"] = saved["notes"]["thumbor"]
    elif merged:
        notes["thumbor"] = (
            "thumbor rows reused from the saved benchmarks/results/crop_quality.json "
            f"({saved.get('command', '')!r}, {saved.get('machine', {}).get('date', 'undated')})"
        )
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (smoke run)")
    parser.add_argument("--skip-thumbor", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    parser.add_argument("--methods", default="", help="only these methods (comma-separated)")
    parser.add_argument(
        "--out", default="", help="result name (needed to write a partial or what-if run)"
    )
    parser.add_argument(
        "--crop-threshold",
        type=float,
        default=None,
        help="what-if: the detector's crop-time score threshold (faces above it, candidates below)",
    )
    parser.add_argument("--flip", action="store_true", help="the detector's mirrored pass on")
    parser.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="what-if: the detector's detection side (detector_max_side; default 1024)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        help="what-if: the detector's precision (detector_precision: fp32, bf16 or f16)",
    )
    parser.add_argument(
        "--time-flip", type=int, default=0, help="time the mirrored pass on N images and exit"
    )
    parser.add_argument(
        "--output-width",
        type=int,
        default=0,
        help="what-if: focal's output this wide (the same crop, scaled down; default: unscaled)",
    )
    parser.add_argument(
        "--face-crop-side",
        default=None,
        help="focal's face_crop_side: output or cap (default: focal's default)",
    )
    args = parser.parse_args(argv)
    from focal.pipeline import FACE_CROP_SIDE

    OUTPUT["width"], OUTPUT["side"] = args.output_width, args.face_crop_side or FACE_CROP_SIDE
    selected = items(harness.load_manifest())
    if args.limit:
        selected = selected[: args.limit]
    for item in selected:
        _ITEMS[harness.FACEDATA / item.path] = item
    if args.time_flip:
        print(time_flip(selected, args.time_flip))
        return 0
    detector, detector_error = load_focal_detector(
        args.crop_threshold, args.flip, args.max_side, args.precision
    )
    errors: dict[str, str] = {}
    if detector_error:
        errors["focal"] = detector_error
    started = time.monotonic()
    skip_thumbor = args.skip_thumbor or bool(args.methods and "thumbor" not in args.methods)
    with thumbor_methods(skip_thumbor) as thumbor:
        methods, notes = build_methods(detector, thumbor)
        if args.methods:
            wanted = {*args.methods.split(","), "oracle"}
            methods = {k: v for k, v in methods.items() if k in wanted}
        rows = []
        for index, item in enumerate(selected, 1):
            rows.append(evaluate(item, methods, errors))
            if index % 25 == 0:
                print(
                    f"  {index}/{len(selected)} images, {time.monotonic() - started:.0f} s",
                    flush=True,
                )
    machine = harness.machine_info()
    merged = merge_thumbor(rows, notes, machine) if args.skip_thumbor and not args.methods else []
    scored = {*methods, *merged}
    summary = summarise(rows, [m for m in METHODS if m in scored])
    print_table(summary)
    flipped = flip_report(rows, harness.read_result("crop_quality"))
    if FLIPPED_METHOD in scored and BASELINE_METHOD in scored:
        print_flips(flipped)
    found = failures(rows) if "focal-face" in methods else {}
    for aspect, block in found.items():
        print(f"{aspect} gravity=face failures: {block['causes']}")
    what_if = (
        bool(args.output_width)
        or args.face_crop_side is not None
        or args.crop_threshold is not None
        or args.flip
        or args.max_side is not None
        or args.precision != "fp32"
    )
    partial = bool(args.limit or args.methods or what_if)
    if args.no_write or (partial and not args.out):
        return 0
    data = {
        "machine": machine,
        "definition": {
            "faces": f"labelled faces not marked invalid and at least {MIN_FACE_HEIGHT} px tall",
            "kept": f"at least {KEPT_SHARE:.0%} of the face box inside the crop",
            "crop": "the largest crop of the aspect ratio, placed by each method",
            "all_kept_share": "images where every face was kept / "
            "images where the oracle keeps every face",
            "faces_kept_share": "faces kept / all countable faces (all images)",
        },
        "labels": {m: LABELS[m] for m in METHODS if m in scored},
        "focal_path": "focal.pipeline.transform(format=json, fit=cover, zoom=0) crop rectangle",
        "errors": errors,
        "notes": notes,
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "focal_face_failures": found,
        "flips": flipped,
        "images": rows,
    }
    data["detector_crop_threshold"] = (
        detector.inner.settings.crop_threshold if detector is not None else None
    )
    data["detector_flip"] = args.flip
    data["detector_max_side"] = detector.max_side if detector is not None else None
    data["detector_precision"] = args.precision
    data["output_width"] = args.output_width or None
    data["face_crop_side"] = OUTPUT["side"]
    if detector is not None:
        data["detector_seconds"] = round(detector.seconds, 1)
        data["detector_calls"] = detector.calls
    harness.write_result(args.out or "crop_quality", data, COMMAND)
    return 0


def print_table(summary: dict[str, Any]) -> None:
    for aspect, block in summary.items():
        print(
            f"{aspect}: {block['images']} images, {block['possible']} possible, "
            f"{block['faces']} faces"
        )
        for name, row in block["methods"].items():
            share = row["all_kept_share"]
            text = "n/a" if share is None else f"{100 * share:5.1f}%"
            print(
                f"  {LABELS[name]:42s} all kept {text}  "
                f"faces kept {100 * row['faces_kept_share']:5.1f}%"
            )


if __name__ == "__main__":
    sys.exit(main())
