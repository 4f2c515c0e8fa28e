from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import DEMO, FACEDATA
from tests.model_fixtures import require_model_dir
from tests.test_cli import focal

from focal.detection import Face, RGBImage
from focal.face.batching import BatchingDetector


class RecordingDetector:
    """Answers one face per image whose score is the image's first pixel (its id); records the
    size of every batch; raises for any batch holding an image whose id is 255."""

    model_id = "recording"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        with self._lock:
            self.batches.append(len(images))
        time.sleep(self.delay_s)
        ids = [int(image[0, 0, 0]) for image in images]
        if 255 in ids:
            raise RuntimeError("the detector broke")
        return [[Face(box=(0.0, 0.0, 1.0, 1.0), score=float(i))] for i in ids]


def image(identity: int, size: int = 64) -> RGBImage:
    return np.full((size, size, 3), identity, dtype=np.uint8)


def detect_in_threads(detector: BatchingDetector, ids: Sequence[int]) -> list[Any]:
    """Each id detected on its own thread, all released together; a result or the exception."""
    start = threading.Barrier(len(ids))

    def one(identity: int) -> Any:
        start.wait()
        try:
            return detector.detect([image(identity)])
        except RuntimeError as error:
            return error

    with ThreadPoolExecutor(len(ids)) as pool:
        return list(pool.map(one, ids))


def test_concurrent_callers_get_their_own_faces_from_few_batches() -> None:
    inner = RecordingDetector()
    with BatchingDetector(inner, max_batch=8, window_ms=200) as detector:
        results = detect_in_threads(detector, range(12))
    assert [r[0][0].score for r in results] == [float(i) for i in range(12)]
    assert all(len(r) == 1 and len(r[0]) == 1 for r in results)
    assert sum(inner.batches) == 12
    assert len(inner.batches) < 12
    assert max(inner.batches) <= 8


def test_one_call_with_several_images_keeps_their_order() -> None:
    inner = RecordingDetector()
    with BatchingDetector(inner, max_batch=4, window_ms=5) as detector:
        found = detector.detect([image(i) for i in (7, 3, 9, 1, 5, 2)])
    assert [faces[0].score for faces in found] == [7.0, 3.0, 9.0, 1.0, 5.0, 2.0]
    assert max(inner.batches) <= 4


def test_images_of_different_canvas_sizes_are_never_batched_together() -> None:
    inner = RecordingDetector()
    with BatchingDetector(inner, max_batch=8, window_ms=50) as detector:
        found = detector.detect([image(1, 64), image(2, 100), image(3, 64), image(4, 120)])
    assert [faces[0].score for faces in found] == [1.0, 2.0, 3.0, 4.0]
    assert sorted(inner.batches) == [2, 2]  # 64 with 64; 100 with 120 (both on a 128 canvas)


def test_an_inner_error_reaches_every_caller_of_its_batch_and_serving_goes_on() -> None:
    inner = RecordingDetector()
    with BatchingDetector(inner, max_batch=16, window_ms=500) as detector:
        results = detect_in_threads(detector, [1, 2, 255, 4])
        assert len(inner.batches) == 1  # all four shared one batch
        assert all(isinstance(r, RuntimeError) for r in results)
        assert all("the detector broke" in str(r) for r in results)
        later = detect_in_threads(detector, [5, 6])
    assert [r[0][0].score for r in later] == [5.0, 6.0]


def test_close_returns_promptly_and_refuses_later_calls() -> None:
    detector = BatchingDetector(RecordingDetector(), max_batch=4, window_ms=60_000)
    started = time.monotonic()
    detector.close()
    assert time.monotonic() - started < 30  # well before the 60 s window, however loaded
    with pytest.raises(RuntimeError, match="closed"):
        detector.detect([image(1)])
    detector.close()  # a second close is harmless


def test_a_caller_waiting_in_the_window_is_served_when_closed() -> None:
    inner = RecordingDetector()
    detector = BatchingDetector(inner, max_batch=4, window_ms=60_000)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(detector.detect, [image(8)])
        time.sleep(0.1)
        started = time.monotonic()
        detector.close()
        assert waiting.result(timeout=30)[0][0].score == 8.0
    assert time.monotonic() - started < 30  # well before the 60 s window
    assert inner.batches == [1]


@pytest.mark.parametrize(("max_batch", "window_ms"), [(0, 20.0), (4, -1.0)])
def test_bad_settings_are_refused(max_batch: int, window_ms: float) -> None:
    with pytest.raises(ValueError, match=r"max_batch|window_ms"):
        BatchingDetector(RecordingDetector(), max_batch=max_batch, window_ms=window_ms)


def face_folder(root: Path) -> Path:
    """The three single-face portraits and the demo astronaut, copied for this test only."""
    src = root / "in"
    src.mkdir()
    singles = FACEDATA / "singles"
    portraits = sorted(p for p in singles.iterdir() if p.suffix in {".jpg", ".png"})
    if len(portraits) != 3:
        pytest.fail(f"expected 3 portraits in {singles}, found {len(portraits)}")
    for path in [*portraits, DEMO / "astronaut.jpg"]:
        shutil.copyfile(path, src / path.name)
    return src


def outputs(out: Path) -> dict[str, dict[str, Any]]:
    made = {}
    for path in sorted(out.glob("*.json")):
        description = json.loads(path.read_text())
        description.pop("timings", None)
        made[path.name] = description
    return made


@pytest.mark.slow
def test_folder_face_crops_in_batches_match_one_at_a_time(tmp_path: Path) -> None:
    model_dir = require_model_dir()
    src = face_folder(tmp_path)
    options = "width=128,height=128,fit=cover,gravity=face,format=json"
    runs = {}
    for name, workers, batch in [("batched", "2", "4"), ("single", "1", "1")]:
        out = tmp_path / name
        done = focal(
            "transform", src, "-o", out, "--options", options, "--model-dir", model_dir,
            "--workers", workers, "--batch", batch,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "4 done, 0 skipped (already there), 0 failed" in done.stderr
        runs[name] = outputs(out)
    batched = runs["batched"]
    assert len(batched) == 4
    for name, description in batched.items():
        assert description["gravity"] == "face", name
        assert description["faces"] and len(description["faces"][0]["box"]) == 4, name
        assert description["outer_box"] is not None, name
    assert batched == runs["single"]


class CandidateRecordingDetector(RecordingDetector):
    """RecordingDetector that also answers one weak candidate per image (score 0.1)."""

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        weak = Face(box=(2.0, 2.0, 3.0, 3.0), score=0.1)
        return [(faces, [weak]) for faces in self.detect(images)]


def test_candidates_pass_through_the_batching_detector() -> None:
    image = np.full((8, 8, 3), 7, dtype=np.uint8)
    with BatchingDetector(CandidateRecordingDetector(), max_batch=4, window_ms=1) as batching:
        ((faces, weak),) = batching.detect_with_candidates([image])
        assert [f.score for f in faces] == [7.0] and [f.score for f in weak] == [0.1]
        assert [f.score for f in batching.detect([image])[0]] == [7.0]
    with BatchingDetector(RecordingDetector(), max_batch=4, window_ms=1) as plain:
        assert plain.detect_with_candidates([image]) == [([Face((0.0, 0.0, 1.0, 1.0), 7.0)], [])]
