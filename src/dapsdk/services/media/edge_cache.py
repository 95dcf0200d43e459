"""The edge cache: a least-recently-used cache with a byte budget, for VoD segments and live GOPs.

Keys are tuples (for example ``(content_id, rendition, segment_number)``); values carry their size
(``len(value)`` by default, or the ``size`` given to :meth:`EdgeCache.put`). Inserting past the
budget evicts the least recently used entries; a value larger than the whole budget is not
cached (counted in ``oversize``). Hits and misses are counted, so the hit ratio is known.

:meth:`EdgeCache.get_or_load` loads a missing value once even when many readers ask for it at the
same time (single flight): the first caller runs the loader, the others wait for its result.
Not thread-safe: use it from the event loop (loaders may run blocking work in an executor).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    oversize: int
    items: int
    bytes: int
    budget: int

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": round(self.hit_ratio, 4),
            "evictions": self.evictions,
            "oversize": self.oversize,
            "items": self.items,
            "bytes": self.bytes,
            "budget": self.budget,
        }


def _default_size(value: Any) -> int:
    return len(value)


class EdgeCache(Generic[V]):
    """LRU with a byte budget (see the module docstring)."""

    def __init__(self, budget_bytes: int, *, size_of: Callable[[V], int] = _default_size) -> None:
        if budget_bytes < 1:
            raise ValueError("the cache budget must be at least one byte")
        self.budget = budget_bytes
        self._size_of = size_of
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._loading: dict[Hashable, asyncio.Future[V]] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.oversize = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> V | None:
        """The cached value (now most recently used), or None; counts a hit or a miss."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: Hashable, value: V, size: int | None = None) -> bool:
        """Cache ``value``; False when it is larger than the whole budget (not cached)."""
        size = self._size_of(value) if size is None else size
        if size < 0:
            raise ValueError("negative size")
        self.discard(key)
        if size > self.budget:
            self.oversize += 1
            return False
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.budget:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted
            self.evictions += 1
        return True

    def discard(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key matches (a content that ended or was removed)."""
        keys = [key for key in self._entries if predicate(key)]
        for key in keys:
            self.discard(key)
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value, else ``await load()`` once for all concurrent callers, cached."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]
        pending = self._loading.get(key)
        if pending is not None:
            self.hits += 1  # served without a second load
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(value)
        self.put(key, value)
        return value

    def stats(self) -> CacheStats:
        return CacheStats(
            self.hits,
            self.misses,
            self.evictions,
            self.oversize,
            len(self._entries),
            self._bytes,
            self.budget,
        )
