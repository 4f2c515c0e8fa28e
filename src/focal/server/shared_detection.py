"""The detection cache shared by every instance, in Redis: an image detected by one instance is
not detected again by any other. Needs the ``redis`` extra.

Keys are ``<prefix><hex of focal.server.detector_pool.image_key>``: blake2b of the model id and
the pixels the detector is given, so instances with another model or runtime never share an
answer. Values are the faces and the weak candidates as JSON (boxes and scores: no landmarks,
never pixels), with a TTL.

Lookups of a batch are one MGET, stores one pipeline of SETs. Every Redis call is bounded by
``timeout_s`` (connect and read); any failure is a miss, answered by the detector behind, with a
log line and a metric (:class:`focal.server.objectstore.Breaker` then skips Redis for a moment,
so a dead Redis costs one timeout per pause, not one per request). It is the shared tier of the
server's one detection cache, CachingDetector: the in-process LRU, then Redis, then the pool.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from focal.detection import Face, face_rows, faces_from_rows
from focal.server.detector_pool import CachedAnswer, CachingDetector
from focal.server.objectstore import Breaker, register

KEY_PREFIX = "focal:faces:"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode_faces(faces: Sequence[Face]) -> bytes:
    return _json(face_rows(faces))


def decode_faces(raw: bytes) -> list[Face] | None:
    try:
        return faces_from_rows(json.loads(raw))
    except (ValueError, TypeError, IndexError):
        return None


def encode_answer(answer: CachedAnswer) -> bytes:
    faces, candidates = answer
    return _json([face_rows(faces), face_rows(candidates)])


def decode_answer(raw: bytes) -> CachedAnswer | None:
    """(faces, candidates) from :func:`encode_answer`; None for anything else (a miss)."""
    try:
        faces, candidates = json.loads(raw)
        return tuple(faces_from_rows(faces)), tuple(faces_from_rows(candidates))
    except (ValueError, TypeError, IndexError):
        return None


class RedisFaces:
    """The Redis tier of :class:`focal.server.detector_pool.CachingDetector` (SharedFaces): one
    MGET per batch of lookups, one pipeline of SETs per batch of stores, every failure a miss."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: int = 30 * 86400,
        timeout_s: float = 0.5,
        breaker: Breaker | None = None,
        client: Any = None,
    ) -> None:
        self._ttl_s = max(1, int(ttl_s))
        self.breaker = breaker or Breaker("detection")
        if client is None:
            import redis

            client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry_on_timeout=False,
                health_check_interval=0,
            )
        self._redis = client
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: Sequence[bytes]) -> list[CachedAnswer | None]:
        found = self._lookup([KEY_PREFIX + key.hex() for key in keys])
        hits = sum(1 for answer in found if answer is not None)
        with self._lock:
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def put_many(self, items: Sequence[tuple[bytes, CachedAnswer]]) -> None:
        if not items or not self.breaker.allow():
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, answer in items:
                pipe.set(KEY_PREFIX + key.hex(), encode_answer(answer), ex=self._ttl_s)
            pipe.execute()
        except Exception as error:
            self.breaker.failed("set", error)
            return
        self.breaker.succeeded()

    def _lookup(self, keys: list[str]) -> list[CachedAnswer | None]:
        if not self.breaker.allow():
            return [None] * len(keys)
        try:
            values = self._redis.mget(keys)
        except Exception as error:  # redis.RedisError, OSError: the cache is down
            self.breaker.failed("mget", error)
            return [None] * len(keys)
        self.breaker.succeeded()
        return [None if raw is None else decode_answer(raw) for raw in values]

    def metric_lines(self) -> Iterable[str]:
        with self._lock:
            hits, misses = self.hits, self.misses
        yield "# HELP focal_detection_cache_requests_total Shared detection cache lookups."
        yield "# TYPE focal_detection_cache_requests_total counter"
        yield f'focal_detection_cache_requests_total{{result="hit"}} {hits}'
        yield f'focal_detection_cache_requests_total{{result="miss"}} {misses}'


def share_detection(service: Any) -> None:
    """Give a started server's detection cache its Redis tier (no-op when face detection is off
    or unavailable)."""
    settings = service.settings
    detection = service.detection
    inner = detection.pool if detection.pool is not None else detection.remote
    if not settings.detection_cache_url or inner is None:
        return
    shared = RedisFaces(
        settings.detection_cache_url,
        ttl_s=settings.detection_cache_ttl_s,
        timeout_s=settings.shared_cache_timeout_s,
    )
    detection.detector = CachingDetector(
        inner, max_entries=settings.detection_cache_entries, shared=shared
    )
    service.metrics.extra.append(shared.metric_lines)
    register(service.metrics, shared.breaker)
