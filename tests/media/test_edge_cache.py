"""The edge cache: byte budget, LRU order, hit ratio, single-flight loads."""

from __future__ import annotations

import asyncio

import pytest

from dapsdk.services.media.edge_cache import EdgeCache


def test_budget_evicts_least_recently_used() -> None:
    cache: EdgeCache[bytes] = EdgeCache(100)
    cache.put(("c", "720p", 0), b"a" * 40)
    cache.put(("c", "720p", 1), b"b" * 40)
    assert cache.get(("c", "720p", 0)) == b"a" * 40  # 0 is now the most recent
    cache.put(("c", "720p", 2), b"c" * 40)  # 120 > 100: evicts 1, the least recent
    assert ("c", "720p", 1) not in cache
    assert ("c", "720p", 0) in cache and ("c", "720p", 2) in cache
    assert cache.bytes == 80 <= cache.budget
    stats = cache.stats()
    assert (stats.hits, stats.evictions, stats.items) == (1, 1, 2)


def test_hit_ratio_counts_hits_and_misses() -> None:
    cache: EdgeCache[bytes] = EdgeCache(1000)
    cache.put("k", b"x" * 10)
    for _ in range(3):
        assert cache.get("k") is not None
    assert cache.get("missing") is None
    assert cache.stats().hit_ratio == pytest.approx(0.75)


def test_value_above_budget_is_not_cached_and_nothing_is_evicted() -> None:
    cache: EdgeCache[bytes] = EdgeCache(100)
    cache.put("small", b"s" * 50)
    assert cache.put("huge", b"h" * 101) is False
    assert "small" in cache and "huge" not in cache
    assert cache.stats().oversize == 1


def test_replacing_a_key_keeps_the_byte_count_right() -> None:
    cache: EdgeCache[bytes] = EdgeCache(100)
    cache.put("k", b"x" * 60)
    cache.put("k", b"y" * 30)
    assert cache.bytes == 30
    assert cache.discard_where(lambda key: key == "k") == 1
    assert cache.bytes == 0 and len(cache) == 0


async def test_concurrent_misses_load_once() -> None:
    cache: EdgeCache[bytes] = EdgeCache(1000)
    loads = 0
    release = asyncio.Event()

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        await release.wait()
        return b"segment"

    readers = [asyncio.create_task(cache.get_or_load("seg", load)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*readers) == [b"segment"] * 5
    assert loads == 1
    assert await cache.get_or_load("seg", load) == b"segment"
    assert loads == 1
    assert cache.stats().misses == 1 and cache.stats().hits == 5


async def test_failed_load_is_not_cached() -> None:
    cache: EdgeCache[bytes] = EdgeCache(1000)

    async def fail() -> bytes:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        await cache.get_or_load("seg", fail)
    assert "seg" not in cache
