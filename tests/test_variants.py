"""focal.server.variants: the variant cache's tiers as the server uses them, over the real disk
store and the real local origin."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from focal.pipeline import Result
from focal.server.cache import Entry, HotVariants, VariantCache, variant_key
from focal.server.metrics import Metrics
from focal.server.origins import LocalOrigin, SourceInfo
from focal.server.variants import Variants, meta_for, result_of


def a_result(degraded: bool = False) -> Result:
    return Result(
        data=b"variant bytes",
        content_type="image/webp",
        format="webp",
        width=40,
        height=30,
        gravity_used="face",
        degraded=degraded,
        negotiated=True,
        fallback="no face found",
        source_warning="truncated",
    )


def tiers(folder: Path, memory: bool = True) -> Variants:
    hot: HotVariants[SourceInfo] | None = HotVariants(1 << 20, clock=lambda: 0.0)
    return Variants(VariantCache(folder, 1 << 20), hot if memory else None, Metrics(), "disk")


def test_a_cached_result_comes_back_as_it_was_stored_and_never_degraded() -> None:
    result = a_result()
    meta = meta_for(result, "k" * 64)
    back = result_of(Entry(meta, result.data))
    assert back == result and meta.etag and meta.size == len(result.data)
    assert meta_for(a_result(degraded=True), "k" * 64).etag == ""  # never revalidated


def test_a_memory_hit_never_reaches_the_store(tmp_path: Path) -> None:
    variants = tiers(tmp_path / "cache")
    entry = Entry(meta_for(a_result(), "a" * 64), b"variant bytes")
    variants.put("a" * 64, entry)
    shutil.rmtree(tmp_path / "cache")  # the store has lost it: only memory can answer
    assert asyncio.run(variants.lookup("a" * 64)) == entry
    assert variants.stored("a" * 64) is None


def test_a_store_only_entry_fills_memory(tmp_path: Path) -> None:
    variants = tiers(tmp_path / "cache")
    entry = Entry(meta_for(a_result(), "b" * 64), b"variant bytes")
    variants.put("b" * 64, entry, memory=False)
    assert variants.memory is not None and variants.memory.get("b" * 64) is None
    assert asyncio.run(variants.lookup("b" * 64)) == entry
    assert variants.memory.get("b" * 64) == entry


def test_find_identifies_a_local_source_and_remembers_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"source bytes")
    origin = LocalOrigin(root, 1 << 20)
    variants = tiers(tmp_path / "cache")

    def key_of(identity: str) -> str:
        return variant_key(identity, "width=40", "", "")

    known, entry = asyncio.run(variants.find(origin, "a.jpg", key_of))
    assert known is not None and entry is None  # identified without reading it; not cached
    stored = Entry(meta_for(a_result(), key_of(known.identity)), b"variant bytes")
    variants.put(key_of(known.identity), stored)
    (root / "a.jpg").unlink()  # within the recheck time the remembered identity answers
    assert asyncio.run(variants.find(origin, "a.jpg", key_of)) == (known, stored)


def test_without_a_store_nothing_is_found_or_kept(tmp_path: Path) -> None:
    variants = Variants(None, None, Metrics(), "disk")
    origin = LocalOrigin(tmp_path, 1 << 20)
    assert not variants.enabled and variants.approx_size() == 0
    variants.put("c" * 64, Entry(meta_for(a_result(), "c" * 64), b"x"))
    assert asyncio.run(variants.find(origin, "a.jpg", str)) == (None, None)
    assert variants.get("c" * 64) is None
