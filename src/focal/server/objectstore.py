"""Object storage (S3-compatible: AWS, R2, MinIO, GCS's S3 API): ``s3://bucket/key`` sources and
the shared variant cache. The client is obstore (chosen by
``benchmarks/experiments/s3_client.py``: about a third of boto3's CPU time per fetch;
docs/scaling.md). Needs the ``s3`` extra.

S3Origin serves ``s3://bucket/key`` sources whose bucket and key start with one of the allowed
``s3_prefixes``. The key is percent-decoded once; NUL, backslashes, ``.``/``..`` segments and
user info in the URL are refused (403) before any request. Credentials never come from the URL:
obstore reads the standard environment (``AWS_ACCESS_KEY_ID``..., web identity, ECS, EC2 instance
metadata), or, with ``s3_credentials = "boto3"``, botocore's whole chain (``~/.aws`` profiles,
SSO). The body is streamed and cut off past ``max_bytes`` (413), after a check of the size the
store declares; each request is bounded by the connect and read timeouts, and not retried. A
source's identity is its ETag and size: ``identify`` learns it with one HEAD, so a cached
variant is served without downloading the source.

``list_prefix``, ``read_object`` and ``write_object`` are the same client's blocking calls for
``focal batch`` over ``s3://bucket/prefix/`` (one listing; reads with the same byte limit;
single-PUT writes).

S3VariantCache keeps variants at ``<prefix><key[:2]>/<key>`` (the variant key is content
addressed). Writes are single PUTs with ``If-None-Match: *``: a key is written once, by whichever
instance gets there first, and a PUT is atomic, so no partial object is ever visible. Any failure
of the store is a miss (a log line, a metric), never an error: see :class:`Breaker`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from focal.errors import ForbiddenError, LimitError, NotFoundError, UpstreamError
from focal.server import memory
from focal.server.cache import Entry, Meta, decode, encode
from focal.server.origins import Defaults, Source, SourceInfo, is_remote

log = logging.getLogger("focal.objectstore")

SCHEME = "s3://"
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
STREAM_CHUNK = 1 << 16


def is_s3(source: str) -> bool:
    return source[: len(SCHEME)].lower() == SCHEME


def is_remote_or_s3(source: str) -> bool:
    """The remote/local decision with the s3 scheme: http(s) and s3 sources are not local."""
    return is_remote(source) or is_s3(source)


@dataclass(frozen=True)
class Location:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"


def parse(url: str, *, prefix: bool = False) -> Location:
    """Bucket and decoded key of an ``s3://bucket/key`` URL; ForbiddenError for anything else.
    A prefix may have an empty key (the whole bucket)."""
    refused = ForbiddenError(f"source URL not allowed: {url}")
    if not is_s3(url):
        raise refused
    bucket, _, raw_key = url[len(SCHEME) :].partition("/")
    if not BUCKET.match(bucket):  # also refuses user info (@, :) and ports
        raise refused
    if "\x00" in raw_key or "\\" in raw_key or "%00" in raw_key or "?" in raw_key:
        raise refused
    try:
        key = unquote(raw_key, errors="strict")
    except UnicodeDecodeError:
        raise refused from None
    if "\x00" in key or "\\" in key or key.startswith("/"):
        raise refused
    if any(segment in (".", "..") for segment in key.split("/")):
        raise ForbiddenError(f"source URL not allowed: {url}", detail="dot segment")
    if not prefix and (not key or key.endswith("/")):
        raise NotFoundError(f"source not found: {url}")
    return Location(bucket, key)


def parse_prefix(url: str) -> Location:
    """An ``s3://bucket/prefix/`` of many objects; a key that does not end with ``/`` gets one."""
    location = parse(url, prefix=True)
    if location.key and not location.key.endswith("/"):
        location = Location(location.bucket, location.key + "/")
    return location


class Limited:
    """A body read up to ``max_bytes``: LimitError (413) as soon as the size the store declares,
    or the bytes received, pass it."""

    def __init__(self, url: str, max_bytes: int, declared: int) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._total = 0
        if declared > max_bytes:
            raise self._over()

    def _over(self) -> LimitError:
        return LimitError(f"source is over the {self.max_bytes} byte limit: {self.url}")

    def add(self, chunk: Any) -> None:
        self._total += len(chunk)
        if self._total > self.max_bytes:
            self._chunks.clear()  # a traceback keeps this object alive: not its bytes
            raise self._over()
        self._chunks.append(bytes(chunk))

    def data(self) -> bytes:
        return b"".join(self._chunks)


@contextlib.contextmanager
def store_errors(url: str, bucket: str) -> Iterator[None]:
    """obstore's errors as focal's: a missing key NotFoundError (404), anything else the store
    does (network, timeout, permission, throttling) UpstreamError (502)."""
    try:
        yield
    except FileNotFoundError as exc:
        raise NotFoundError(f"source not found in the store: {url}") from exc
    except (LimitError, NotFoundError):
        raise
    except Exception as exc:
        raise UpstreamError(f"the object store failed: {bucket}", detail=repr(exc)) from exc


def _identity(location: Location, meta: Any) -> str | None:
    """An identity that changes with the object's content: its ETag and size (a new write of
    other bytes gets another ETag), None when the store sends no ETag."""
    etag = meta.get("e_tag")
    return f"s3:{location}:etag:{etag}:{int(meta['size'])}" if etag else None


def _timestamp(meta: Any) -> float | None:
    modified = meta.get("last_modified")
    return modified.timestamp() if modified is not None else None


@dataclass(frozen=True)
class StoreSettings:
    """How to reach the object store: endpoint (empty: AWS), region (empty: from the
    environment), timeouts of one request, and where credentials come from."""

    endpoint_url: str = ""
    region: str = ""
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 10.0
    credentials: str = "env"  # env (obstore's chain) or boto3 (botocore's chain)


class Stores:
    """One obstore S3Store per bucket, made on first use (each holds a connection pool)."""

    def __init__(self, settings: StoreSettings) -> None:
        self._settings = settings
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()

    def store(self, bucket: str) -> Any:
        with self._lock:
            if bucket not in self._stores:
                self._stores[bucket] = self._make(bucket)
            return self._stores[bucket]

    def _make(self, bucket: str) -> Any:
        from obstore.store import S3Store

        s = self._settings
        config: dict[str, Any] = {}
        if s.endpoint_url:
            config["endpoint"] = s.endpoint_url
            config["virtual_hosted_style_request"] = False
        if s.region:
            config["region"] = s.region
        client_options: dict[str, Any] = {
            "connect_timeout": timedelta(seconds=s.connect_timeout_s),
            "timeout": timedelta(seconds=s.connect_timeout_s + s.read_timeout_s),
            "allow_http": s.endpoint_url.lower().startswith("http://"),
        }
        retry = {"max_retries": 0, "retry_timeout": timedelta(seconds=s.read_timeout_s)}
        provider = None
        if s.credentials == "boto3":
            from obstore.auth.boto3 import Boto3CredentialProvider

            provider = Boto3CredentialProvider()
        return S3Store(
            bucket,
            config=config,  # type: ignore[arg-type]
            client_options=client_options,  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
            credential_provider=provider,
        )


def store_settings(settings: Any) -> StoreSettings:
    return StoreSettings(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        connect_timeout_s=settings.s3_connect_timeout_s,
        read_timeout_s=settings.s3_read_timeout_s,
        credentials=settings.s3_credentials,
    )


def _setting_prefix(setting: str, prefix: str) -> Location:
    """A prefix from the settings; ValueError (a start-up error naming it) if malformed."""
    try:
        return parse(prefix, prefix=True)
    except (ForbiddenError, NotFoundError):
        raise ValueError(f"{setting}: expected s3://bucket/prefix/, received {prefix!r}") from None


# ---- sources ---------------------------------------------------------------------------------


class S3Origin(Defaults):
    """``s3://bucket/key`` sources under the allowed prefixes; see the module docstring."""

    def __init__(self, prefixes: Sequence[str], max_bytes: int, stores: Stores) -> None:
        self._prefixes = tuple(_setting_prefix("s3_prefixes", p) for p in prefixes)
        self._max_bytes = max_bytes
        self._stores = stores

    def checked(self, url: str) -> Location:
        location = parse(url)
        for allowed in self._prefixes:
            if location.bucket != allowed.bucket:
                continue
            if allowed.key in ("", "/") or allowed.key.endswith("/"):
                if location.key.startswith(allowed.key.lstrip("/")):
                    return location
            elif location.key == allowed.key or location.key.startswith(allowed.key + "/"):
                return location
        raise ForbiddenError(f"source URL not allowed: {url}", detail="no s3 prefix matches")

    async def fetch(self, url: str) -> Source:
        location = self.checked(url)
        import obstore

        store = self._stores.store(location.bucket)
        try:
            with store_errors(url, location.bucket):
                result = await obstore.get_async(store, location.key)
                body = Limited(url, self._max_bytes, int(result.meta["size"]))
                async for chunk in result.stream(min_chunk_size=STREAM_CHUNK):
                    body.add(chunk)
        except BaseException:
            memory.trim_soon()  # what was read is free: give it back
            raise
        data = body.data()
        meta = result.meta
        identity = _identity(location, meta) or f"s3:{location}:{hashlib.sha256(data).hexdigest()}"
        return Source(data, identity, _timestamp(meta))

    async def identify(self, url: str) -> SourceInfo | None:
        """The source's identity from a HEAD request (its ETag and size), so that a cached
        variant is answered without downloading the source; None when the store gives no ETag
        (the identity is then the hash of the bytes, known only after the fetch)."""
        location = self.checked(url)
        import obstore

        store = self._stores.store(location.bucket)
        with store_errors(url, location.bucket):
            meta = await obstore.head_async(store, location.key)
            Limited(url, self._max_bytes, int(meta["size"]))
        identity = _identity(location, meta)
        return None if identity is None else SourceInfo(identity, _timestamp(meta))

    def location(self, url: str) -> str:
        """Never a redirect target: clients cannot fetch s3:// URLs."""
        raise ForbiddenError(f"no redirect to an object-store source: {url}")


class SchemeOrigin(Defaults):
    """The non-local origin: http(s) sources to ``http``, s3 sources to ``s3``."""

    def __init__(self, http: Any, s3: S3Origin) -> None:
        self.http = http
        self.s3 = s3

    def _for(self, source: str) -> Any:
        if is_s3(source):
            return self.s3
        if self.http is None:
            raise ForbiddenError("Remote sources are not enabled on this server")
        return self.http

    async def fetch(self, source: str) -> Any:
        return await self._for(source).fetch(source)

    async def identify(self, source: str) -> SourceInfo | None:
        """An s3 source's identity without reading it; None for http(s) ones (they are fetched)."""
        if is_s3(source):
            return await self.s3.identify(source)
        return None

    def location(self, source: str) -> str:
        target: str = self._for(source).location(source)
        return target


def add_s3(settings: Any, http: Any) -> tuple[SchemeOrigin, Callable[[str], bool]]:
    """The remote origin and remote/local decision of a server with ``s3_prefixes`` set."""
    s3 = S3Origin(settings.s3_prefixes, settings.max_bytes, Stores(store_settings(settings)))
    return SchemeOrigin(http, s3), is_remote_or_s3


# ---- prefixes of many objects (focal batch) -----------------------------------------------------


_PROCESS_STORES: dict[StoreSettings, Stores] = {}
_PROCESS_LOCK = threading.Lock()


def process_stores(settings: StoreSettings) -> Stores:
    """One Stores per settings in this process: batch tasks that run in the same worker process
    reuse its connection pools."""
    with _PROCESS_LOCK:
        if settings not in _PROCESS_STORES:
            _PROCESS_STORES[settings] = Stores(settings)
        return _PROCESS_STORES[settings]


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch (the store's clock)


def list_prefix(store: Any, location: Location) -> list[ObjectInfo]:
    """Every object under the prefix, from the store's listing (no object is read)."""
    import obstore

    found: list[ObjectInfo] = []
    url = str(location)
    with store_errors(url, location.bucket):
        for chunk in obstore.list(store, location.key or None, chunk_size=1000):
            for meta in chunk:
                found.append(ObjectInfo(meta["path"], int(meta["size"]), _timestamp(meta) or 0.0))
    return found


def read_object(store: Any, location: Location, max_bytes: int) -> bytes:
    """An object's bytes, streamed and cut at ``max_bytes`` as a source's are (blocking)."""
    import obstore

    url = str(location)
    with store_errors(url, location.bucket):
        result = obstore.get(store, location.key)
        body = Limited(url, max_bytes, int(result.meta["size"]))
        for chunk in result.stream(min_chunk_size=STREAM_CHUNK):
            body.add(chunk)
    return body.data()


def read_optional(store: Any, location: Location) -> bytes | None:
    """A small object's bytes (a manifest), None if there is none."""
    import obstore

    try:
        with store_errors(str(location), location.bucket):
            return bytes(obstore.get(store, location.key).bytes())
    except NotFoundError:
        return None


def write_object(store: Any, location: Location, data: bytes, content_type: str = "") -> None:
    """One PUT (atomic: readers see the whole object or the one before). UpstreamError if the
    store refuses it."""
    import obstore

    attributes: dict[str, str] = {"Content-Type": content_type} if content_type else {}
    with store_errors(str(location), location.bucket):
        obstore.put(
            store,
            location.key,
            data,
            attributes=attributes or None,
            use_multipart=False,
        )


# ---- failures become misses ---------------------------------------------------------------------


class Breaker:
    """Counts a shared cache's failures and, after one, skips the backend for ``pause_s``: a dead
    backend then costs one bounded timeout per pause, not one per request. Logs when it opens
    and when the backend answers again."""

    def __init__(self, name: str, pause_s: float = 2.0) -> None:
        self.name = name
        self.pause_s = pause_s
        self.errors = 0
        self.skipped = 0
        self._open_until = 0.0
        self._down = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            if time.monotonic() < self._open_until:
                self.skipped += 1
                return False
            return True

    def failed(self, operation: str, error: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self._open_until = time.monotonic() + self.pause_s
            first = not self._down
            self._down = True
        if first:
            log.warning(
                f"{self.name} unavailable: served as misses",
                extra={"fields": {"operation": operation, "detail": repr(error)[:300]}},
            )

    def succeeded(self) -> None:
        with self._lock:
            back = self._down
            self._down = False
        if back:
            log.warning(f"{self.name} available again", extra={"fields": {}})

    def metric_lines(self) -> Iterable[str]:
        label = f'cache="{self.name}"'
        with self._lock:
            errors, skipped = self.errors, self.skipped
        yield f"focal_shared_cache_errors_total{{{label}}} {errors}"
        yield f"focal_shared_cache_skipped_total{{{label}}} {skipped}"


class BreakerMetrics:
    """One /metrics source for every breaker of a server (each family's lines together)."""

    def __init__(self) -> None:
        self.breakers: list[Breaker] = []

    def __call__(self) -> list[str]:
        lines: list[str] = []
        for family, what in (
            ("errors", "Shared cache operations that failed (served as misses)."),
            ("skipped", "Shared cache operations skipped while the backend was down."),
        ):
            name = f"focal_shared_cache_{family}_total"
            lines += [f"# HELP {name} {what}", f"# TYPE {name} counter"]
            lines += [x for b in self.breakers for x in b.metric_lines() if x.startswith(name)]
        return lines


def register(metrics: Any, breaker: Breaker) -> None:
    """Add a breaker's counters to a server's /metrics (``Metrics.extra``)."""
    for source in metrics.extra:
        if isinstance(source, BreakerMetrics):
            source.breakers.append(breaker)
            return
    source = BreakerMetrics()
    source.breakers.append(breaker)
    metrics.extra.append(source)


# ---- the shared variant cache -------------------------------------------------------------------


class S3VariantCache:
    """The variant cache on object storage, for many instances; methods block (call them from a
    thread), as VariantCache's do. Eviction is the bucket's lifecycle rule (docs/scaling.md)."""

    def __init__(self, prefix: str, stores: Stores, breaker: Breaker | None = None) -> None:
        location = _setting_prefix("cache_s3_prefix", prefix)
        self._store = stores.store(location.bucket)
        self._prefix = (
            location.key if not location.key or location.key.endswith("/") else (location.key + "/")
        )
        self.breaker = breaker or Breaker("variant")
        self._lock = threading.Lock()
        self._hits = self._misses = self._writes = 0

    def path_for(self, key: str) -> str:
        return f"{self._prefix}{key[:2]}/{key}"

    def get(self, key: str) -> Entry | None:
        entry = self._get(key)
        with self._lock:
            if entry is None:
                self._misses += 1
            else:
                self._hits += 1
        return entry

    def _get(self, key: str) -> Entry | None:
        if not self.breaker.allow():
            return None
        import obstore

        try:
            raw = bytes(obstore.get(self._store, self.path_for(key)).bytes())
        except FileNotFoundError:
            self.breaker.succeeded()
            return None
        except Exception as error:
            self.breaker.failed("get", error)
            return None
        self.breaker.succeeded()
        return decode(raw)  # None for an object that is not a whole entry

    def put(self, key: str, meta: Meta, data: bytes) -> None:
        if not self.breaker.allow():
            return
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self._store, self.path_for(key), encode(meta, data), mode="create")
        except (AlreadyExistsError, PreconditionError):
            pass  # another instance wrote the same content first
        except Exception as error:
            self.breaker.failed("put", error)
            return
        else:
            with self._lock:
                self._writes += 1
        self.breaker.succeeded()

    def approx_size(self) -> int:
        return 0  # the bucket's size is the store's to report

    def counts(self) -> tuple[int, int, int]:
        with self._lock:
            return self._hits, self._misses, self._writes


def variant_cache(settings: Any, metrics: Any) -> S3VariantCache:
    """The shared variant cache of a server, its failures counted in ``metrics``."""
    cache = S3VariantCache(settings.cache_s3_prefix, Stores(store_settings(settings)))
    register(metrics, cache.breaker)
    return cache
