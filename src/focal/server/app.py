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
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
from focal.detection import Detector
from focal.errors import (
    DeadlineError,
    FocalError,
    ForbiddenError,
    InternalError,
    MethodError,
    RequestError,
)
from focal.options import Format, Options, normalise, parse_options
from focal.pipeline import Cancel, Limits, Result, transform
from focal.presets import check as check_presets
from focal.presets import expand as expand_presets
from focal.server import crawlers, hints, logs, objectstore, overlays, playground, signing
from focal.server.cache import Entry, Meta, variant_key
from focal.server.detection.host import Link
from focal.server.detection.start import Detection, start_detection
from focal.server.image_threads import ImageWorkers
from focal.server.metrics import CONTENT_TYPE as METRICS_TYPE
from focal.server.metrics import Metrics, SharedMetrics, merge
from focal.server.origins import Origin, Origins, Source, SourceInfo
from focal.server.responses import (
    Trace,
    error_response,
    http_error_for,
    redirectable,
    variant_response,
)
from focal.server.settings import Settings
from focal.server.variants import Variants, build_variants, meta_for, result_of

PREFIX = b"/cdn-cgi/image/"
EXAMPLES = (
    "/cdn-cgi/image/width=256,height=256,fit=cover,gravity=face,zoom=0.5/astronaut.jpg",
    "/cdn-cgi/image/width=400,format=auto/coffee.jpg",
    "/cdn-cgi/image/width=300,height=300,fit=cover,gravity=face,format=json/grace_hopper.jpg",
)


# ---- collaborators -------------------------------------------------------------------------


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
    check: Callable[[str], bool] = origins.is_remote
    if settings.s3_prefixes:  # s3://bucket/key sources beside http(s) ones (the s3 extra)
        remote, check = objectstore.add_s3(settings, remote)
    return Origins(local=local, remote=remote, is_remote=check)


@dataclass
class Service:
    settings: Settings
    origins: Origins
    variants: Variants
    workers: ImageWorkers
    limits: Limits
    metrics: Metrics = field(default_factory=Metrics)
    detection: Detection = field(default_factory=Detection)
    shared_metrics: SharedMetrics | None = None  # a worker of several: the others' counters
    overlay_cache: overlays.OverlayCache = field(default_factory=overlays.OverlayCache)
    crawlers: crawlers.Policy | None = None  # crawler rules and robots.txt; None: none set

    def metrics_text(self) -> str:
        """This process's own exposition (counters, histograms, gauges read now)."""
        gauges = self.detection.gauges(self.variants.approx_size(), self.workers.waiting())
        return self.metrics.render(gauges)

    @property
    def detector(self) -> Detector | None:
        """The detector the pipeline gets (the playground reads it too)."""
        return self.detection.detector

    @property
    def face_crop_side(self) -> str:
        """The side a face crop detects at (the playground's uploads follow it too)."""
        return self.settings.face_crop_side

    async def run(self, job: Callable[[], Result], cancel: Cancel | None = None) -> Result:
        """A transformation on the image threads (the playground's uploads too)."""
        return await self.workers.run(job, cancel)


def build_service(settings: Settings, origins: Origins | None) -> Service:
    check_presets(dict(settings.presets))
    metrics = Metrics()
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
        variants=build_variants(settings, metrics),
        workers=ImageWorkers(settings.threads, settings.image_queue),
        limits=limits,
        metrics=metrics,
    )


# ---- one image request ---------------------------------------------------------------------


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


async def fetch(service: Service, source: str, trace: Trace) -> Source:
    origin = service.origins.of(source)
    start = time.perf_counter()
    try:
        if origin is None:
            raise ForbiddenError("Remote sources are not enabled on this server")
        return await origin.fetch(source)
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
    variants = service.variants
    source = await fetch(service, source_raw, trace)
    asked = variant_key(source.identity, normal, accept, model)  # the key the URL maps to
    key = asked
    clamped = options
    if "Sec-CH-Width" in trace.vary and options.width is not None:  # width=auto, hinted
        clamped = await run_in_threadpool(hints.clamp_to_source_of, options, source.data)
    if clamped is not options:  # a width=auto width the source cannot give: the clamped one's key
        options = trace.options = clamped
        key = variant_key(source.identity, normalise(options) + drawing, accept, model)
    if known is None or known.identity != source.identity or key != asked:
        cached = await lookup(service, key, trace)
        if cached is not None:
            if key != asked:  # next time found under the URL's key, without reading the source
                meta, result = cached
                entry = Entry(meta, result.data)
                await run_in_threadpool(variants.put, asked, entry, False)
            return variant_response(request, settings, cached, source.last_modified, trace)
    cancel = Cancel()
    job = _transform_job(source.data, options, service, accept_header, cancel, drawn)
    result = await service.workers.run(job, cancel)
    trace.result = result
    trace.timings |= result.timings
    meta = meta_for(result, key)
    if variants.enabled and cacheable(options, result, accept):
        for each in {key, asked}:  # the same bytes and ETag under both
            await run_in_threadpool(variants.put, each, Entry(meta, result.data))
    if options.face_gravity:
        service.metrics.record_face_crop(result.fallback)
    return variant_response(request, settings, (meta, result), source.last_modified, trace)


def _transform_job(
    data: bytes,
    options: Options,
    service: Service,
    accept: str | None,
    cancel: Cancel,
    drawn: dict[str, overlays.Loaded],
) -> Callable[[], Result]:
    detector = service.detector
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
            face_crop_side=service.face_crop_side,
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

    async def fetch_overlay(url: str) -> Source:
        return await fetch(service, url, Trace(path=trace.path, method=trace.method))

    async def identify_overlay(url: str) -> str | None:
        origin = service.origins.of(url)
        info = await origin.identify(url) if origin is not None else None
        return None if info is None else info.identity

    try:
        return await overlays.load_all(
            service.overlay_cache, options.draw, fetch_overlay, identify_overlay
        )
    finally:
        trace.timings["overlays"] = logs.now_ms(start)


async def find_variant(
    service: Service, source: str, normal: str, accept: str, model: str, trace: Trace
) -> tuple[SourceInfo | None, tuple[Meta, Result] | None]:
    """The source's identity from its metadata and, if a variant of it is cached, that variant,
    without reading the source (focal.server.variants.Variants.find)."""
    start = time.perf_counter()
    try:
        known, entry = await service.variants.find(
            service.origins.of(source),
            source,
            lambda identity: variant_key(identity, normal, accept, model),
        )
    finally:
        trace.timings["fetch"] = logs.now_ms(start)
    return known, None if known is None else cached_result(entry, trace)


async def lookup(service: Service, key: str, trace: Trace) -> tuple[Meta, Result] | None:
    if not service.variants.enabled:
        trace.cache = "bypass"
        return None
    return cached_result(await service.variants.lookup(key), trace)


def cached_result(entry: Entry | None, trace: Trace) -> tuple[Meta, Result] | None:
    trace.cache = "hit" if entry is not None else "miss"
    if entry is None:
        return None
    trace.result = result_of(entry)
    return entry.meta, trace.result


def redirect_target(service: Service, source: str) -> str | None:
    """Where onerror=redirect sends the client: the original source, only when it passes exactly
    the checks a fetch of it passes (no open redirect): an allowed remote URL as parsed, or a
    local source as its normalised, percent-encoded path on this host."""
    if not all(" " < c <= "~" for c in source):
        return None
    origin = service.origins.of(source)
    if origin is None:
        return None
    try:
        return origin.location(source)
    except FocalError:
        return None


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


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    return error_response(http_error_for(status), headers)


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


def build_routes(
    settings: Settings,
    engine: playground.Engine | None = None,
    crawler_policy: crawlers.Policy | None = None,
) -> Sequence[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    routes += crawlers.routes(settings, crawler_policy)  # /robots.txt, with crawler settings
    extra = playground.routes(settings, engine)  # none unless playground.enabled(settings)
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
    settings: Settings, origins: Origins | None = None, link: Link | None = None
) -> Starlette:
    """The application. ``origins`` replaces the configured origins (tests); ``link`` connects
    it to the supervisor's detector pool instead of starting one (workers > 1)."""
    quiet_libvips()
    service = build_service(settings, origins)
    if link is not None and link.metrics_dir:
        service.shared_metrics = SharedMetrics(Path(link.metrics_dir))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.detection = await anyio.to_thread.run_sync(
            start_detection, settings, service.metrics, link
        )
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
            await anyio.to_thread.run_sync(service.detection.stop)

    app = Starlette(
        routes=list(build_routes(settings, service, service.crawlers)),
        middleware=[Middleware(Dispatch)],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return app
