"""One detector pool per host (focal.server.detection.host): HTTP workers ask the supervisor's
pool over a socket each. The pool's detector processes are real (the fake factories of
tests/fake_detectors.py); host and links run in this process, as they would in supervisor and
workers; the server test at the end runs `focal serve --workers 2` with the real model."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from tests.conftest import DEMO
from tests.fake_detectors import SLOW, image_with
from tests.live import Live, serve
from tests.test_detector_pool import child_pids, fake, markers, wait_until
from tests.test_workers import children

from focal.detection import DetectionFailed, Face
from focal.errors import BusyError
from focal.server.detection.host import STATS_INTERVAL_S, PoolHost, RemotePool
from focal.server.detection.pool import DetectorPool, PoolSettings

Hosted = Callable[..., tuple[PoolHost, DetectorPool]]


@pytest.fixture
def hosted() -> Iterator[Hosted]:
    """A started pool behind a PoolHost; every host stopped at the end, no process left."""
    before = child_pids()
    hosts: list[PoolHost] = []

    def make(settings: PoolSettings) -> tuple[PoolHost, DetectorPool]:
        pool = DetectorPool(settings)
        pool.start()
        host = PoolHost(pool)
        hosts.append(host)
        return host, pool

    yield make
    for host in hosts:
        host.stop()
    assert child_pids() - before == set()


def link(host: PoolHost, deadline_s: float = 10.0) -> RemotePool:
    remote = RemotePool(host.connect(), deadline_s)
    remote.start()
    return remote


def in_thread(remote: RemotePool, value: int) -> Future[list[list[Face]]]:
    future: Future[list[list[Face]]] = Future()

    def run() -> None:
        try:
            future.set_result(remote.detect([image_with(value)]))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def test_two_links_share_one_pool_and_each_gets_its_own_faces(hosted: Hosted) -> None:
    host, pool = hosted(replace(fake("echo"), batch_window_ms=200, max_batch=8))
    first, second = link(host), link(host)
    assert first.model_id == second.model_id == "fake-echo"
    with ThreadPoolExecutor(8) as executor:
        asked = [
            executor.submit((first, second)[i % 2].detect, [image_with(30 + i), image_with(60)])
            for i in range(8)
        ]
        answers = [future.result(30) for future in asked]
    assert [markers(a) for a in answers] == [[30.0 + i, 60.0] for i in range(8)]
    assert pool.stats().detections == 16
    assert pool.stats().batches < 8  # asks of both links went into shared batches
    wait_until(lambda: first.stats().detections == 16, timeout=10 * STATS_INTERVAL_S)
    assert first.worker_pids() == second.worker_pids() == pool.worker_pids()
    assert len(pool.worker_pids()) == 1


def test_candidates_come_through_the_link(hosted: Hosted) -> None:
    host, pool = hosted(fake("weak"))
    remote = link(host)
    assert remote.detect_with_candidates([image_with(9)]) == pool.detect_with_candidates(
        [image_with(9)]
    )
    ((faces, weak),) = remote.detect_with_candidates([image_with(9)])
    assert faces[0].box[0] == 9.0 and weak[0].box == (9.0, 0.0, 11.0, 2.0)


def test_a_full_host_queue_is_busy_through_the_link(hosted: Hosted, tmp_path: Path) -> None:
    sleepy = fake("sleepy", ("delay_s", 1.5), ("signal_dir", str(tmp_path)))
    host, pool = hosted(replace(sleepy, queue_size=1, max_batch=1, batch_window_ms=0))
    remote = link(host)
    slow = in_thread(remote, SLOW)
    wait_until(lambda: any(tmp_path.iterdir()))
    waiting = in_thread(remote, 21)
    wait_until(lambda: pool.stats().queue_depth == 1)
    with pytest.raises(BusyError) as caught:
        remote.detect([image_with(22)])
    assert caught.value.status == 503 and caught.value.retry_after >= 1
    assert markers(slow.result(15)) == [SLOW]
    assert markers(waiting.result(15)) == [21.0]


def test_a_link_past_its_deadline_withdraws_its_ask(hosted: Hosted, tmp_path: Path) -> None:
    sleepy = fake("sleepy", ("delay_s", 3.0), ("signal_dir", str(tmp_path)))
    host, pool = hosted(replace(sleepy, max_batch=1, batch_window_ms=0))
    remote = link(host, deadline_s=0.5)
    busy = in_thread(link(host), SLOW)
    wait_until(lambda: any(tmp_path.iterdir()))
    with pytest.raises(DetectionFailed, match="deadline"):
        remote.detect([image_with(5)])
    wait_until(lambda: pool.stats().queue_depth == 0)  # withdrawn, not left for the worker
    assert markers(busy.result(15)) == [SLOW]
    assert pool.stats().detections == 1


def test_a_worker_that_exits_leaves_nothing_queued(hosted: Hosted, tmp_path: Path) -> None:
    sleepy = fake("sleepy", ("delay_s", 2.0), ("signal_dir", str(tmp_path)))
    host, pool = hosted(replace(sleepy, max_batch=1, batch_window_ms=0))
    other = link(host)
    busy = in_thread(other, SLOW)
    wait_until(lambda: any(tmp_path.iterdir()))
    leaving = link(host)
    asked = in_thread(leaving, 6)
    wait_until(lambda: pool.stats().queue_depth == 1)
    leaving.stop()  # as a worker process's exit closes its socket
    with pytest.raises(DetectionFailed):
        asked.result(5)
    wait_until(lambda: pool.stats().queue_depth == 0)
    assert markers(busy.result(15)) == [SLOW]
    assert markers(other.detect([image_with(7)])) == [7.0]


def test_a_stopped_host_fails_asks_at_once(hosted: Hosted, tmp_path: Path) -> None:
    sleepy = fake("sleepy", ("delay_s", 10.0), ("signal_dir", str(tmp_path)))
    host, _ = hosted(replace(sleepy, deadline_s=60))
    remote = link(host, deadline_s=60)
    waiting = in_thread(remote, SLOW)
    wait_until(lambda: any(tmp_path.iterdir()))
    stopping = threading.Thread(target=host.stop)  # the pool waits out the batch in flight
    stopping.start()
    with pytest.raises(DetectionFailed):
        waiting.result(8)  # at once, not at the 60 s deadline nor after the 10 s batch
    with pytest.raises(DetectionFailed, match="gone"):
        remote.detect([image_with(3)])
    stopping.join(60)


# ---------------------------------------------------------------------------------------------
# focal serve --workers 2, the real model


def detector_processes(supervisor: int) -> list[int]:
    found = []
    for pid in children(supervisor):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"focal.server.detection.worker" in command:
            found.append(pid)
    return found


@pytest.fixture(scope="module")
def two_workers_with_faces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("host")
    root = folder / "root"
    root.mkdir()
    shutil.copy(DEMO / "grace_hopper.jpg", root / "portrait.jpg")
    live = serve(
        folder,
        ["--root", str(root), "--workers", "2", "--no-cache-enabled", "--log-level", "warning"],
    )
    try:
        yield live
    finally:
        live.stop()


@pytest.mark.slow
def test_two_workers_share_the_supervisors_one_detector(two_workers_with_faces: Live) -> None:
    supervisor = two_workers_with_faces.process.pid
    (detector,) = detector_processes(supervisor)  # the host's, none in the workers
    workers = [pid for pid in children(supervisor) if pid != detector]
    assert len(workers) >= 2
    assert all(detector_processes(worker) == [] for worker in workers)
    url = "/cdn-cgi/image/width=128,height=128,fit=cover,gravity=face,format=json/portrait.jpg"
    with httpx.Client(base_url=two_workers_with_faces.base, timeout=60) as client:
        for _ in range(6):  # a new connection each time, accepted by either worker
            with httpx.Client(base_url=two_workers_with_faces.base, timeout=60) as fresh:
                reply = fresh.get(url, headers={"connection": "close"})
            assert reply.status_code == 200
            assert reply.json()["faces"], reply.text
        assert client.get("/healthz").json()["face"] == "ready"
    assert detector_processes(supervisor) == [detector]
