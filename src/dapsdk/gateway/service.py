"""The gateway's state and the logic behind its handlers (the handlers in :mod:`.app` only parse
requests and render answers).

:class:`GatewayState` holds what every handler reads: the node (optional: a gateway can serve a
catalog alone), the content catalog, quality reports, HTTP counters and the cluster view (the
nodes the dashboard shows). The cluster view is a callable so that the composition root decides
where it comes from: the local node and its cluster directory by default, the whole in-process
cluster in ``avrs demo``, the registry once clusters share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..avrs.constants import Role
from ..services.auth.roles import format_roles
from ..services.auth.tokens import TokenVerifier
from ..services.avrs_cluster import content_guuid
from ..services.registry import RegistryUnavailable
from .auth import PlaybackRule
from .content import ContentCatalog
from .metrics import HttpCounters
from .qoe import QoeAggregator

if TYPE_CHECKING:
    from ..node.wiring import AvrsNode
    from ..services.avrs_channels import AvrsBinding

NodeLister = Callable[[], list[dict[str, Any]]]


def role_names(roles: Role) -> list[str]:
    text = format_roles(roles)
    return [] if text == "none" else text.split(",")


def node_summary(node: AvrsNode, http: str | None = None) -> dict[str, Any]:
    """One node of this process as the dashboard and ``/api/v1/nodes`` show it."""
    stream_node = node.stream_node
    stats = [s.get_stats() for s in stream_node.streams.values()]
    return {
        "address": str(node.address),
        "roles": role_names(node.role),
        "listen": node.urls,
        "http": http,
        "draining": False,
        "load": {
            "connections": len(stream_node.streams),
            "sessions": len(node.service.sessions),
            "bytes_in": sum(s.bytes_received for s in stats),
            "bytes_out": sum(s.bytes_sent for s in stats),
            "bitrate_bps": None,
            "cpu_percent": None,
        },
    }


def registry_nodes(node: AvrsNode, http: str | None) -> list[dict[str, Any]]:
    """Every live node of the cluster as the registry last showed it (load from their reports);
    this node's own entry has its local counters."""
    sync = node.sync
    if sync is None or not sync.state.nodes:
        return [node_summary(node, http)]
    own = str(node.address)
    out = []
    for address, record in sorted(sync.state.nodes.items()):
        if address == own:
            entry = node_summary(node, http)
        else:
            entry = {
                "address": address,
                "roles": role_names(Role(record.roles & 0xFFFF)),
                "listen": list(record.urls),
                "http": None,
                "draining": record.draining,
                "load": {"connections": None, "sessions": 0, "bytes_in": None, "bytes_out": None},
            }
        load = sync.state.loads.get(address)
        if load is not None:
            entry["load"].update(
                sessions=load.sessions,
                bitrate_bps=load.bitrate,
                cpu_percent=round(load.cpu_permille / 10, 1),
            )
        entry["draining"] = record.draining
        out.append(entry)
    return out


@dataclass(slots=True)
class GatewayState:
    node: AvrsNode | None
    catalog: ContentCatalog
    qoe: QoeAggregator = field(default_factory=QoeAggregator)
    http: HttpCounters = field(default_factory=HttpCounters)
    node_lister: NodeLister | None = None
    url: str | None = None
    """Where this gateway listens (set when it starts)."""
    started_at: float = field(default_factory=time.time)
    vod_root: Path | None = None
    """Directory VoD imports may read from (None: VoD import through REST is refused)."""

    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.qoe.on_point = self._qoe_to_registry

    def _qoe_to_registry(self, content: str, point: dict[str, float]) -> None:
        """A completed one-minute QoE point goes to the cluster registry (Redis when the
        cluster has one), tagged with the content and this node."""
        sync = self.node.sync if self.node is not None else None
        if sync is None or len(self._pending) >= 16:
            return
        sample = {"content": content, "node": str(self.node.address) if self.node else "", **point}

        async def push() -> None:
            with contextlib.suppress(RegistryUnavailable, OSError):
                await sync.registry.add_qoe(sample)

        task = asyncio.get_running_loop().create_task(push())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @property
    def token_verifier(self) -> TokenVerifier | None:
        if self.node is None:
            return None
        return self.node.credentials.token_verifier

    @property
    def playback_rule(self) -> PlaybackRule:
        """The node's loopback/token rules for playback (defaults without a node)."""
        if self.node is None:
            return PlaybackRule()
        avrs = self.node.config.avrs
        return PlaybackRule(avrs.loopback_no_credentials, avrs.token_required)

    @property
    def cluster_owner(self) -> bytes | None:
        return self.node.directory.info.owner if self.node is not None else None

    def bindings(self) -> Iterator[AvrsBinding]:
        if self.node is None:
            return iter(())
        return iter(list(self.node.service.bindings.values()))

    def nodes(self) -> list[dict[str, Any]]:
        if self.node_lister is not None:
            return self.node_lister()
        if self.node is None:
            return []
        return registry_nodes(self.node, self.url)

    def cluster(self) -> dict[str, Any]:
        nodes = self.nodes()
        info: dict[str, Any] = {"nodes": len(nodes), "contents": len(self.catalog.contents)}
        if self.node is not None:
            directory = self.node.directory
            members = directory.info.members
            info.update(
                {
                    "name": directory.name,
                    "id": directory.cluster_id.hex(),
                    "owner": directory.info.owner.hex(),
                    "members": [
                        {"identity": ident.hex(), "roles": role_names(Role(int(roles) & 0xFFFF))}
                        for ident, roles in list(members.items())[:1000]
                    ],
                }
            )
        return info

    def stream_viewers(self) -> dict[bytes, int]:
        """Content GUUID -> AVRS sessions receiving it from this node (stream protocol viewers)."""
        counts: dict[bytes, int] = {}
        for binding in self.bindings():
            session = binding.conn.session
            if session is None or binding.lost:
                continue
            for slot in list(session.contents.values()):
                if slot.streams_output:
                    cid = slot.content.content_id
                    counts[cid] = counts.get(cid, 0) + 1
        return counts

    def refresh_viewers(self) -> None:
        """Recount every content's HLS, low-latency and stream-protocol viewers."""
        self.catalog.refresh_viewers(time.time())
        counts = self.stream_viewers()
        for content in self.catalog.list():
            content.stream_viewers = counts.get(content_guuid(content.id), 0)

    def sessions(self) -> list[dict[str, Any]]:
        """Open AVRS sessions and low-latency WebSocket viewers."""
        out: list[dict[str, Any]] = []
        if self.node is not None:
            registry = self.node.service.sessions
            for sid, session in list(getattr(registry, "_sessions", {}).items())[:1000]:
                out.append(
                    {
                        "id": sid.hex(),
                        "kind": "avrs",
                        "state": str(getattr(session, "state", "")),
                    }
                )
        for content in self.catalog.list():
            for rendition in content.renditions.values():
                for index, _sub in enumerate(list(rendition.subscribers)[:1000]):
                    out.append(
                        {
                            "id": f"{content.id}/{rendition.name}/{index}",
                            "kind": "low-latency",
                            "content": content.id,
                        }
                    )
            for viewer in list(content.hls_sessions)[:1000]:
                out.append({"id": viewer, "kind": "hls", "content": content.id})
        return out

    def summary(self) -> dict[str, Any]:
        """The dashboard's periodic snapshot."""
        now = time.time()
        self.refresh_viewers()
        return {
            "time": now,
            "nodes": self.nodes(),
            "contents": [c.to_json() for c in self.catalog.list()],
            "qoe": {c.id: self.qoe.summary(c.id, now) for c in self.catalog.list()},
            "http": {"bytes_out": self.http.bytes_out, "requests": self.http.requests},
        }
