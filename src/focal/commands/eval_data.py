"""The evaluation set of `focal eval widerface`: ``<data>/manifest.jsonl`` (every image, its
size, its labelled faces and what kind of image it is) and the official WIDER FACE ground truth
(``<data>/wider_face/eval_ground_truth/*.mat``: boxes, invalid flags, easy/medium/hard lists)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from focal.errors import FocalError
from focal.face import evaluation as ev

GROUND_TRUTH_DIR = Path("wider_face/eval_ground_truth")


@dataclass(frozen=True)
class Entry:
    """One image of the manifest."""

    path: str
    width: int
    height: int
    faces: tuple[tuple[float, float, float, float], ...]
    kind: str  # wider, negative, single
    ambiguous: bool

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def event(self) -> str:
        return Path(self.path).parent.name


def _box(values: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def read_manifest(data: Path) -> list[Entry]:
    manifest = data / "manifest.jsonl"
    if not manifest.is_file():
        raise FocalError(f"no evaluation data: {manifest} not found (see --data)")
    entries = []
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("faces") is None:
            continue  # unlabelled: neither a negative nor a labelled face
        tags = row.get("tags", [])
        if row.get("dataset") == "WIDER FACE":
            kind = "wider"
        elif not row["faces"]:
            kind = "negative"
        else:
            kind = "single" if "single" in tags else "other"
        entries.append(
            Entry(
                path=row["path"],
                width=int(row["width"]),
                height=int(row["height"]),
                faces=tuple(_box(box) for box in row["faces"]),
                kind=kind,
                ambiguous=row.get("label_quality") == "ambiguous",
            )
        )
    return entries


def _cells(array: Any) -> list[Any]:
    """The cells of a MATLAB cell column as loaded by scipy (shape (n, 1) or (1, n))."""
    return [
        cell[0] if isinstance(cell, np.ndarray) and cell.size == 1 else cell
        for cell in array.ravel()
    ]


def load_ground_truth(ground_truth_dir: Path, names: Sequence[str]) -> dict[str, ev.ImageTruth]:
    """The official boxes, invalid flags and easy/medium/hard keep lists of the named images
    (file stems), from wider_face_val.mat and wider_{easy,medium,hard}_val.mat."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise FocalError("reading WIDER FACE .mat files needs scipy: pip install scipy") from None

    full = loadmat(str(ground_truth_dir / "wider_face_val.mat"))
    keeps = {
        s: loadmat(str(ground_truth_dir / f"wider_{s}_val.mat"))["gt_list"] for s in ev.SUBSETS
    }
    wanted = set(names)
    found: dict[str, ev.ImageTruth] = {}
    for e, files in enumerate(full["file_list"].ravel()):
        for j, file in enumerate(_cells(files)):
            name = str(np.asarray(file).ravel()[0])
            if name not in wanted:
                continue
            boxes = np.asarray(_cells(full["face_bbx_list"].ravel()[e])[j], dtype=np.float64)
            boxes = boxes.reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            invalid = np.asarray(_cells(full["invalid_label_list"].ravel()[e])[j]).ravel() == 1
            subsets = {}
            for subset, lists in keeps.items():
                keep = np.asarray(_cells(lists.ravel()[e])[j]).ravel().astype(np.int64)
                mask = np.zeros(len(boxes), dtype=bool)
                mask[keep - 1] = True
                subsets[subset] = mask
            found[name] = ev.ImageTruth(name, boxes, invalid, subsets)
    missing = sorted(wanted - set(found))
    if missing:
        raise FocalError(f"{len(missing)} images not in the official ground truth: {missing[:5]}")
    return found
