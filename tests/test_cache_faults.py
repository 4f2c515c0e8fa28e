"""A cache disk that fails never fails a request: a real ``focal serve`` whose cache folder is on
a small tmpfs that is really full (ENOSPC), remounted read-only (EROFS), removed while the server
runs, or a file in place of the folder (ENOTDIR) answers every uncached request with the image,
counts the fault in /metrics and logs it a line a minute, not a line a request. A cache bound
larger than the disk is held to the disk's real free space (statvfs)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import pyvips
from tests.live import Live, serve
from tests.test_server import DEMO

from focal.server.cache import free_bytes
from focal.server.logs import Throttled

MIB = 1 << 20


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of this test's own (root only), unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {made.stderr.decode(errors='replace')}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def root_folder(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(DEMO / "coffee.jpg", root / "coffee.jpg")
    return root


def start(tmp_path: Path, cache_dir: Path, *extra: str) -> Live:
    args = ["--root", str(root_folder(tmp_path)), "--cache-dir", str(cache_dir), "--no-face"]
    return serve(tmp_path, [*args, "--memory-cache-mb", "0", *extra])


def fill(disk: Path) -> Path:
    """Write zeros until the file system refuses: a really full disk."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 65536)
    return filler


def uncached(live: Live, count: int, start_width: int = 100) -> list[httpx.Response]:
    """``count`` requests for variants never asked before (each a new width)."""
    return [
        httpx.get(live.url(f"/cdn-cgi/image/width={w},format=png/coffee.jpg"), timeout=60)
        for w in range(start_width, start_width + count)
    ]


def assert_images(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code == 200, response.text
        assert pyvips.Image.new_from_buffer(response.content, "").width > 0


def faults(live: Live, reason: str) -> int:
    text = httpx.get(live.url("/metrics"), timeout=10).text
    total = 0
    for line in text.splitlines():
        if line.startswith("focal_cache_faults_total{") and f'reason="{reason}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def fault_log_lines(live: Live) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in live.log.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("msg") == "variant cache unavailable: served without it"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_full_disk_costs_the_cache_not_the_request(tmpfs: Path, tmp_path: Path) -> None:
    live = start(tmp_path, tmpfs / "cache", "--cache-min-free-mb", "0")
    try:
        filler = fill(tmpfs)
        assert_images(uncached(live, 30))
        assert faults(live, "ENOSPC") == 30
        assert len(fault_log_lines(live)) == 1  # one line a minute, not one a request
        filler.unlink()  # room again: the cache works again
        url = live.url("/cdn-cgi/image/width=99,format=png/coffee.jpg")
        assert httpx.get(url, timeout=60).headers["focal-cache"] == "miss"
        assert httpx.get(url, timeout=60).headers["focal-cache"] == "hit"
    finally:
        live.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_bound_larger_than_the_disk_keeps_the_free_space(tmpfs: Path, tmp_path: Path) -> None:
    """cache_max_mb (1024 by default) is far above the 4 MiB disk: eviction follows statvfs, so
    the disk keeps cache_min_free_mb free and every write still succeeds."""
    live = start(tmp_path, tmpfs / "cache", "--cache-min-free-mb", "2")
    try:
        assert_images(uncached(live, 40, start_width=300))  # about 6 MiB of variants
        assert faults(live, "ENOSPC") == 0
        free = free_bytes(tmpfs)
        assert free is not None and free >= 2 * MIB - 600_000  # at most one variant under
        entries = [p for p in (tmpfs / "cache").rglob("*") if p.is_file()]
        assert entries  # evicted, not emptied
    finally:
        live.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_read_only_disk_costs_the_cache_not_the_request(tmpfs: Path, tmp_path: Path) -> None:
    live = start(tmp_path, tmpfs / "cache", "--cache-min-free-mb", "0")
    try:
        assert_images(uncached(live, 2))  # some entries written while it could
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
        responses = uncached(live, 20, start_width=200)
        assert_images(responses)
        assert faults(live, "EROFS") == 20
        cached = httpx.get(live.url("/cdn-cgi/image/width=100,format=png/coffee.jpg"), timeout=60)
        assert cached.headers["focal-cache"] == "hit"  # reads still work
    finally:
        live.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_vanished_or_replaced_cache_folder_costs_the_cache_not_the_request(
    tmp_path: Path,
) -> None:
    cache_dir = tmp_path / "cache"
    live = start(tmp_path, cache_dir)
    try:
        assert_images(uncached(live, 2))
        shutil.rmtree(cache_dir)  # removed under the running server: written again
        assert_images(uncached(live, 3, start_width=200))
        assert cache_dir.is_dir()
        shutil.rmtree(cache_dir)
        cache_dir.write_bytes(b"not a folder")  # a file where the folder was
        assert_images(uncached(live, 5, start_width=300))
        assert faults(live, "ENOTDIR") + faults(live, "EEXIST") == 5
    finally:
        live.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_server_starts_with_its_cache_folder_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"a file")
    live = start(tmp_path, blocker / "cache")
    try:
        assert_images(uncached(live, 3))
        assert faults(live, "ENOTDIR") == 3
    finally:
        live.stop()


def test_throttled_logs_once_per_interval_and_counts_the_rest() -> None:
    now = [0.0]
    throttled = Throttled(every_s=60.0, clock=lambda: now[0])
    key = uuid.uuid4().hex
    assert throttled.event(key, "m", {})
    assert not any(throttled.event(key, "m", {}) for _ in range(100))
    assert throttled.event("other", "m", {})
    now[0] = 61.0
    assert throttled.event(key, "m", {})
