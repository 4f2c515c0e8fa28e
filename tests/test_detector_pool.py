from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import DEMO, ROOT
from tests.fake_detectors import FAIL, SLOW, Echo, image_with

from focal.detection import DetectionFailed, Face, RGBImage, inference_cap
from focal.errors import BusyError, ModelMissingError
from focal.server.detection.caching import CachingDetector, image_key
from focal.server.detection.pool import DetectorPool, PoolSettings
from focal.server.detection.worker import detect_each, same_shape_groups

MakePool = Callable[[PoolSettings], DetectorPool]


def child_pids() -> set[int]:
    """Child processes of this process, read from /proc (multiprocessing's resource tracker,
    started once with the first spawned process and shared by all, is not counted)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"resource_tracker" not in command:
            children.add(int(entry.name))
    return children


@pytest.fixture
def make_pool() -> Iterator[MakePool]:
    """Started pools, all stopped at the end; the test fails if any worker process is left."""
    before = child_pids()
    pools: list[DetectorPool] = []

    def make(settings: PoolSettings) -> DetectorPool:
        pool = DetectorPool(settings)
        pools.append(pool)
        pool.start()
        return pool

    yield make
    for pool in pools:
        pool.stop()
    assert child_pids() - before == set()


def fake(name: str, *args: tuple[str, object]) -> PoolSettings:
    """Settings for a fake factory from tests/fake_detectors.py, called with args as kwargs."""
    return PoolSettings(factory=f"tests.fake_detectors:{name}", factory_args=args)


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail("condition not reached in time")
        time.sleep(0.02)


def markers(result: list[list[Face]]) -> list[float]:
    return [faces[0].box[0] for faces in result]


def batch_size(result: list[list[Face]]) -> float:
    return result[0][0].box[1]


def in_thread(pool: DetectorPool, images: Sequence[RGBImage]) -> Future[list[list[Face]]]:
    future: Future[list[list[Face]]] = Future()

    def run() -> None:
        try:
            future.set_result(pool.detect(images))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


# ---------------------------------------------------------------------------------------------
# Batching and results


def test_concurrent_requests_are_batched_and_each_gets_its_own_faces(make_pool: MakePool) -> None:
    pool = make_pool(replace(fake("echo"), batch_window_ms=300, max_batch=4))
    with ThreadPoolExecutor(8) as executor:
        futures = [executor.submit(pool.detect, [image_with(10 + i)]) for i in range(8)]
        results = [f.result() for f in futures]
    assert [markers(r) for r in results] == [[10.0 + i] for i in range(8)]
    assert all(batch_size(r) >= 2 for r in results)
    stats = pool.stats()
    assert stats.batches <= 4
    assert stats.detections == 8


def test_images_of_one_request_come_back_in_order(make_pool: MakePool) -> None:
    pool = make_pool(fake("echo"))
    assert markers(pool.detect([image_with(v) for v in (5, 6, 7)])) == [5.0, 6.0, 7.0]
    assert pool.detect([]) == []
    assert pool.model_id == "fake-echo"


def test_non_contiguous_images_are_sent_whole(make_pool: MakePool) -> None:
    pool = make_pool(fake("echo"))
    wide = np.zeros((8, 16, 3), dtype=np.uint8)
    wide[0, 0, 0] = 42
    assert markers(pool.detect([wide[:, ::2]])) == [42.0]


def test_one_bad_image_fails_alone(make_pool: MakePool) -> None:
    pool = make_pool(replace(fake("faulty"), batch_window_ms=300))
    good = in_thread(pool, [image_with(3)])
    bad = in_thread(pool, [image_with(FAIL)])
    assert markers(good.result(10)) == [3.0]
    with pytest.raises(DetectionFailed, match="cannot be read"):
        bad.result(10)
    assert pool.stats().batches == 1
    assert pool.stats().restarts == 0


# ---------------------------------------------------------------------------------------------
# Back-pressure and deadlines


def test_full_queue_raises_busy(make_pool: MakePool, tmp_path: Path) -> None:
    sleepy = fake("sleepy", ("delay_s", 1.0), ("signal_dir", str(tmp_path)))
    settings = replace(sleepy, queue_size=2, max_batch=1, batch_window_ms=0)
    pool = make_pool(settings)
    slow = in_thread(pool, [image_with(SLOW)])
    wait_until(lambda: any(tmp_path.iterdir()))
    waiting = [in_thread(pool, [image_with(v)]) for v in (20, 21)]
    wait_until(lambda: pool.stats().queue_depth == 2)
    with pytest.raises(BusyError) as caught:
        pool.detect([image_with(22)])
    assert caught.value.status == 503
    assert caught.value.retry_after >= 1
    assert markers(slow.result(10)) == [SLOW]
    assert [markers(w.result(10)) for w in waiting] == [[20.0], [21.0]]


def test_deadline_raises_detection_failed_and_the_hung_worker_is_replaced(
    make_pool: MakePool,
) -> None:
    pool = make_pool(replace(fake("sleepy", ("delay_s", 30.0)), deadline_s=0.5))
    (first_pid,) = pool.worker_pids()
    started = time.monotonic()
    with pytest.raises(DetectionFailed, match="deadline"):
        pool.detect([image_with(SLOW)])
    assert 0.4 < time.monotonic() - started < 15  # the 0.5 s deadline, not the 30 s sleep
    wait_until(lambda: pool.stats().restarts == 1 and len(pool.worker_pids()) == 1)
    assert pool.worker_pids() != [first_pid]
    assert markers(pool.detect([image_with(4)])) == [4.0]


# ---------------------------------------------------------------------------------------------
# Worker failure and recycling


def test_kill_9_fails_in_flight_requests_at_once_and_the_worker_comes_back(
    make_pool: MakePool, tmp_path: Path
) -> None:
    sleepy = fake("sleepy", ("delay_s", 30.0), ("signal_dir", str(tmp_path)))
    settings = replace(sleepy, deadline_s=20, batch_window_ms=500, max_batch=4)
    pool = make_pool(settings)
    (old_pid,) = pool.worker_pids()
    in_flight = [in_thread(pool, [image_with(SLOW)]) for _ in range(2)]
    wait_until(lambda: any(tmp_path.iterdir()))
    assert pool.stats().queue_depth == 0
    waiting = in_thread(pool, [image_with(7)])
    wait_until(lambda: pool.stats().queue_depth == 1)

    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    for future in in_flight:
        with pytest.raises(DetectionFailed, match="died"):
            future.result(timeout=15)
    assert time.monotonic() - killed_at < 15  # at once: well before the 20 s deadline

    assert markers(waiting.result(timeout=60)) == [7.0]
    (new_pid,) = pool.worker_pids()
    assert new_pid != old_pid
    assert pool.stats().restarts == 1
    assert markers(pool.detect([image_with(8)])) == [8.0]


def test_a_group_sigterm_or_sigint_leaves_the_worker_to_the_pool(make_pool: MakePool) -> None:
    pool = make_pool(fake("echo"))
    (pid,) = pool.worker_pids()
    os.kill(pid, signal.SIGTERM)  # what a service manager sends the whole group on stop
    os.kill(pid, signal.SIGINT)  # Ctrl-C in a terminal
    assert markers(pool.detect([image_with(3)])) == [3.0]
    assert pool.worker_pids() == [pid] and pool.stats().restarts == 0
    pool.stop()  # the pool still stops it
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_worker_over_its_memory_limit_is_recycled_between_batches(make_pool: MakePool) -> None:
    pool = make_pool(replace(fake("hoarder", ("mb_per_unit", 10)), rss_limit_mb=250))
    (first_pid,) = pool.worker_pids()
    (rss,) = pool.stats().worker_rss_bytes
    assert 0 < rss < 250 << 20

    assert markers(pool.detect([image_with(0)])) == [0.0]
    assert pool.worker_pids() == [first_pid]
    assert markers(pool.detect([image_with(30)])) == [30.0]  # holds 300 MB afterwards
    wait_until(lambda: pool.stats().restarts == 1 and len(pool.worker_pids()) == 1)
    assert pool.worker_pids() != [first_pid]
    assert markers(pool.detect([image_with(1)])) == [1.0]


# ---------------------------------------------------------------------------------------------
# Lifecycle


def test_factory_failure_at_start_is_raised_as_its_focal_error() -> None:
    before = child_pids()
    pool = DetectorPool(fake("missing"))
    with pytest.raises(ModelMissingError, match="focal models fetch"):
        pool.start()
    assert child_pids() - before == set()
    with pytest.raises(DetectionFailed):
        pool.detect([image_with(1)])


def test_stop_fails_waiting_requests_and_ends_the_workers(
    make_pool: MakePool, tmp_path: Path
) -> None:
    sleepy = fake("sleepy", ("delay_s", 1.0), ("signal_dir", str(tmp_path)))
    settings = replace(sleepy, max_batch=1)
    pool = make_pool(settings)
    pids = pool.worker_pids()
    slow = in_thread(pool, [image_with(SLOW)])
    wait_until(lambda: any(tmp_path.iterdir()))
    waiting = in_thread(pool, [image_with(5)])
    wait_until(lambda: pool.stats().queue_depth == 1)
    pool.stop()
    with pytest.raises(DetectionFailed, match="stopped"):
        waiting.result(5)
    assert markers(slow.result(5)) == [SLOW]  # the batch in flight was allowed to finish
    assert pool.worker_pids() == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    with pytest.raises(DetectionFailed):
        pool.detect([image_with(1)])


ORPHAN_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from focal.server.detection.pool import DetectorPool, PoolSettings
pool = DetectorPool(PoolSettings(factory="tests.fake_detectors:echo", workers=2))
pool.start()
print(*pool.worker_pids(), flush=True)
time.sleep(60)
"""


def test_workers_exit_when_the_server_process_is_killed() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(ROOT)], stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            pids = [int(pid) for pid in server.stdout.readline().split()]
            assert len(pids) == 2
            assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        finally:
            server.kill()
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=10)


# ---------------------------------------------------------------------------------------------
# CachingDetector


class Counting(Echo):
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.fail = False

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        if self.fail:
            raise DetectionFailed("no answer")
        self.seen.extend(int(i[0, 0, 0]) for i in images)
        return super().detect(images)


def test_caching_detector_only_asks_for_images_it_has_not_seen() -> None:
    inner = Counting()
    cache = CachingDetector(inner)
    assert markers(cache.detect([image_with(1), image_with(2)])) == [1.0, 2.0]
    assert markers(cache.detect([image_with(2), image_with(3), image_with(1)])) == [2.0, 3.0, 1.0]
    assert inner.seen == [1, 2, 3]
    assert (cache.hits, cache.misses) == (2, 3)
    assert cache.model_id == "fake-echo"


def test_caching_detector_keys_on_pixels_shape_and_model() -> None:
    image = image_with(1)
    assert image_key("m", image) == image_key("m", image.copy())
    assert image_key("m", image) != image_key("other", image)
    assert image_key("m", image) != image_key("m", image.reshape(4, 16, 3))
    changed = image.copy()
    changed[5, 5, 1] = 1
    assert image_key("m", image) != image_key("m", changed)


class Marked:
    """Answers one face with landmarks, and one weak candidate with landmarks."""

    model_id = "marked"

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        return [faces for faces, _ in self.detect_with_candidates(images)]

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        face = Face(box=(1, 2, 3, 4), score=0.9, landmarks=((1.5, 2.5), (2.5, 2.5)))
        weak = Face(box=(5, 6, 7, 8), score=0.1, landmarks=((5.5, 6.5),))
        return [([face], [weak]) for _ in images]


def test_caching_detector_keeps_and_answers_no_landmarks() -> None:
    cache = CachingDetector(Marked())
    for _ in range(2):  # a miss, then a hit
        ((faces, weak),) = cache.detect_with_candidates([image_with(1)])
        assert [(f.box, f.score, f.landmarks) for f in faces] == [((1, 2, 3, 4), 0.9, ())]
        assert [(f.box, f.score, f.landmarks) for f in weak] == [((5, 6, 7, 8), 0.1, ())]
        assert cache.detect([image_with(2)])[0][0].landmarks == ()
    assert cache.hits == 2 and cache.misses == 2


def test_caching_detector_evicts_the_least_recently_used() -> None:
    inner = Counting()
    cache = CachingDetector(inner, max_entries=2)
    cache.detect([image_with(1)])
    cache.detect([image_with(2)])
    cache.detect([image_with(1)])  # 1 is now the most recent
    cache.detect([image_with(3)])  # evicts 2
    cache.detect([image_with(1)])
    cache.detect([image_with(2)])
    assert inner.seen == [1, 2, 3, 2]
    assert len(cache) == 2


def test_caching_detector_does_not_cache_failures() -> None:
    inner = Counting()
    cache = CachingDetector(inner)
    inner.fail = True
    with pytest.raises(DetectionFailed):
        cache.detect([image_with(1)])
    inner.fail = False
    assert markers(cache.detect([image_with(1)])) == [1.0]
    assert inner.seen == [1]


# ---------------------------------------------------------------------------------------------
# The real model


def astronaut() -> RGBImage:
    import pyvips

    image = pyvips.Image.new_from_file(str(DEMO / "astronaut.jpg"))
    return np.asarray(image.numpy(), dtype=np.uint8)


@pytest.mark.slow
def test_pool_with_the_real_model_finds_the_astronauts_face(make_pool: MakePool) -> None:
    pool = make_pool(PoolSettings())
    (faces,) = CachingDetector(pool).detect([astronaut()])
    assert pool.model_id.startswith("retinaface")
    best = max(faces, key=lambda face: face.score)
    x1, y1, x2, y2 = best.box
    assert best.score > 0.9
    # Her face spans about x 180..270, y 70..180 in this 512 x 512 portrait; the nose is near
    # (225, 125).
    assert x1 < 225 < x2 and y1 < 125 < y2
    assert 50 < x2 - x1 < 160 and 60 < y2 - y1 < 180


NO_RUNTIME_SCRIPT = """
import json, sys
import numpy as np, pyvips
from focal.server.detection.pool import DetectorPool, PoolSettings
image = np.asarray(pyvips.Image.new_from_file(sys.argv[1]).numpy(), dtype=np.uint8)
pool = DetectorPool(PoolSettings())
pool.start()
try:
    faces = pool.detect([image])[0]
    (pid,) = pool.worker_pids()
    maps = open(f"/proc/{pid}/maps").read()
finally:
    pool.stop()
watched = ["onnxruntime", "openvino", "torch", "focal.face.detector", "focal.face.models"]
print(json.dumps({
    "faces": len(faces),
    "imported_here": [m for m in watched if m in sys.modules],
    "runtime_in_worker": "onnxruntime" in maps or "openvino" in maps,
}))
"""


@pytest.mark.slow
def test_server_process_never_imports_an_inference_runtime() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_RUNTIME_SCRIPT, str(DEMO / "astronaut.jpg")],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["faces"] >= 1
    assert report["imported_here"] == []
    assert report["runtime_in_worker"] is True


def test_weak_candidates_come_through_the_pool_and_its_cache(make_pool: MakePool) -> None:
    pool = make_pool(replace(fake("weak"), batch_window_ms=200, max_batch=8))
    with ThreadPoolExecutor(4) as executor:  # both kinds at once: never in one batch
        pairs = [executor.submit(pool.detect_with_candidates, [image_with(20 + i)]) for i in (0, 1)]
        plain = [executor.submit(pool.detect, [image_with(30 + i)]) for i in (0, 1)]
        answers = [f.result() for f in pairs]
        faces = [f.result() for f in plain]
    assert [markers(r) for r in faces] == [[30.0], [31.0]]
    for (((face,), (weak,)),), value in zip(answers, (20.0, 21.0), strict=True):
        assert face.box[0] == value and face.score == 0.9
        assert weak.box == (value, 0.0, value + 2.0, 2.0) and weak.score == 0.1
    cache = CachingDetector(pool)
    first = cache.detect_with_candidates([image_with(40)])
    assert cache.detect_with_candidates([image_with(40)]) == first
    assert markers(cache.detect([image_with(40)])) == [40.0]  # faces alone: a key of their own
    assert (cache.hits, cache.misses) == (1, 2)


def test_the_pool_and_its_cache_report_their_settings_detection_side(make_pool: MakePool) -> None:
    pool = make_pool(replace(fake("sided", ("max_side", 640)), max_side=640))
    assert pool.max_side == 640 and CachingDetector(pool).max_side == 640
    assert inference_cap(pool) == 640
    plain = make_pool(fake("echo"))
    assert plain.max_side == 1024 and inference_cap(CachingDetector(plain)) == 1024


def test_a_pool_whose_detector_has_no_candidates_answers_none(make_pool: MakePool) -> None:
    pool = make_pool(fake("echo"))
    ((faces, weak),) = pool.detect_with_candidates([image_with(9)])
    assert [f.box[0] for f in faces] == [9.0] and weak == []


# ---------------------------------------------------------------------------------------------
# An image's faces never depend on the images it is batched with


class CanvasSized:
    """Answers one face per image scoring the height of the batch's tallest image: what a
    detector that pads a batch to its largest canvas would let leak from one image to another."""

    model_id = "canvas"

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        tallest = max(image.shape[0] for image in images)
        return [[Face(box=(0, 0, 1, 1), score=float(tallest))] for _ in images]


def test_a_worker_detects_each_shape_apart_so_companions_never_change_an_answer() -> None:
    small, large, other_small = image_with(1, 8), image_with(2, 32), image_with(3, 8)
    answers = detect_each(CanvasSized(), [small, large, other_small])
    assert [faces[0].score for faces in answers] == [8.0, 32.0, 8.0]
    assert same_shape_groups([small, large, other_small]) == [[0, 2], [1]]


def portrait_crop(top: int, bottom: int, right: int) -> RGBImage:
    """The astronaut's face cut by the crop's right edge (her face spans about x 180..270)."""
    return np.ascontiguousarray(astronaut()[top:bottom, 0:right])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_same_image_alone_or_batched_with_a_larger_one_gets_the_same_faces(
    make_pool: MakePool,
) -> None:
    import pyvips

    larger = np.asarray(
        pyvips.Image.new_from_file(str(DEMO / "grace_hopper.jpg")).numpy(), dtype=np.uint8
    )
    pool = make_pool(PoolSettings(batch_window_ms=2000, max_batch=8))
    for crop in (portrait_crop(0, 200, 240), portrait_crop(40, 200, 230)):
        ((faces, weak),) = pool.detect_with_candidates([crop])
        batches = pool.stats().batches
        alone_again = pool.submit([crop], candidates=True)
        with_larger = pool.submit([larger], candidates=True)
        ((faces_batched, weak_batched),) = alone_again.future.result(120)
        with_larger.future.result(120)
        assert pool.stats().batches == batches + 1  # the two requests shared one batch
        assert faces and [(f.box, f.score) for f in faces_batched] == [
            (f.box, f.score) for f in faces
        ]
        assert [(f.box, f.score) for f in weak_batched] == [(f.box, f.score) for f in weak]
