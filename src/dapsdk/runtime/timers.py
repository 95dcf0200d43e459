"""One timer for many connections: a hashed timer wheel on the event loop.

Every connection core has one deadline at a time (``get_timer()``). Instead of one
``asyncio.TimerHandle`` per connection (an object, a heap entry and a re-push on every move),
deadlines are rounded up to a tick and kept in buckets (dict of tick -> entries); one heap
holds the ticks that have a bucket and one loop timer waits for the earliest. Moving a deadline
is two dict operations; 10,000 idle connections cost one loop timer.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from typing import Protocol

log = logging.getLogger("dapsdk.runtime.timers")

#: Granularity of deadlines (seconds). Deadlines fire at most one tick late, never early.
TICK = 0.005


class TimerEntry(Protocol):
    def on_timer(self) -> None: ...


class TimerWheel:
    """Deadlines of many entries on one loop timer."""

    __slots__ = ("_armed", "_buckets", "_handle", "_heap", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._buckets: dict[int, dict[TimerEntry, None]] = {}
        self._heap: list[int] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed: int | None = None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    @staticmethod
    def tick_of(deadline: float) -> int:
        return math.ceil(deadline / TICK)

    def schedule(self, entry: TimerEntry, tick: int) -> None:
        """Call ``entry.on_timer()`` once the loop time reaches ``tick``."""
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = {}
            heapq.heappush(self._heap, tick)
        bucket[entry] = None
        if self._armed is None or tick < self._armed:
            self._arm(tick)

    def cancel(self, entry: TimerEntry, tick: int) -> None:
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.pop(entry, None)  # an empty bucket is dropped when its tick comes

    def _arm(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = tick
        self._handle = self.loop.call_at(tick * TICK, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed = None
        now_tick = math.floor(self.loop.time() / TICK)
        heap = self._heap
        buckets = self._buckets
        due: list[dict[TimerEntry, None]] = []
        while heap and heap[0] <= now_tick:
            bucket = buckets.pop(heapq.heappop(heap), None)
            if bucket:
                due.append(bucket)
        # Entries re-scheduled while firing land in new buckets (handled by the next arm).
        for bucket in due:
            for entry in bucket:
                try:
                    entry.on_timer()
                except Exception:  # one connection's bug must not stop the others' timers
                    log.exception("timer of %r failed", entry)
        while heap and not buckets.get(heap[0]):
            buckets.pop(heapq.heappop(heap), None)
        if heap:
            self._arm(heap[0])
