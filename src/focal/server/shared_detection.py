"""The detection cache shared by every instance, in Redis: an image detected by one instance is
not detected again by any other. Needs the ``redis`` extra.

Keys are ``<prefix><hex of focal.server.detector_pool.image_key>``: blake2b of the model id and
the pixels the detector is given, so instances with another model or runtime never share an
answer. Values are the faces as JSON (boxes, scores, landmarks: never pixels), with a TTL.

Lookups of a batch are one MGET, stores one pipeline of SETs. Every Redis call is bounded by
``timeout_s`` (connect and read); any failure is a miss, answered by the detector behind, with a
log line and a metric (:class:`focal.server.objectstore.Breaker` then skips Redis for a moment,
so a dead Redis costs one timeout per pause, not one per request). Order of lookups in a server:
the in-process LRU (CachingDetector), then Redis, then the detector pool.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from focal.detection import CandidateDetector, Detector, Face, RGBImage
from focal.server.objectstore import Breaker, register

KEY_PREFIX = "focal:faces:"
CANDIDATES_PREFIX = "focal:crop:"  # (faces, weak candidates) of a face crop (docs/cropping.md)


def encode_faces(faces: Sequence[Face]) -> bytes:
    rows = [[list(f.box), f.score, [list(p) for p in f.landmarks]] for f in faces]
    return json.dumps(rows, separators=(",", ":")).encode()


def decode_faces(raw: bytes) -> list[Face] | None:
    try:
        rows = json.loads(raw)
        return [
            Face(
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                score=float(score),
                landmarks=tuple((float(x), float(y)) for x, y in marks),
            )
            for b, score, marks in rows
        ]
    except (ValueError, TypeError, IndexError):
        return None


def encode_pair(faces: Sequence[Face], candidates: Sequence[Face]) -> bytes:
    return b"[" + encode_faces(faces) + b"," + encode_faces(candidates) + b"]"


def decode_pair(raw: bytes) -> tuple[list[Face], list[Face]] | None:
    try:
        faces, candidates = json.loads(raw)
    except (ValueError, TypeError):
        return None
    first = decode_faces(json.dumps(faces).encode())
    second = decode_faces(json.dumps(candidates).encode())
    return None if first is None or second is None else (first, second)


class RedisDetectionCache:
    """A Detector that answers from Redis what any instance detected before, and asks ``inner``
    for the rest (storing its answers)."""

    def __init__(
        self,
        inner: Detector,
        url: str,
        *,
        ttl_s: int = 30 * 86400,
        timeout_s: float = 0.5,
        breaker: Breaker | None = None,
        client: Any = None,
    ) -> None:
        self._inner = inner
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

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        from focal.server.detector_pool import image_key

        model_id = self._inner.model_id
        keys = [KEY_PREFIX + image_key(model_id, image).hex() for image in images]
        found = self._lookup(keys)
        missing = [i for i, faces in enumerate(found) if faces is None]
        with self._lock:
            self.hits += len(images) - len(missing)
            self.misses += len(missing)
        if missing:
            answers = self._inner.detect([images[i] for i in missing])
            for i, faces in zip(missing, answers, strict=True):
                found[i] = list(faces)
            self._store([(keys[i], found[i] or []) for i in missing])
        return [faces or [] for faces in found]

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        """(faces, weak candidates) for each image, as :meth:`detect` under keys of their own;
        faces and no candidates from an inner detector that has none."""
        from focal.server.detector_pool import image_key

        inner = self._inner
        if not isinstance(inner, CandidateDetector):
            return [(faces, []) for faces in self.detect(images)]
        keys = [CANDIDATES_PREFIX + image_key(inner.model_id, i).hex() for i in images]
        found = [None if raw is None else decode_pair(raw) for raw in self._get(keys)]
        missing = [i for i, pair in enumerate(found) if pair is None]
        with self._lock:
            self.hits += len(images) - len(missing)
            self.misses += len(missing)
        if missing:
            answers = inner.detect_with_candidates([images[i] for i in missing])
            for i, (faces, weak) in zip(missing, answers, strict=True):
                found[i] = (list(faces), list(weak))
            self._put([(keys[i], encode_pair(*(found[i] or ([], [])))) for i in missing])
        return [pair or ([], []) for pair in found]

    def _get(self, keys: list[str]) -> list[bytes | None]:
        if not self.breaker.allow():
            return [None] * len(keys)
        try:
            values: list[bytes | None] = self._redis.mget(keys)
        except Exception as error:  # redis.RedisError, OSError: the cache is down
            self.breaker.failed("mget", error)
            return [None] * len(keys)
        self.breaker.succeeded()
        return values

    def _put(self, items: list[tuple[str, bytes]]) -> None:
        if not self.breaker.allow():
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, value in items:
                pipe.set(key, value, ex=self._ttl_s)
            pipe.execute()
        except Exception as error:
            self.breaker.failed("set", error)
            return
        self.breaker.succeeded()

    def _lookup(self, keys: list[str]) -> list[list[Face] | None]:
        if not self.breaker.allow():
            return [None] * len(keys)
        try:
            values = self._redis.mget(keys)
        except Exception as error:  # redis.RedisError, OSError: the cache is down
            self.breaker.failed("mget", error)
            return [None] * len(keys)
        self.breaker.succeeded()
        return [None if raw is None else decode_faces(raw) for raw in values]

    def _store(self, items: list[tuple[str, list[Face]]]) -> None:
        if not self.breaker.allow():
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, faces in items:
                pipe.set(key, encode_faces(faces), ex=self._ttl_s)
            pipe.execute()
        except Exception as error:
            self.breaker.failed("set", error)
            return
        self.breaker.succeeded()

    def metric_lines(self) -> Iterable[str]:
        with self._lock:
            hits, misses = self.hits, self.misses
        yield "# HELP focal_detection_cache_requests_total Shared detection cache lookups."
        yield "# TYPE focal_detection_cache_requests_total counter"
        yield f'focal_detection_cache_requests_total{{result="hit"}} {hits}'
        yield f'focal_detection_cache_requests_total{{result="miss"}} {misses}'


def share_detection(service: Any) -> None:
    """Put the shared cache between a started server's in-process detection cache and its pool
    (no-op when face detection is off or unavailable)."""
    settings = service.settings
    detection = service.detection
    if not settings.detection_cache_url or detection.pool is None:
        return
    from focal.server.detector_pool import CachingDetector

    shared = RedisDetectionCache(
        detection.pool,
        settings.detection_cache_url,
        ttl_s=settings.detection_cache_ttl_s,
        timeout_s=settings.shared_cache_timeout_s,
    )
    detection.detector = CachingDetector(shared, max_entries=settings.detection_cache_entries)
    service.metrics.extra.append(shared.metric_lines)
    register(service.metrics, shared.breaker)
