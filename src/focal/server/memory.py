"""How the server process gives memory back (glibc malloc; a no-op elsewhere).

An image transformation allocates and frees hundreds of megabytes in pieces of every size, on
many threads. glibc keeps freed memory in per-thread arenas for reuse, so after a burst the
process stays at its peak. Two measures, chosen with benchmarks/experiments/allocator.py
(docs/deployment.md, "Memory"):

- at most two malloc arenas, so freed memory is shared by the threads instead of held per thread;
- when the image threads go idle, ``malloc_trim(0)`` hands the free pages of every arena back;
  so does a failed source fetch (``trim_soon``), which may have read up to max_bytes first.

A fixed mmap threshold (each large buffer its own mapping, unmapped at once when freed) also
gives memory back, but costs every request hundreds of page faults; glibc's adaptive threshold
with the trim does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
import time
from typing import Any

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2
TRIM_INTERVAL_S = 0.5  # at most one trim per interval: a trim walks every arena


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018  (glibc only)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()
_lock = threading.Lock()
_last_trim = 0.0


def tune(arenas: int = ARENAS, mmap_threshold: int = 0) -> bool:
    """Cap the malloc arenas (0: glibc's default) and, if asked, fix the mmap threshold. Must run
    before the process starts its threads. False where there is no glibc."""
    if _LIBC is None:
        return False
    ok = True
    if arenas:
        ok = bool(_LIBC.mallopt(M_ARENA_MAX, arenas)) and ok
    if mmap_threshold:
        ok = bool(_LIBC.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and ok
    return ok


IMAGE_THREAD_NICENESS = 10


def lower_priority(niceness: int = IMAGE_THREAD_NICENESS) -> None:
    """Lower the calling thread's scheduling priority (Linux: niceness is per thread, and the
    threads libvips starts from it inherit it), so the event loop, which answers /healthz and
    hands out work, runs first when image work has every core busy."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def trim(force: bool = False) -> bool:
    """Give free heap pages back to the system (at most once per TRIM_INTERVAL_S unless
    ``force``). True if a trim ran."""
    global _last_trim
    if _LIBC is None:
        return False
    with _lock:
        now = time.monotonic()
        if not force and now - _last_trim < TRIM_INTERVAL_S:
            return False
        _last_trim = now
    _LIBC.malloc_trim(0)
    return True


def trim_soon() -> None:
    """Trim in a thread of the running event loop (a trim of a large heap takes milliseconds,
    not to be spent on the loop), or here when there is no loop. For a request that failed
    after a large allocation (a source read and refused): its memory is free, not yet given
    back."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        trim(force=True)
        return
    loop.run_in_executor(None, functools.partial(trim, True))
