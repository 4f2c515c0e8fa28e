"""The detector process: builds a Detector from a factory, then answers asks until told to stop.

Started as `python -m focal.server.detection.worker FD`, FD being its end of a socket pair; it
speaks focal.server.detection.wire: Start first, Hello (or StartFailed) back, then one Answer per
Ask. The worker exits on Stop, or when the server's end closes (the server exited, even by
kill -9). It ignores SIGINT: a Ctrl-C at the terminal reaches the server, which stops its workers.

An ask's images are detected in groups of one shape: a detector pads a batch to its largest
image, so an image batched with a larger one would be seen on another canvas and could score
differently. Grouped, an image's faces never depend on the images it shares an ask with.

This module imports no inference runtime; the factory (imported here, in the worker only) does.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, cast

from focal.detection import Detector, RGBImage, faces_and_candidates
from focal.server.detection import wire

WORKER_NICENESS = 10  # as the image threads (focal.server.memory.IMAGE_THREAD_NICENESS)


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
        if isinstance(start, wire.Start):
            sys.path[:] = list(start.sys_path)
            main(conn, start)


def main(conn: Connection, start: wire.Start) -> None:
    """Build the detector, say Hello (or StartFailed), then serve."""
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)  # the server's event loop runs first when every core is busy
    try:
        detector = load_factory(start.factory)(**dict(start.factory_args))
        model_id = detector.model_id
    except Exception as exc:
        conn.send(wire.StartFailed(wire.qualified_name(exc), str(exc)))
        return
    conn.send(wire.Hello(model_id, os.getpid()))
    serve(conn, detector)


def serve(conn: Connection, detector: Detector) -> None:
    """Answer asks until Stop arrives (EOFError or OSError when the server's end closes)."""
    while True:
        message = conn.recv()
        if not isinstance(message, wire.Ask):
            return
        images = wire.receive_images(conn, message)
        conn.send(wire.Answer(message.ask_id, detect_each(detector, images, message.candidates)))


def detect_each(
    detector: Detector, images: Sequence[RGBImage], candidates: bool = False
) -> tuple[Any, ...]:
    """Per image, in order: its faces (with ``candidates``: faces and weak candidates), or the
    error message if it could not be done. Images of one shape are detected together; a group
    that fails is tried image by image, so one bad image fails alone."""
    answers: list[Any] = [None] * len(images)
    for indices in same_shape_groups(images):
        group = [images[i] for i in indices]
        for i, answer in zip(indices, _detect_group(detector, group, candidates), strict=True):
            answers[i] = answer
    return tuple(answers)


def same_shape_groups(images: Sequence[RGBImage]) -> list[list[int]]:
    """The images' indices grouped by shape, in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    return list(groups.values())


def _detect_group(detector: Detector, images: Sequence[RGBImage], candidates: bool) -> list[Any]:
    try:
        found = _detect(detector, images, candidates)
        if len(found) == len(images):
            return found
    except Exception:
        pass
    return [_detect_one(detector, image, candidates) for image in images]


def _detect(detector: Detector, images: Sequence[RGBImage], candidates: bool) -> list[Any]:
    if not candidates:
        return [tuple(faces) for faces in detector.detect(images)]
    pairs = faces_and_candidates(detector, images)
    return [(tuple(faces), tuple(weak)) for faces, weak in pairs]


def _detect_one(detector: Detector, image: RGBImage, candidates: bool) -> Any:
    try:
        (found,) = _detect(detector, [image], candidates)
    except Exception as exc:
        return f"{wire.qualified_name(exc)}: {exc}"
    return found


if __name__ == "__main__":
    # Run through the module's own name, so that the messages it pickles name
    # focal.server.detection.wire and not __main__.
    from focal.server.detection.worker import run as run_worker

    run_worker(int(sys.argv[1]))
