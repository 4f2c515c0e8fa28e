"""One detector pool per host. With ``workers`` > 1 the supervisor process runs the detector pool
and every HTTP worker asks it over a socket of its own, so N workers share ``detector_workers``
detector processes, one batching queue and one memory limit (rather than a pool each).

    HTTP worker 1: RemotePool ──socket──┐
    HTTP worker 2: RemotePool ──socket──┼──► supervisor: PoolHost ──► DetectorPool ──► detector
    ...                                 ┘                                              processes

The link speaks the same protocol as the detector processes (focal.server.detection.wire):

    host -> worker   Hello(model_id, pid)                           once, first
                     Answer(ask_id, results) | Refused(ask_id, busy, message, retry_after)
                     Stats(stats, pids)                             every STATS_INTERVAL_S
    worker -> host   Ask(ask_id, shapes, candidates), then len(shapes) raw uint8 buffers
                     Withdraw(ask_id)                               the worker stopped waiting

A worker that waits past its deadline withdraws its ask (the host drops it if it has not started)
and falls back, as with a pool of its own. A worker that exits closes its socket and the host
withdraws what it had asked; when the host is gone every ask fails at once (DetectionFailed: the
request falls back to the centre, with the fallback header).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

from focal.detection import DetectionFailed, RGBImage
from focal.errors import BusyError
from focal.geometry import INFERENCE_CAP
from focal.server.detection import wire
from focal.server.detection.pool import (
    AskingDetector,
    DetectorPool,
    PoolStats,
    Request,
    past_deadline,
)

log = logging.getLogger("focal.detector")

STATS_INTERVAL_S = 1.0
HELLO_TIMEOUT_S = 30.0  # the host has started its pool before any worker connects


@dataclass(frozen=True)
class Link:
    """What an HTTP worker gets from its supervisor: its end of the socket to the host, or why
    the host has no detector (then gravity=face falls back in every worker); and the folder where
    the workers share their /metrics counters (focal.server.metrics.SharedMetrics)."""

    conn: Connection | None = None
    unavailable: str = ""
    metrics_dir: str = ""


# -- the supervisor's side ------------------------------------------------------------------


class _Client:
    """One HTTP worker's socket, seen from the host."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.asks: dict[int, Request] = {}
        self._send_lock = threading.Lock()

    def send(self, message: object) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):  # a worker gone
            self.conn.send(message)


class PoolHost:
    """Serves a started DetectorPool to HTTP worker processes; see the module docstring."""

    def __init__(self, pool: DetectorPool) -> None:
        self._pool = pool
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._push_stats, name="focal-host-stats", daemon=True).start()

    def connect(self) -> Connection:
        """A new socket for one worker process: the host serves this end in a thread; the caller
        hands the returned end to the worker (and closes its own copy once the worker has it)."""
        ours, theirs = Pipe(duplex=True)
        client = _Client(ours)
        with self._lock:
            self._clients.append(client)
        client.send(wire.Hello(self._pool.model_id, os.getpid()))
        threading.Thread(
            target=self._serve, args=(client,), name="focal-host-client", daemon=True
        ).start()
        return theirs

    def stop(self) -> None:
        """Close every worker's socket, then stop the pool and its detector processes."""
        self._stopped.set()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            hang_up(client.conn)  # its thread sees end-of-file and closes it
        self._pool.stop()

    def _serve(self, client: _Client) -> None:
        try:
            while not self._stopped.is_set():
                message = client.conn.recv()
                if isinstance(message, wire.Ask):
                    self._ask(client, message, wire.receive_images(client.conn, message))
                elif isinstance(message, wire.Withdraw):
                    request = client.asks.pop(message.ask_id, None)
                    if request is not None:
                        self._pool.withdraw(request)
        except (EOFError, OSError, ValueError):
            pass  # the worker exited (or the host is stopping)
        finally:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            for request in list(client.asks.values()):
                self._pool.withdraw(request)
            with contextlib.suppress(OSError):
                client.conn.close()

    def _ask(self, client: _Client, ask: wire.Ask, images: Sequence[RGBImage]) -> None:
        try:
            request = self._pool.submit(images, ask.candidates)
        except BusyError as error:
            client.send(wire.Refused(ask.ask_id, True, error.public, error.retry_after))
            return
        except DetectionFailed as error:
            client.send(wire.Refused(ask.ask_id, False, str(error)))
            return
        client.asks[ask.ask_id] = request
        request.future.add_done_callback(lambda future: self._answer(client, ask.ask_id, future))

    @staticmethod
    def _answer(client: _Client, ask_id: int, future: Future[list[Any]]) -> None:
        client.asks.pop(ask_id, None)
        if future.cancelled():  # withdrawn: nobody waits for it
            return
        error = future.exception()
        if error is not None:
            client.send(wire.Refused(ask_id, False, str(error)))
        else:
            client.send(wire.Answer(ask_id, future.result()))

    def _push_stats(self) -> None:
        while not self._stopped.wait(STATS_INTERVAL_S):
            stats = wire.Stats(self._pool.stats(), tuple(self._pool.worker_pids()))
            with self._lock:
                clients = list(self._clients)
            for client in clients:
                client.send(stats)


# -- an HTTP worker's side ------------------------------------------------------------------


class RemotePool(AskingDetector):
    """The host's pool, seen from one HTTP worker: the same Detector interface and stats as a
    DetectorPool of its own (stats as of the host's last report, at most STATS_INTERVAL_S old).
    ``max_side``: the detection side of the host's detectors (the same settings')."""

    _not_started = "the detector host link has not been started"

    def __init__(self, conn: Connection, deadline_s: float, max_side: int = INFERENCE_CAP) -> None:
        self._conn = conn
        self._deadline_s = deadline_s
        self._max_side = max_side
        self._send_lock = threading.Lock()
        self._waiting: dict[int, Future[list[Any]]] = {}
        self._ids = itertools.count(1)
        self._closed = threading.Event()
        self._stats = PoolStats(0, 0, (), 0, 0)
        self._pids: tuple[int, ...] = ()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        if not self._conn.poll(HELLO_TIMEOUT_S):
            raise TimeoutError("the detector host did not answer")
        hello = self._conn.recv()
        if not isinstance(hello, wire.Hello):
            raise RuntimeError(f"the detector host sent {type(hello).__name__} first")
        self._model_id = hello.model_id
        self._reader = threading.Thread(target=self._read, name="focal-host-link", daemon=True)
        self._reader.start()

    def stop(self) -> None:
        """Close this worker's socket (the host and its pool go on serving the others)."""
        self._closed.set()
        if self._reader is None:
            self._conn.close()
        else:
            hang_up(self._conn)  # the reader sees end-of-file and closes it
        self._fail_all("the detector host link closed")

    def stats(self) -> PoolStats:
        return self._stats

    def worker_pids(self) -> list[int]:
        return list(self._pids)

    def _ask(self, images: Sequence[RGBImage], candidates: bool) -> list[Any]:
        if len(images) == 0:
            return []
        if self._closed.is_set():
            raise DetectionFailed("the detector host is gone")
        arrays = wire.contiguous(images)
        ask_id = next(self._ids)
        future: Future[list[Any]] = Future()
        self._waiting[ask_id] = future
        try:
            with self._send_lock:
                wire.send_ask(self._conn, ask_id, arrays, candidates)
        except (OSError, ValueError):
            self._waiting.pop(ask_id, None)
            raise DetectionFailed("the detector host is gone") from None
        try:
            return future.result(timeout=self._deadline_s)
        except TimeoutError:
            self._waiting.pop(ask_id, None)
            self._send(wire.Withdraw(ask_id))
            raise past_deadline(self._deadline_s) from None

    def _send(self, message: object) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            self._conn.send(message)

    def _read(self) -> None:
        try:
            while not self._closed.is_set():
                message = self._conn.recv()
                if isinstance(message, wire.Stats):
                    self._stats, self._pids = message.stats, message.pids
                    continue
                future = self._waiting.pop(getattr(message, "ask_id", -1), None)
                if future is None:  # withdrawn past its deadline
                    continue
                if isinstance(message, wire.Answer):
                    future.set_result(list(message.results))
                elif isinstance(message, wire.Refused):
                    future.set_exception(_refusal(message))
        except (EOFError, OSError, ValueError):
            if not self._closed.is_set():
                log.warning("the detector host closed this worker's link: gravity=face falls back")
        self._closed.set()
        self._fail_all("the detector host is gone")
        with contextlib.suppress(OSError):
            self._conn.close()

    def _fail_all(self, message: str) -> None:
        for ask_id in list(self._waiting):
            future = self._waiting.pop(ask_id, None)
            if future is not None and not future.done():
                future.set_exception(DetectionFailed(message))


def hang_up(conn: Connection) -> None:
    """End both directions of a connection's socket without closing its descriptor, so that the
    thread reading it sees end-of-file (closing it under a reading thread is not safe)."""
    with contextlib.suppress(OSError, ValueError), socket.socket(fileno=os.dup(conn.fileno())) as s:
        s.shutdown(socket.SHUT_RDWR)


def _refusal(message: wire.Refused) -> Exception:
    if message.busy:
        return BusyError(message.message, retry_after=message.retry_after)
    return DetectionFailed(message.message)
