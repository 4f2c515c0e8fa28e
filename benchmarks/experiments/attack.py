"""Hostile files against a real ``focal serve`` on loopback, default settings.

For every file of :func:`benchmarks.hostile.family` (canvas and frame bombs in GIF, WebP, APNG
and TIFF, header lies, truncations), one at a time and then four at once: the status, the time,
the server's peak RSS while it ran, and its RSS 10 s later (against its RSS before). Then 60 s of
16 concurrent mixed requests (real photos and the hostile files). Throughout, /healthz is asked
every 50 ms and its slowest answer is reported.

Families (``--family``, repeatable; default all): ``files`` (the above, attack.json);
``encodings`` and ``drip``, from a hostile origin of this script's own on 127.0.0.1 that focal
is allowed to fetch from (gzip inside gzip, deflate, br, an unknown coding; a body a byte every
2 s); ``sockets``, 1,100 connections that never finish a request (silent, half a request line,
a head a byte a second) against focal started with a soft open-file limit of 1,024 and a hard
one of 524,288, /healthz asked on a fresh connection every 50 ms; ``heads``, request heads past
the limits (300 MiB of headers, a 200 MiB URL, 100,000 headers) under the same file limit. The
last four are saved in attack_front.json. ``disk``: the variant cache's disk full (a 4 MiB tmpfs
filled to ENOSPC), read-only, removed or replaced under a running server, every uncached request
still answered 200; ``redaction``: every path by which a request that asks for redaction might
yield the original or a face (onerror=redirect, format=json, the playground, presets, the cache, a
signed URL; the detector down, and the lowest redact-strength). Everything goes to 127.0.0.1
only.

    .venv/bin/python benchmarks/experiments/attack.py       # writes benchmarks/results/attack*.json
    .venv/bin/python benchmarks/experiments/attack.py --family sockets --family heads
    .venv/bin/python benchmarks/experiments/attack.py --markdown   # tables for docs/deployment.md
    .venv/bin/python benchmarks/experiments/attack.py --quick      # a short smoke run (tests)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gzip
import http.server
import json
import os
import random
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers

import harness
import hostile

MIB = 1024 * 1024
SETTLE_S = 10.0
LOAD_NICENESS = 10
PHOTOS = ("astronaut.jpg", "coffee.jpg", "grace_hopper.jpg", "chelsea.jpg", "logo.png")
MIXED_OPTIONS = (
    "width=256",
    "width=300,height=300,fit=cover,gravity=face,zoom=0.5",
    "width=400,format=webp",
    "width=200,height=200,fit=cover,gravity=auto",
    "width=512,blur=5",
)


@dataclass
class Probe:
    """Asks /healthz every ``every`` s, from a process of its own at normal priority (this one,
    which generates the load, runs at a lower one: on a real deployment the load comes from
    other machines), and samples the server's RSS every few ms."""

    base: str
    pid: int
    every: float = 0.05
    fresh: bool = False  # a new connection for every probe (each needs a server descriptor)
    health_ms: list[float] = field(default_factory=list)
    oks: list[bool] = field(default_factory=list)
    failures: int = 0
    peak: int = 0
    niceness: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _child: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [sys.executable, __file__, "--probe", self.base, "--probe-every", str(self.every)]
        command += ["--probe-fresh"] if self.fresh else []
        self._child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.niceness = os.getpriority(os.PRIO_PROCESS, self._child.pid)
        threading.Thread(target=self._rss, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._child is not None:
            self._child.terminate()
            out, _ = self._child.communicate(timeout=30)
            for line in out.split():
                ms, ok = line.split(",")
                self.health_ms.append(float(ms))
                self.oks.append(ok == "1")
                self.failures += 0 if ok == "1" else 1

    def reset_peak(self) -> None:
        self.peak = harness.rss_bytes(self.pid)

    def _rss(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, harness.rss_bytes(self.pid))
            self._stop.wait(0.01)


def probe_forever(base: str, every: float, fresh: bool = False) -> int:
    """The probe process: one line ``ms,ok`` per /healthz request, until terminated; ``fresh``:
    each on a new connection, with a 1 s timeout."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with httpx.Client(timeout=10) as client:
        while True:
            started = time.perf_counter()
            try:
                if fresh:
                    ok = fresh_healthz(base)
                else:
                    ok = client.get(base + "/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            print(f"{(time.perf_counter() - started) * 1000:.2f},{int(ok)}", flush=True)
            time.sleep(every)


def fresh_healthz(base: str) -> bool:
    """/healthz on a new connection (a plain socket: no client set-up in the time), 1 s at most;
    whether it answered 200."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def lower_priority(niceness: int) -> None:
    """Lower the calling thread's priority only (Linux niceness is per thread). The probe
    processes are started from the main thread, which keeps normal priority, so they do too."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def request(base: str, name: str, options: str) -> tuple[int, float, str]:
    started = time.perf_counter()
    try:
        r = httpx.get(f"{base}/cdn-cgi/image/{options}/{name}", timeout=120)
        status, detail = r.status_code, ""
        if r.headers.get("content-type", "").startswith("application/json") and status >= 400:
            detail = str(r.json().get("error", ""))[:120]
        elif r.headers.get("focal-source-warning"):
            detail = "served with Focal-Source-Warning"
    except httpx.HTTPError as error:
        status, detail = 0, type(error).__name__
    return status, (time.perf_counter() - started) * 1000, detail


def settle(pid: int, start_rss: int, limit_s: float) -> tuple[int, float]:
    """(RSS after ``limit_s``, seconds until it was within 50 MiB of ``start_rss``; -1: never)."""
    began = time.monotonic()
    back = -1.0
    while time.monotonic() - began < limit_s:
        if back < 0 and harness.rss_bytes(pid) <= start_rss + 50 * MIB:
            back = time.monotonic() - began
        time.sleep(0.1)
    return harness.rss_bytes(pid), back


def one_at_a_time(
    server: harness.Server, probe: Probe, files: Sequence[hostile.Hostile]
) -> list[dict[str, Any]]:
    rows = []
    for item in files:
        before = harness.rss_bytes(server.pid)
        probe.reset_peak()
        status, ms, detail = request(server.base, item.name, item.options)
        peak = probe.peak
        after, back = settle(server.pid, before, SETTLE_S)
        rows.append(
            {
                "file": item.name,
                "options": item.options,
                "status": status,
                "ms": round(ms, 1),
                "rss_before_mib": round(before / MIB, 1),
                "rss_peak_mib": round(peak / MIB, 1),
                "rss_10s_mib": round(after / MIB, 1),
                "back_within_50mib_s": round(back, 2),
                "detail": detail,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def four_at_once(
    server: harness.Server, probe: Probe, files: Sequence[hostile.Hostile]
) -> list[dict[str, Any]]:
    rows = []
    heavy = [f for f in files if any(w in f.name for w in ("canvas", "screen", "anim", "budget"))]
    for item in heavy:
        before = harness.rss_bytes(server.pid)
        probe.reset_peak()
        with concurrent.futures.ThreadPoolExecutor(
            4, initializer=lower_priority, initargs=(LOAD_NICENESS,)
        ) as pool:
            # four different variants (qualities), so that none is answered from the cache
            futures = [
                pool.submit(request, server.base, item.name, f"{item.options},quality={80 + i}")
                for i in range(4)
            ]
            results = [future.result() for future in futures]
        peak = probe.peak
        after, back = settle(server.pid, before, SETTLE_S)
        rows.append(
            {
                "file": item.name + " x4",
                "options": item.options,
                "status": "/".join(str(r[0]) for r in results),
                "ms": round(max(r[1] for r in results), 1),
                "rss_before_mib": round(before / MIB, 1),
                "rss_peak_mib": round(peak / MIB, 1),
                "rss_10s_mib": round(after / MIB, 1),
                "back_within_50mib_s": round(back, 2),
                "detail": results[0][2],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def mixed_load(
    server: harness.Server, files: Sequence[hostile.Hostile], seconds: float, clients: int
) -> dict[str, Any]:
    jobs = [(p, o) for p in PHOTOS for o in MIXED_OPTIONS] + [(f.name, f.options) for f in files]
    deadline = time.monotonic() + seconds
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def client(seed: int) -> None:
        chooser = random.Random(seed)
        while time.monotonic() < deadline:
            name, options = chooser.choice(jobs)
            # a fresh variant every time (no cache hit): a quality nobody else asks for
            options += f",quality={chooser.randint(40, 95)}"
            status, _, _ = request(server.base, name, options)
            with lock:
                statuses[str(status)] = statuses.get(str(status), 0) + 1

    with concurrent.futures.ThreadPoolExecutor(
        clients, initializer=lower_priority, initargs=(LOAD_NICENESS,)
    ) as pool:
        list(pool.map(client, range(clients)))
    return {"seconds": seconds, "clients": clients, "statuses": dict(sorted(statuses.items()))}


def loop_lag(base: str) -> dict[str, float]:
    """The server's event loop lag histogram from /metrics: samples, and how many were past
    each bound (cumulative buckets turned into counts over)."""
    text = httpx.get(base + "/metrics", timeout=30).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("focal_event_loop_lag_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            values[bound] = float(line.split()[-1])
    total = values.get("+Inf", 0.0)
    return {"samples": total} | {f"over_{b}": total - values.get(b, total) for b in ("0.05", "0.1")}


def lag_during(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def health_summary(probe: Probe) -> dict[str, Any]:
    values = probe.health_ms or [0.0]
    return {
        "probes": len(probe.health_ms),
        "failures": probe.failures,
        "max_ms": round(max(values), 1),
        "p99_ms": round(harness.percentile(values, 99), 1),
        "median_ms": round(harness.median(values), 1),
        "probe_niceness": probe.niceness,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| file | options | status | time (ms) | RSS before | peak RSS | RSS 10 s later |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["one_at_a_time"] + result["four_at_once"]:
        lines.append(
            f"| `{row['file']}` | `{row['options']}` | {row['status']} | {row['ms']:.0f} "
            f"| {row['rss_before_mib']:.0f} MiB | {row['rss_peak_mib']:.0f} MiB "
            f"| {row['rss_10s_mib']:.0f} MiB |"
        )
    health = result["health_during_files"]
    mixed = result["mixed"]
    lines += [
        "",
        f"/healthz while the files ran: {health['probes']} probes, slowest {health['max_ms']} ms, "
        f"p99 {health['p99_ms']} ms, {health['failures']} failed.",
        f"{mixed['seconds']:.0f} s of {mixed['clients']} concurrent mixed requests "
        f"(statuses {mixed['statuses']}): /healthz slowest {mixed['health']['max_ms']} ms, "
        f"p99 {mixed['health']['p99_ms']} ms, {mixed['health']['failures']} failed.",
    ]
    lag = mixed.get("event_loop_lag")
    if lag:
        lines.append(
            f"The server's event loop, timed every 50 ms meanwhile ({lag['samples']:.0f} samples): "
            f"{lag['over_0.05']:.0f} woke more than 50 ms late, {lag['over_0.1']:.0f} more than "
            "100 ms (`focal_event_loop_lag_seconds` in /metrics)."
        )
    return "\n".join(lines) + "\n"


def prepare_root(folder: Path, files: Sequence[hostile.Hostile]) -> Path:
    root = folder / "root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(harness.ROOT / "src" / "focal" / "demo" / name, root / name)
    for item in files:
        (root / item.name).write_bytes(item.make())
    return root


def family_files(args: argparse.Namespace) -> dict[str, Any]:
    """The hostile files one at a time and four at once, then the mixed load (attack.json)."""
    global SETTLE_S
    files = hostile.family()
    if args.quick:
        files = [
            f
            for f in files
            if f.name.startswith(("webp-canvas-100", "gif-screen-299", "jpeg-scan"))
        ]
        SETTLE_S = 2.0
        args.mixed_seconds, args.clients = 5.0, 4
    state = harness.fresh_state("attack")
    root = prepare_root(state, files)
    server = harness.focal_server(root, cache=True, tag="attack-focal", extra=args.extra.split())
    with harness.running(server):
        request(server.base, "astronaut.jpg", "width=64,gravity=face")  # warm: detector up
        time.sleep(1.0)
        probe = Probe(server.base, server.pid)
        probe.start()
        result: dict[str, Any] = {"rss_start_mib": round(harness.rss_bytes(server.pid) / MIB, 1)}
        chosen = [] if args.mixed_only else files
        result["one_at_a_time"] = one_at_a_time(server, probe, chosen)
        result["four_at_once"] = four_at_once(server, probe, chosen)
        probe.stop()
        result["health_during_files"] = health_summary(probe)
        load_probe = Probe(server.base, server.pid)
        load_probe.start()
        lag_before = loop_lag(server.base)
        mixed = mixed_load(server, files, args.mixed_seconds, args.clients)
        mixed["event_loop_lag"] = lag_during(lag_before, loop_lag(server.base))
        load_probe.stop()
        mixed["health"] = health_summary(load_probe)
        mixed["rss_after_mib"] = round(harness.rss_bytes(server.pid) / MIB, 1)
        result["mixed"] = mixed
    print(markdown(result), end="")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    elif not (args.quick or args.mixed_only):
        harness.write_result("attack", result, ".venv/bin/python benchmarks/experiments/attack.py")
    return result


# ---- a hostile origin: content codings and drips ------------------------------------------------

GIB = 1024 * MIB
DRIP_EVERY_S = 2.0  # a byte every 2 s: under the 10 s read timeout, for ever


def zeros_deflated(size: int, wrapper: int) -> bytes:
    """``size`` zero bytes compressed by zlib (``wrapper``: 31 gzip, 15 zlib/deflate), made a
    mebibyte at a time (never held whole)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wrapper)
    block = b"\0" * MIB
    out = [packer.compress(block) for _ in range(size // MIB)]
    return b"".join([*out, packer.flush()])


def encoded_bodies(quick: bool) -> dict[str, tuple[str, bytes, str]]:
    """path -> (Content-Encoding, body, what it is). gzip inside gzip: 4 GiB of zeros (quick:
    256 MiB) in a few kilobytes."""
    inner = 256 * MIB if quick else 4 * GIB
    gzip_gzip = gzip.compress(zeros_deflated(inner, 31), 9)
    deflate = zeros_deflated(inner // 4, 15)
    bodies = {
        "/gzip-gzip.jpg": ("gzip, gzip", gzip_gzip, f"{inner // MIB} MiB of zeros, gzip in gzip"),
        "/deflate.jpg": ("deflate", deflate, f"{inner // 4 // MIB} MiB of zeros, deflate"),
        "/unknown.jpg": ("x-unknown", b"\xff\xd8\xff" + b"\0" * 1000, "an unknown coding"),
    }
    with contextlib.suppress(ImportError):
        import brotli

        packed = brotli.compress(b"\0" * (inner // 4))
        bodies["/br.jpg"] = ("br", packed, f"{inner // 4 // MIB} MiB of zeros, br")
    if "/br.jpg" not in bodies:  # the header alone: no brotli package here to make the body
        bodies["/br.jpg"] = ("br", b"\xff\xd8\xff" + b"\0" * 1000, "br (header; no brotli here)")
    return bodies


@contextlib.contextmanager
def hostile_origin(bodies: dict[str, tuple[str, bytes, str]]) -> Iterator[str]:
    """An HTTP origin on 127.0.0.1 that answers each path of ``bodies`` with its coding, and
    /drip.jpg a byte every DRIP_EVERY_S (at most 120 s); its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/drip.jpg":
                self.drip()
                return
            coding, body, _ = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Encoding", coding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

        def drip(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(int(120 / DRIP_EVERY_S)):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(DRIP_EVERY_S)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def origin_server(origin: str, tag: str, extra: Sequence[str]) -> harness.Server:
    root = harness.fresh_state(tag + "-root") / "root"
    root.mkdir()
    allow = ["--remote-prefixes", origin + "/", "--allowed-networks", "127.0.0.1/32"]
    return harness.focal_server(root, cache=False, tag=tag, extra=[*allow, "--no-face", *extra])


def origin_row(server: harness.Server, probe: Probe, url: str, what: str) -> dict[str, Any]:
    before = harness.rss_bytes(server.pid)
    probe.reset_peak()
    status, ms, detail = request(server.base, url, "width=64")
    peak = probe.peak
    after, back = settle(server.pid, before, SETTLE_S)
    row = {
        "source": url.rsplit("/", 1)[1],
        "what": what,
        "status": status,
        "ms": round(ms, 1),
        "rss_before_mib": round(before / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_growth_mib": round((peak - before) / MIB, 1),
        "rss_later_mib": round(after / MIB, 1),
        "back_within_50mib_s": round(back, 2),
        "detail": detail,
    }
    print(json.dumps(row), flush=True)
    return row


def family_origins(args: argparse.Namespace, drip: bool) -> dict[str, Any]:
    """Encoded bodies (drip=False) or a dripping origin (drip=True) from a hostile origin on
    loopback, each fetched once through a real focal serve; /healthz probed meanwhile."""
    global SETTLE_S
    SETTLE_S = 2.0 if args.quick else 10.0
    bodies = {} if drip else encoded_bodies(args.quick)
    extra = ["--remote-total-timeout-s", "3"] if drip and args.quick else []
    with hostile_origin(bodies) as origin:
        server = origin_server(origin, "attack-origin", [*extra, *args.extra.split()])
        with harness.running(server):
            time.sleep(1.0)
            probe = Probe(server.base, server.pid)
            probe.start()
            if drip:
                what = f"a byte every {DRIP_EVERY_S:g} s"
                rows = [origin_row(server, probe, origin + "/drip.jpg", what)]
            else:
                rows = [
                    origin_row(server, probe, origin + path, f"{coding}: {what} ({len(body)} B)")
                    for path, (coding, body, what) in bodies.items()
                ]
            probe.stop()
    return {"rows": rows, "health": health_summary(probe), "focal_flags": extra}


def family_encodings(args: argparse.Namespace) -> dict[str, Any]:
    return family_origins(args, drip=False)


def family_drip(args: argparse.Namespace) -> dict[str, Any]:
    return family_origins(args, drip=True)


# ---- slow and huge requests under a low open-file limit -----------------------------------------

SOFT_FILES = 1024  # systemd's default soft limit
HARD_FILES = 524288  # and its hard one
IDLE_SOCKETS = 1100


def low_file_limit(cmd: Sequence[str]) -> list[str]:
    """``cmd`` (``python -m focal ...``) started with the open-file limit systemd gives a
    service: soft SOFT_FILES, hard HARD_FILES (or the hard limit there is, where it may not be
    raised)."""
    code = (
        "import resource, runpy, sys\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "try:\n"
        f"    resource.setrlimit(resource.RLIMIT_NOFILE, ({SOFT_FILES}, {HARD_FILES}))\n"
        "except (ValueError, OSError):\n"
        f"    resource.setrlimit(resource.RLIMIT_NOFILE, ({SOFT_FILES}, hard))\n"
        "sys.argv = ['focal', *sys.argv[1:]]\n"
        "runpy.run_module('focal', run_name='__main__')\n"
    )
    assert list(cmd[1:3]) == ["-m", "focal"]
    return [cmd[0], "-c", code, *cmd[3:]]


def limited_server(tag: str, extra: Sequence[str]) -> harness.Server:
    root = harness.fresh_state(tag + "-root") / "root"
    root.mkdir()
    server = harness.focal_server(root, cache=False, tag=tag, extra=["--no-face", *extra])
    server.cmd = low_file_limit(server.cmd)
    return server


def own_file_limit(wanted: int) -> None:
    """This process holds the idle sockets: raise its own soft limit as far as it may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"X-Slow: y\r\n" * 1000


def hold_sockets(port: int, count: int) -> list[tuple[socket.socket, bytes]]:
    """``count`` connections: eight in ten silent, one half a request line, one a head sent a
    byte a second (fed by ``watch_closes``)."""
    held = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        kind = b"silent" if index % 10 < 8 else (b"half-line" if index % 10 == 8 else b"slow")
        if kind == b"half-line":
            sock.send(b"GET /cdn-cgi/image/width=64/astro")
        held.append((sock, kind))
    return held


def watch_closes(
    held: list[tuple[socket.socket, bytes]], seconds: float
) -> dict[bytes, list[float]]:
    """Feed the slow heads a byte a second and note when the server closes each connection
    (seconds after the watch began); those still open after ``seconds`` are not listed."""
    closed: dict[bytes, list[float]] = {}
    began = time.monotonic()
    open_ = dict(held)
    next_byte = began
    position = 0
    with selectors.DefaultSelector() as chooser:
        for sock in open_:
            chooser.register(sock, selectors.EVENT_READ)
        while open_ and time.monotonic() - began < seconds:
            if time.monotonic() >= next_byte:
                next_byte += 1.0
                for sock, kind in list(open_.items()):
                    if kind == b"slow":
                        with contextlib.suppress(OSError):
                            sock.send(SLOW_HEAD[position : position + 1])
                position += 1
            for key, _ in chooser.select(0.1):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                sock = ready
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    chooser.unregister(sock)
                    closed.setdefault(open_.pop(sock), []).append(time.monotonic() - began)
    return closed


def family_sockets(args: argparse.Namespace) -> dict[str, Any]:
    """IDLE_SOCKETS connections that never finish a request (silent, half a request line, a
    head a byte a second) against focal started with a soft open-file limit of 1,024, /healthz
    asked on a fresh connection every 50 ms throughout."""
    own_file_limit(4 * IDLE_SOCKETS)
    timeout_s = 3.0 if args.quick else 10.0
    extra = ["--header-timeout-s", f"{timeout_s:g}", *args.extra.split()]
    server = limited_server("attack-sockets", extra)
    with harness.running(server):
        banner = server.log.read_text(errors="replace").splitlines()[1:2]
        rss_before = harness.rss_bytes(server.pid)
        probe = Probe(server.base, server.pid, fresh=True)
        probe.start()
        time.sleep(1.0)
        opened = time.monotonic()
        held = hold_sockets(server.port, IDLE_SOCKETS)
        open_s = time.monotonic() - opened
        closes = watch_closes(held, timeout_s + 6)
        time.sleep(1.0)
        probe.stop()
        for sock, _ in held:
            sock.close()
        closed_metric = closed_total(server.base, "header_timeout")
        rss_after = harness.rss_bytes(server.pid)
    kinds = {kind.decode(): sum(1 for _, k in held if k == kind) for _, kind in held}
    answered = [ms for ms, ok in zip(probe.health_ms, probe.oks, strict=True) if ok]
    result = {
        "soft_files_at_start": SOFT_FILES,
        "banner": banner,
        "header_timeout_s": timeout_s,
        "sockets": kinds,
        "opened_in_s": round(open_s, 2),
        "closed": {
            k.decode(): {"count": len(v), "first_s": round(min(v), 2), "last_s": round(max(v), 2)}
            for k, v in closes.items()
        },
        "focal_http_connections_closed_total_header_timeout": closed_metric,
        "healthz": {
            "probes": len(probe.health_ms),
            "failed": probe.failures,
            "over_100ms": sum(1 for ms in answered if ms > 100),
            "max_ms": round(max(answered, default=0.0), 1),
            "p99_ms": round(harness.percentile(answered or [0.0], 99), 1),
        },
        "rss_before_mib": round(rss_before / MIB, 1),
        "rss_after_mib": round(rss_after / MIB, 1),
    }
    print(json.dumps(result), flush=True)
    return result


def closed_total(base: str, reason: str) -> float:
    text = httpx.get(base + "/metrics", timeout=30).text
    name = f'focal_http_connections_closed_total{{reason="{reason}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def send_head(port: int, first: bytes, filler: bytes, total: int) -> dict[str, Any]:
    """Send ``first`` then ``filler`` repeated up to ``total`` bytes, stopping when the server
    closes or refuses; what it answered and how much it took."""
    sent = 0
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(first)
            sent = len(first)
            while sent < total:
                sock.sendall(filler)
                sent += len(filler)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    return {
        "answer": status_line or "(closed, no answer)",
        "body": answer.split(b"\r\n\r\n", 1)[-1][:120].decode("latin-1") if answer else "",
        "sent_mib": round(sent / MIB, 2),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }


def family_heads(args: argparse.Namespace) -> dict[str, Any]:
    """Request heads past the limits (300 MiB of headers, a 200 MiB URL, 100,000 headers), one
    at a time, against focal with a soft open-file limit of 1,024: the answer, the bytes the
    server took before it, its RSS, and /healthz meanwhile."""
    size = 16 * MIB if args.quick else 300 * MIB
    url_size = 16 * MIB if args.quick else 200 * MIB
    attacks = [
        (
            "headers",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ",
            b"b" * MIB,
            size,
            f"{size // MIB} MiB header value",
        ),
        ("url", b"GET /", b"a" * MIB, url_size, f"{url_size // MIB} MiB URL"),
        (
            "count",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"X-A: b\r\n" * 1000,
            100_000 * 8,
            "100,000 headers",
        ),
    ]
    server = limited_server("attack-heads", args.extra.split())
    rows = []
    with harness.running(server):
        time.sleep(1.0)
        probe = Probe(server.base, server.pid)
        probe.start()
        time.sleep(1.0)
        for name, first, filler, total, what in attacks:
            before = harness.rss_bytes(server.pid)
            probe.reset_peak()
            row = {"attack": name, "what": what, **send_head(server.port, first, filler, total)}
            row |= {
                "rss_before_mib": round(before / MIB, 1),
                "rss_peak_mib": round(probe.peak / MIB, 1),
                "rss_growth_mib": round((probe.peak - before) / MIB, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        time.sleep(1.0)
        probe.stop()
    return {"rows": rows, "health": health_summary(probe)}


# ---- cache disk faults and redaction bypasses ------------------------------------------------


@contextlib.contextmanager
def small_disk(folder: Path) -> Any:
    """A 4 MiB tmpfs at ``folder`` (root only; None where mounting is not allowed), unmounted
    afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    try:
        yield folder if made.returncode == 0 else None
    finally:
        if made.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_disk(disk: Path) -> None:
    with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 65536)


def uncached_statuses(base: str, count: int, first_width: int) -> list[int]:
    return [
        request(base, "coffee.jpg", f"width={w},format=png")[0]
        for w in range(first_width, first_width + count)
    ]


def disk_faults(state: Path, root: Path, count: int) -> dict[str, Any]:
    """Family: the variant cache's disk fails under a running server (default settings, the cache
    folder moved onto the fault): full (a tmpfs filled to ENOSPC), read-only (the tmpfs remounted
    ro), vanished (the folder removed), replaced (a file where the folder was). Every uncached
    request must still answer 200; the faults counted in /metrics."""
    out: dict[str, Any] = {}
    with small_disk(state / "disk-faults-mount") as disk:
        cases = ["vanished", "replaced"] + (["full", "read-only"] if disk is not None else [])
        for index, case in enumerate(cases):
            cache = (disk if case in ("full", "read-only") and disk else state) / f"cache-{case}"
            extra = ["--cache-dir", str(cache)]
            if case in ("full", "read-only"):  # the kernel's ENOSPC and EROFS, not the 512 MiB
                extra += ["--cache-min-free-mb", "0"]  # that a 4 MiB disk never has free
            server = harness.focal_server(root, cache=True, tag=f"attack-disk-{case}", extra=extra)
            with harness.running(server):
                request(server.base, "coffee.jpg", "width=50")  # the cache folder exists
                if case == "vanished":
                    shutil.rmtree(cache)
                elif case == "replaced":
                    shutil.rmtree(cache)
                    cache.write_bytes(b"not a folder")
                elif case == "full" and disk is not None:
                    fill_disk(disk)
                elif disk is not None:
                    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=False)
                statuses = uncached_statuses(server.base, count, 100 + 40 * index)
                metrics = httpx.get(server.base + "/metrics", timeout=30).text
            faults = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("focal_cache_faults_total{")
            )
            out[case] = {"requests": count, "not_200": sum(s != 200 for s in statuses)}
            out[case]["faults_counted"] = int(faults)
            if disk is not None and case == "read-only":
                subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=False)
            if disk is not None:
                (disk / "filler").unlink(missing_ok=True)
    if disk is None:
        out["skipped"] = "full and read-only need a tmpfs mount (root)"
    for case, row in out.items():
        if isinstance(row, dict):
            print(
                f"disk fault {case}: {row['not_200']} of {row['requests']} not 200, "
                f"{row['faults_counted']} faults counted"
            )
    return out


def redaction_bypasses(state: Path, root: Path) -> dict[str, Any]:
    """Family: every path by which a request that asks for redaction might yield the original or
    a face: onerror=redirect, format=json, the playground (upload and original), a preset, the
    cache (each asked twice), a signed URL; with the detector down (model missing) and with the
    real model at the lowest redact-strength. A bypass is a redirect, an answer holding the
    original's bytes, or a redacted image in which focal's detector finds a face (score >= 0.5)."""
    original = (root / "astronaut.jpg").read_bytes()
    presets = json.dumps({"anon": "width=300,redact=faces,onerror=redirect"})
    key = "attack-signing-key"
    (state / "no-model").mkdir(parents=True, exist_ok=True)
    env = {
        "FOCAL_MODEL_DIR": str(state / "no-model"),
        "FOCAL_PRESETS": presets,
        "FOCAL_SIGNING_KEYS": key,
        "FOCAL_REQUIRE_SIGNATURE": "false",
        "FOCAL_PLAYGROUND": "on",
    }
    from focal.server import signing

    paths = [
        "width=300,redact=faces,onerror=redirect",
        "redact=faces,trim=border,onerror=redirect",
        "width=300,redact=faces,format=json,onerror=redirect",
        "anon",
        "preset=anon,onerror=redirect",
    ]
    tried: list[dict[str, Any]] = []
    finder = face_finder()

    def verdict(name: str, response: httpx.Response) -> None:
        bypass = response.is_redirect or original[:256] in response.content
        if response.headers.get("content-type", "").startswith("image/"):
            bypass = bypass or finder(response.content) > 0
        tried.append({"path": name, "status": response.status_code, "bypass": bypass})

    server = harness.focal_server(root, cache=True, tag="attack-redaction-down")
    server.env = env
    with harness.running(server), httpx.Client(base_url=server.base, timeout=60) as client:
        for options in paths:
            for _ in range(2):  # the second time from the cache, if anything was cached
                verdict(options, client.get(f"/cdn-cgi/image/{options}/astronaut.jpg"))
        signed = signing.signed_url(f"/cdn-cgi/image/{paths[0]}/astronaut.jpg", key)
        verdict("signed", client.get(signed))
        for options in ("redact=faces", "redact=faces,format=json"):
            upload = client.post(
                "/playground/transform", params={"options": options}, content=original
            )
            verdict(f"playground {options}", upload)
    only = harness.focal_server(root, cache=True, tag="attack-redaction-only")
    only.env = {"FOCAL_PRESETS": presets, "FOCAL_PRESETS_ONLY": "true"}
    with harness.running(only), httpx.Client(base_url=only.base, timeout=60) as client:
        verdict(
            "playground original, presets_only", client.get("/playground/original/astronaut.jpg")
        )
        for _ in range(2):
            verdict("preset anon, model up", client.get("/cdn-cgi/image/anon/astronaut.jpg"))
    weakest = harness.focal_server(root, cache=True, tag="attack-redaction-weakest")
    with harness.running(weakest), httpx.Client(base_url=weakest.base, timeout=60) as client:
        for style in ("blur", "pixelate"):
            options = f"redact=faces,redact-style={style},redact-strength=1"
            verdict(f"{options}, model up", client.get(f"/cdn-cgi/image/{options}/astronaut.jpg"))
    bypasses = [row for row in tried if row["bypass"]]
    print(f"redaction: {len(bypasses)} bypasses in {len(tried)} tries: {bypasses}")
    return {"tries": tried, "bypasses": len(bypasses)}


def face_finder() -> Any:
    """A function: how many faces (score >= 0.5) focal's detector finds in an image (the real
    model, in this process); one that finds none when the model is not installed."""
    from focal.face import models
    from focal.face.sessions import load_detector
    from focal.options import parse_options
    from focal.pipeline import transform

    installed = models.installed()
    if installed is None:
        return lambda data: 0
    detector = load_detector(installed.directory)
    described = parse_options("redact=faces,format=json")

    def faces(data: bytes) -> int:
        found = json.loads(transform(data, described, detector=detector).data)["faces"] or []
        return sum(1 for face in found if face["score"] >= 0.5)

    return faces


def family_disk(args: argparse.Namespace) -> dict[str, Any]:
    """The variant cache's disk failing under a running server (disk_faults)."""
    state = harness.fresh_state("attack-disk")
    return disk_faults(state, prepare_root(state, []), 5 if args.quick else 20)


def family_redaction(args: argparse.Namespace) -> dict[str, Any]:
    """Every path by which a request that asks for redaction might yield a face."""
    state = harness.fresh_state("attack-redaction")
    return redaction_bypasses(state, prepare_root(state, []))


FAMILIES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "files": family_files,
    "encodings": family_encodings,
    "drip": family_drip,
    "sockets": family_sockets,
    "heads": family_heads,
    "disk": family_disk,
    "redaction": family_redaction,
}


def front_markdown(results: dict[str, Any]) -> str:
    """The tables of the origin and HTTP-front families (docs/deployment.md)."""
    lines: list[str] = []
    origin_rows = [r for f in ("encodings", "drip") for r in results.get(f, {}).get("rows", [])]
    if origin_rows:
        lines += [
            "| origin sends | status | time (ms) | RSS before | peak RSS | growth | answer |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in origin_rows:
            lines.append(
                f"| {row['what']} | {row['status']} | {row['ms']:.0f} "
                f"| {row['rss_before_mib']:.0f} MiB | {row['rss_peak_mib']:.0f} MiB "
                f"| {row['rss_growth_mib']:.0f} MiB | {row['detail'].split(': http')[0]} |"
            )
        lines.append("")
    heads = results.get("heads")
    if heads:
        lines += [
            "| request | answer | MiB the client sent | time (ms) | RSS before | peak RSS |",
            "|---|---|---|---|---|---|",
        ]
        for row in heads["rows"]:
            lines.append(
                f"| {row['what']} | {row['answer']} | {row['sent_mib']} | {row['ms']:.0f} "
                f"| {row['rss_before_mib']:.0f} MiB | {row['rss_peak_mib']:.0f} MiB |"
            )
        health = heads["health"]
        lines += [
            "",
            f"/healthz meanwhile: {health['probes']} probes, slowest {health['max_ms']} ms, "
            f"{health['failures']} failed.",
            "",
        ]
    disk = results.get("disk")
    if disk:
        cases = [(case, row) for case, row in disk.items() if isinstance(row, dict)]
        lines += [
            "| cache disk | uncached requests | not 200 | faults counted |",
            "|---|---|---|---|",
            *(
                f"| {case} | {row['requests']} | {row['not_200']} | {row['faults_counted']} |"
                for case, row in cases
            ),
            "",
        ]
    redaction = results.get("redaction")
    if redaction:
        lines += [
            f"Redaction: {redaction['bypasses']} bypasses in {len(redaction['tries'])} tries "
            "(a redirect, the original's bytes, or a face focal's detector finds).",
            "",
        ]
    sockets = results.get("sockets")
    if sockets:
        closed = ", ".join(
            f"{kind} {c['count']} (after {c['first_s']}-{c['last_s']} s)"
            for kind, c in sockets["closed"].items()
        )
        h = sockets["healthz"]
        lines += [
            f"{sum(sockets['sockets'].values())} connections that never finish a request "
            f"({sockets['sockets']}), opened in {sockets['opened_in_s']} s against focal started "
            f"with a soft open-file limit of {sockets['soft_files_at_start']} "
            f"(`{' '.join(sockets['banner'])}`), header timeout {sockets['header_timeout_s']:g} s: "
            f"closed by the server: {closed}. /healthz on a fresh connection every 50 ms: "
            f"{h['probes']} probes, {h['failed']} failed, {h['over_100ms']} over 100 ms, "
            f"slowest {h['max_ms']} ms, p99 {h['p99_ms']} ms.",
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--family",
        action="append",
        choices=sorted(FAMILIES),
        help="the attacks to run (repeat the flag); default: all",
    )
    parser.add_argument("--markdown", action="store_true", help="print the saved result as a table")
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run of each family, no saving"
    )
    parser.add_argument("--mixed-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default: results/attack.json)"
    )
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--probe-every", type=float, default=0.05, help=argparse.SUPPRESS)
    parser.add_argument("--probe-fresh", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load-niceness", type=int, default=10)
    parser.add_argument("--mixed-only", action="store_true", help="only the mixed load (no saving)")
    parser.add_argument("--extra", default="", help="extra focal serve flags, space-separated")
    args = parser.parse_args(argv)
    if args.probe:
        return probe_forever(args.probe, args.probe_every, args.probe_fresh)
    if args.markdown:
        saved = harness.read_result("attack")
        front = harness.read_result("attack_front")
        if saved is None and front is None:
            print(
                "no benchmarks/results/attack*.json: run benchmarks/experiments/attack.py first",
                file=sys.stderr,
            )
            return 1
        if saved is not None and (args.family is None or "files" in args.family):
            print(markdown(saved), end="")
        if front is not None:
            print(front_markdown(front), end="")
        return 0
    global LOAD_NICENESS
    LOAD_NICENESS = args.load_niceness  # the load threads only: the server and probes keep theirs
    chosen = args.family or list(FAMILIES)
    results = {name: FAMILIES[name](args) for name in chosen}
    others = {name: results[name] for name in chosen if name != "files"}
    if others:
        print(front_markdown(others), end="")
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=1) + "\n")
        elif not args.quick:
            saved = harness.read_result("attack_front") or {}
            kept = {k: v for k, v in saved.items() if k in FAMILIES and k not in others}
            harness.write_result(
                "attack_front", kept | others, ".venv/bin/python benchmarks/experiments/attack.py"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
