from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from focal.server.cache import (
    SOURCE_RECHECK_S,
    TMP_PREFIX,
    Entry,
    HotVariants,
    Meta,
    VariantCache,
    decode,
    etag_for,
    variant_key,
)


def meta(size: int, gravity: str = "center") -> Meta:
    return Meta("image/jpeg", "jpeg", 10, 20, gravity, '"e"', False, size)


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def put(cache: VariantCache, name: str, data: bytes) -> str:
    key = variant_key(name, "width=10", "", "")
    cache.put(key, meta(len(data)), data)
    return key


def test_miss_then_hit_round_trips_bytes_and_metadata(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path, 1 << 20)
    key = variant_key("file:a.jpg:1:2", "width=10", "", "")
    assert cache.get(key) is None
    cache.put(key, meta(5, "face"), b"hello")
    entry = cache.get(key)
    assert entry is not None
    assert entry.data == b"hello" and entry.meta == meta(5, "face")
    assert (cache.stats().hits, cache.stats().misses, cache.stats().writes) == (1, 1, 1)


def test_key_depends_on_every_part() -> None:
    base = ("id", "width=10", "accept:image/avif", "retinaface-1")
    keys = {variant_key(*base)}
    for i in range(4):
        changed = list(base)
        changed[i] += "x"
        keys.add(variant_key(*changed))
    assert len(keys) == 5
    assert variant_key("a\0b", "", "", "") != variant_key("a", "b", "", "")


def test_etag_is_strong_and_follows_content() -> None:
    tag = etag_for("k", b"one")
    assert tag.startswith('"') and not tag.startswith("W/")
    assert tag != etag_for("k", b"two") and tag != etag_for("j", b"one")


def test_survives_a_restart(tmp_path: Path) -> None:
    key = put(VariantCache(tmp_path, 1 << 20), "a", b"bytes")
    entry = VariantCache(tmp_path, 1 << 20).get(key)
    assert entry is not None and entry.data == b"bytes"


def test_evicts_least_recently_used_first(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path, 35_000)
    keys = [put(cache, name, bytes(10_000)) for name in "abc"]
    now = time.time()
    for age, key in zip((300, 200, 100), keys, strict=True):  # a oldest, c newest
        os.utime(cache.path_for(key), (now - age, now - age))
    assert cache.get(keys[0]) is not None  # using a makes b the least recently used
    put(cache, "d", bytes(10_000))  # 40 kB > 35 kB: evict down to 90 % (31.5 kB)
    present = [cache.get(k) is not None for k in keys]
    assert present == [True, False, True]
    assert cache.total_size() <= 35_000


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path, 1 << 20)
    key = variant_key("a", "", "", "")
    target = cache.path_for(key)
    (target / "occupied").mkdir(parents=True)  # os.replace onto a non-empty folder fails
    with pytest.raises(OSError):
        cache.put(key, meta(3), b"abc")
    assert not [p for p in files(tmp_path) if p.name.startswith(TMP_PREFIX)]
    assert cache.get(key) is None


def test_a_torn_file_is_a_miss_and_is_removed(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path, 1 << 20)
    key = put(cache, "a", bytes(1000))
    path = cache.path_for(key)
    path.write_bytes(path.read_bytes()[:-10])
    assert decode(path.read_bytes()) is None
    assert cache.get(key) is None
    assert not path.exists()


def test_stale_temporary_files_are_swept(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path, 1 << 20)
    (tmp_path / "ab").mkdir()
    stale, fresh = tmp_path / "ab" / f"{TMP_PREFIX}1-old", tmp_path / "ab" / f"{TMP_PREFIX}2-new"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    cache.total_size()
    assert not stale.exists() and fresh.exists()


def writer(directory: str, tag: str, count: int) -> None:
    cache = VariantCache(Path(directory), 200_000)
    for i in range(count):
        shared = i % 3 == 0  # every third key is written by both processes
        name = f"shared-{i}" if shared else f"{tag}-{i}"
        data = (name.encode() * 5000)[:5000]
        key = variant_key(name, "", "", "")
        cache.put(key, meta(len(data)), data)
        entry = cache.get(key)  # may be evicted by the other process; never torn
        if entry is not None and entry.data != data:
            raise SystemExit(f"torn read for {name}")


def test_two_processes_writing_and_evicting(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=writer, args=(str(tmp_path), tag, 150)) for tag in ("p", "q")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    cache = VariantCache(tmp_path, 200_000)
    entries = files(tmp_path)
    assert entries and not [p for p in entries if p.name.startswith(TMP_PREFIX)]
    for path in entries:
        entry = decode(path.read_bytes())
        assert entry is not None and len(entry.data) == 5000
    assert cache.total_size() < 2 * 200_000  # both bounded themselves while writing 1.5 MB
    cache.evict()
    assert cache.total_size() <= 200_000


def test_a_hit_marks_the_entry_used_at_most_once_a_minute(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path, 1 << 20)
    key = put(cache, "a", b"bytes")
    path = cache.path_for(key)
    recent = time.time() - 10
    os.utime(path, (recent, recent))
    assert cache.get(key) is not None
    assert path.stat().st_mtime == pytest.approx(recent)  # used within the minute: left alone
    old = time.time() - 600
    os.utime(path, (old, old))
    assert cache.get(key) is not None
    assert path.stat().st_mtime > time.time() - 60  # now the most recently used


def test_hot_variants_stay_within_their_bytes_least_recently_used_first_out() -> None:
    hot: HotVariants[str] = HotVariants(max_bytes=800)
    meta = Meta("image/jpeg", "jpeg", 1, 1, "centre", '"e"', False, 100)
    for name in "abcdefgh":
        hot.put(name, Entry(meta, b"x" * 100))
    assert hot.size == 800 and len(hot) == 8
    assert hot.get("a") is not None  # now the most recently used
    hot.put("i", Entry(meta, b"x" * 100))
    assert hot.get("b") is None and hot.get("a") is not None and hot.size == 800
    hot.put("big", Entry(meta, b"x" * 101))  # over an eighth of the bound: never kept
    assert hot.get("big") is None and hot.size == 800
    hot.put("a", Entry(meta, b"y" * 50))  # replaced, not counted twice
    assert hot.size == 750 and hot.get("a") == Entry(meta, b"y" * 50)


def test_a_remembered_source_expires_after_the_recheck_time() -> None:
    now = [100.0]
    hot: HotVariants[str] = HotVariants(max_bytes=1000, max_sources=2, clock=lambda: now[0])
    hot.remember_source("a.jpg", "file:a.jpg:1:10")
    assert hot.source("a.jpg") == "file:a.jpg:1:10"
    now[0] += SOURCE_RECHECK_S + 0.01
    assert hot.source("a.jpg") is None
    for name in ("b", "c", "d"):
        hot.remember_source(name, name)
    assert hot.source("b") is None and hot.source("d") == "d"  # at most max_sources kept
