"""The detector process: builds a Detector from a factory, then answers batches until told to stop.

Started as `python -m focal.server.detector_worker FD`, FD being its end of a socket pair. The
request/response boundary between the server and this process is the set of message classes
below, sent as multiprocessing Connection messages. Image pixels do not go through pickle: a
DetectBatch message names the shapes, then each image follows as one raw byte message.

    server -> worker   Start(factory, factory_args, sys_path)   once, first
                       DetectBatch(batch_id, shapes, candidates), then len(shapes) raw
                       uint8 buffers (candidates: answer (faces, weak candidates) per image)
                       Stop()
    worker -> server   Ready(model_id, pid, max_side) | StartFailed(error_type, message)   once
                       BatchDone(batch_id, results)   one per DetectBatch

The worker exits on Stop, or when the server's end closes (the server exited, even by kill -9).
It ignores SIGINT: a Ctrl-C at the terminal reaches the server, which stops its workers.

This module imports no inference runtime; the factory (imported here, in the worker only) does.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import cast

import numpy as np

from focal.detection import Detector, Face, RGBImage, faces_and_candidates, inference_cap
from focal.geometry import INFERENCE_CAP

WORKER_NICENESS = 10  # as the image threads (focal.server.memory.IMAGE_THREAD_NICENESS)


@dataclass(frozen=True)
class Start:
    factory: str  # "package.module:function"
    factory_args: tuple[tuple[str, object], ...]  # keyword arguments of the factory
    sys_path: tuple[str, ...]  # the server's import path, so the same factories import here


@dataclass(frozen=True)
class Ready:
    model_id: str
    pid: int
    max_side: int = INFERENCE_CAP  # focal.detection.inference_cap of the worker's detector


@dataclass(frozen=True)
class StartFailed:
    error_type: str  # qualified class name, e.g. "focal.errors.ModelMissingError"
    message: str


@dataclass(frozen=True)
class DetectBatch:
    batch_id: int
    shapes: tuple[tuple[int, ...], ...]
    candidates: bool = False  # answer (faces, weak candidates) per image (docs/cropping.md)


Faces = tuple[Face, ...]
Answer = Faces | tuple[Faces, Faces] | str  # faces, (faces, candidates), or an error message


@dataclass(frozen=True)
class BatchDone:
    """Per image, in order: its faces, or the error message if that image could not be done."""

    batch_id: int
    results: tuple[Answer, ...]


@dataclass(frozen=True)
class Stop:
    pass


def load_factory(spec: str) -> Callable[..., Detector]:
    """Import "package.module:function"."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"detector factory must be 'module:function', got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    if not callable(factory):
        raise TypeError(f"detector factory {spec!r} is not callable")
    return cast(Callable[..., Detector], factory)


def run(fd: int) -> None:
    """Entry point of the worker process: FD is its end of the socket pair."""
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the server stops
    # its workers itself when it shuts down (or the worker sees its socket close), so a worker
    # that died first would only be restarted during the shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(fd)
    with conn, contextlib.suppress(EOFError, OSError):  # the server went away
        start = conn.recv()
        if isinstance(start, Start):
            sys.path[:] = list(start.sys_path)
            main(conn, start)


def main(conn: Connection, start: Start) -> None:
    """Build the detector, say Ready (or StartFailed), then serve."""
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)  # the server's event loop runs first when every core is busy
    try:
        detector = load_factory(start.factory)(**dict(start.factory_args))
        model_id, max_side = detector.model_id, inference_cap(detector)
    except Exception as exc:
        conn.send(StartFailed(_qualified_name(exc), str(exc)))
        return
    conn.send(Ready(model_id, os.getpid(), max_side))
    serve(conn, detector)


def serve(conn: Connection, detector: Detector) -> None:
    """Answer batches until Stop arrives (EOFError or OSError when the server's end closes)."""
    while True:
        message = conn.recv()
        if not isinstance(message, DetectBatch):
            return
        images = [_receive_image(conn, shape) for shape in message.shapes]
        found = detect_each(detector, images, message.candidates)
        conn.send(BatchDone(message.batch_id, found))


def detect_each(
    detector: Detector, images: Sequence[RGBImage], candidates: bool = False
) -> tuple[Answer, ...]:
    """Detect on the whole batch; if that fails, image by image, so one bad image fails alone.
    With ``candidates``: (faces, weak candidates) per image (no candidates from a detector that
    has none)."""
    try:
        found = _detect(detector, images, candidates)
        if len(found) == len(images):
            return tuple(found)
    except Exception:
        pass
    return tuple(_detect_one(detector, image, candidates) for image in images)


def _detect(detector: Detector, images: Sequence[RGBImage], candidates: bool) -> list[Answer]:
    if not candidates:
        return [tuple(faces) for faces in detector.detect(images)]
    pairs = faces_and_candidates(detector, images)
    return [(tuple(faces), tuple(weak)) for faces, weak in pairs]


def _detect_one(detector: Detector, image: RGBImage, candidates: bool) -> Answer:
    try:
        (found,) = _detect(detector, [image], candidates)
    except Exception as exc:
        return f"{_qualified_name(exc)}: {exc}"
    return found


def _receive_image(conn: Connection, shape: tuple[int, ...]) -> RGBImage:
    buffer = bytearray(math.prod(shape))
    conn.recv_bytes_into(buffer)
    return np.frombuffer(buffer, dtype=np.uint8).reshape(shape)


def _qualified_name(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


if __name__ == "__main__":
    # Run through the module's own name, so that the messages it pickles name
    # focal.server.detector_worker and not __main__.
    from focal.server.detector_worker import run as run_worker

    run_worker(int(sys.argv[1]))
