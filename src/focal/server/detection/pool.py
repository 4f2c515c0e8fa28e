"""Face detection in separate, restartable processes, behind a bounded queue.

    detect() callers (server threads)
        │  one request per call; BusyError when queue_size requests already wait
        ▼
    pending queue ──► lane thread 1 ──pipe──► worker process 1 (builds the Detector)
                  ──► lane thread 2 ──pipe──► worker process 2
                  ...

Each worker process has one lane thread in the server process. A lane that is idle takes the
oldest waiting request, waits at most batch_window_ms for more (up to max_batch images; a request
is never split), sends the batch to its worker and completes each request's future with its own
faces. The lanes together are the dispatcher: a batch always goes to an idle worker.

A lane watches its worker's process sentinel: when the worker dies (crash, kill -9) the requests
in flight fail with DetectionFailed at once and a new worker is started; waiting requests are not
touched. Callers give up at their deadline; a worker still busy one more deadline after the last
request of its batch gave up is treated as hung, killed and replaced. A worker whose resident
memory passes rss_limit_mb is replaced between batches. Each replacement counts as a restart.

Lanes and workers speak focal.server.detection.wire; a worker detects an ask's images in groups
of one shape, so an image's faces never depend on the requests it was batched with. Only the
worker processes import the factory (and so any inference runtime); this module does not.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import focal
from focal import errors
from focal.detection import DetectionFailed, Face, RGBImage
from focal.face import sessions
from focal.geometry import INFERENCE_CAP
from focal.server.detection import wire

log = logging.getLogger("focal.detector")

START_TIMEOUT_S = 120.0  # building a detector includes loading and compiling the model
STOP_TIMEOUT_S = 5.0
IDLE_CHECK_S = 0.25  # how often an idle lane checks that its worker is still alive
MAX_RESTART_DELAY_S = 10.0


@dataclass(frozen=True)
class PoolSettings:
    """workers: processes; queue_size: requests that may wait before BusyError; deadline_s: how
    long detect() waits; batch_window_ms / max_batch: how long a batch waits for more images
    after its first, and its size in images; rss_limit_mb: memory above which a worker is
    replaced; factory: "module:function" building the Detector in the worker, called with
    factory_args (picklable values) as keyword arguments; max_side: the detection side the
    factory's detector runs at (``detector_max_side``, checked by the settings)."""

    workers: int = 1
    queue_size: int = 16
    deadline_s: float = 10.0
    batch_window_ms: float = 5.0
    max_batch: int = 8
    rss_limit_mb: int = 512
    factory: str = sessions.FACTORY
    factory_args: tuple[tuple[str, object], ...] = ()
    max_side: int = INFERENCE_CAP


@dataclass(frozen=True)
class PoolStats:
    queue_depth: int  # requests waiting for a worker
    restarts: int  # workers replaced (died, hung past the deadline, or over the memory limit)
    worker_rss_bytes: tuple[int, ...]  # per worker slot; 0 while a slot has no live worker
    batches: int  # batches answered
    detections: int  # images answered


@dataclass(eq=False)
class Request:
    images: list[RGBImage]
    future: Future[list[Any]]  # per image: faces, or (faces, candidates) with ``candidates``
    deadline: float
    candidates: bool = False


class _Worker:
    """One worker process (`python -m focal.server.detection.worker`) and the server's end of its
    socket. The worker's end is the only descriptor it inherits; when either side exits, the
    other reads end-of-file."""

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.pid = process.pid
        self.model_id = ""

    @classmethod
    def launch(cls, settings: PoolSettings) -> _Worker:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            process = subprocess.Popen(
                [sys.executable, "-m", "focal.server.detection.worker", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=_worker_environment(),
            )
            conn = Connection(ours.detach())
        start = wire.Start(settings.factory, settings.factory_args, tuple(sys.path))
        with contextlib.suppress(OSError):  # a worker that died at once is seen by wait_ready
            conn.send(start)
        return cls(process, conn)

    def wait_ready(self, timeout: float) -> None:
        """Wait for Hello; on failure, kill the process and raise what the factory raised."""
        message = self.receive(time.monotonic() + timeout)
        if isinstance(message, wire.Hello):
            self.model_id = message.model_id
            return
        self.kill()
        if isinstance(message, wire.StartFailed):
            raise _start_error(message)
        raise RuntimeError("the detector worker exited or hung before it was ready")

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, batch_id: int, images: Sequence[RGBImage], candidates: bool = False) -> None:
        wire.send_ask(self.conn, batch_id, images, candidates)

    def receive(self, deadline: float) -> object:
        """The next message, None if the worker died, or TimeoutError if the deadline passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self.conn.poll(remaining):
            return TimeoutError()
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid) if self.alive() else 0

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not within STOP_TIMEOUT_S."""
        with contextlib.suppress(OSError):
            self.conn.send(wire.Stop())
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT_S)
        self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.conn.close()


def _worker_environment() -> dict[str, str]:
    """The server's environment, with the folder holding the focal package on PYTHONPATH."""
    package_root = str(Path(focal.__file__).resolve().parents[1])
    inherited = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, inherited) if p)}


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS in /proc/PID/status), 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _start_error(failure: wire.StartFailed) -> Exception:
    """Rebuild a focal error by name (never unpickle a runtime's exception class here)."""
    module, _, name = failure.error_type.rpartition(".")
    cls = getattr(errors, name, None) if module == "focal.errors" else None
    if isinstance(cls, type) and issubclass(cls, errors.FocalError):
        return cls(failure.message)
    return RuntimeError(f"detector worker failed to start: {failure.error_type}: {failure.message}")


class AskingDetector:
    """The Detector interface of a pool whose answers come from ``_ask`` (DetectorPool here,
    focal.server.detection.host.RemotePool in a worker of several): ``_model_id`` is set once
    it has started, ``_max_side`` is its detectors' side (from the settings, never the wire)."""

    _model_id: str | None = None
    _max_side: int = INFERENCE_CAP
    _not_started = "the detector pool has not been started"

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            raise RuntimeError(self._not_started)
        return self._model_id

    @property
    def max_side(self) -> int:
        """The detection side of the pool's detectors (focal.detection.inference_cap)."""
        return self._max_side

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        found: list[list[Face]] = self._ask(images, candidates=False)
        return found

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        """(faces, weak candidates) for each image, from the pool's detector (no candidates
        when it has none); such requests are batched apart from face-only ones."""
        pairs = self._ask(images, candidates=True)
        return [(list(faces), list(weak)) for faces, weak in pairs]

    def _ask(self, images: Sequence[RGBImage], candidates: bool) -> list[Any]:
        """Per image: faces, or with ``candidates`` (faces, weak candidates)."""
        raise NotImplementedError


def past_deadline(deadline_s: float) -> DetectionFailed:
    return DetectionFailed(f"face detection passed its {deadline_s:g} s deadline")


class DetectorPool(AskingDetector):
    """A Detector whose work runs in worker processes; see the module docstring."""

    def __init__(self, settings: PoolSettings) -> None:
        if settings.workers < 1 or settings.queue_size < 1 or settings.max_batch < 1:
            raise ValueError("workers, queue_size and max_batch must be at least 1")
        self._settings = settings
        self._cond = threading.Condition()
        self._pending: deque[Request] = deque()
        self._workers: list[_Worker | None] = [None] * settings.workers
        self._lanes: list[threading.Thread] = []
        self._closing = threading.Event()
        self._running = False
        self._model_id: str | None = None
        self._max_side = settings.max_side
        self._batch_ids = itertools.count(1)
        self._restarts = 0
        self._batches = 0
        self._detections = 0
        self._batch_seconds = 0.0  # moving average, for Retry-After

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker and wait until each has built its detector; raise if one fails."""
        if self._running:
            return
        self._closing.clear()
        launched = [_Worker.launch(self._settings) for _ in range(self._settings.workers)]
        try:
            for worker in launched:
                worker.wait_ready(START_TIMEOUT_S)
        except BaseException:
            for worker in launched:
                _kill_quietly(worker)
            raise
        self._workers = list(launched)
        self._model_id = launched[0].model_id
        self._running = True
        self._lanes = [
            threading.Thread(
                target=self._lane, args=(slot,), name=f"focal-lane-{slot}", daemon=True
            )
            for slot in range(self._settings.workers)
        ]
        for lane in self._lanes:
            lane.start()

    def stop(self) -> None:
        """Fail waiting requests, let batches in flight finish, then stop every worker."""
        with self._cond:
            if not self._running:
                return
            self._running = False
            self._closing.set()
            waiting = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        _fail(waiting, "the detector pool stopped")
        for lane in self._lanes:
            lane.join(self._settings.deadline_s + 2 * STOP_TIMEOUT_S)
        for slot, worker in enumerate(self._workers):
            if worker is not None:
                _kill_quietly(worker)
                self._workers[slot] = None
        self._lanes = []

    def _ask(self, images: Sequence[RGBImage], candidates: bool) -> list[Any]:
        if len(images) == 0:
            return []
        request = self.submit(images, candidates)
        try:
            return request.future.result(timeout=request.deadline - time.monotonic())
        except TimeoutError:
            self.withdraw(request)
            raise past_deadline(self._settings.deadline_s) from None
        except CancelledError:
            raise DetectionFailed("the detector pool stopped") from None

    def submit(self, images: Sequence[RGBImage], candidates: bool = False) -> Request:
        """Queue one request without waiting for it (BusyError when the queue is full): its
        future gets, per image, faces or (with ``candidates``) (faces, weak candidates), or
        DetectionFailed. A caller that gives up calls withdraw()."""
        request = Request(
            images=wire.contiguous(images),
            future=Future(),
            deadline=time.monotonic() + self._settings.deadline_s,
            candidates=candidates,
        )
        self._enqueue(request)
        return request

    def stats(self) -> PoolStats:
        with self._cond:
            workers = list(self._workers)
            depth = len(self._pending)
        return PoolStats(
            queue_depth=depth,
            restarts=self._restarts,
            worker_rss_bytes=tuple(w.rss_bytes() if w else 0 for w in workers),
            batches=self._batches,
            detections=self._detections,
        )

    def worker_pids(self) -> list[int]:
        with self._cond:
            return [w.pid for w in self._workers if w is not None and w.alive()]

    # -- requests ---------------------------------------------------------------------------

    def _enqueue(self, request: Request) -> None:
        with self._cond:
            if not self._running:
                raise DetectionFailed("the detector pool is not running")
            if len(self._pending) >= self._settings.queue_size:
                raise errors.BusyError(
                    "face detection is busy, retry later", retry_after=self._retry_after()
                )
            self._pending.append(request)
            self._cond.notify()

    def withdraw(self, request: Request) -> None:
        """Drop a request that has not started (one in a batch already running finishes)."""
        with self._cond:
            if request.future.cancel():
                with contextlib.suppress(ValueError):  # stop() may have emptied the queue
                    self._pending.remove(request)

    def _retry_after(self) -> int:
        batches_ahead = len(self._pending) / self._settings.max_batch + 1
        return max(1, math.ceil(self._batch_seconds * batches_ahead / self._settings.workers))

    def _take_batch(self, worker: _Worker) -> list[Request]:
        """Wait for a request, then up to batch_window_ms for more; [] if closing or worker died."""
        with self._cond:
            first = self._next_request(worker)
            if first is None:
                return []
            batch, size = [first], len(first.images)
            window_end = time.monotonic() + self._settings.batch_window_ms / 1000
            while size < self._settings.max_batch:
                if not self._pending:
                    remaining = window_end - time.monotonic()
                    if remaining <= 0 or not self._cond.wait(remaining):
                        break
                    continue
                following = self._pending[0]
                if size + len(following.images) > self._settings.max_batch:
                    break
                if following.candidates != first.candidates:  # one kind of answer per batch
                    break
                self._pending.popleft()
                if following.future.set_running_or_notify_cancel():
                    batch.append(following)
                    size += len(following.images)
            return batch

    def _next_request(self, worker: _Worker) -> Request | None:
        """The oldest live request (lock held), or None if closing or the worker died."""
        while not self._closing.is_set():
            if not self._pending:
                self._cond.wait(IDLE_CHECK_S)
                if not worker.alive():
                    return None
                continue
            request = self._pending.popleft()
            if request.future.set_running_or_notify_cancel():
                return request
        return None

    # -- lanes ------------------------------------------------------------------------------

    def _lane(self, slot: int) -> None:
        worker = self._workers[slot]
        while not self._closing.is_set():
            try:
                worker = self._lane_step(slot, worker)
            except Exception:
                log.exception("detector lane %d failed; replacing its worker", slot)
                worker = self._replace(slot, worker, "its lane failed")
        if worker is not None:
            self._set_worker(slot, None)
            worker.stop()

    def _lane_step(self, slot: int, worker: _Worker | None) -> _Worker | None:
        """Keep a live worker, serve one batch, recycle the worker if it grew too large."""
        if worker is None or not worker.alive():
            return self._replace(slot, worker, "the worker exited")
        batch = self._take_batch(worker)
        if batch:
            worker = self._run_batch(slot, worker, batch)
        if worker is not None and worker.rss_bytes() > self._settings.rss_limit_mb << 20:
            worker = self._replace(slot, worker, "the worker passed its memory limit")
        return worker

    def _run_batch(self, slot: int, worker: _Worker, batch: list[Request]) -> _Worker | None:
        images = [image for request in batch for image in request.images]
        batch_id = next(self._batch_ids)
        started = time.monotonic()
        try:
            worker.send(batch_id, images, batch[0].candidates)
        except (OSError, ValueError):
            _fail(batch, "the face detector worker died")
            return self._replace(slot, worker, "the worker could not be reached")
        # Callers give up at their deadline; the worker gets one more deadline before it is
        # treated as hung, so a slow but healthy worker is not restarted under load.
        last_deadline = max(request.deadline for request in batch)
        reply = worker.receive(last_deadline + self._settings.deadline_s)
        if isinstance(reply, wire.Answer) and reply.ask_id == batch_id:
            self._complete(batch, reply.results, time.monotonic() - started)
            return worker
        if isinstance(reply, TimeoutError):
            _fail(batch, "face detection passed its deadline")
            return self._replace(slot, worker, "the worker was still busy past the deadline")
        _fail(batch, "the face detector worker died")
        return self._replace(slot, worker, "the worker died during a batch")

    def _complete(self, batch: list[Request], results: Sequence[Any], seconds: float) -> None:
        with self._cond:
            self._batches += 1
            self._detections += len(results)
            self._batch_seconds = (
                seconds if self._batches == 1 else 0.8 * self._batch_seconds + 0.2 * seconds
            )
        offset = 0
        for request in batch:
            mine = results[offset : offset + len(request.images)]
            offset += len(request.images)
            failures = [r for r in mine if isinstance(r, str)]
            if failures:
                request.future.set_exception(DetectionFailed(failures[0]))
            else:
                request.future.set_result(
                    [
                        answer if request.candidates else list(answer)
                        for answer in mine
                        if not isinstance(answer, str)
                    ]
                )

    def _replace(self, slot: int, old: _Worker | None, reason: str) -> _Worker | None:
        """Stop the old worker and start a new one, retrying with backoff; None when closing."""
        if old is not None:
            log.warning("restarting detector worker %d (pid %d): %s", slot, old.pid, reason)
            self._set_worker(slot, None)
            _kill_quietly(old)
            with self._cond:
                self._restarts += 1
        delay = 0.5
        while not self._closing.is_set():
            try:
                worker = _Worker.launch(self._settings)
                worker.wait_ready(START_TIMEOUT_S)
            except Exception:
                log.exception("detector worker %d failed to start; retrying in %.1f s", slot, delay)
                self._closing.wait(delay)
                delay = min(delay * 2, MAX_RESTART_DELAY_S)
                continue
            self._set_worker(slot, worker)
            return worker
        return None

    def _set_worker(self, slot: int, worker: _Worker | None) -> None:
        with self._cond:
            self._workers[slot] = worker


def _fail(requests: Sequence[Request], message: str) -> None:
    for request in requests:
        if not request.future.done():
            request.future.set_exception(DetectionFailed(message))


def _kill_quietly(worker: _Worker) -> None:
    with contextlib.suppress(OSError):
        worker.kill()
