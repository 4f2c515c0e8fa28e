"""The lowest redact-strength that hides a face from focal's own detector.

The rule, fixed before measuring: the minimum ``redact-strength`` is the lowest strength S such
that, for every measured image, for both styles (blur, pixelate) and for S and every strength
above it up to the highest (100), focal's detector run on the redacted output finds no face
scoring at least 0.5 whose centre lies inside a redacted region (a face box found on the source,
grown by focal.steps.REDACT_MARGIN) of a face at least MIN_FACE (32) pixels on its longer side.
Smaller faces are left out of the rule: a first run that counted them found no strength at all
for blur (an 18x23 px face of 13_Interview_Interview_2_People_Visible_13_1001.jpg is found again
at 0.88 after blur at strength 100: the detector finds the head from its surroundings, hair and
shoulders, whatever the few pixels of the face hold). The output is the full-size variant
(``redact=faces`` and nothing else, the source's format): the face as large as a variant shows it.

Images: the facedata portraits (singles/) and the first ``--limit`` 13--Interview images of WIDER
FACE (large faces: the ones a weak redaction leaves findable). For each (image, style) the
strengths are tried from 100 downwards and the scan stops at the first strength where a face is
found again; the answer is one above the highest such strength over all pairs.

    .venv/bin/python benchmarks/experiments/redact_strength.py [--limit N] [--out NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from focal.detection import Detector, Face, RGBImage
from focal.options import parse_options
from focal.pipeline import transform
from focal.steps import REDACT_MARGIN

ROOT = Path(__file__).resolve().parents[2]
FACEDATA = ROOT.parent / "shared" / "facedata"
if not FACEDATA.is_dir():
    FACEDATA = Path("/work/shared/facedata")
RESULTS = ROOT / "benchmarks" / "results"
SCORE = 0.5
MIN_FACE = 32  # pixels, the longer side of a face on the source
HIGHEST = 100
STYLES = ("blur", "pixelate")


class Remembering:
    """The detector, answering an image it has seen before from memory (the source's own pass
    repeats for every strength)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.model_id = detector.model_id
        self.seen: dict[bytes, list[Face]] = {}

    def detect(self, batch: list[RGBImage]) -> list[list[Face]]:
        out = []
        for array in batch:
            key = hashlib.sha256(array.tobytes()).digest() + bytes(str(array.shape), "ascii")
            if key not in self.seen:
                self.seen[key] = self.detector.detect([array])[0]
            out.append(self.seen[key])
        return out


def faces(detector: Detector, data: bytes) -> list[tuple[list[float], float]]:
    """(box, score) of every face focal's detector finds in ``data`` (redact=faces' own pass)."""
    described = transform(data, parse_options("redact=faces,format=json"), detector=detector)
    return [(f["box"], float(f["score"])) for f in json.loads(described.data)["faces"] or []]


def regions(found: list[tuple[list[float], float]]) -> list[tuple[float, float, float, float]]:
    """The redacted regions: each face box grown by REDACT_MARGIN on each side."""
    out = []
    for (x1, y1, x2, y2), _ in found:
        if max(x2 - x1, y2 - y1) < MIN_FACE:
            continue
        grow_x, grow_y = (x2 - x1) * REDACT_MARGIN, (y2 - y1) * REDACT_MARGIN
        out.append((x1 - grow_x, y1 - grow_y, x2 + grow_x, y2 + grow_y))
    return out


def found_inside(
    detector: Detector, data: bytes, hidden: list[tuple[float, float, float, float]]
) -> float:
    """The best score of a face whose centre lies in a redacted region (0 when none)."""
    best = 0.0
    for (x1, y1, x2, y2), score in faces(detector, data):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if any(a <= cx <= c and b <= cy <= d for a, b, c, d in hidden):
            best = max(best, score)
    return best


def highest_failing(detector: Detector, data: bytes, style: str) -> tuple[int, float]:
    """The highest strength (100 down to 1) at which a face is found again in a redacted region
    at SCORE or more (0 when none), and the best score seen at the strength above it."""
    hidden = regions(faces(detector, data))
    if not hidden:
        return 0, 0.0
    for strength in range(HIGHEST, 0, -1):
        options = parse_options(f"redact=faces,redact-style={style}")
        # set past Options' own floor (focal.options.MIN_REDACT_STRENGTH): the floor is measured
        object.__setattr__(options, "redact_strength", strength)
        out = transform(data, options, detector=detector).data
        score = found_inside(detector, out, hidden)
        if score >= SCORE:
            return strength, score
    return 0, 0.0


def images(limit: int) -> list[str]:
    rows = [json.loads(x) for x in (FACEDATA / "manifest.jsonl").read_text().splitlines()]
    singles = [r["path"] for r in rows if r["path"].startswith("singles/") and r["faces"]]
    interview = sorted(r["path"] for r in rows if "13--Interview" in r["path"] and r["faces"])
    return singles + interview[:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=8, help="13--Interview images measured")
    parser.add_argument("--out", default="redact_strength")
    args = parser.parse_args()
    from focal.face import models
    from focal.face.sessions import load_detector

    installed = models.installed()
    if installed is None:
        print("no face model: run `focal models fetch`", file=sys.stderr)
        return 1
    detector = Remembering(load_detector(installed.directory))
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for path in images(args.limit):
        data = (FACEDATA / path).read_bytes()
        for style in STYLES:
            strength, score = highest_failing(detector, data, style)
            rows.append({"image": path, "style": style, "highest_failing": strength})
            rows[-1]["score"] = round(score, 3)
            print(f"{style:9s} {strength:3d} {score:.3f} {path}", flush=True)
    worst = max(row["highest_failing"] for row in rows)
    summary = {
        "rule": f"lowest strength S with no face >= {SCORE} inside the redacted region of a face "
        f"of {MIN_FACE} px or more, for S..100",
        "minimum_strength": worst + 1,
        "images": len(rows) // len(STYLES),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"minimum strength: {worst + 1} (over {summary['images']} images, both styles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
