"""Hostile files against a real ``focal serve`` on loopback, default settings.

For every file of :func:`benchmarks.hostile.family` (canvas and frame bombs in GIF, WebP, APNG
and TIFF, header lies, truncations), one at a time and then four at once: the status, the time,
the server's peak RSS while it ran, and its RSS 10 s later (against its RSS before). Then 60 s of
16 concurrent mixed requests (real photos and the hostile files). Throughout, /healthz is asked
every 50 ms and its slowest answer is reported.

    .venv/bin/python benchmarks/attack.py                 # writes benchmarks/results/attack.json
    .venv/bin/python benchmarks/attack.py --markdown      # the table for docs/deployment.md
    .venv/bin/python benchmarks/attack.py --quick         # a short smoke run (tests)

Then two families of their own servers: cache disk faults (disk_faults) and redaction bypasses
(redaction_bypasses); each prints its summary and adds it to the result.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness, hostile

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
    health_ms: list[float] = field(default_factory=list)
    failures: int = 0
    peak: int = 0
    niceness: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _child: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [sys.executable, __file__, "--probe", self.base, "--probe-every", str(self.every)]
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
                self.failures += 0 if ok == "1" else 1

    def reset_peak(self) -> None:
        self.peak = harness.rss_bytes(self.pid)

    def _rss(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, harness.rss_bytes(self.pid))
            self._stop.wait(0.01)


def probe_forever(base: str, every: float) -> int:
    """The probe process: one line ``ms,ok`` per /healthz request, until terminated."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with httpx.Client(timeout=10) as client:
        while True:
            started = time.perf_counter()
            try:
                ok = client.get(base + "/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            print(f"{(time.perf_counter() - started) * 1000:.2f},{int(ok)}", flush=True)
            time.sleep(every)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--markdown", action="store_true", help="print the saved result as a table")
    parser.add_argument("--quick", action="store_true", help="three files, 5 s of load, no saving")
    parser.add_argument("--mixed-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default: results/attack.json)"
    )
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--probe-every", type=float, default=0.05, help=argparse.SUPPRESS)
    parser.add_argument("--load-niceness", type=int, default=10)
    parser.add_argument("--mixed-only", action="store_true", help="only the mixed load (no saving)")
    parser.add_argument("--extra", default="", help="extra focal serve flags, space-separated")
    args = parser.parse_args(argv)
    if args.probe:
        return probe_forever(args.probe, args.probe_every)
    if args.markdown:
        saved = harness.read_result("attack")
        if saved is None:
            print(
                "no benchmarks/results/attack.json: run benchmarks/attack.py first", file=sys.stderr
            )
            return 1
        print(markdown(saved), end="")
        return 0
    global SETTLE_S, LOAD_NICENESS
    LOAD_NICENESS = args.load_niceness  # the load threads only: the server and probes keep theirs
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
    result["disk_faults"] = disk_faults(state, root, 5 if args.quick else 20)
    result["redaction_bypasses"] = redaction_bypasses(state, root)
    print(markdown(result), end="")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    elif not (args.quick or args.mixed_only):
        harness.write_result("attack", result, ".venv/bin/python benchmarks/attack.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
