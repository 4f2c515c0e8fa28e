"""Face detection for the server, built in one place (this module).

    pipeline ──► CachingDetector (LRU, then Redis with detection_cache_url)   .caching
                     │
                     ▼ one of
                 DetectorPool ──wire──► detector processes                   .pool, .worker
                 RemotePool   ──wire──► supervisor's PoolHost ──► DetectorPool  .host
                                         (a worker of workers > 1)

:func:`start_detection` chooses the detector behind the cache, wraps it in the cache, and says
what /healthz and /metrics report. Its one branch for another kind of detector: with
``detector_url``, the shared detector service's client (focal.server.service_client) instead of
a pool, and no model in the server.
:func:`host_detection` starts the supervisor's pool for ``workers`` > 1. Both speak
focal.server.detection.wire; the detection side comes from the settings (``detector_max_side``,
checked there), never from the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from focal.detection import Detector, Face, RGBImage
from focal.errors import FocalError
from focal.face.sessions import FACTORY, DetectorConfig
from focal.server import logs
from focal.server.detection.caching import CachingDetector, RedisFaces
from focal.server.detection.host import Link, PoolHost, RemotePool
from focal.server.detection.pool import DetectorPool, PoolSettings, PoolStats
from focal.server.metrics import Gauges, Metrics
from focal.server.objectstore import register
from focal.server.service_client import ServiceDetector
from focal.server.settings import Settings

START_ERRORS = (FocalError, ImportError, OSError, RuntimeError, TimeoutError)


class Pool(Detector, Protocol):
    """What runs detection behind the cache: a pool of this process's own, or the link to the
    supervisor's (focal.server.detection.host); both are Detectors with a lifecycle and stats."""

    def detect_with_candidates(
        self, images: Sequence[RGBImage]
    ) -> list[tuple[list[Face], list[Face]]]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def stats(self) -> PoolStats: ...
    def worker_pids(self) -> list[int]: ...


def detector_config(settings: Settings) -> DetectorConfig:
    """The detector each detector process builds (focal.face.sessions.open_detector)."""
    return DetectorConfig(
        runtime=settings.detector_runtime,
        precision=settings.detector_precision,
        device=settings.detector_device,
        idle_offload_s=settings.detector_idle_offload_s,
        max_batch=settings.detector_max_batch,
        crop_threshold=settings.face_crop_threshold,
        flip=settings.detector_flip,
        max_side=settings.detector_max_side,
    )


def pool_settings(settings: Settings) -> PoolSettings:
    return PoolSettings(
        workers=settings.detector_workers,
        queue_size=settings.detector_queue,
        deadline_s=settings.detector_deadline_s,
        batch_window_ms=settings.detector_batch_window_ms,
        max_batch=settings.detector_max_batch,
        rss_limit_mb=settings.detector_rss_limit_mb,
        factory=FACTORY,
        factory_args=detector_config(settings).factory_args(),
        max_side=settings.detector_max_side,
    )


@dataclass
class Detection:
    """The detector the pipeline gets (None: gravity=face falls back), and what runs it."""

    detector: Detector | None = None
    pool: Pool | None = None
    state: str = "off"
    remote: ServiceDetector | None = None  # the shared detector service's client (detector_url)

    def model_id(self) -> str:
        return self.detector.model_id if self.detector is not None else "none"

    def gauges(self, cache_bytes: int, waiting: int) -> Gauges:
        if self.pool is None:
            return Gauges(cache_bytes=cache_bytes, image_jobs_waiting=waiting)
        stats = self.pool.stats()
        return Gauges(
            detector_queue_depth=stats.queue_depth,
            detector_restarts=stats.restarts,
            detector_worker_rss_bytes=sum(stats.worker_rss_bytes),
            detector_batches=stats.batches,
            detector_detections=stats.detections,
            cache_bytes=cache_bytes,
            image_jobs_waiting=waiting,
        )

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        if self.remote is not None:
            self.remote.stop()


def start_detection(settings: Settings, metrics: Metrics, link: Link | None = None) -> Detection:
    """Start the detector pool, or with ``link`` (a worker of ``workers`` > 1) connect to the
    supervisor's, behind the detection cache (its Redis tier's counters go to ``metrics``); on
    a missing model or runtime, serve on with the fallback."""
    if not settings.face:
        logs.event("face detection off: gravity=face falls back to centre", {"setting": "face"})
        return Detection(state="off")
    if settings.detector_url:  # the shared detector service: no pool, no model here
        return start_service_detection(settings, metrics)
    if link is not None and link.conn is None:  # the supervisor logged why
        return Detection(state="unavailable: " + link.unavailable)
    pool = start_pool(
        RemotePool(link.conn, settings.detector_deadline_s, settings.detector_max_side)
        if link is not None and link.conn is not None
        else DetectorPool(pool_settings(settings))
    )
    if isinstance(pool, str):
        return Detection(state="unavailable: " + pool)
    if link is None:
        logs.event("face detection ready", {"model": pool.model_id})
    return Detection(detector=cached(settings, pool, metrics), pool=pool, state="ready")


def start_service_detection(settings: Settings, metrics: Metrics) -> Detection:
    """The detector service's client behind the detection cache; a service that is down is
    waited for (gravity=face falls back meanwhile), never a start-up failure."""
    detection = Detection(state="starting")
    remote = ServiceDetector(
        settings.detector_url,
        settings.detector_deadline_s,
        on_state=lambda state: setattr(detection, "state", state),
    )
    remote.start()
    detection.remote = remote
    detection.detector = cached(settings, remote, metrics)
    metrics.extra.append(remote.metric_lines)
    return detection


def cached(settings: Settings, inner: Detector, metrics: Metrics) -> CachingDetector:
    """``inner`` behind the detection cache: the LRU, and with ``detection_cache_url`` the Redis
    tier every instance shares (the redis extra), its counters and breaker on /metrics."""
    if not settings.detection_cache_url:
        return CachingDetector(inner, max_entries=settings.detection_cache_entries)
    shared = RedisFaces(
        settings.detection_cache_url,
        ttl_s=settings.detection_cache_ttl_s,
        timeout_s=settings.shared_cache_timeout_s,
    )
    metrics.extra.append(shared.metric_lines)
    register(metrics, shared.breaker)
    return CachingDetector(inner, max_entries=settings.detection_cache_entries, shared=shared)


def host_detection(settings: Settings) -> tuple[PoolHost | None, str]:
    """The one detector pool every HTTP worker asks (None and why not, when face detection is
    off or cannot start)."""
    if not settings.face:
        return None, "face detection is off"
    if settings.detector_url:  # each worker asks the shared detector service itself
        return None, ""
    pool = start_pool(DetectorPool(pool_settings(settings)))
    if isinstance(pool, str):
        return None, pool
    assert isinstance(pool, DetectorPool)
    logs.event("face detection ready", {"model": pool.model_id, "shared by": settings.workers})
    return PoolHost(pool), ""


def start_pool(pool: Pool) -> Pool | str:
    """Start ``pool`` (a pool of its own, or the link to the host's); on a missing model or
    runtime, or a host that does not answer, log and return the public reason: gravity=face then
    falls back to the centre."""
    try:
        pool.start()
    except START_ERRORS as error:
        public = getattr(error, "public", None) or "the face detector could not start"
        logs.event(
            "face detection unavailable: gravity=face falls back to centre",
            {"reason": public, "detail": repr(error), "fix": "focal models fetch"},
            logging.WARNING,
        )
        return public
    return pool
