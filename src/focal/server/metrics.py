"""Prometheus text exposition (format 0.0.4), without a client library.

Counters and histograms live in one :class:`Metrics` object per server process; gauges (detector
queue, restarts, RSS) are read when /metrics is scraped. With ``workers`` > 1 every worker also
publishes its exposition to a folder of the supervisor's (:class:`SharedMetrics`), and the worker
that answers a scrape adds the others' to its own (:func:`merge`), so that one scrape counts the
requests of every worker.

Counters never go backwards from one scrape to the next, whichever worker answers each: the worker
that answers a scrape publishes what it shows of itself before it answers, so that a later scrape
answered by another worker (or after this one is killed) reads at least as much of it; and a
worker publishes within PUBLISH_AFTER_S of a request counted, so a killed worker loses at most
that much of counts no scrape has shown.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from focal.geometry import FACES_CANNOT_MOVE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STAGES = ("fetch", "decode", "detect", "process", "encode", "total")
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Gauges:
    """Values read at scrape time."""

    detector_queue_depth: int = 0
    detector_restarts: int = 0
    detector_worker_rss_bytes: int = 0
    detector_batches: int = 0
    detector_detections: int = 0
    cache_bytes: int = 0
    image_jobs_waiting: int = 0


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS_S)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum += seconds
        for i, bound in enumerate(BUCKETS_S):
            if seconds <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{bound}"}} {count}'
            for bound, count in zip(BUCKETS_S, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        out.append(f"{name}_sum{{{labels}}} {self.sum:.6f}")
        out.append(f"{name}_count{{{labels}}} {self.total}")
        return out


class LoopLag:
    """How late the event loop wakes up: every ``interval_s`` a sleep is timed and its overshoot
    observed. The loop answers /healthz and hands out all work, so a long lag here is a server
    that cannot answer, whatever the cause (a blocking call on the loop, the GIL held elsewhere,
    no CPU for the process); a slow answer without one was lost outside the loop."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.histogram = Histogram()
        self.max_s = 0.0
        self._lock = threading.Lock()

    def observe(self, lag_s: float) -> None:
        with self._lock:
            self.histogram.observe(lag_s)
            self.max_s = max(self.max_s, lag_s)

    async def watch(self) -> None:
        """Observe until cancelled (a task of the server's lifespan)."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.observe(max(0.0, time.perf_counter() - started - self.interval_s))

    def lines(self) -> Iterable[str]:
        with self._lock:
            body = self.histogram.lines("focal_event_loop_lag_seconds", "")
            peak = self.max_s
        yield "# HELP focal_event_loop_lag_seconds How late the event loop woke from a timed sleep."
        yield "# TYPE focal_event_loop_lag_seconds histogram"
        yield from body
        yield "# HELP focal_event_loop_lag_max_seconds The longest event loop lag since start."
        yield "# TYPE focal_event_loop_lag_max_seconds gauge"
        yield f"focal_event_loop_lag_max_seconds {peak:.6f}"


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[int, int] = {}
        self.stages: dict[str, Histogram] = {stage: Histogram() for stage in STAGES}
        self.cache: dict[str, int] = {"hit": 0, "miss": 0, "bypass": 0}
        self.fallbacks = 0
        self.undetected = 0  # face crops no face could move: answered without detection
        self.changes = 0  # counted events so far: a worker publishes when it moves
        self.cache_faults: dict[tuple[str, str, str], int] = {}  # (tier, operation, reason)
        self.loop_lag = LoopLag()
        # more families: the event loop's lag, the shared caches
        self.extra: list[Callable[[], Iterable[str]]] = [self.loop_lag.lines]

    def record(self, status: int, timings_ms: Mapping[str, float], cache: str | None) -> None:
        with self._lock:
            self.changes += 1
            self.requests[status] = self.requests.get(status, 0) + 1
            for stage, ms in timings_ms.items():
                if stage in self.stages:
                    self.stages[stage].observe(ms / 1000)
            if cache in self.cache:
                self.cache[cache] += 1

    def changes_now(self) -> int:
        return self.changes

    def record_cache_fault(self, tier: str, operation: str, reason: str) -> None:
        key = (tier, operation, reason)
        with self._lock:
            self.cache_faults[key] = self.cache_faults.get(key, 0) + 1

    def record_face_crop(self, fallback: str | None) -> None:
        """A gravity=face answer: a fallback, or a crop no face could move (not a fallback: the
        same crop any faces give), or neither."""
        with self._lock:
            if fallback == FACES_CANNOT_MOVE:
                self.undetected += 1
            elif fallback:
                self.fallbacks += 1

    def render(self, gauges: Gauges) -> str:
        with self._lock:
            lines = list(self._counters()) + list(self._histograms())
        lines += list(_gauges(gauges))
        for source in self.extra:
            lines += list(source())
        return "\n".join(lines) + "\n"

    def _counters(self) -> Iterable[str]:
        yield "# HELP focal_requests_total Image and service requests by HTTP status."
        yield "# TYPE focal_requests_total counter"
        for status in sorted(self.requests):
            yield f'focal_requests_total{{status="{status}"}} {self.requests[status]}'
        yield "# HELP focal_cache_requests_total Variant cache lookups by result."
        yield "# TYPE focal_cache_requests_total counter"
        for result, count in self.cache.items():
            yield f'focal_cache_requests_total{{result="{result}"}} {count}'
        yield "# HELP focal_face_fallbacks_total gravity=face requests served with a fallback."
        yield "# TYPE focal_face_fallbacks_total counter"
        yield f"focal_face_fallbacks_total {self.fallbacks}"
        yield (
            "# HELP focal_face_crops_undetected_total gravity=face crops that no face could "
            "move (the crop is the whole image), served without detection."
        )
        yield "# TYPE focal_face_crops_undetected_total counter"
        yield f"focal_face_crops_undetected_total {self.undetected}"
        yield (
            "# HELP focal_cache_faults_total Variant cache reads and writes that failed "
            "(served without the cache)."
        )
        yield "# TYPE focal_cache_faults_total counter"
        for (tier, operation, reason), count in sorted(self.cache_faults.items()):
            labels = f'tier="{tier}",operation="{operation}",reason="{reason}"'
            yield f"focal_cache_faults_total{{{labels}}} {count}"

    def _histograms(self) -> Iterable[str]:
        yield "# HELP focal_stage_seconds Time per request stage."
        yield "# TYPE focal_stage_seconds histogram"
        for stage, histogram in self.stages.items():
            yield from histogram.lines("focal_stage_seconds", f'stage="{stage}"')


def _gauge(name: str, kind: str, help: str, value: int) -> Iterable[str]:
    yield f"# HELP {name} {help}"
    yield f"# TYPE {name} {kind}"
    yield f"{name} {value}"


def _gauges(g: Gauges) -> Iterable[str]:
    yield from _gauge("focal_process_resident_memory_bytes", "gauge", "Server RSS.", rss_bytes())
    yield from _gauge(
        "focal_detector_queue_depth",
        "gauge",
        "Images waiting for detection.",
        g.detector_queue_depth,
    )
    yield from _gauge(
        "focal_detector_restarts_total", "counter", "Detector restarts.", g.detector_restarts
    )
    yield from _gauge(
        "focal_detector_worker_rss_bytes",
        "gauge",
        "Detector processes' RSS.",
        g.detector_worker_rss_bytes,
    )
    yield from _gauge("focal_detector_batches_total", "counter", "Batches.", g.detector_batches)
    yield from _gauge(
        "focal_detector_detections_total", "counter", "Images detected.", g.detector_detections
    )
    yield from _gauge("focal_cache_bytes", "gauge", "Variant cache size.", g.cache_bytes)
    yield from _gauge(
        "focal_image_jobs_waiting", "gauge", "Requests waiting for a thread.", g.image_jobs_waiting
    )


# ---- several workers, one scrape ----------------------------------------------------------

SHARE_INTERVAL_S = 1.0  # how often a worker publishes its exposition for the others
PUBLISH_AFTER_S = 0.1  # and at most this long after a request it counted
STALE_AFTER_S = 5.0  # a snapshot older than this is a worker that has exited
# the same in every worker, the host's own: its detector pool's families and the variant cache's
# size (not the detector service's client: with detector_url each worker has its own)
HOST_WIDE = (
    "focal_detector_queue_depth",
    "focal_detector_restarts_total",
    "focal_detector_worker_rss_bytes",
    "focal_detector_batches_total",
    "focal_detector_detections_total",
    "focal_cache_bytes",
)
PEAKS = ("focal_event_loop_lag_max_seconds",)  # the largest, not the sum
LOWEST = ("focal_detector_service_up",)  # 1 only where every live worker reaches the service


@dataclass
class Family:
    """One metric family of an exposition: its HELP and TYPE lines and its samples in order."""

    name: str
    kind: str = "untyped"
    header: list[str] = field(default_factory=list)
    samples: dict[str, str] = field(default_factory=dict)  # "name{labels}" -> value


def parse(text: str) -> dict[str, Family]:
    """The families of an exposition as :meth:`Metrics.render` writes it, in order."""
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            words = line.split(" ", 3)
            current = families.setdefault(words[2], Family(words[2]))
            current.header.append(line)
            if words[1] == "TYPE":
                current.kind = words[3].strip()
        elif line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            base = key.split("{", 1)[0]
            if current is None or not base.startswith(current.name):
                current = families.setdefault(base, Family(base))
            current.samples[key] = value
    return families


def _combined(mine: str, theirs: str, name: str) -> str:
    a, b = float(mine), float(theirs)
    value = max(a, b) if name in PEAKS else min(a, b) if name in LOWEST else a + b
    if all(c.isdigit() or c == "-" for c in mine + theirs) and math.isfinite(value):
        return str(int(value))
    return f"{value:.6f}"


def merge(own: str, others: Sequence[tuple[str, bool]]) -> str:
    """This worker's exposition with the other workers' added: counters and histograms summed
    over every snapshot (those of exited workers too, so that totals never go down), gauges over
    the live ones only (``(text, live)``), peaks as the largest, the service's reachability as
    the lowest; the host-wide families (the detector pool's, the variant cache's size: every
    worker reads the same) stay this worker's."""
    merged = parse(own)
    for text, live in others:
        for name, family in parse(text).items():
            if name in HOST_WIDE or (family.kind == "gauge" and not live):
                continue
            mine = merged.setdefault(name, Family(name, family.kind, family.header))
            for key, value in family.samples.items():
                known = mine.samples.get(key)
                mine.samples[key] = value if known is None else _combined(known, value, name)
    lines: list[str] = []
    for family in merged.values():
        lines += family.header
        lines += [f"{key} {value}" for key, value in family.samples.items()]
    return "\n".join(lines) + "\n"


class SharedMetrics:
    """One worker's place in the supervisor's metrics folder: it publishes its own exposition
    there (a file per worker process, replaced atomically) and reads the others'."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # pid and a random part: a later worker that gets a recycled pid keeps its own file
        self.path = folder / f"worker-{os.getpid()}-{secrets.token_hex(4)}.prom"
        self._lock = threading.Lock()  # one writer of the file at a time, in the order rendered

    def publish(self, text: str) -> None:
        with self._lock:
            self._write(text)

    def publish_current(self, render: Callable[[], str]) -> str:
        """Render and publish under one lock, so the file never goes back to an older render
        than one already published; the text published."""
        with self._lock:
            text = render()
            self._write(text)
        return text

    def _write(self, text: str) -> None:
        temporary = self.folder / f".{self.path.name}.tmp"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path)

    def others(self) -> list[tuple[str, bool]]:
        """Every other worker's last exposition, and whether that worker is still publishing."""
        now = time.time()
        found = []
        for path in sorted(self.folder.glob("worker-*.prom")):
            if path == self.path:
                continue
            try:
                text, written = path.read_text(encoding="utf-8"), path.stat().st_mtime
            except OSError:  # replaced or removed while being read: next scrape
                continue
            found.append((text, now - written <= STALE_AFTER_S))
        return found

    async def keep_publishing(
        self, render: Callable[[], str], changes: Callable[[], int] = lambda: 0
    ) -> None:
        """Publish ``render()`` within PUBLISH_AFTER_S of ``changes()`` moving, and at least every
        SHARE_INTERVAL_S (the others tell a live worker by its file's age), until cancelled."""
        import anyio.to_thread

        published, last = None, 0.0
        while True:
            now, seen = time.monotonic(), changes()
            if seen != published or now - last >= SHARE_INTERVAL_S:
                await anyio.to_thread.run_sync(self.publish_current, render)
                published, last = seen, now
            await asyncio.sleep(PUBLISH_AFTER_S)
