"""The variant cache as the server uses it: one :class:`Variants` over its tiers, in the order a
lookup takes them, as the detection cache does (focal.server.detection.caching):

    memory (HotVariants, memory_cache_mb) ──► store: disk (VariantCache) or object storage
                                              (focal.server.objectstore.S3VariantCache)

A fault of the store (disk full or read-only, its folder gone, the object store down) costs the
cache, never the request: a read fault is a miss, a write fault drops the store; each is counted
(``focal_cache_faults_total``) and logged, a line a minute per kind.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from focal.pipeline import Result
from focal.server import logs, objectstore
from focal.server.cache import Entry, HotVariants, Meta, VariantCache, VariantStore, etag_for
from focal.server.metrics import Metrics
from focal.server.origins import Origin, SourceInfo
from focal.server.settings import Settings

CACHE_FAULTS = logs.Throttled(every_s=60.0)  # one log line a minute per kind of fault
# What a cached variant keeps of its Result, and gives back (a cached result is never degraded).
KEPT = (
    "content_type",
    "format",
    "width",
    "height",
    "gravity_used",
    "negotiated",
    "fallback",
    "source_warning",
)


def meta_for(result: Result, key: str) -> Meta:
    kept = {name: getattr(result, name) for name in KEPT}
    etag = "" if result.degraded else etag_for(key, result.data)
    return Meta(etag=etag, size=len(result.data), **kept)


def result_of(entry: Entry) -> Result:
    kept = {name: getattr(entry.meta, name) for name in KEPT}
    return Result(data=entry.data, degraded=False, **kept)


@dataclass
class Variants:
    """The tiers (``store`` None: no variant cache; ``memory`` None: no memory tier)."""

    store: VariantStore | None
    memory: HotVariants[SourceInfo] | None
    metrics: Metrics
    tier: str  # the store's kind, as cache_backend names it (metrics and logs)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def approx_size(self) -> int:
        return self.store.approx_size() if self.store is not None else 0

    def get(self, key: str) -> Entry | None:
        """From memory, else from the store (blocking), kept in memory if found."""
        entry = self.memory.get(key) if self.memory is not None else None
        return entry if entry is not None else self.stored(key)

    def stored(self, key: str) -> Entry | None:
        """From the store alone (blocking), kept in memory if found; a fault is a miss."""
        if self.store is None:
            return None
        try:
            entry = self.store.get(key)
        except Exception as error:  # any tier's fault: a miss
            self.fault("read", error)
            return None
        if entry is not None and self.memory is not None:
            self.memory.put(key, entry)
        return entry

    async def lookup(self, key: str) -> Entry | None:
        """:meth:`get`, on the event loop when memory has it, else in a thread."""
        entry = self.memory.get(key) if self.memory is not None else None
        return entry if entry is not None else await run_in_threadpool(self.stored, key)

    def put(self, key: str, entry: Entry, memory: bool = True) -> None:
        """Store a variant (blocking), and with ``memory`` keep it in memory too; a fault of the
        store never fails the request."""
        if self.store is None:
            return
        try:
            self.store.put(key, entry.meta, entry.data)
        except Exception as error:  # any tier's fault: the variant is served all the same
            self.fault("write", error)
        if memory and self.memory is not None:
            self.memory.put(key, entry)

    async def find(
        self, origin: Origin | None, source: str, key_of: Callable[[str], str]
    ) -> tuple[SourceInfo | None, Entry | None]:
        """The source's identity from its metadata and, if a variant of it is cached (under
        ``key_of(identity)``), that variant, without reading the source; (None, None) when the
        origin tells the identity only by reading it. A local file takes one trip to a thread
        (open and fstat of the source, then the store: what a cached answer costs is mostly such
        trips), none when asked again within SOURCE_RECHECK_S with the variant in memory; other
        origins identify first (an s3 HEAD), then look up."""
        if self.store is None or origin is None:
            return None, None
        memory = self.memory
        known = memory.source(source) if memory is not None else None
        if memory is not None and known is not None:
            entry = memory.get(key_of(known.identity))
            if entry is not None:
                return known, entry

        def identify_and_get() -> tuple[SourceInfo | None, Entry | None]:
            info = origin.identify_now(source)
            return (None, None) if info is None else (info, self.get(key_of(info.identity)))

        known, entry = await run_in_threadpool(identify_and_get)
        if known is not None:
            if memory is not None:
                memory.remember_source(source, known)
            return known, entry
        known = await origin.identify(source)
        if known is None:
            return None, None
        return known, await self.lookup(key_of(known.identity))

    def fault(self, operation: str, error: Exception) -> None:
        """A tier failed: the request goes on without it; counted and logged, a line a minute."""
        code = error.errno if isinstance(error, OSError) else None
        reason = errno.errorcode.get(code, "") if code is not None else ""
        reason = reason or type(error).__name__
        self.metrics.record_cache_fault(self.tier, operation, reason)
        CACHE_FAULTS.event(
            f"{self.tier}:{operation}:{reason}",
            "variant cache unavailable: served without it",
            {"tier": self.tier, "operation": operation, "reason": reason}
            | {"detail": str(error)[:300]},
        )


def build_variants(settings: Settings, metrics: Metrics) -> Variants:
    store: VariantStore | None = None
    if settings.cache_enabled and settings.cache_backend == "s3":  # shared by every instance
        store = objectstore.variant_cache(settings, metrics)
    elif settings.cache_enabled:
        store = VariantCache(
            settings.cache_dir.expanduser(),
            settings.cache_max_mb << 20,
            min_free_bytes=settings.cache_min_free_mb << 20,
        )
    memory: HotVariants[SourceInfo] | None = None
    if store is not None and settings.memory_cache_mb > 0:
        memory = HotVariants(settings.memory_cache_mb << 20)
    return Variants(store, memory, metrics, settings.cache_backend)
