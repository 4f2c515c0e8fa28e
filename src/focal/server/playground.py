"""The playground: a web page at ``/`` that shows what a transformation did.

Routes (mounted by :func:`focal.server.app.create_app` when the ``playground`` setting is on):

    GET  /                          the page (src/focal/web/index.html)
    GET  /playground/static/<name>  its script and style sheet (a fixed list, nothing else)
    GET  /playground/samples        {"samples": [names of the images at the top of the root]}
    GET  /playground/original/<n>   the untouched bytes of one listed sample (for the overlay)
    POST /playground/transform      body: the image bytes; query: ?options=<options>
                                    -> {"description": {...}, "image": "data:...;base64,..."}

The playground is on where the ``playground`` setting says so: ``auto`` (the default) only when
the server listens on a loopback address, ``on`` anywhere. It is never on when signatures are
required, and it obeys ``presets_only``: an upload's options must be a preset's, and no original
is served (the image URLs serve none either).

Uploads are read into memory only, counted while they arrive and refused past the size limit,
recognised by their first bytes (never by file name or declared type), transformed once (on the
server's image threads, under its concurrency limit), and forgotten: nothing is written to disk
and nothing is kept after the response.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from focal.detection import Detector
from focal.errors import (
    BusyError,
    DeadlineError,
    FocalError,
    ForbiddenError,
    ImageError,
    LimitError,
    NotFoundError,
)
from focal.geometry import FACE_CROP_SIDE
from focal.options import parse_options
from focal.pipeline import Cancel, Limits, Result, transform
from focal.presets import expand as expand_presets

UPLOAD_MAX_BYTES = 25 * 1024 * 1024  # the playground's own cap; the lower of it and Limits wins
MAX_SAMPLES = 200
SNIFF_BYTES = 16

STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# Only this origin: no outside fonts, scripts or images, whatever the page is made to do.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

IMAGE_KINDS = "JPEG, PNG, GIF, WebP, AVIF, HEIF or TIFF"


class PlaygroundSettings(Protocol):
    """What the playground reads from the server settings (focal.server.settings.Settings)."""

    @property
    def root(self) -> Path: ...

    @property
    def host(self) -> str: ...

    @property
    def playground(self) -> str: ...

    @property
    def presets(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def presets_only(self) -> bool: ...

    @property
    def signing_keys(self) -> tuple[str, ...]: ...

    @property
    def require_signature(self) -> bool: ...

    @property
    def request_timeout_s(self) -> float: ...


class Engine(Protocol):
    """What an upload runs on: the server's limits, its detector (read at each upload: it starts
    with the server; None: gravity=face falls back) and its image threads."""

    @property
    def limits(self) -> Limits: ...

    @property
    def detector(self) -> Detector | None: ...

    @property
    def face_crop_side(self) -> str: ...

    async def run(self, job: Callable[[], Result], cancel: Cancel | None = None) -> Result: ...


@dataclass(frozen=True)
class Standalone:
    """An engine of its own, for the page outside a server: Starlette's thread pool."""

    limits: Limits = field(default_factory=Limits)
    detector: Detector | None = None
    face_crop_side: str = FACE_CROP_SIDE

    async def run(self, job: Callable[[], Result], cancel: Cancel | None = None) -> Result:
        try:
            return await run_in_threadpool(job)
        except BaseException:
            if cancel is not None:
                cancel.cancel()
            raise


def routes(settings: PlaygroundSettings, engine: Engine | None = None) -> list[BaseRoute]:
    """The playground's routes, uploads run by ``engine`` (default: :class:`Standalone`); none
    when :func:`enabled` says it is off."""
    if not enabled(settings):
        return []
    root = Path(settings.root)
    presets, only = dict(settings.presets), settings.presets_only
    runner: Engine = engine if engine is not None else Standalone()

    async def samples(request: Request) -> Response:
        return JSONResponse({"samples": list_samples(root)}, headers={"Cache-Control": "no-cache"})

    async def original(request: Request) -> Response:
        if only:
            return error_response(ForbiddenError(NO_ORIGINALS))
        return read_original(root, request.path_params["name"])

    async def upload(request: Request) -> Response:
        options = request.query_params.get("options", "")
        try:
            options = expand_presets(options, presets, only=only)
        except FocalError as error:
            return error_response(error)
        return await answer_upload(request, runner, settings.request_timeout_s, options)

    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/playground/static/{name}", static, methods=["GET", "HEAD"]),
        Route("/playground/samples", samples, methods=["GET"]),
        Route("/playground/original/{name}", original, methods=["GET", "HEAD"]),
        Route("/playground/transform", upload, methods=["POST"]),
    ]


NO_ORIGINALS = "This server serves presets only (presets_only): no originals."


def enabled(settings: PlaygroundSettings) -> bool:
    """On when the setting says ``on``, or ``auto`` on a loopback address; never when every URL
    must be signed (the page builds unsigned URLs, and its upload would bypass the signatures)."""
    if settings.signing_keys and settings.require_signature:
        return False
    if settings.playground == "auto":
        return is_loopback(settings.host)
    return settings.playground == "on"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (the address the server listens on) is reachable from this machine only:
    localhost or a loopback address; 0.0.0.0, :: and any other address or name are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---- the page -------------------------------------------------------------------------------


def web_file(name: str) -> bytes:
    return resources.files("focal").joinpath("web", name).read_bytes()


async def index(request: Request) -> Response:
    return Response(
        web_file("index.html"), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return error_response(NotFoundError("No such playground file."))
    return Response(web_file(name), media_type=media_type, headers=PAGE_HEADERS)


# ---- samples --------------------------------------------------------------------------------


def sniff(head: bytes) -> str | None:
    """The image kind that the first bytes announce, or None when they are not an image's."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "avif"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1"):
        return "heif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


MEDIA_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "heif": "image/heif",
    "tiff": "image/tiff",
}


def list_samples(root: Path) -> list[str]:
    """Names of the image files at the top of the root (not hidden, not links), sorted; at most
    ``MAX_SAMPLES`` of them."""
    if not root.is_dir():
        return []
    samples: list[str] = []
    for name in sorted(entry.name for entry in root.iterdir()):
        if len(samples) == MAX_SAMPLES:
            break
        if is_sample(root, name):
            samples.append(name)
    return samples


def is_sample(root: Path, name: str) -> bool:
    """A regular file right in ``root`` (not hidden, not a link), its first bytes an image's."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\x00"):
        return False
    entry = root / name
    if entry.is_symlink() or not entry.is_file():
        return False
    with entry.open("rb") as handle:
        return sniff(handle.read(SNIFF_BYTES)) is not None


def read_original(root: Path, name: str) -> Response:
    """One sample's bytes, for what the listing would give and nothing else."""
    if not is_sample(root, name):
        return error_response(NotFoundError(f"No sample named {name!r} in the served folder."))
    data = (root / name).read_bytes()
    media_type = MEDIA_TYPES.get(sniff(data[:SNIFF_BYTES]) or "", "application/octet-stream")
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})


# ---- uploads --------------------------------------------------------------------------------


async def answer_upload(
    request: Request, engine: Engine, timeout_s: float, options: str | None = None
) -> Response:
    """The upload's JSON answer; reading and transforming together get ``timeout_s`` (504).
    ``options``: the options text (presets expanded), default the ``options`` parameter."""
    try:
        with anyio.fail_after(timeout_s):
            body = await transform_upload(request, engine, options)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})
    except TimeoutError:
        return error_response(DeadlineError("The upload took too long to read and transform."))
    except FocalError as error:
        response = error_response(error)
        if isinstance(error, BusyError):
            response.headers["Retry-After"] = str(error.retry_after)
        return response


async def transform_upload(
    request: Request, engine: Engine, text: str | None = None
) -> dict[str, Any]:
    """An upload transformed on ``engine``'s image threads (its concurrency limit and queue:
    503 when full)."""
    options = parse_options(request.query_params.get("options", "") if text is None else text)
    limits = engine.limits
    limit = upload_limit(limits)
    check_declared_length(request.headers.get("content-length"), limit)
    data = await read_limited(request.stream(), limit)
    check_image(data)
    detector = engine.detector
    accept = request.headers.get("accept")
    cancel = Cancel()

    def job() -> Result:
        return transform(
            data,
            options,
            detector=detector,
            limits=limits,
            accept=accept,
            cancel=cancel,
            face_crop_side=engine.face_crop_side,
        )

    result = await engine.run(job, cancel)
    image = None if result.format == "json" else data_url(result)
    return {"description": result.description, "image": image}


def upload_limit(limits: Limits) -> int:
    return min(limits.max_bytes, UPLOAD_MAX_BYTES)


def too_large(limit: int) -> LimitError:
    return LimitError(f"The upload is larger than the playground accepts ({limit:,} bytes).")


def check_declared_length(declared: str | None, limit: int) -> None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, or LimitError as soon as more than ``limit`` bytes have arrived."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def check_image(data: bytes) -> None:
    if not data:
        raise ImageError("The upload is empty: choose an image file.")
    if sniff(data[:SNIFF_BYTES]) is None:
        raise ImageError(
            f"The upload is not an image: expected {IMAGE_KINDS} "
            "(recognised by its content, not by its file name)."
        )


def data_url(result: Result) -> str:
    return f"data:{result.content_type};base64,{base64.b64encode(result.data).decode('ascii')}"


def error_response(error: FocalError) -> JSONResponse:
    body = {"status": error.status, "error": error.public, "docs": error.docs}
    return JSONResponse(body, status_code=error.status, headers={"Cache-Control": "no-store"})
