"""The image threads: transformations run here, under the concurrency limit and its queue."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable

from focal.errors import BusyError
from focal.pipeline import Cancel, Result
from focal.server import memory


class ImageWorkers:
    """Runs transformations on ``threads`` threads; at most ``queue`` more may wait (else 503).
    A request that gives up leaves its job to finish (if running) or drops it (if waiting)."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            threads, "focal-image", initializer=memory.lower_priority
        )
        self._threads = threads
        self._capacity = threads + queue
        self._lock = threading.Lock()
        self._in_flight = 0

    def waiting(self) -> int:
        with self._lock:
            return max(0, self._in_flight - self._threads)

    async def run(self, job: Callable[[], Result], cancel: Cancel | None = None) -> Result:
        """The job's result. A caller that gives up (its deadline) drops the job if it waits, and
        cancels its libvips computation if it runs: the thread is free again within a tile."""
        with self._lock:
            if self._in_flight >= self._capacity:
                raise BusyError("The server is busy: try again shortly", retry_after=1)
            self._in_flight += 1
        future = self._executor.submit(job)
        future.add_done_callback(self._done)
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            future.cancel()
            if cancel is not None:
                cancel.cancel()
            raise

    def _done(self, _: object) -> None:
        with self._lock:
            self._in_flight -= 1
            idle = self._in_flight == 0
        if idle:  # the last job of a burst: give its memory back (focal.server.memory)
            memory.trim()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
