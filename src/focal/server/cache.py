"""Disk cache of transformed variants, safe to share between processes.

One file per variant, ``<dir>/<key[:2]>/<key>``: a magic, the metadata length, the metadata as
JSON, then the bytes. A file is written to a temporary name in the same folder and moved into place
with ``os.replace``, so a reader sees a whole file or none. A hit sets the file's mtime to now (when
it is over a minute old: one write per minute per entry at most);
eviction removes the files with the oldest mtime (least recently used) until the total is under
the bound, and also when the file system's free space would fall under ``min_free_bytes`` (the
bound may be larger than the disk: the disk's real free space is read with statvfs before each
write). A write that finds no room is refused with ENOSPC before it starts. Every step tolerates
another process deleting the same files; the server turns any fault of this tier into a miss
(focal.server.variants).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from focal.files import write_atomic

MAGIC = b"FCV1"
HEADER = struct.Struct(">4sI")
MAX_META = 64 * 1024
KEY_VERSION = "focal-variant-1"
TMP_PREFIX = ".tmp-"
STALE_TMP_S = 3600.0
TOUCH_AFTER_S = 60.0  # a hit sets the mtime only when it is older: one write per minute at most
EVICT_TO = 0.9  # after an eviction, the total is at most this share of the bound
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass(frozen=True)
class Meta:
    content_type: str
    format: str
    width: int
    height: int
    gravity_used: str
    etag: str
    negotiated: bool
    size: int
    fallback: str | None = None  # why gravity=face was not used (no face found)
    source_warning: str | None = None  # the source was damaged and served as far as it decodes


@dataclass(frozen=True)
class Entry:
    meta: Meta
    data: bytes


def variant_key(identity: str, options: str, accept: str, model_id: str) -> str:
    """sha256 over the source identity, the normalised options, the Accept class the format is
    negotiated from, and the detector model (empty when no detection is involved)."""
    parts = (KEY_VERSION, identity, options, accept, model_id)
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def etag_for(key: str, data: bytes) -> str:
    digest = hashlib.sha256(key.encode("ascii") + hashlib.sha256(data).digest()).hexdigest()
    return f'"{digest[:40]}"'


def encode(meta: Meta, data: bytes) -> bytes:
    blob = json.dumps(asdict(meta), separators=(",", ":")).encode("utf-8")
    return HEADER.pack(MAGIC, len(blob)) + blob + data


def decode(raw: bytes) -> Entry | None:
    """The entry, or None when the file is not a whole, valid entry."""
    if len(raw) < HEADER.size:
        return None
    magic, length = HEADER.unpack_from(raw)
    if magic != MAGIC or length > MAX_META or len(raw) < HEADER.size + length:
        return None
    try:
        meta = Meta(**json.loads(raw[HEADER.size : HEADER.size + length]))
    except (ValueError, TypeError):
        return None
    data = raw[HEADER.size + length :]
    return Entry(meta, data) if len(data) == meta.size else None


class VariantStore(Protocol):
    """What the server needs of a variant cache: VariantCache (disk, this instance) or
    focal.server.objectstore.S3VariantCache (object storage, shared). Methods block."""

    def get(self, key: str) -> Entry | None: ...
    def put(self, key: str, meta: Meta, data: bytes) -> None: ...
    def approx_size(self) -> int: ...


@dataclass(frozen=True)
class Stats:
    hits: int
    misses: int
    writes: int
    evictions: int


def free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use on ``directory``'s file system (None: unknown,
    e.g. the folder is gone)."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


class VariantCache:
    """Bounded LRU disk cache. Methods block (disk I/O): call them from a thread. ``put`` raises
    OSError when the disk refuses (full, read-only, the folder replaced by a file): the caller
    serves on without the cache."""

    def __init__(self, directory: Path, max_bytes: int, min_free_bytes: int = 0) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        with contextlib.suppress(OSError):  # a read-only or missing disk: put says so later
            self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._approx_total = self.total_size()
        self._hits = self._misses = self._writes = self._evictions = 0

    def path_for(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def get(self, key: str) -> Entry | None:
        path = self.path_for(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._count(hit=False)
            return None
        try:
            info = os.fstat(fd)
            raw = _read_all(fd, info.st_size)
            if time.time() - info.st_mtime > TOUCH_AFTER_S:
                with contextlib.suppress(OSError):
                    os.utime(fd)  # mtime = last use, to a minute: eviction's order
        except OSError:
            self._count(hit=False)
            return None
        finally:
            os.close(fd)
        entry = decode(raw)
        if entry is None:
            _unlink(path)
            self._count(hit=False)
            return None
        self._count(hit=True)
        return entry

    def put(self, key: str, meta: Meta, data: bytes) -> None:
        path = self.path_for(key)
        blob = encode(meta, data)
        self._make_room(len(blob))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, blob, temp_prefix=f"{TMP_PREFIX}{os.getpid()}-")
        except OSError as error:
            if error.errno in NO_SPACE:  # the disk filled from elsewhere: give some back
                self.evict(need_free=self.min_free_bytes + len(blob))
            raise
        with self._lock:
            self._writes += 1
            self._approx_total += len(blob)
            over = self._approx_total > self.max_bytes
        if over:
            self.evict()

    def _make_room(self, size: int) -> None:
        """Evict until writing ``size`` bytes leaves ``min_free_bytes`` free on the disk, or
        raise ENOSPC (nothing written) when even an empty cache would not leave that much."""
        free = free_bytes(self.directory)
        if free is None or free - size >= self.min_free_bytes:
            return
        self.evict(need_free=self.min_free_bytes + size - free)
        free = free_bytes(self.directory)
        if free is not None and free - size < self.min_free_bytes:
            raise OSError(
                errno.ENOSPC,
                f"{free} bytes free on the cache's disk, {self.min_free_bytes} kept free "
                "(cache_min_free_mb)",
                str(self.directory),
            )

    def evict(self, need_free: int = 0) -> int:
        """Remove least recently used files until the total is under the bound and at least
        ``need_free`` bytes were removed. Returns bytes removed. The total is re-read from disk,
        so other processes' writes are counted."""
        files = sorted(self._scan(), key=lambda f: f[1])
        total = sum(size for _, _, size in files)
        target = int(self.max_bytes * EVICT_TO) if total > self.max_bytes else total
        if need_free > 0:
            target = min(target, int((total - need_free) * EVICT_TO))
        removed = 0
        for path, _, size in files:
            if total - removed <= target:
                break
            if _unlink(path):
                removed += size
                with self._lock:
                    self._evictions += 1
        with self._lock:
            self._approx_total = total - removed
        return removed

    def total_size(self) -> int:
        return sum(size for _, _, size in self._scan())

    def approx_size(self) -> int:
        """Bytes written by this process since the last scan, plus what that scan found."""
        with self._lock:
            return self._approx_total

    def stats(self) -> Stats:
        with self._lock:
            return Stats(self._hits, self._misses, self._writes, self._evictions)

    def _count(self, *, hit: bool) -> None:
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1

    def _scan(self) -> Iterator[tuple[Path, float, int]]:
        """(path, mtime, size) of every entry; stale temporary files are removed on the way."""
        now = time.time()
        for sub in _entries(self.directory):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for item in _entries(Path(sub.path)):
                try:
                    info = item.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed meanwhile
                if item.name.startswith(TMP_PREFIX):
                    if now - info.st_mtime > STALE_TMP_S:
                        _unlink(Path(item.path))
                    continue
                yield Path(item.path), info.st_mtime, info.st_size


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:
        return []


def _read_all(fd: int, size: int) -> bytes:
    """The whole file behind ``fd`` (``size`` from its fstat; read on past it if it grew)."""
    chunks = [os.read(fd, max(size, 1))]
    while chunks[-1]:
        chunks.append(os.read(fd, 1 << 20))
    return b"".join(chunks)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True


SOURCE_RECHECK_S = 1.0  # a local source's identity is read again at most this often


Info = TypeVar("Info")


class HotVariants(Generic[Info]):
    """The most recently used variants, in this process's memory, and the identities of the
    local sources they came from: a variant asked again is answered on the event loop, with no
    trip to a thread or the disk. Bounded by ``max_bytes`` of variant bytes (least recently used
    first out); a source's identity is trusted for SOURCE_RECHECK_S after it was read, so a
    replaced source is noticed within that time (the disk tier notices it at once). Thread-safe."""

    def __init__(
        self, max_bytes: int, max_sources: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._max_sources = max_sources
        self._variants: OrderedDict[str, Entry] = OrderedDict()
        self._sources: OrderedDict[str, tuple[Info, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Entry | None:
        with self._lock:
            entry = self._variants.get(key)
            if entry is not None:
                self._variants.move_to_end(key)
            return entry

    def put(self, key: str, entry: Entry) -> None:
        size = len(entry.data)
        if size > self.max_bytes // 8:  # one variant never takes more than an eighth
            return
        with self._lock:
            old = self._variants.pop(key, None)
            if old is not None:
                self._bytes -= len(old.data)
            self._variants[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._variants.popitem(last=False)
                self._bytes -= len(evicted.data)

    def source(self, name: str) -> Info | None:
        """The identity remembered for a source, if read within SOURCE_RECHECK_S."""
        with self._lock:
            found = self._sources.get(name)
        if found is None or self._clock() - found[1] > SOURCE_RECHECK_S:
            return None
        return found[0]

    def remember_source(self, name: str, info: Info) -> None:
        with self._lock:
            self._sources[name] = (info, self._clock())
            self._sources.move_to_end(name)
            while len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)

    def __len__(self) -> int:
        return len(self._variants)

    @property
    def size(self) -> int:
        return self._bytes
