"""The transformation core: bytes + options in, encoded bytes (or a JSON description) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from focal.detection import Detector
from focal.options import Options


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 100_000_000  # per frame, read from the header before decoding
    max_bytes: int = 100 * 1024 * 1024
    max_output_pixels: int = 50_000_000
    max_frames: int = 300


@dataclass(frozen=True)
class Result:
    data: bytes
    content_type: str
    format: str  # jpeg, png, webp, avif, gif, json
    width: int
    height: int
    gravity_used: str
    degraded: bool  # face detection failed (timeout, worker died): fallback used; never cache
    negotiated: bool  # the format came from the Accept header (send Vary: Accept)
    description: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage: decode, detect, process, encode


def transform(
    data: bytes,
    options: Options,
    *,
    detector: Detector | None = None,
    limits: Limits = Limits(),
    accept: str | None = None,
) -> Result:
    raise NotImplementedError
