"""The overlay images of ``draw``, for ``focal serve``: fetched through the server's own origins
(the fetch of the source itself, with every check it makes: the local root, the allowed remote
prefixes and addresses, the byte limit), kept in a small cache in this process, and named in
every error.

An overlay fetched once is reused while it is unchanged: a local file's identity (path, mtime,
size) is read again at most every ``recheck_s`` (an open and an fstat), an object store's by its
metadata; an http(s) overlay, whose identity is only known by reading it, is fetched again after
``remote_ttl_s``. The cache holds at most ``max_bytes`` of overlay bytes (least recently used out
first). The identities of a request's overlays go into its variant's cache key, so a changed
overlay makes a new variant.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from focal.errors import FocalError
from focal.options import Overlay
from focal.pipeline import overlay_error

RECHECK_S = 1.0
REMOTE_TTL_S = 60.0
MAX_BYTES = 32 << 20


class Fetched(Protocol):
    @property
    def data(self) -> bytes: ...
    @property
    def identity(self) -> str: ...


Fetch = Callable[[str], Awaitable[Fetched]]
Identify = Callable[[str], Awaitable[str | None]]  # None: only a fetch tells


@dataclass(frozen=True)
class Loaded:
    data: bytes
    identity: str


@dataclass(frozen=True)
class _Entry:
    loaded: Loaded
    checked: float  # when its identity was last confirmed
    fetched: float
    identifiable: bool  # its identity can be read without its bytes (a file, an object)


class OverlayCache:
    """Overlays by url (thread-safe; awaited on the event loop)."""

    def __init__(
        self,
        max_bytes: int = MAX_BYTES,
        recheck_s: float = RECHECK_S,
        remote_ttl_s: float = REMOTE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self._recheck_s = recheck_s
        self._remote_ttl_s = remote_ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    async def load(self, url: str, fetch: Fetch, identify: Identify) -> Loaded:
        entry = self._get(url)
        now = self._clock()
        if entry is not None:
            if now - entry.checked < self._recheck_s:
                return entry.loaded
            if not entry.identifiable and now - entry.fetched < self._remote_ttl_s:
                return entry.loaded
            identity = await identify(url) if entry.identifiable else None
            if identity is not None and identity == entry.loaded.identity:
                self._put(url, _Entry(entry.loaded, now, entry.fetched, True))
                return entry.loaded
        identifiable = entry.identifiable if entry is not None else await identify(url) is not None
        source = await fetch(url)
        loaded = Loaded(source.data, source.identity)
        self._put(url, _Entry(loaded, self._clock(), self._clock(), identifiable))
        return loaded

    def _get(self, url: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(url)
            if entry is not None:
                self._entries.move_to_end(url)
            return entry

    def _put(self, url: str, entry: _Entry) -> None:
        size = len(entry.loaded.data)
        if size > self.max_bytes // 4:  # one overlay never takes more than a quarter
            return
        with self._lock:
            old = self._entries.pop(url, None)
            if old is not None:
                self._bytes -= len(old.loaded.data)
            self._entries[url] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted.loaded.data)


async def load_all(
    cache: OverlayCache, draw: tuple[Overlay, ...], fetch: Fetch, identify: Identify
) -> dict[str, Loaded]:
    """Every overlay url of ``draw`` (each once), in order; an error names the overlay."""
    loaded: dict[str, Loaded] = {}
    for index, spec in enumerate(draw):
        if spec.url in loaded:
            continue
        try:
            loaded[spec.url] = await cache.load(spec.url, fetch, identify)
        except FocalError as error:
            raise overlay_error(error, index, spec.url) from None
    return loaded


def key_part(loaded: dict[str, Loaded]) -> str:
    """What a variant's cache key adds for its overlays: a digest of their identities."""
    text = "\n".join(f"{url}\t{item.identity}" for url, item in loaded.items())
    return ",draw-sources=" + hashlib.sha256(text.encode()).hexdigest()[:32]
