"""The embedded registry: the cluster's shared state in this process's memory (the default).

Nodes built in one process with the same :class:`MemoryRegistry` form one cluster; a node alone
uses its own. Expiry uses the monotonic clock; events are delivered on the running event loop.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from . import (
    MAX_QOE,
    ClusterEvent,
    ContentRecord,
    EventHandler,
    EventSubscribers,
    LoadReport,
    NodeRecord,
    Registry,
)

log = logging.getLogger("dapsdk.avrs.registry")


class MemoryRegistry(Registry):
    kind = "memory"

    def __init__(self) -> None:
        self._nodes: dict[str, tuple[NodeRecord, float]] = {}
        self._loads: dict[str, tuple[LoadReport, float]] = {}
        self._contents: dict[str, ContentRecord] = {}
        self._carriers: dict[str, set[str]] = {}
        self._members: dict[str, bytes] = {}
        self._revocations: dict[str, bytes] = {}
        self._pending: dict[str, dict[str, str]] = {}
        self._qoe: deque[dict[str, Any]] = deque(maxlen=MAX_QOE)
        self._events = EventSubscribers()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._events.cancel()

    async def ping(self) -> None:
        return None

    @staticmethod
    def _alive(expires: float) -> bool:
        return expires > time.monotonic()

    async def put_node(self, record: NodeRecord, ttl: float) -> None:
        self._nodes[record.address] = (record, time.monotonic() + ttl)

    async def remove_node(self, address: str) -> None:
        self._nodes.pop(address, None)
        self._loads.pop(address, None)

    async def nodes(self) -> list[NodeRecord]:
        for address in [a for a, (_, exp) in self._nodes.items() if not self._alive(exp)]:
            del self._nodes[address]
        return [record for record, _ in self._nodes.values()]

    async def put_load(self, address: str, load: LoadReport, ttl: float) -> None:
        self._loads[address] = (load, time.monotonic() + ttl)

    async def loads(self) -> dict[str, LoadReport]:
        return {a: load for a, (load, exp) in self._loads.items() if self._alive(exp)}

    async def put_content(self, record: ContentRecord) -> None:
        self._contents[record.content_id] = record

    async def remove_content(self, content_id: str) -> None:
        self._contents.pop(content_id, None)
        self._carriers.pop(content_id, None)

    async def contents(self) -> dict[str, ContentRecord]:
        return dict(self._contents)

    async def add_carrier(self, content_id: str, address: str) -> None:
        self._carriers.setdefault(content_id, set()).add(address)

    async def remove_carrier(self, content_id: str, address: str) -> None:
        carriers = self._carriers.get(content_id)
        if carriers is not None:
            carriers.discard(address)
            if not carriers:
                del self._carriers[content_id]

    async def carriers(self) -> dict[str, set[str]]:
        return {c: set(nodes) for c, nodes in self._carriers.items()}

    async def put_member(self, identity: str, blob: bytes) -> None:
        self._members[identity] = blob

    async def members(self) -> dict[str, bytes]:
        return dict(self._members)

    async def put_revocation(self, identity: str, blob: bytes) -> None:
        self._revocations[identity] = blob
        self._members.pop(identity, None)

    async def revocations(self) -> dict[str, bytes]:
        return dict(self._revocations)

    async def put_pending(self, identity: str, profile: dict[str, str]) -> None:
        self._pending[identity] = dict(profile)

    async def remove_pending(self, identity: str) -> None:
        self._pending.pop(identity, None)

    async def pending(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in self._pending.items()}

    async def add_qoe(self, sample: dict[str, Any]) -> None:
        self._qoe.appendleft(dict(sample))

    async def qoe(self, limit: int = MAX_QOE) -> list[dict[str, Any]]:
        return list(self._qoe)[:limit]

    async def publish(self, event: ClusterEvent) -> None:
        self._events.deliver(event)

    def subscribe(self, handler: EventHandler) -> None:
        self._events.add(handler)
