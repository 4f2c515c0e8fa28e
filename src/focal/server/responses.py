"""What the server answers: a variant's headers and response, the error body every failure gets,
and the trace of one request (its log line and metrics)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from focal.errors import (
    BusyError,
    CrawlerError,
    EndpointError,
    FocalError,
    MethodError,
    OptionError,
    RedactionError,
    RequestError,
    SignatureError,
)
from focal.options import Options
from focal.pipeline import Result
from focal.server import crawlers, logs
from focal.server.cache import Meta
from focal.server.settings import Settings

HEADER_CAP = 200


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


def redirectable(error: FocalError, options: Options | None) -> bool:
    """Whether onerror=redirect may answer ``error``: never for a refused URL (bad options, bad
    signature, a crawler refused or asked to pay), and never for a request that asks for
    redaction: the original shows the faces (privacy is fail-closed), so the error itself is the
    answer."""
    if options is None or options.onerror != "redirect" or options.redact:
        return False
    return not isinstance(error, OptionError | SignatureError | RedactionError | CrawlerError)


def http_error_for(status: int) -> FocalError:
    if status == 404:
        return EndpointError("No such endpoint: images are under /cdn-cgi/image/<options>/<source>")
    if status == 405:
        return MethodError("Method not allowed")
    return RequestError("Request refused", status=status)
