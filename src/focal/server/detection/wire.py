"""The one wire protocol of server-side detection, spoken on both hops:

    server ──► detector process        (focal.server.detection.pool / .worker)
    HTTP worker ──► supervisor's host  (focal.server.detection.host, workers > 1)

Messages are multiprocessing Connection messages. Pixels never go through pickle: an Ask names
the shapes, then each image follows as one raw uint8 byte message.

    asker -> answerer   Start(factory, factory_args, sys_path)    detector process only, first
                        Ask(ask_id, shapes, candidates), then len(shapes) raw buffers
                        Withdraw(ask_id)                          the asker stopped waiting
                        Stop()
    answerer -> asker   Hello(model_id, pid) | StartFailed(error_type, message)   once, first
                        Answer(ask_id, results)                   one per Ask
                        Refused(ask_id, busy, message, retry_after)   the host's queue was full,
                                                                  or its detection failed
                        Stats(stats, pids)                        the host, every second

``results`` holds, per image in order: its faces, with ``candidates`` (faces, weak candidates),
or the error message of an image that could not be done. The detection side is not on the wire:
both ends read it from the same settings (``detector_max_side``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from focal.detection import RGBImage


@dataclass(frozen=True)
class Start:
    factory: str  # "package.module:function"
    factory_args: tuple[tuple[str, object], ...]  # keyword arguments of the factory
    sys_path: tuple[str, ...]  # the server's import path, so the same factories import there


@dataclass(frozen=True)
class Hello:
    model_id: str
    pid: int


@dataclass(frozen=True)
class StartFailed:
    error_type: str  # qualified class name, e.g. "focal.errors.ModelMissingError"
    message: str


@dataclass(frozen=True)
class Ask:
    ask_id: int
    shapes: tuple[tuple[int, ...], ...]
    candidates: bool = False  # answer (faces, weak candidates) per image (docs/cropping.md)


@dataclass(frozen=True)
class Answer:
    ask_id: int
    results: Sequence[Any]  # per image: faces, (faces, weak candidates), or an error message


@dataclass(frozen=True)
class Refused:
    ask_id: int
    busy: bool  # the queue was full (BusyError, 503) rather than a failed detection
    message: str
    retry_after: int = 1


@dataclass(frozen=True)
class Withdraw:
    ask_id: int


@dataclass(frozen=True)
class Stats:
    stats: Any  # focal.server.detection.pool.PoolStats
    pids: tuple[int, ...]


@dataclass(frozen=True)
class Stop:
    pass


def contiguous(images: Sequence[RGBImage]) -> list[RGBImage]:
    return [np.ascontiguousarray(image, dtype=np.uint8) for image in images]


def send_ask(conn: Connection, ask_id: int, images: Sequence[RGBImage], candidates: bool) -> None:
    """An Ask and its pixels (contiguous uint8 images)."""
    conn.send(Ask(ask_id, tuple(image.shape for image in images), candidates))
    for image in images:
        conn.send_bytes(image.data.cast("B"))


def receive_images(conn: Connection, ask: Ask) -> list[RGBImage]:
    """The pixels that follow ``ask``."""
    images = []
    for shape in ask.shapes:
        buffer = bytearray(math.prod(shape))
        conn.recv_bytes_into(buffer)
        images.append(np.frombuffer(buffer, dtype=np.uint8).reshape(shape))
    return images


def qualified_name(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"
