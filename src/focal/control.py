"""A transformation's time: its stage timings (:class:`Timer`) and the off switch its deadline
throws from another thread (:class:`Cancel`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pyvips

from focal.errors import DeadlineError


class Cancel:
    """A transformation's off switch, thrown from another thread (the request's deadline).

    Every source image the pipeline loads is registered with :meth:`watch`; :meth:`cancel` sets
    libvips' kill flag on each, so the computation running on them stops at its next tile and
    raises, and the pipeline checks :attr:`cancelled` between its steps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: list[pyvips.Image] = []
        self.cancelled = False

    def watch(self, image: pyvips.Image) -> pyvips.Image:
        with self._lock:
            self._images.append(image)
            if self.cancelled:
                image.set_kill(True)
        return image

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            for image in self._images:
                image.set_kill(True)

    def check(self) -> None:
        if self.cancelled:
            raise DeadlineError("The image took too long to produce")

    def release(self) -> None:
        with self._lock:
            self._images.clear()


class Timer:
    """Milliseconds per stage (decode, detect, process, encode), summed over its uses."""

    def __init__(self, ms: dict[str, float] | None = None) -> None:
        self.ms: dict[str, float] = dict(ms or {})

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) * 1000
            self.ms[stage] = round(self.ms.get(stage, 0.0) + elapsed, 3)
