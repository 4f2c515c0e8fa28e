"""The server's one detection cache: an in-process LRU of answers, then optionally a tier shared
by every instance (Redis, ``detection_cache_url``; the ``redis`` extra), then the detector.

Keys are blake2b of the model id and the pixels the detector is given (:func:`image_key`), so
instances with another model or runtime never share an answer. Only boxes and scores are kept:
no landmarks, never pixels. In Redis the keys are ``<prefix><hex of image_key>``, the values the
faces and the weak candidates as JSON, with a TTL; lookups of a batch are one MGET, stores one
pipeline of SETs. Every Redis call is bounded by ``timeout_s`` (connect and read); any failure is
a miss, answered by the detector behind, with a log line and a metric
(:class:`focal.server.objectstore.Breaker` then skips Redis for a moment, so a dead Redis costs
one timeout per pause, not one per request).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from hashlib import blake2b
from typing import Any, Protocol

import numpy as np

from focal.detection import (
    CandidateDetector,
    Detector,
    Face,
    RGBImage,
    face_rows,
    faces_from_rows,
    inference_cap,
)
from focal.server.objectstore import Breaker

CachedAnswer = tuple[tuple[Face, ...], tuple[Face, ...]]  # (faces, weak candidates) of one image


class SharedFaces(Protocol):
    """A second tier behind CachingDetector's LRU that other processes or instances share
    (:class:`RedisFaces`). It must never raise: a tier that is down answers
    None for every key and drops stores."""

    def get_many(self, keys: Sequence[bytes]) -> list[CachedAnswer | None]: ...
    def put_many(self, items: Sequence[tuple[bytes, CachedAnswer]]) -> None: ...


class CachingDetector:
    """Wraps any Detector with an in-memory LRU of its answers, and optionally a shared tier.

    Keyed by blake2b of the model id and each image's shape and bytes (:func:`image_key`,
    computed once per image for both tiers). Only the faces' boxes and scores are kept: no
    landmarks (they are dropped from what ``inner`` answers, hit or miss alike), never pixels.
    Failures are not cached. Answers with weak candidates
    (``detect_with_candidates``) are kept under keys of their own. Lookup order: the LRU, then
    ``shared`` (its answers fill the LRU), then ``inner`` (its answers go to both).
    ``max_entries=0`` keeps no LRU. ``hits`` counts images answered without ``inner``,
    ``misses`` those ``inner`` detected.
    """

    def __init__(
        self, inner: Detector, max_entries: int = 1024, shared: SharedFaces | None = None
    ) -> None:
        self._inner = inner
        self._max_entries = max_entries
        self.shared = shared
        self._entries: OrderedDict[bytes, CachedAnswer] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def max_side(self) -> int:
        return inference_cap(self._inner)

    def detect(self, images: Sequence[RGBImage]) -> list[list[Face]]:
        def inner(missing: list[RGBImage]) -> list[tuple[list[Face], list[Face]]]:
            return [(faces, []) for faces in self._inner.detect(missing)]

        answers = self._answers(images, self._inner.model_id, inner)
        return [list(faces) for faces, _ in answers]

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]:
        """(faces, weak candidates) for each image; faces and no candidates from an inner
        detector that has none."""
        inner = self._inner
        if not isinstance(inner, CandidateDetector):
            return [(faces, []) for faces in self.detect(images)]
        answers = self._answers(
            images, inner.model_id + "|candidates", inner.detect_with_candidates
        )
        return [(list(faces), list(weak)) for faces, weak in answers]

    def _answers(
        self,
        images: Sequence[RGBImage],
        model_id: str,
        inner: Callable[[list[RGBImage]], list[tuple[list[Face], list[Face]]]],
    ) -> list[CachedAnswer]:
        keys = [image_key(model_id, image) for image in images]
        found: list[CachedAnswer | None] = [self._lookup(key) for key in keys]
        missing = [i for i, answer in enumerate(found) if answer is None]
        if missing and self.shared is not None:
            shared = self.shared.get_many([keys[i] for i in missing])
            for i, answer in zip(missing, shared, strict=True):
                if answer is not None:
                    found[i] = answer
                    self._store(keys[i], answer)
            missing = [i for i in missing if found[i] is None]
        with self._lock:
            self.hits += len(images) - len(missing)
            self.misses += len(missing)
        if missing:
            detected = inner([images[i] for i in missing])
            stored: list[tuple[bytes, CachedAnswer]] = []
            for i, (faces, weak) in zip(missing, detected, strict=True):
                answer = (_kept(faces), _kept(weak))
                found[i] = answer
                self._store(keys[i], answer)
                stored.append((keys[i], answer))
            if self.shared is not None:
                self.shared.put_many(stored)
        return [answer or ((), ()) for answer in found]

    def __len__(self) -> int:
        return len(self._entries)

    def _lookup(self, key: bytes) -> CachedAnswer | None:
        with self._lock:
            answer = self._entries.get(key)
            if answer is not None:
                self._entries.move_to_end(key)
            return answer

    def _store(self, key: bytes, answer: CachedAnswer) -> None:
        if self._max_entries < 1:
            return
        with self._lock:
            self._entries[key] = answer
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)


def _kept(faces: Sequence[Face]) -> tuple[Face, ...]:
    return tuple(face.box_and_score() for face in faces)


def image_key(model_id: str, image: RGBImage) -> bytes:
    """blake2b of the model id, the image's shape and dtype, and its pixels."""
    digest = blake2b(digest_size=20)
    digest.update(model_id.encode())
    digest.update(repr((image.shape, image.dtype.str)).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()


# -- the shared tier ----------------------------------------------------------------------

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
    """The Redis tier of :class:`CachingDetector` (SharedFaces): one
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
