"""The HTTP service: ``create_app(settings)`` returns the Starlette application.

Routes:

    GET|HEAD /cdn-cgi/image/<options>/<source>   a variant (Cloudflare-compatible URL)
    GET      /healthz                            {"status": "ok", ...}
    GET      /metrics                            Prometheus text
    GET|HEAD /robots.txt                         with crawler settings (focal.server.crawlers)
    GET      /                                   the playground, or a small JSON index

One image request, in order: signature check (403) -> option parse (400) -> origin fetch (once)
-> variant cache lookup -> transform in a thread, under the concurrency limit -> cache store ->
response. The whole request runs under ``request_timeout_s`` (504 past it). Every error answers
``{"status": <code>, "error": <public message>}``; internal details go to the log only.
With crawler settings, the crawler rules decide right after the option parse (403, 402).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import unquote

import anyio
import pyvips
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from focal import __version__
from focal.accept import negotiable_formats
from focal.decode import read_header
from focal.detection import Detector
from focal.errors import (
    BusyError,
    CrawlerError,
    DeadlineError,
    EndpointError,
    FocalError,
    ForbiddenError,
    InternalError,
    MethodError,
    OptionError,
    RedactionError,
    RequestError,
    SignatureError,
)
from focal.options import Format, Options, normalise, parse_options
from focal.pipeline import Cancel, Limits, Result, transform
from focal.presets import check as check_presets
from focal.presets import expand as expand_presets
from focal.server import (
    crawlers,
    detector_host,
    detector_pool,
    hints,
    logs,
    memory,
    objectstore,
    overlays,
    playground,
    shared_detection,
    signing,
)
from focal.server.cache import (
    Entry,
    HotVariants,
    Meta,
    VariantCache,
    VariantStore,
    etag_for,
    variant_key,
)
from focal.server.metrics import CONTENT_TYPE as METRICS_TYPE
from focal.server.metrics import Gauges, Metrics, SharedMetrics, merge
from focal.server.service_client import ServiceDetector
from focal.server.settings import Settings

PREFIX = b"/cdn-cgi/image/"
EXAMPLES = (
    "/cdn-cgi/image/width=256,height=256,fit=cover,gravity=face,zoom=0.5/astronaut.jpg",
    "/cdn-cgi/image/width=400,format=auto/coffee.jpg",
    "/cdn-cgi/image/width=300,height=300,fit=cover,gravity=face,format=json/grace_hopper.jpg",
)
HEADER_CAP = 200


# ---- collaborators -------------------------------------------------------------------------


class SourceLike(Protocol):
    @property
    def data(self) -> bytes: ...
    @property
    def identity(self) -> str: ...
    @property
    def last_modified(self) -> float | None: ...


class SourceInfoLike(Protocol):
    @property
    def identity(self) -> str: ...
    @property
    def last_modified(self) -> float | None: ...


class Origin(Protocol):
    async def fetch(self, source: str) -> SourceLike: ...


class IdentifyingOrigin(Origin, Protocol):
    async def identify(self, source: str) -> SourceInfoLike | None: ...


@runtime_checkable
class BlockingIdentifier(Protocol):
    """An origin that tells a source's identity quickly enough for a thread (a local file)."""

    def identify_now(self, source: str) -> SourceInfoLike: ...


@dataclass(frozen=True)
class Origins:
    local: Origin
    remote: Origin | None
    is_remote: Callable[[str], bool]


def default_origins(settings: Settings) -> Origins:
    from focal.server import origins

    remote: Origin | None = None
    if settings.remote_prefixes:
        remote = origins.RemoteOrigin(
            settings.remote_prefixes,
            settings.max_bytes,
            connect_timeout=settings.remote_connect_timeout_s,
            read_timeout=settings.remote_read_timeout_s,
            max_redirects=settings.remote_max_redirects,
            allowed_networks=settings.allowed_networks,
            total_timeout=settings.remote_total_timeout_s,
        )
    local = origins.LocalOrigin(settings.root, settings.max_bytes)
    is_remote: Callable[[str], bool] = origins.is_remote
    if settings.s3_prefixes:  # s3://bucket/key sources beside http(s) ones (the s3 extra)
        remote, is_remote = objectstore.add_s3(settings, remote)
    return Origins(local=local, remote=remote, is_remote=is_remote)


@dataclass
class Detection:
    """The detector the pipeline gets (None: gravity=face falls back), and what runs it."""

    detector: Detector | None = None
    pool: detector_host.Pool | None = None
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


def start_detection(settings: Settings, link: detector_host.Link | None = None) -> Detection:
    """Start the detector pool, or with ``link`` (a worker of ``workers`` > 1) connect to the
    supervisor's; on a missing model or runtime, serve on with the fallback."""
    if not settings.face:
        logs.event("face detection off: gravity=face falls back to centre", {"setting": "face"})
        return Detection(state="off")
    if settings.detector_url:  # the shared detector service: no pool, no model here
        return start_service_detection(settings, Detection(state="starting"))
    if link is not None and link.conn is None:  # the supervisor logged why
        return Detection(state="unavailable: " + link.unavailable)
    pool = detector_host.start_pool(
        detector_host.RemotePool(link.conn, settings.detector_deadline_s)
        if link is not None and link.conn is not None
        else detector_pool.DetectorPool(detector_host.pool_settings(settings))
    )
    if isinstance(pool, str):
        return Detection(state="unavailable: " + pool)
    detector = detector_pool.CachingDetector(pool, max_entries=settings.detection_cache_entries)
    if link is None:
        logs.event("face detection ready", {"model": pool.model_id})
    return Detection(detector=detector, pool=pool, state="ready")


def start_service_detection(settings: Settings, detection: Detection) -> Detection:
    """The detector service's client behind the detection cache; a service that is down is
    waited for (gravity=face falls back meanwhile), never a start-up failure."""
    remote = ServiceDetector(
        settings.detector_url,
        settings.detector_deadline_s,
        on_state=lambda state: setattr(detection, "state", state),
    )
    remote.start()
    detection.remote = remote
    detection.detector = detector_pool.CachingDetector(
        remote, max_entries=settings.detection_cache_entries
    )
    return detection


class ImageWorkers:
    """Runs transformations on ``threads`` threads; at most ``queue`` more may wait (else 503).
    A request that gives up leaves its job to finish (if running) or drops it (if waiting)."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            threads, "focal-image", initializer=memory.lower_priority
        )
        self._threads = threads
        self._capacity = threads + queue
        self._lock = threading.Lock()
        self._in_flight = 0

    def waiting(self) -> int:
        with self._lock:
            return max(0, self._in_flight - self._threads)

    async def run(self, job: Callable[[], Result], cancel: Cancel | None = None) -> Result:
        """The job's result. A caller that gives up (its deadline) drops the job if it waits, and
        cancels its libvips computation if it runs: the thread is free again within a tile."""
        with self._lock:
            if self._in_flight >= self._capacity:
                raise BusyError("The server is busy: try again shortly", retry_after=1)
            self._in_flight += 1
        future = self._executor.submit(job)
        future.add_done_callback(self._done)
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            future.cancel()
            if cancel is not None:
                cancel.cancel()
            raise

    def _done(self, _: object) -> None:
        with self._lock:
            self._in_flight -= 1
            idle = self._in_flight == 0
        if idle:  # the last job of a burst: give its memory back (focal.server.memory)
            memory.trim()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Service:
    settings: Settings
    origins: Origins
    cache: VariantStore | None
    workers: ImageWorkers
    limits: Limits
    metrics: Metrics = field(default_factory=Metrics)
    detection: Detection = field(default_factory=Detection)
    hot: HotVariants[SourceInfoLike] | None = None  # in front of ``cache`` (memory_cache_mb)
    shared_metrics: SharedMetrics | None = None  # a worker of several: the others' counters
    overlay_cache: overlays.OverlayCache = field(default_factory=overlays.OverlayCache)
    crawlers: crawlers.Policy | None = None  # crawler rules and robots.txt; None: none set

    def metrics_text(self) -> str:
        """This process's own exposition (counters, histograms, gauges read now)."""
        cache_bytes = self.cache.approx_size() if self.cache is not None else 0
        gauges = self.detection.gauges(cache_bytes, self.workers.waiting())
        return self.metrics.render(gauges)


def build_service(settings: Settings, origins: Origins | None) -> Service:
    check_presets(dict(settings.presets))
    cache: VariantStore | None = None
    metrics = Metrics()
    if settings.cache_enabled and settings.cache_backend == "s3":  # shared by every instance
        cache = objectstore.variant_cache(settings, metrics)
    elif settings.cache_enabled:
        cache = VariantCache(
            settings.cache_dir.expanduser(),
            settings.cache_max_mb << 20,
            min_free_bytes=settings.cache_min_free_mb << 20,
        )
    limits = Limits(
        max_pixels=settings.max_pixels,
        max_bytes=settings.max_bytes,
        max_output_pixels=settings.max_output_pixels,
        max_frames=settings.max_frames,
        max_animation_pixels=settings.max_animation_pixels,
    )
    policy = crawlers.build(settings)
    if policy is not None:
        metrics.extra.append(policy.counters.lines)
    return Service(
        crawlers=policy,
        settings=settings,
        origins=origins if origins is not None else default_origins(settings),
        cache=cache,
        workers=ImageWorkers(settings.threads, settings.image_queue),
        limits=limits,
        metrics=metrics,
        hot=HotVariants(settings.memory_cache_mb << 20)
        if cache is not None and settings.memory_cache_mb > 0
        else None,
    )


# ---- one image request ---------------------------------------------------------------------


@dataclass
class Trace:
    """What one request did; becomes its log line and its metrics."""

    path: str
    method: str
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    cache: str | None = None
    source: str | None = None
    options: Options | None = None
    result: Result | None = None
    error: FocalError | None = None
    unexpected: str | None = None
    vary: tuple[str, ...] = ()  # the client hints the variant depends on (focal.server.hints)
    crawler: crawlers.Decision | None = None  # what a crawler rule decided

    def fields(self, status: int, size: int) -> dict[str, Any]:
        result = self.result
        out: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "status": status,
            "ms": logs.now_ms(self.started),
            "stages_ms": self.timings,
            "cache": self.cache,
            "bytes": size,
            "source": self.source,
        }
        if result is not None:
            out |= {"gravity": result.gravity_used, "format": result.format}
            out |= {"fallback": result.fallback, "degraded": result.degraded}
        if self.error is not None:
            out |= {"error": self.error.public, "detail": self.error.detail}
        if self.unexpected is not None:
            out["detail"] = self.unexpected
        if self.crawler is not None:
            out["crawler"] = self.crawler.fields()
        return out


def split_path(raw: bytes) -> tuple[str, str]:
    """(decoded options, raw source) from the raw request path."""
    try:
        text = raw[len(PREFIX) :].decode("ascii")
    except UnicodeDecodeError:
        raise RequestError("The URL path must be ASCII (percent-encode the rest)") from None
    options, _, source = text.partition("/")
    if not source:
        raise RequestError("The URL names no source: expected /cdn-cgi/image/<options>/<source>")
    return unquote(options), source


def framework_source(source: str, is_remote: Callable[[str], bool]) -> str:
    """The source as web frameworks write it, made plain: a percent-encoded absolute URL
    (``https%3A%2F%2F...``) is decoded once. A local source with a leading slash (``//a.jpg``,
    from a loader that puts a slash before a root-relative src) is refused, saying why."""
    if is_remote(source):
        return source
    decoded = unquote(source)
    if is_remote(decoded):
        return decoded
    if source.startswith("/"):
        raise ForbiddenError(
            "The source starts with a slash (/cdn-cgi/image/<options>//<path>): local sources "
            "are paths from the root, so write /cdn-cgi/image/<options>/<path> (a Next.js "
            "loader should drop the src's leading slash; see docs/frameworks.md)",
            detail=f"absolute path: {source[:200]!r}",
        )
    return source


REDACTION_KEY = ":redact-2"  # moves when redaction grows stronger: older, weaker variants retire


def face_key(service: Service, options: Options) -> str:
    """The cache key's part for face detection: the model (empty without detection), with
    redact=faces the redaction's own version, and with gravity=face the detection side's
    setting."""
    if not options.needs_faces:
        return ""
    key = service.detection.model_id() + (REDACTION_KEY if options.redact else "")
    if options.face_gravity:  # the detection side of a face crop follows this setting
        key += f":side-{service.settings.face_crop_side}"
    return key


def accept_class(options: Options, accept: str | None) -> str:
    """The part of Accept a variant depends on: the negotiable formats the client takes, in the
    order format=auto tries them (focal.accept, the parser that also chooses the format); empty
    unless the format is negotiated (format=auto)."""
    if options.format is not Format.AUTO:
        return ""
    return "accept:" + ">".join(negotiable_formats(accept))


async def fetch(service: Service, source: str, trace: Trace) -> SourceLike:
    origins = service.origins
    start = time.perf_counter()
    try:
        if origins.is_remote(source):
            if origins.remote is None:
                raise ForbiddenError("Remote sources are not enabled on this server")
            return await origins.remote.fetch(source)
        return await origins.local.fetch(source)
    finally:
        trace.timings["fetch"] = logs.now_ms(start)


async def identify(service: Service, source: str, trace: Trace) -> SourceInfoLike | None:
    """A source's identity from its metadata (an s3 object's HEAD; a local file's is read in
    find_variant's thread), when a variant cache can use it; None when the origin can only tell
    it by reading the source."""
    origins = service.origins
    origin = origins.remote if origins.is_remote(source) else origins.local
    if service.cache is None or origin is None or not hasattr(origin, "identify"):
        return None
    start = time.perf_counter()
    try:
        info: SourceInfoLike | None = await cast(IdentifyingOrigin, origin).identify(source)
        return info
    finally:
        trace.timings["fetch"] = logs.now_ms(start)


def cacheable(options: Options, result: Result, accept: str) -> bool:
    if result.degraded:
        return False
    if result.negotiated and not accept:
        return False
    # JSON descriptions of gravity=face hold face boxes: never written to disk.
    return not (result.format == "json" and options.needs_faces)


async def produce(service: Service, request: Request, trace: Trace) -> Response:
    settings = service.settings
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    signing.check(
        raw_path,
        request.scope.get("query_string", b"").decode("latin-1"),
        settings.signing_keys,
        required=settings.require_signature,
    )
    options_text, source_raw = split_path(raw_path)
    source_raw = framework_source(source_raw, service.origins.is_remote)
    trace.source = source_raw
    options_text = expand_presets(options_text, dict(settings.presets), only=settings.presets_only)
    options = parse_options(options_text)
    options, trace.vary = hints.resolve(options, request.headers)
    trace.options = options
    if service.crawlers is not None:  # the crawler rules (focal.server.crawlers)
        trace.crawler = await service.crawlers.decide(request, options)
        if trace.crawler is not None and trace.crawler.refusal is not None:
            raise trace.crawler.refusal
    accept_header = request.headers.get("accept")
    accept = accept_class(options, accept_header)
    model = face_key(service, options)
    drawn = await load_overlays(service, options, trace)
    drawing = overlays.key_part(drawn) if drawn else ""  # the overlays' identities
    normal = normalise(options) + drawing
    known, cached = await find_variant(service, source_raw, normal, accept, model, trace)
    if known is not None and cached is not None:  # answered without reading the source
        return variant_response(request, settings, cached, known.last_modified, trace)
    source = await fetch(service, source_raw, trace)
    asked = variant_key(source.identity, normal, accept, model)  # the key the URL maps to
    options = trace.options = auto_width_clamped(options, source.data, trace)
    key = variant_key(source.identity, normalise(options) + drawing, accept, model)
    if known is None or known.identity != source.identity or key != asked:
        cached = await lookup(service, key, trace)
        if cached is not None:
            if key != asked:  # next time found under the URL's key, without reading the source
                meta, result = cached
                await run_in_threadpool(put_variant, service, asked, meta, result.data)
            return variant_response(request, settings, cached, source.last_modified, trace)
    cancel = Cancel()
    job = _transform_job(source.data, options, service, accept_header, cancel, drawn)
    result = await service.workers.run(job, cancel)
    trace.result = result
    trace.timings |= result.timings
    meta = meta_for(result, key)
    if service.cache is not None and cacheable(options, result, accept):
        for each in {key, asked}:  # the same bytes and ETag under both
            await run_in_threadpool(put_variant, service, each, meta, result.data)
            if service.hot is not None:
                service.hot.put(each, Entry(meta, result.data))
    if result.fallback and options.face_gravity:
        service.metrics.record_fallback()
    return variant_response(request, settings, (meta, result), source.last_modified, trace)


def auto_width_clamped(options: Options, data: bytes, trace: Trace) -> Options:
    """A width=auto width brought down to what the source can give (focal.server.hints), read
    from the source's header; other options unchanged."""
    if "Sec-CH-Width" not in trace.vary or options.width is None:
        return options
    try:
        header = read_header(data)
    except FocalError:
        return options  # the transformation says what is wrong with the source
    return hints.clamp_to_source(options, max(header.width, header.height))


def _transform_job(
    data: bytes,
    options: Options,
    service: Service,
    accept: str | None,
    cancel: Cancel,
    drawn: dict[str, overlays.Loaded],
) -> Callable[[], Result]:
    detector = service.detection.detector
    limits = service.limits
    overlay_bytes = {url: loaded.data for url, loaded in drawn.items()}

    def job() -> Result:
        return transform(
            data,
            options,
            detector=detector,
            limits=limits,
            accept=accept,
            cancel=cancel,
            overlays=overlay_bytes,
            face_crop_side=service.settings.face_crop_side,
        )

    return job


async def load_overlays(
    service: Service, options: Options, trace: Trace
) -> dict[str, overlays.Loaded]:
    """The overlays of ``draw``, each fetched by :func:`fetch` (the source's own path and
    checks), through the service's overlay cache."""
    if not options.draw:
        return {}
    start = time.perf_counter()

    async def fetch_overlay(url: str) -> SourceLike:
        return await fetch(service, url, Trace(path=trace.path, method=trace.method))

    async def identify_overlay(url: str) -> str | None:
        origins = service.origins
        origin = origins.remote if origins.is_remote(url) else origins.local
        if isinstance(origin, BlockingIdentifier):
            return (await run_in_threadpool(origin.identify_now, url)).identity
        if origin is not None and hasattr(origin, "identify"):
            info = await cast(IdentifyingOrigin, origin).identify(url)
            return None if info is None else info.identity
        return None

    try:
        return await overlays.load_all(
            service.overlay_cache, options.draw, fetch_overlay, identify_overlay
        )
    finally:
        trace.timings["overlays"] = logs.now_ms(start)


async def find_variant(
    service: Service, source: str, normal: str, accept: str, model: str, trace: Trace
) -> tuple[SourceInfoLike | None, tuple[Meta, Result] | None]:
    """The source's identity from its metadata and, if a variant of it is cached, that variant,
    without reading the source. A local file takes one trip to a thread (open and fstat of the
    source, then the cache file: what a cached answer costs is mostly such trips); other origins
    identify first (an s3 HEAD), then look up."""
    origin = service.origins.remote if service.origins.is_remote(source) else service.origins.local
    cache = service.cache
    if cache is None or not isinstance(origin, BlockingIdentifier):
        known = await identify(service, source, trace)
        if known is None:
            return None, None
        key = variant_key(known.identity, normal, accept, model)
        return known, await lookup(service, key, trace)
    local, hot = origin, service.hot
    remembered = hot.source(source) if hot is not None else None
    if hot is not None and remembered is not None:  # asked again within a second: no trip
        entry = hot.get(variant_key(remembered.identity, normal, accept, model))
        if entry is not None:
            return remembered, cached_result(entry, trace)

    def identify_and_get() -> tuple[SourceInfoLike, Entry | None]:
        info = local.identify_now(source)
        return info, get_variant(service, variant_key(info.identity, normal, accept, model))

    start = time.perf_counter()
    try:
        known, entry = await run_in_threadpool(identify_and_get)
    finally:
        trace.timings["fetch"] = logs.now_ms(start)
    if hot is not None:
        hot.remember_source(source, known)
    return known, cached_result(entry, trace)


CACHE_FAULTS = logs.Throttled(every_s=60.0)  # one log line a minute per kind of fault


def cache_fault(service: Service, operation: str, error: Exception) -> None:
    """A variant cache tier failed (disk full or read-only, its folder gone, the object store
    down): the request goes on without it; the fault is counted and logged, a line a minute."""
    tier = service.settings.cache_backend
    code = error.errno if isinstance(error, OSError) else None
    reason = errno.errorcode.get(code, "") if code is not None else ""
    reason = reason or type(error).__name__
    service.metrics.record_cache_fault(tier, operation, reason)
    CACHE_FAULTS.event(
        f"{tier}:{operation}:{reason}",
        "variant cache unavailable: served without it",
        {"tier": tier, "operation": operation, "reason": reason, "detail": str(error)[:300]},
    )


def put_variant(service: Service, key: str, meta: Meta, data: bytes) -> None:
    """Store a variant (blocking); a fault of the cache never fails the request."""
    if service.cache is None:
        return
    try:
        service.cache.put(key, meta, data)
    except Exception as error:  # any tier's fault: the variant is served all the same
        cache_fault(service, "write", error)


def get_variant(service: Service, key: str) -> Entry | None:
    """A cached variant from memory, else from the cache (blocking), kept in memory if found;
    a fault of the cache is a miss."""
    hot = service.hot
    entry = hot.get(key) if hot is not None else None
    if entry is None and service.cache is not None:
        try:
            entry = service.cache.get(key)
        except Exception as error:  # any tier's fault: a miss
            cache_fault(service, "read", error)
            return None
        if entry is not None and hot is not None:
            hot.put(key, entry)
    return entry


async def lookup(service: Service, key: str, trace: Trace) -> tuple[Meta, Result] | None:
    if service.cache is None:
        trace.cache = "bypass"
        return None
    hot = service.hot.get(key) if service.hot is not None else None
    if hot is not None:
        return cached_result(hot, trace)
    return cached_result(await run_in_threadpool(get_variant, service, key), trace)


def cached_result(entry: Entry | None, trace: Trace) -> tuple[Meta, Result] | None:
    trace.cache = "hit" if entry is not None else "miss"
    if entry is None:
        return None
    meta = entry.meta
    result = Result(
        data=entry.data,
        content_type=meta.content_type,
        format=meta.format,
        width=meta.width,
        height=meta.height,
        gravity_used=meta.gravity_used,
        degraded=False,
        negotiated=meta.negotiated,
        fallback=meta.fallback,
        source_warning=meta.source_warning,
    )
    trace.result = result
    return meta, result


def meta_for(result: Result, key: str) -> Meta:
    return Meta(
        content_type=result.content_type,
        format=result.format,
        width=result.width,
        height=result.height,
        gravity_used=result.gravity_used,
        etag="" if result.degraded else etag_for(key, result.data),
        negotiated=result.negotiated,
        size=len(result.data),
        fallback=result.fallback,
        source_warning=result.source_warning,
    )


def header_text(text: str) -> str:
    """A value safe for a response header: printable ASCII, capped."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in text)
    return cleaned[:HEADER_CAP]


def variant_headers(
    settings: Settings, meta: Meta, result: Result, last_modified: float | None, trace: Trace
) -> dict[str, str]:
    headers = {"Focal-Gravity": header_text(result.gravity_used)}
    if result.degraded:
        headers["Cache-Control"] = "no-store"
    else:
        headers["Cache-Control"] = f"public, max-age={settings.max_age}"
        headers["ETag"] = meta.etag
    if result.fallback and trace.options is not None and trace.options.face_gravity:
        headers["Focal-Gravity-Fallback"] = header_text(result.fallback)
    if result.source_warning:
        headers["Focal-Source-Warning"] = header_text(result.source_warning)
    vary = ("Accept",) * meta.negotiated + trace.vary
    if vary:
        headers["Vary"] = ", ".join(vary)
    if last_modified is not None:
        headers["Last-Modified"] = formatdate(last_modified, usegmt=True)
    if trace.cache is not None:
        headers["Focal-Cache"] = trace.cache
    return headers


def etag_matches(header: str | None, etag: str) -> bool:
    if not header or not etag:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def variant_response(
    request: Request,
    settings: Settings,
    entry: tuple[Meta, Result],
    last_modified: float | None,
    trace: Trace,
) -> Response:
    meta, result = entry
    headers = variant_headers(settings, meta, result, last_modified, trace)
    if not result.degraded and etag_matches(request.headers.get("if-none-match"), meta.etag):
        return Response(status_code=304, headers=headers)
    return Response(result.data, headers=headers, media_type=result.content_type)


def error_response(error: FocalError, extra: dict[str, str] | None = None) -> Response:
    headers = {"Cache-Control": "no-store"} | (extra or {})
    if isinstance(error, BusyError):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, CrawlerError):
        headers |= error.headers()
    body = {"status": error.status, "error": error.public, "docs": error.docs}
    return JSONResponse(body, status_code=error.status, headers=headers)


@runtime_checkable
class Redirecting(Protocol):
    def location(self, source: str) -> str: ...


def redirect_target(service: Service, source: str) -> str | None:
    """Where onerror=redirect sends the client: the original source, only when it passes exactly
    the checks a fetch of it passes (no open redirect): an allowed remote URL as parsed, or a
    local source as its normalised, percent-encoded path on this host."""
    if not all(" " < c <= "~" for c in source):
        return None
    origins = service.origins
    origin = origins.remote if origins.is_remote(source) else origins.local
    if not isinstance(origin, Redirecting):
        return None
    try:
        return origin.location(source)
    except FocalError:
        return None


def redirectable(error: FocalError, options: Options | None) -> bool:
    """Whether onerror=redirect may answer ``error``: never for a refused URL (bad options, bad
    signature, a crawler refused or asked to pay), and never for a request that asks for
    redaction: the original shows the faces (privacy is fail-closed), so the error itself is the
    answer."""
    if options is None or options.onerror != "redirect" or options.redact:
        return False
    return not isinstance(error, OptionError | SignatureError | RedactionError | CrawlerError)


def failure_response(service: Service, error: FocalError, trace: Trace) -> Response:
    trace.error = error
    options = trace.options
    if redirectable(error, options) and trace.source:
        target = redirect_target(service, trace.source)
        if target is not None:
            return Response(
                status_code=302, headers={"Location": target, "Cache-Control": "no-store"}
            )
    return error_response(error)


async def image(request: Request) -> Response:
    service: Service = request.app.state.service
    trace = Trace(path=request.scope["path"], method=request.method)
    try:
        with anyio.fail_after(service.settings.request_timeout_s):
            response = await produce(service, request, trace)
    except FocalError as error:
        response = failure_response(service, error, trace)
    except TimeoutError:
        timeout = DeadlineError("The image took too long to produce")
        response = failure_response(service, timeout, trace)
    except Exception as error:  # the one place that turns a defect into a 500
        trace.unexpected = f"{type(error).__name__}: {error}"
        logs.log.exception("unexpected error", extra={"fields": {"path": trace.path}})
        response = error_response(InternalError("Internal error"))
    if trace.crawler is not None and service.crawlers is not None:
        service.crawlers.settle(trace.crawler, response.status_code, response.headers)
    finish(service, trace, response)
    return response


def finish(service: Service, trace: Trace, response: Response) -> None:
    size = int(response.headers.get("content-length", "0") or 0)
    trace.timings["total"] = logs.now_ms(trace.started)
    service.metrics.record(response.status_code, trace.timings, trace.cache)
    logs.request_line(trace.fields(response.status_code, size), response.status_code)


# ---- service endpoints ---------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    service: Service = request.app.state.service
    body = {"status": "ok", "version": __version__, "face": service.detection.state}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    shared = service.shared_metrics
    if shared is None:
        text = service.metrics_text()
    else:  # every worker's requests; what this one shows is published first (never backwards)

        def published_and_others() -> tuple[str, list[tuple[str, bool]]]:
            return shared.publish_current(service.metrics_text), shared.others()

        own, others = await anyio.to_thread.run_sync(published_and_others)
        text = merge(own, others)
    return Response(text, media_type=METRICS_TYPE, headers={"Cache-Control": "no-store"})


async def index(request: Request) -> Response:
    body = {
        "name": "focal",
        "version": __version__,
        "endpoints": ["/cdn-cgi/image/<options>/<source>", "/healthz", "/metrics"],
        "examples": list(EXAMPLES),
    }
    return JSONResponse(body)


def playground_routes(settings: Settings) -> list[BaseRoute]:
    return playground.routes(settings)  # none unless playground.enabled(settings)


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    return error_response(http_error_for(status), headers)


def http_error_for(status: int) -> FocalError:
    if status == 404:
        return EndpointError("No such endpoint: images are under /cdn-cgi/image/<options>/<source>")
    if status == 405:
        return MethodError("Method not allowed")
    return RequestError("Request refused", status=status)


async def not_allowed(request: Request) -> Response:
    error = MethodError("Method not allowed: images answer GET and HEAD")
    response = error_response(error, {"Allow": "GET, HEAD"})
    logs.request_line({"method": request.method, "path": request.scope["path"], "status": 405}, 405)
    return response


IMAGE_ENDPOINT = request_response(image)
NOT_ALLOWED = request_response(not_allowed)


class Dispatch:
    """Sends every request whose raw path starts with /cdn-cgi/image/ to the image endpoint,
    whatever the rest holds (route patterns stop at a newline), and writes one log line for
    every other request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        if raw.startswith(PREFIX):
            endpoint = IMAGE_ENDPOINT if scope["method"] in ("GET", "HEAD") else NOT_ALLOWED
            await endpoint(scope, receive, send)
            return
        await self._logged(scope, receive, send)

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            fields = {"method": scope["method"], "path": scope["path"], "status": status}
            fields["ms"] = logs.now_ms(started)
            logs.request_line(fields, status)
            service: Service = scope["app"].state.service
            service.metrics.record(status, {}, None)


def build_routes(settings: Settings) -> Sequence[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    routes += crawlers.routes(settings)  # /robots.txt, with crawler settings
    extra = playground_routes(settings)
    if not any(getattr(r, "path", None) == "/" for r in extra):
        routes.append(Route("/", index, methods=["GET", "HEAD"]))
    return routes + extra


def quiet_libvips() -> None:
    """Turn libvips' operation cache off: it keeps up to 100 MB of decoded images per process for
    reuse that a server with a variant cache does not need."""
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)


def create_app(
    settings: Settings, origins: Origins | None = None, link: detector_host.Link | None = None
) -> Starlette:
    """The application. ``origins`` replaces the configured origins (tests); ``link`` connects
    it to the supervisor's detector pool instead of starting one (workers > 1)."""
    quiet_libvips()
    service = build_service(settings, origins)
    if link is not None and link.metrics_dir:
        service.shared_metrics = SharedMetrics(Path(link.metrics_dir))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.detection = await anyio.to_thread.run_sync(start_detection, settings, link)
        if settings.detection_cache_url:  # shared by every instance (the redis extra)
            shared_detection.share_detection(service)
        app.state.detector = service.detection.detector
        if service.detection.remote is not None:
            service.metrics.extra.append(service.detection.remote.metric_lines)
        tasks = [asyncio.ensure_future(service.metrics.loop_lag.watch())]
        shared = service.shared_metrics
        if shared is not None:
            changes = service.metrics.changes_now
            tasks.append(
                asyncio.ensure_future(shared.keep_publishing(service.metrics_text, changes))
            )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # a publish under way finishes first: the final one writes the same temporary file
            await asyncio.gather(*tasks, return_exceptions=True)
            if shared is not None:  # the final counts stay for the workers that go on
                await anyio.to_thread.run_sync(shared.publish, service.metrics_text())
            service.workers.shutdown()
            if service.detection.pool is not None:
                await anyio.to_thread.run_sync(service.detection.pool.stop)
            if service.detection.remote is not None:
                await anyio.to_thread.run_sync(service.detection.remote.stop)

    app = Starlette(
        routes=list(build_routes(settings)),
        middleware=[Middleware(Dispatch)],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.limits = service.limits
    app.state.detector = None
    return app
