"""Batches many threads' single-image detections into few calls of one inner detector.

The pipeline asks for one image at a time (``detector.detect([array])``). When many threads run
the pipeline at once, a :class:`BatchingDetector` between them and the real detector makes those
one-image calls into batches: a dispatcher thread takes the first waiting image, gathers more
for at most ``window_ms`` (or until ``max_batch`` are waiting), calls the inner detector, and
hands each caller its own faces. An exception from the inner detector reaches every caller whose
image was in that call; the dispatcher then goes on with the next batch.

Images are passed on grouped by their canvas (height and width rounded up to a multiple of 32,
the shape the detector pads a batch to), so an image's faces never depend on which other images
happened to be waiting with it. Calls for faces and weak candidates
(:meth:`BatchingDetector.detect_with_candidates`) are batched apart from calls for faces alone.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from focal.detection import (
    CandidateDetector,
    Detector,
    Face,
    RGBImage,
    faces_and_candidates,
    inference_cap,
)
from focal.face.retinaface import padded_size


@dataclass(frozen=True)
class _Call:
    image: RGBImage
    future: Future[Any] = field(default_factory=Future)  # faces, or (faces, candidates)
    candidates: bool = False


class BatchingDetector:
    """A focal.detection.Detector, safe to call from many threads, that batches for ``inner``."""

    def __init__(self, inner: Detector, max_batch: int = 16, window_ms: float = 20.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if window_ms < 0:
            raise ValueError(f"window_ms must not be negative, got {window_ms}")
        self.inner = inner
        self.max_batch = max_batch
        self.window_s = window_ms / 1000
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="focal-batching", daemon=True)
        self._thread.start()

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def max_side(self) -> int:
        return inference_cap(self.inner)

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        """Faces for each image, in order; blocks until the batches holding them have run."""
        return self._wait([_Call(image) for image in images])

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        """(faces, weak candidates) for each image from the inner detector's
        ``detect_with_candidates``; faces and no candidates when it has none."""
        if not isinstance(self.inner, CandidateDetector):
            return [(faces, []) for faces in self.detect(images)]
        return self._wait([_Call(image, candidates=True) for image in images])

    def _wait(self, calls: list[_Call]) -> list[Any]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the batching detector is closed")
            for call in calls:
                self._calls.put(call)
        return [call.future.result() for call in calls]

    def close(self) -> None:
        """Stop the dispatcher once the calls already waiting are answered."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._calls.put(None)
        self._thread.join()

    def __enter__(self) -> BatchingDetector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            first = self._calls.get()
            if first is None:
                return
            calls, stop = self._gather(first)
            for group in _by_canvas(calls):
                self._run(group)
            if stop:
                return

    def _gather(self, first: _Call) -> tuple[list[_Call], bool]:
        """The first call and those arriving within the window; True once close() was seen."""
        calls = [first]
        deadline = time.monotonic() + self.window_s
        while len(calls) < self.max_batch:
            try:
                call = self._calls.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if call is None:
                return calls, True
            calls.append(call)
        return calls, False

    def _run(self, calls: list[_Call]) -> None:
        try:
            images = [call.image for call in calls]
            found: Sequence[Any]
            if calls[0].candidates:
                found = faces_and_candidates(self.inner, images)
            else:
                found = self.inner.detect(images)
            if len(found) != len(calls):
                raise RuntimeError(
                    f"the detector answered {len(found)} results for {len(calls)} images"
                )
        except Exception as error:  # every caller of this batch gets it; the dispatcher goes on
            for call in calls:
                call.future.set_exception(error)
            return
        for call, faces in zip(calls, found, strict=True):
            call.future.set_result(faces)


def _by_canvas(calls: list[_Call]) -> list[list[_Call]]:
    """The calls grouped by padded image size and by what they ask for, groups in order of first
    arrival."""
    groups: dict[tuple[int, int, bool], list[_Call]] = {}
    for call in calls:
        height, width = call.image.shape[:2]
        groups.setdefault((*padded_size(height, width), call.candidates), []).append(call)
    return list(groups.values())
