"""Answers to the cluster ('C') requests that read or change shared cluster state.

The AVRS core has already verified, authorised (docs/avrs-protocol.md §7) and checked every
request's arguments; :class:`ClusterRequests` acts on it and answers with a retcode, plus a typed
response (RESPONSE flag) where §4 defines one. Membership requests (join, approve, remove, roles)
and CONTENT_ADD/DEL stay with :class:`~.avrs_cluster.ClusterDirectory`; on a node that is not the
cluster's host but shares a registry, approve/remove/role changes are refused
(CLUSTER_WRONG_REQUEST): only the host signs membership records.

Arguments this layer adds (the core passes unknown types through): URL 0x52 (UTF-8, BALANCE_RESP:
where to connect), STATS 0x53 (UTF-8 JSON, STATS_RESP), REGION 0x54 (UTF-8, BALANCE_REQ: the
client's region), DRAIN 0x55 (CHANGE, host only: u64 node address + u8 1 drain / 0 undrain; the
node stops taking clients and balancers move its clients away).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Final

from dapsdk.avrs.constants import (
    GUUID_SIZE,
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    ClusterSetup,
    Role,
    SessionOp,
    SignalArg,
    SignalOp,
)
from dapsdk.avrs.directory import ClusterInfo, ContentInfo
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError
from dapsdk.avrs.events import ClusterRequestReceived
from dapsdk.avrs.signing import SignatureAlgorithm
from dapsdk.avrs.tsd import Tsd, TsdList
from dapsdk.stream.identity import NodeAddress

from .autoscale import AutoScaler
from .avrs_cluster import ClusterDirectory, node_address_of
from .balancer import Balancer
from .cluster_sync import ClusterSync
from .registry import LoadReport

if TYPE_CHECKING:
    from .avrs_channels import AvrsBinding

log = logging.getLogger("dapsdk.avrs.cluster")


class ServiceArg(enum.IntEnum):
    URL = 0x52
    STATS = 0x53
    REGION = 0x54
    DRAIN = 0x55


#: Membership changes only the host may make when the registry is shared.
HOST_ONLY: Final = frozenset(
    {ClusterOp.MEMBER_REQUEST_APPROVE, ClusterOp.MEMBER_REMOVE, ClusterOp.ROLE_ASSIGN}
)


@dataclass
class ClusterOptions:
    title: str = ""
    setup: int = ClusterSetup.ROUND_TABLE
    encrypted: bool = False


Answer = tuple[int, str | None]


@dataclass
class ClusterRequests:
    directory: ClusterDirectory
    sync: ClusterSync
    balancer: Balancer[int]
    roles: Role
    """This node's roles."""
    options: dict[bytes, ClusterOptions] = field(default_factory=dict)
    bindings: dict[int, AvrsBinding] = field(default_factory=dict)
    """Clients this balancer placed, by stream id (for failover redirects)."""
    redirected: int = 0
    """Clients redirected after their server died or was drained."""
    autoscaler: AutoScaler | None = None
    """The balancer's scaling signal (scale_* keys), if configured."""
    _notify_scheduled: bool = False
    _qoe_last: dict[int, float] = field(default_factory=dict)
    subscribers: Callable[[], list[AvrsBinding]] = lambda: []

    @property
    def is_host(self) -> bool:
        return bool(self.roles & Role.HOST)

    # ------------------------------------------------------------------ entry point

    def handle(self, binding: AvrsBinding, event: ClusterRequestReceived) -> bool:
        """Answer ``event`` if this layer serves its op; False leaves it to the directory."""
        op = event.op
        if op in HOST_ONLY and self.sync.replicates_membership and not self.sync.signs_membership:
            binding.conn.reply(
                event.request_id,
                AvrsError.CLUSTER_WRONG_REQUEST,
                detail="membership is changed at the cluster host",
            )
            return True
        handler = _HANDLERS.get(op)
        if handler is None:
            return False
        try:
            code, detail = handler(self, binding, event)
        except AvrsProtocolError as exc:
            code, detail = int(exc.code), exc.reason
        binding.conn.reply(event.request_id, code, detail=detail)
        return True

    def cluster(self, event: ClusterRequestReceived) -> ClusterInfo:
        cluster_id = event.cluster_id or self.directory.cluster_id
        info = (
            self.directory.visible_to(event.signer)
            if cluster_id == self.directory.cluster_id
            else self.directory.view.cluster(cluster_id)
        )
        if info is None:
            raise AvrsProtocolError(AvrsError.CLUSTER_NOT_FOUND, "no such cluster")
        return info

    def _options(self, cluster_id: bytes) -> ClusterOptions:
        options = self.options.get(cluster_id)
        if options is None:
            options = self.options[cluster_id] = ClusterOptions(
                title=self.directory.name if cluster_id == self.directory.cluster_id else ""
            )
        return options

    def _info_args(self, info: ClusterInfo) -> list[Tsd]:
        options = self._options(info.cluster_id)
        return [
            Tsd(ClusterArg.ID, info.cluster_id),
            Tsd(ClusterArg.TITLE, options.title.encode()[:63]),
            Tsd(ClusterArg.SETUP, bytes([options.setup])),
            Tsd(ClusterArg.ENCRYPTED, bytes([int(options.encrypted)])),
            Tsd(ClusterArg.SIGN_ALGORITHM, int(info.signature_algorithm).to_bytes(2, "little")),
            Tsd(ClusterArg.MEMBERS_COUNT, len(info.members).to_bytes(4, "little")),
        ]

    # ------------------------------------------------------------------ cluster options

    def _create(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        assert event.signer is not None
        cluster_id = event.args.get(ClusterArg.ID) or os.urandom(GUUID_SIZE)
        if self.directory.view.cluster(cluster_id) is not None:
            return int(AvrsError.ARG_INCORRECT), "a cluster with this id exists"
        algorithm = event.args.uint(ClusterArg.SIGN_ALGORITHM, 2, required=False)
        info = ClusterInfo(
            cluster_id,
            event.signer,
            {event.signer: Role.HOST},
            signature_algorithm=SignatureAlgorithm(algorithm or SignatureAlgorithm.ED25519),
        )
        self.directory.view.put(info)
        self._set_options(cluster_id, event)
        binding.conn.respond(
            AvrsChannel.CLUSTER, ClusterOp.INFO, event.request_id, self._info_args(info)
        )
        return int(AvrsError.SUCCESS), None

    def _destroy(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        info = self.cluster(event)
        if info.cluster_id == self.directory.cluster_id:
            return (
                int(AvrsError.CLUSTER_WRONG_REQUEST),
                "the node's configured cluster cannot be destroyed",
            )
        self.directory.view.remove(info.cluster_id)
        self.options.pop(info.cluster_id, None)
        return int(AvrsError.SUCCESS), None

    def _set_options(self, cluster_id: bytes, event: ClusterRequestReceived) -> None:
        options = self._options(cluster_id)
        title = event.args.text(ClusterArg.TITLE, 63, required=False)
        if title is not None:
            options.title = title
        setup = event.args.uint(ClusterArg.SETUP, 1, required=False)
        if setup is not None:
            options.setup = setup
        encrypted = event.args.uint(ClusterArg.ENCRYPTED, 1, required=False)
        if encrypted is not None:
            options.encrypted = bool(encrypted)

    def _change(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        info = self.cluster(event)
        algorithm = event.args.uint(ClusterArg.SIGN_ALGORITHM, 2, required=False)
        drain = event.args.get(ServiceArg.DRAIN)
        if drain is not None:
            if len(drain) != 9 or drain[8] > 1:
                return int(AvrsError.ARG_INCORRECT), "DRAIN is a u64 node address and a u8 0/1"
            address = str(NodeAddress(int.from_bytes(drain[:8], "little")))
            if address not in self.sync.state.nodes:
                return int(AvrsError.MEMBER_NOT_FOUND), f"no live node {address}"
            self._write(partial(self.sync.request_drain, address, bool(drain[8])))
        self._set_options(info.cluster_id, event)
        if algorithm is not None:
            full = self.directory.view.cluster(info.cluster_id)
            assert full is not None
            updated = replace(full, signature_algorithm=SignatureAlgorithm(algorithm))
            if info.cluster_id == self.directory.cluster_id:
                self.directory._put(updated)
            else:
                self.directory.view.put(updated)
        return int(AvrsError.SUCCESS), None

    def _info(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        info = self.cluster(event)
        binding.conn.respond(
            AvrsChannel.CLUSTER, ClusterOp.INFO, event.request_id, self._info_args(info)
        )
        return int(AvrsError.SUCCESS), None

    def _list(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        others = sorted(cid for cid in self.options if cid != self.directory.cluster_id)
        ids = [self.directory.cluster_id, *others]
        args: list[Tsd] = []
        for cluster_id in ids:
            if self.directory.view.cluster(cluster_id) is None:
                continue
            args.append(Tsd(ClusterArg.ID, cluster_id))
            args.append(Tsd(ClusterArg.TITLE, self._options(cluster_id).title.encode()[:63]))
        binding.conn.respond(AvrsChannel.CLUSTER, ClusterOp.LIST_RESP, event.request_id, args)
        return int(AvrsError.SUCCESS), None

    # ------------------------------------------------------------------ contents

    def _content_list(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        info = self.cluster(event)
        args: list[Tsd] = []
        for content_id in sorted(info.contents):
            content = info.contents[content_id]
            args += [
                Tsd(ClusterArg.CONTENT_ID, content_id),
                Tsd(ClusterArg.CONTENT_FLOWS, content.flows.encode()),
                Tsd(ClusterArg.CONTENT_TITLE, content.title.encode()),
            ]
        binding.conn.respond(
            AvrsChannel.CLUSTER, ClusterOp.CONTENT_LIST_RESP, event.request_id, args
        )
        return int(AvrsError.SUCCESS), None

    def _content_update(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        info = self.cluster(event)
        content_id = event.args.require(ClusterArg.CONTENT_ID)
        content = info.contents.get(content_id)
        if content is None:
            return int(AvrsError.CONTENT_NOT_FOUND), "no such content"
        flows = event.args.text(ClusterArg.CONTENT_FLOWS, 32, required=False)
        title = event.args.text(ClusterArg.CONTENT_TITLE, 255, required=False)
        codecs_raw = event.args.all(ClusterArg.CONTENT_FLOW_CODEC)
        codecs = (
            tuple(d[1:].rstrip(b"\0").decode("ascii") for d in sorted(codecs_raw))
            if codecs_raw
            else content.codecs
        )
        try:
            updated = ContentInfo(
                content.content_id,
                content.owner,
                flows or content.flows,
                codecs,
                content.title if title is None else title,
                content.available,
            )
        except ValueError as exc:
            return int(AvrsError.CONTENT_INFO_CORRUPTED), str(exc)
        self.directory.put_content(updated)
        return int(AvrsError.SUCCESS), None

    # ------------------------------------------------------------------ balancing and load

    def _balance(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        content = event.args.get(ClusterArg.CONTENT_ID)
        region = event.args.text(ServiceArg.REGION, 63, required=False)
        node = self.balancer.choose(content=content.hex() if content else None, region=region)
        if node is None:
            return int(AvrsError.BUSY), "no server is available"
        placement = self.balancer.place(binding.stream.id, node)
        self.bindings[binding.stream.id] = binding
        address = NodeAddress.parse(node.address)
        binding.conn.respond(
            AvrsChannel.CLUSTER,
            ClusterOp.BALANCE_RESP,
            event.request_id,
            [
                Tsd(ClusterArg.ADDR, struct.pack("<QQ", 0, address.value)),
                Tsd(ServiceArg.URL, placement.url.encode()),
            ],
        )
        self.redirect(binding, placement.url, "balance")
        return int(AvrsError.SUCCESS), None

    def redirect(self, binding: AvrsBinding, url: str, reason: str) -> None:
        """Tell the client over the signal channel to reconnect to ``url``."""
        binding.conn.send_request(
            AvrsChannel.SIGNAL,
            SignalOp.REDIRECT,
            [Tsd(SignalArg.TARGET, url.encode()), Tsd(SignalArg.REASON, reason.encode())],
            now=time.time(),
        )
        binding.pump()

    def rebalance(self) -> int:
        """Move the clients of dead or draining servers; returns how many were moved."""
        moved = 0
        nodes = self.sync.state.nodes
        for client, old in self.balancer.orphans():
            binding = self.bindings.get(client)
            if binding is None or binding.lost:
                self.balancer.forget(client)
                self.bindings.pop(client, None)
                continue
            node = self.balancer.choose(exclude=(old.server,))
            if node is None:
                continue
            placement = self.balancer.place(client, node)
            reason = "drain" if old.server in nodes else "failover"
            self.redirect(binding, placement.url, reason)
            moved += 1
        self.redirected += moved
        if moved:
            log.info("moved %d clients off dead or draining servers", moved)
        return moved

    def quality_report(self, binding: AvrsBinding, args: TsdList) -> None:
        """A client's signal QUALITY_REPORT becomes a sample of the cluster's QoE history (at
        most one per connection per :data:`QOE_INTERVAL`, so a chatty peer cannot crowd the
        registry writes)."""
        now = time.monotonic()
        last = self._qoe_last.get(binding.stream.id)
        if last is not None and now - last < QOE_INTERVAL:
            return
        self._qoe_last[binding.stream.id] = now
        session = binding.conn.session
        sample: dict[str, object] = {
            "at": time.time(),
            "node": self.sync.node.address,
            "session": session.session_id.hex() if session is not None else None,
        }
        for name, arg, size in _QOE_FIELDS:
            value = args.uint(arg, size, required=False)
            if value is not None:
                sample[name] = value
        self._write(partial(self.sync.registry.add_qoe, sample))

    def binding_lost(self, binding: AvrsBinding) -> None:
        self.balancer.forget(binding.stream.id)
        self.bindings.pop(binding.stream.id, None)
        self._qoe_last.pop(binding.stream.id, None)

    def _load_report(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        assert event.signer is not None
        sessions, bitrate, cpu = struct.unpack("<IQH", event.args.require(ClusterArg.LOAD))
        if cpu > 1000:
            return int(AvrsError.ARG_INCORRECT), "CPU is per mille (0..1000)"
        address = str(node_address_of(event.signer))
        load = LoadReport(sessions, bitrate, cpu, time.time())
        self.sync.state.loads[address] = load
        self._write(lambda: self.sync.registry.put_load(address, load, self.sync.ttl))
        return int(AvrsError.SUCCESS), None

    def _write(self, action: Callable[[], object]) -> None:
        self.sync._write(action, "request")

    # ------------------------------------------------------------------ routes

    @staticmethod
    def _route(event: ClusterRequestReceived) -> tuple[str, str]:
        raw = event.args.require(ClusterArg.ROUTE)
        return raw[:GUUID_SIZE].hex(), str(NodeAddress(int.from_bytes(raw[GUUID_SIZE:], "little")))

    def _route_add(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        content, node = self._route(event)
        if content not in self.sync.state.contents and bytes.fromhex(content) not in (
            self.directory.info.contents
        ):
            return int(AvrsError.CONTENT_NOT_FOUND), "no such content"
        self.sync.state.carriers.setdefault(content, set()).add(node)
        self._write(lambda: self.sync.registry.add_carrier(content, node))
        return int(AvrsError.SUCCESS), None

    def _route_del(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        content, node = self._route(event)
        carriers = self.sync.state.carriers.get(content, set())
        if node not in carriers:
            return int(AvrsError.CONTENT_NOT_FOUND), "no such route"
        carriers.discard(node)
        self._write(lambda: self.sync.registry.remove_carrier(content, node))
        return int(AvrsError.SUCCESS), None

    def _route_check(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        content, node = self._route(event)
        if node in self.sync.state.carriers.get(content, set()):
            return int(AvrsError.SUCCESS), None
        return int(AvrsError.CONTENT_NOT_FOUND), "no such route"

    def _route_find(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        content_id = event.args.require(ClusterArg.CONTENT_ID)
        content = content_id.hex()
        carriers = set(self.sync.state.carriers.get(content, set()))
        record = self.sync.state.contents.get(content)
        origin = record.origin if record is not None else ""
        if not carriers and not origin:
            return int(AvrsError.CONTENT_NOT_FOUND), "nobody carries this content"
        ordered = [*([origin] if origin else []), *sorted(carriers - {origin})]
        args = [
            Tsd(ClusterArg.ROUTE, content_id + NodeAddress.parse(a).value.to_bytes(8, "little"))
            for a in ordered
        ]
        binding.conn.respond(AvrsChannel.CLUSTER, ClusterOp.ROUTE_FIND, event.request_id, args)
        return int(AvrsError.SUCCESS), None

    # ------------------------------------------------------------------ monitoring

    def stats(self) -> dict[str, object]:
        state = self.sync.state
        info = self.directory.info
        return {
            "cluster": self.directory.name,
            "registry": self.sync.registry.kind,
            "registry_available": self.sync.available,
            "members": {
                identity.hex(): {"address": str(node_address_of(identity)), "roles": int(roles)}
                for identity, roles in sorted(info.members.items())
            },
            "pending": sorted(identity.hex() for identity in info.pending),
            "contents": len(info.contents),
            "nodes": {
                n.address: {
                    "roles": n.roles,
                    "region": n.region,
                    "urls": list(n.urls),
                    "draining": n.draining,
                    "load": None
                    if (load := state.loads.get(n.address)) is None
                    else {
                        "sessions": load.sessions,
                        "bitrate": load.bitrate,
                        "cpu_permille": load.cpu_permille,
                    },
                    "placed": self.balancer.placed(n.address),
                }
                for n in sorted(state.nodes.values(), key=lambda n: n.address)
            },
            "carriers": {c: sorted(a) for c, a in state.carriers.items()},
            "redirected": self.redirected,
            "scale_signals": [s.direction for s in self.autoscaler.emitted]
            if self.autoscaler is not None
            else [],
        }

    def _stats(self, binding: AvrsBinding, event: ClusterRequestReceived) -> Answer:
        self.cluster(event)
        text = json.dumps(self.stats(), sort_keys=True).encode()
        binding.conn.respond(
            AvrsChannel.CLUSTER,
            ClusterOp.STATS_RESP,
            event.request_id,
            [Tsd(ServiceArg.STATS, text[: 1 << 20])],
        )
        return int(AvrsError.SUCCESS), None

    # ------------------------------------------------------------------ session notifications

    def changed(self, old: ClusterInfo, new: ClusterInfo) -> None:
        """Directory observer: notify subscribed sessions once per event-loop turn."""
        if self._notify_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._notify_scheduled = True
        loop.call_soon(self.notify_sessions)

    def notify_sessions(self) -> None:
        """Send an INFO response (request id 0) to every session that joined the cluster's
        notifications (session CLUSTER_ADD/UPDATE)."""
        self._notify_scheduled = False
        info = self.directory.info
        args = self._info_args(info)
        for binding in self.subscribers():
            session = binding.conn.session
            if session is None or info.cluster_id not in session.clusters or binding.lost:
                continue
            binding.conn.respond(AvrsChannel.CLUSTER, ClusterOp.INFO, 0, args)
            binding.transmit()


_Handler = Callable[[ClusterRequests, "AvrsBinding", ClusterRequestReceived], Answer]

_HANDLERS: Final[dict[int, _Handler]] = {
    ClusterOp.CREATE: ClusterRequests._create,
    ClusterOp.DESTROY: ClusterRequests._destroy,
    ClusterOp.CHANGE: ClusterRequests._change,
    ClusterOp.INFO: ClusterRequests._info,
    ClusterOp.LIST_REQ: ClusterRequests._list,
    ClusterOp.CONTENT_LIST_REQ: ClusterRequests._content_list,
    ClusterOp.CONTENT_UPDATE: ClusterRequests._content_update,
    ClusterOp.BALANCE_REQ: ClusterRequests._balance,
    ClusterOp.LOAD_REPORT: ClusterRequests._load_report,
    ClusterOp.ROUTE_ADD: ClusterRequests._route_add,
    ClusterOp.ROUTE_DEL: ClusterRequests._route_del,
    ClusterOp.ROUTE_FIND: ClusterRequests._route_find,
    ClusterOp.ROUTE_CHECK: ClusterRequests._route_check,
    ClusterOp.STATS_REQ: ClusterRequests._stats,
}

#: Seconds between two QoE samples taken from one connection.
QOE_INTERVAL: Final = 1.0
#: QUALITY_REPORT arguments kept in a QoE sample: (name, argument, size).
_QOE_FIELDS: Final = (
    ("rtt_us", SignalArg.RTT_US, 4),
    ("loss_permille", SignalArg.LOSS_PERMILLE, 2),
    ("jitter_us", SignalArg.JITTER_US, 4),
    ("bitrate", SignalArg.BITRATE, 8),
)

#: Session ops after which a session receives cluster notifications.
NOTIFYING_SESSION_OPS: Final = frozenset({SessionOp.CLUSTER_ADD, SessionOp.CLUSTER_UPDATE})
