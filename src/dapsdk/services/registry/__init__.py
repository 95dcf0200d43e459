"""The cluster registry: what the members of a cluster share, behind one interface.

Two backends implement :class:`Registry`: :class:`~.memory.MemoryRegistry` (embedded, one
process; the default) and :class:`~.redis.RedisRegistry` (several machines sharing a Redis
server, as LiveKit, SRS 7 and OvenMediaEngine do). Only the composition root
(:mod:`dapsdk.node.wiring`) picks one; everything else sees this interface.

What it holds, per cluster:

- node records (address, roles, region, URLs) that expire unless refreshed (heartbeat TTL);
- load reports (sessions, egress bit/s, CPU per mille), expiring with their node;
- contents and the content -> origin and carriers map;
- membership records and revocations (opaque signed blobs, see :mod:`..membership`: a registry
  is not trusted, every node verifies what it reads);
- pending join requests;
- the QoE history (bounded to :data:`MAX_QOE`);
- cluster events over publish/subscribe.

Every method may raise :class:`RegistryUnavailable` (Redis went away); callers keep serving and
retry. Records are plain dataclasses with a JSON form, so both backends store the same bytes.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

log = logging.getLogger("dapsdk.avrs.registry")

#: Most QoE samples kept (oldest dropped first).
MAX_QOE: Final = 1000
#: Largest event accepted from pub/sub (bigger ones are dropped as malformed).
MAX_EVENT_SIZE: Final = 256 * 1024


class RegistryUnavailable(Exception):
    """The registry cannot be reached (Redis down, refused, timed out)."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node's announcement: who it is, what it does, where clients reach it."""

    address: str
    """dap_stream node address, ``XXXX::XXXX::XXXX::XXXX``."""
    identity: str
    """Hex of the 32-byte AVRS identity."""
    roles: int
    """Role bitmask the node runs with (from its configuration)."""
    region: str = ""
    urls: tuple[str, ...] = ()
    """Listener URLs with ``?node=`` (what a balancer redirects clients to)."""
    started: float = 0.0
    draining: bool = False
    """A drained node takes no new clients; the balancer moves its clients away."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> NodeRecord:
        data = json.loads(raw)
        data["urls"] = tuple(data.get("urls", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class LoadReport:
    """A server's load (cluster LOAD_REPORT)."""

    sessions: int
    bitrate: int
    """Egress bits per second."""
    cpu_permille: int
    at: float = 0.0
    """When it was measured (wall clock)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> LoadReport:
        return cls(**json.loads(raw))


@dataclass(frozen=True, slots=True)
class ContentRecord:
    """A content of the cluster and the node that originates it."""

    content_id: str
    """Hex GUUID."""
    owner: str
    """Hex identity of the member that declared it."""
    flows: str
    codecs: tuple[str | None, ...] = ()
    title: str = ""
    origin: str = ""
    """Node address of the origin (where the publisher sends it)."""
    name: str = ""
    """Readable name (CONTENT_NAME); a node keeps it only if it derives ``content_id``."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ContentRecord:
        data = json.loads(raw)
        data["codecs"] = tuple(data.get("codecs", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """One message on the cluster's event channel."""

    kind: str
    """``member``, ``revoke``, ``pending``, ``content``, ``route``, ``node``, ``drain``, ``scale``."""
    data: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    """Node address of the publisher (nodes ignore their own events)."""

    def encode(self) -> str:
        return json.dumps({"kind": self.kind, "data": self.data, "origin": self.origin})

    @classmethod
    def decode(cls, raw: str | bytes) -> ClusterEvent:
        if len(raw) > MAX_EVENT_SIZE:
            raise ValueError("event too large")
        obj = json.loads(raw)
        if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
            raise ValueError("event without a kind")
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError("event data is not an object")
        return cls(obj["kind"], data, str(obj.get("origin", "")))


EventHandler = Callable[[ClusterEvent], Awaitable[None] | None]


class EventSubscribers:
    """The handlers of a registry's cluster events, shared by both backends: each handler is
    called in turn, a coroutine it returns runs as a task (kept until done, cancelled on close),
    and one handler's failure is logged without stopping the others."""

    def __init__(self) -> None:
        self.handlers: list[EventHandler] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, handler: EventHandler) -> None:
        self.handlers.append(handler)

    def deliver(self, event: ClusterEvent) -> None:
        for handler in tuple(self.handlers):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                log.exception("cluster event handler failed on %s", event.kind)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class Registry(abc.ABC):
    """Shared cluster state. All methods are coroutines; all may raise RegistryUnavailable."""

    #: ``memory`` or ``redis`` (shown by ``avrs cluster`` and the status API).
    kind: str = ""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect; raise RegistryUnavailable with a clear message when it cannot."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None: ...

    # nodes and load
    @abc.abstractmethod
    async def put_node(self, record: NodeRecord, ttl: float) -> None: ...

    @abc.abstractmethod
    async def remove_node(self, address: str) -> None: ...

    @abc.abstractmethod
    async def nodes(self) -> list[NodeRecord]:
        """Live nodes (records whose TTL has not run out)."""

    @abc.abstractmethod
    async def put_load(self, address: str, load: LoadReport, ttl: float) -> None: ...

    @abc.abstractmethod
    async def loads(self) -> dict[str, LoadReport]: ...

    # contents and routes
    @abc.abstractmethod
    async def put_content(self, record: ContentRecord) -> None: ...

    @abc.abstractmethod
    async def remove_content(self, content_id: str) -> None: ...

    @abc.abstractmethod
    async def contents(self) -> dict[str, ContentRecord]: ...

    @abc.abstractmethod
    async def add_carrier(self, content_id: str, address: str) -> None: ...

    @abc.abstractmethod
    async def remove_carrier(self, content_id: str, address: str) -> None: ...

    @abc.abstractmethod
    async def carriers(self) -> dict[str, set[str]]:
        """content id -> node addresses that carry it (origin included once it announces)."""

    # membership (signed blobs; verified by the readers)
    @abc.abstractmethod
    async def put_member(self, identity: str, blob: bytes) -> None: ...

    @abc.abstractmethod
    async def members(self) -> dict[str, bytes]: ...

    @abc.abstractmethod
    async def put_revocation(self, identity: str, blob: bytes) -> None:
        """Store a revocation and drop the member's record."""

    @abc.abstractmethod
    async def revocations(self) -> dict[str, bytes]: ...

    @abc.abstractmethod
    async def put_pending(self, identity: str, profile: dict[str, str]) -> None: ...

    @abc.abstractmethod
    async def remove_pending(self, identity: str) -> None: ...

    @abc.abstractmethod
    async def pending(self) -> dict[str, dict[str, str]]: ...

    # QoE history
    @abc.abstractmethod
    async def add_qoe(self, sample: dict[str, Any]) -> None:
        """Append one sample; only the newest :data:`MAX_QOE` are kept."""

    @abc.abstractmethod
    async def qoe(self, limit: int = MAX_QOE) -> list[dict[str, Any]]:
        """Newest first."""

    # events
    @abc.abstractmethod
    async def publish(self, event: ClusterEvent) -> None: ...

    @abc.abstractmethod
    def subscribe(self, handler: EventHandler) -> None:
        """Call ``handler`` for every event published on the cluster (this node's too)."""
