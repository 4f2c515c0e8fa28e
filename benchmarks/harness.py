"""Shared pieces of the benchmarks: paths, the evaluation manifest, machine facts, result files,
and local servers (started on 127.0.0.1, always stopped).

Every benchmark runs with the project's own interpreter (``.venv/bin/python``); thumbor,
matplotlib and the other extra tools live in a separate virtual environment under
``benchmarks/work/venv`` that ``run_all.py`` creates.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
WORK = BENCH / "work"
RESULTS = BENCH / "results"
INPUTS = WORK / "inputs"
DOCS_IMG = ROOT / "docs" / "img"
DEMO = ROOT / "src" / "focal" / "demo"
FACEDATA = Path(os.environ.get("FOCAL_FACEDATA", ROOT.parent / "shared" / "facedata"))
BENCH_VENV = WORK / "venv"
BENCH_PY = BENCH_VENV / "bin" / "python"
THUMBOR_BIN = BENCH_VENV / "bin" / "thumbor"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def load_manifest() -> list[dict[str, Any]]:
    """The labelled evaluation images of ../shared/facedata (read in place, never copied)."""
    path = FACEDATA / "manifest.jsonl"
    if not path.exists():
        raise SystemExit(f"evaluation data missing: {path} (set FOCAL_FACEDATA)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run_text(cmd: Sequence[str], any_status: bool = False) -> str:
    """First line a command prints (``wrk -v`` exits 1 after printing its version)."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = (done.stdout or done.stderr).strip().splitlines()
    if not lines or (done.returncode != 0 and not any_status):
        return "?"
    return lines[0]


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _thumbor_version() -> str:
    if not BENCH_PY.exists():
        return "not installed"
    names = "'thumbor', 'opencv-python-headless', 'pillow'"
    code = f"import importlib.metadata as m; print(*(m.version(n) for n in ({names})))"
    return _run_text([str(BENCH_PY), "-c", code])


def machine_info() -> dict[str, Any]:
    """Where and with what a result was measured."""
    import pyvips

    from focal import __version__

    thumbor = _thumbor_version().split()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _mem_total_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "focal": __version__,
        "git_commit": _run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "libvips_pyvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "libvips_debian": _run_text(["vipsthumbnail", "--vips-version"]),
        "thumbor": thumbor[0] if thumbor else "?",
        "opencv_thumbor": thumbor[1] if len(thumbor) > 1 else "?",
        "pillow_thumbor": thumbor[2] if len(thumbor) > 2 else "?",
        "wrk": _run_text(["wrk", "-v"], any_status=True).split(" Copyright")[0],
    }


def write_result(name: str, data: dict[str, Any], command: str) -> Path:
    """Write benchmarks/results/<name>.json with the machine facts and the command that made it
    (``command`` followed by this process's arguments)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    full = " ".join([command, *(shlex.quote(a) for a in sys.argv[1:])])
    body = {"benchmark": name, "command": full, "machine": machine_info(), **data}
    path.write_text(json.dumps(body, indent=1, sort_keys=False) + "\n")
    print(f"wrote {path.relative_to(ROOT)}", flush=True)
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def interleaved_ms(calls: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Wall milliseconds of every call, one call of each in turn per round, ``repeat`` rounds
    (drift on a shared machine falls on every call alike)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


# --- processes -------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[1]) * PAGE_SIZE


def children(pid: int) -> list[int]:
    """All descendants of a process, read from /proc."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parent_of.items() if parent == current]
        found.extend(kids)
        frontier.extend(kids)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Server:
    """A local HTTP server run as a child process; ``base`` is its http://127.0.0.1:PORT."""

    name: str
    cmd: list[str]
    port: int
    health_path: str
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def start(self, timeout: float = 90.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        with self.log.open("wb") as handle:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + self.health_path, timeout=2).status_code < 500:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on {self.base} in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the two servers under test ----------------------------------------------------------------


def fresh_state(tag: str) -> Path:
    """An empty folder for one server's config, caches and log."""
    state = WORK / "state" / tag
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    return state


def thumbor_server(
    root: Path,
    *,
    cache: bool,
    detectors: Sequence[str] = ("thumbor.detectors.face_detector",),
    processes: int = 1,
    tag: str = "thumbor",
) -> Server:
    """thumbor 7.8 with its file loader. ``cache=False``: no original, detector or result storage
    (every request does the full work); ``cache=True``: result storage on, unsafe URLs stored."""
    state = fresh_state(tag)
    lines = [
        "LOADER = 'thumbor.loaders.file_loader'",
        f"FILE_LOADER_ROOT_PATH = {str(root)!r}",
        f"DETECTORS = {list(detectors)!r}",
        "QUALITY = 80",
        "RESPECT_ORIENTATION = True",
        "MAX_AGE = 0",
    ]
    if cache:
        lines += [
            "STORAGE = 'thumbor.storages.file_storage'",
            f"FILE_STORAGE_ROOT_PATH = {str(state / 'storage')!r}",
            "RESULT_STORAGE = 'thumbor.result_storages.file_storage'",
            f"RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = {str(state / 'result')!r}",
            "RESULT_STORAGE_STORES_UNSAFE = True",
        ]
    else:
        lines += ["STORAGE = 'thumbor.storages.no_storage'", "RESULT_STORAGE = None"]
    conf = state / "thumbor.conf"
    conf.write_text("\n".join(lines) + "\n")
    port = free_port()
    cmd = [str(THUMBOR_BIN), "-i", "127.0.0.1", "-p", str(port), "-c", str(conf), "-l", "warning"]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    return Server(tag, cmd, port, "/healthcheck", state / "server.log")


def focal_server(
    root: Path,
    *,
    cache: bool,
    detections: bool | None = None,
    extra: Sequence[str] = (),
    tag: str = "focal",
) -> Server:
    """focal's own server (``python -m focal serve``). ``cache``: the variant cache on or off;
    ``detections``: the detection cache on or off (by default as ``cache``)."""
    state = fresh_state(tag)
    port = free_port()
    cmd = [sys.executable, "-m", "focal", "serve", "--root", str(root), "--port", str(port)]
    keep = cache if detections is None else detections
    cmd += [*focal_cache_args(state / "cache", cache, keep), "--log-level", "warning", *extra]
    return Server(tag, cmd, port, focal_health_path(), state / "server.log")


def focal_serve_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "focal", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout


def focal_cache_args(cache_dir: Path, variants: bool, detections: bool) -> list[str]:
    """The serve flags turning the variant cache and the detection cache on or off, read from
    ``focal serve --help``."""
    helptext = focal_serve_help()
    flags = ["--cache-enabled", "--cache-dir", str(cache_dir)] if variants else []
    if not variants and "--no-cache-enabled" in helptext:
        flags = ["--no-cache-enabled"]
    if not detections and "--detection-cache-entries" in helptext:
        flags += ["--detection-cache-entries", "0"]
    return flags


def focal_health_path() -> str:
    return "/healthz"


def focal_available(*names: str) -> dict[str, bool]:
    """Which parts of focal are implemented yet (import works and no NotImplementedError stub)."""
    import importlib

    found: dict[str, bool] = {}
    for name in names:
        try:
            importlib.import_module(name)
            found[name] = True
        except Exception:
            found[name] = False
    return found
