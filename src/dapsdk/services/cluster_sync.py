"""Keeps a node's cluster directory and the shared registry in step.

Outbound (this node -> registry), from the directory's change observer:

- every node: its node record and load every ``heartbeat_interval`` (the record expires after
  the keepalive timeout, 3 heartbeats, without one), join requests it received, contents declared on it
  (with this node as their origin and first carrier);
- a host with a CA-issued HOST certificate: a signed :class:`~.membership.MembershipRecord` for
  every member it admits (approval, certificate, token) and a signed revocation for every member
  it removes, published as events so that every node applies them at once.

Inbound (registry -> this node): membership records and revocations, *verified* against the
cluster CA before they touch the directory (unsigned or badly signed ones are logged and
ignored), pending joins, contents, node records, loads and carriers (the
:class:`ClusterState` the request handlers and the balancer read).

When the registry goes away the node keeps serving from its directory; writes made meanwhile are
replayed (``_dirty``) and the node re-registers as soon as the registry answers again. A host
re-publishes every record it issued, so a Redis restarted empty loses no member.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Final

from dapsdk.avrs.constants import Role
from dapsdk.avrs.directory import ClusterInfo, ContentInfo
from dapsdk.avrs.signing import AvrsSigner

from .avrs_cluster import ClusterDirectory, Membership, content_guuid, node_address_of
from .membership import MembershipRecord, RecordRefused, RecordVerifier, sign_record
from .registry import (
    ClusterEvent,
    ContentRecord,
    LoadReport,
    NodeRecord,
    Registry,
    RegistryUnavailable,
)

log = logging.getLogger("dapsdk.avrs.cluster")

#: Most registry writes waiting while the registry is away; beyond, a full re-push is scheduled.
MAX_PENDING_WRITES: Final = 10_000
#: Seconds :meth:`ClusterSync.close` waits for queued writes.
CLOSE_FLUSH_TIMEOUT: Final = 2.0


@dataclass
class ClusterState:
    """What this node last read from the registry (besides membership)."""

    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    loads: dict[str, LoadReport] = field(default_factory=dict)
    contents: dict[str, ContentRecord] = field(default_factory=dict)
    carriers: dict[str, set[str]] = field(default_factory=dict)
    updated: float = 0.0


@dataclass
class LocalNode:
    """What this node announces about itself."""

    address: str
    roles: Role
    region: str = ""
    urls: Callable[[], tuple[str, ...]] = lambda: ()
    sessions: Callable[[], int] = lambda: 0
    bytes_sent: Callable[[], int] = lambda: 0


class LoadProbe:
    """Sessions, egress bit/s and CPU per mille of this process since the previous call."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self._last = (time.monotonic(), _cpu_seconds(), node.bytes_sent())

    def __call__(self) -> LoadReport:
        now, cpu, sent = time.monotonic(), _cpu_seconds(), self.node.bytes_sent()
        then, cpu0, sent0 = self._last
        self._last = (now, cpu, sent)
        span = max(now - then, 1e-3)
        return LoadReport(
            sessions=self.node.sessions(),
            bitrate=int(max(0, sent - sent0) * 8 / span),
            cpu_permille=min(1000, int((cpu - cpu0) / span * 1000)),
            at=time.time(),
        )


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class ClusterSync:
    def __init__(
        self,
        directory: ClusterDirectory,
        registry: Registry,
        node: LocalNode,
        *,
        signer: AvrsSigner,
        host_certificate: bytes | None = None,
        verifier: RecordVerifier | None = None,
        heartbeat_interval: float = 30.0,
    ) -> None:
        self.directory = directory
        self.registry = registry
        self.node = node
        self.signer = signer
        self.host_certificate = host_certificate
        """This node's CA certificate when it carries HOST: it signs membership records."""
        self.verifier = verifier
        """Checks records read from the registry; None: membership is not replicated."""
        self.heartbeat_interval = max(0.05, heartbeat_interval)
        self.ttl = 3 * self.heartbeat_interval
        """A node record expires after the keepalive timeout (3 heartbeats) without a refresh."""
        self.state = ClusterState()
        self.available = False
        """Whether the last registry operation succeeded."""
        self.refreshed: list[Callable[[], object]] = []
        """Called after every successful read of the registry (the balancer re-balances)."""
        self.listeners: list[Callable[[ClusterEvent], None]] = []
        """Called with every cluster event after it was applied (balancer, tests)."""
        self._probe = LoadProbe(node)
        self._applying = False
        self._issued: dict[bytes, bytes] = {}
        """Records this host signed (identity -> blob), re-published after a registry restart."""
        self._accepted: dict[bytes, float] = {}
        """Member identity -> issue time of the newest record applied."""
        self._revoked: dict[bytes, float] = {}
        """Member identity -> issue time of the newest revocation applied."""
        self._remote_contents: set[bytes] = set()
        self._refused: set[int] = set()
        """Records already refused (logged once)."""
        self._writes: asyncio.Queue[Callable[[], object]] = asyncio.Queue(MAX_PENDING_WRITES)
        self._dirty = True
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh_event = asyncio.Event()
        self.started = False
        self.draining = False
        """A draining node announces it; balancers send it no new clients."""
        directory.observers.append(self._observe)

    @property
    def signs_membership(self) -> bool:
        return self.host_certificate is not None and self.verifier is not None

    @property
    def replicates_membership(self) -> bool:
        return self.verifier is not None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect and register; raise :class:`RegistryUnavailable` when the registry cannot be
        reached at start (a misconfigured ``redis_url`` is an error, not silence)."""
        await self.registry.start()
        self.registry.subscribe(self._on_event)
        if self.signs_membership:
            for identity, roles in self.directory.info.members.items():
                self._issue(identity, roles, publish=False)
        await self._beat()
        self.started = True
        self._tasks = [
            asyncio.ensure_future(self._heartbeats()),
            asyncio.ensure_future(self._writer()),
        ]

    async def close(self) -> None:
        if self._tasks and self.available:
            try:  # flush what this node wrote (a host's last records) before leaving
                await asyncio.wait_for(self._writes.join(), CLOSE_FLUSH_TIMEOUT)
            except TimeoutError:
                log.warning("closing with %d registry writes not flushed", self._writes.qsize())
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self.started:
            try:
                await self.registry.remove_node(self.node.address)
            except RegistryUnavailable:
                pass
        self.started = False
        if self._observe in self.directory.observers:
            self.directory.observers.remove(self._observe)
        await self.registry.close()

    # ------------------------------------------------------------------ heartbeat

    async def _heartbeats(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._refresh_event.wait(), self.heartbeat_interval)
            except TimeoutError:
                pass
            self._refresh_event.clear()
            await self._beat()

    def refresh_soon(self) -> None:
        self._refresh_event.set()

    async def _beat(self) -> None:
        try:
            if self._dirty:
                await self._push_all()
                self._dirty = False
            await self.registry.put_node(self._record(), self.ttl)
            await self.registry.put_load(self.node.address, self._probe(), self.ttl)
            await self._pull()
            for callback in tuple(self.refreshed):
                try:
                    callback()
                except Exception:
                    log.exception("cluster refresh callback failed")
        except RegistryUnavailable as exc:
            if self.available:
                log.warning("cluster registry unavailable, serving from the local replica: %s", exc)
            self.available = False
            self._dirty = True
            return
        if not self.available:
            log.info("cluster registry available (%s)", self.registry.kind)
        self.available = True

    def _record(self) -> NodeRecord:
        return NodeRecord(
            address=self.node.address,
            identity=self.signer.identity.hex(),
            roles=int(self.node.roles),
            region=self.node.region,
            urls=self.node.urls(),
            started=time.time(),
            draining=self.draining,
        )

    async def _push_all(self) -> None:
        """Everything this node is the source of (after start or a registry outage)."""
        info = self.directory.info
        for identity, blob in self._issued.items():
            await self.registry.put_member(identity.hex(), blob)
        for identity in info.pending:
            await self.registry.put_pending(identity.hex(), {})
        for content_id, content in info.contents.items():
            if content_id not in self._remote_contents:
                await self._put_content(content)

    # ------------------------------------------------------------------ pull

    async def _pull(self) -> None:
        registry = self.registry
        nodes = await registry.nodes()
        loads = await registry.loads()
        contents = await registry.contents()
        carriers = await registry.carriers()
        members = await registry.members() if self.replicates_membership else {}
        revocations = await registry.revocations() if self.replicates_membership else {}
        pending = await registry.pending()
        self.state = ClusterState(
            {n.address: n for n in nodes}, loads, contents, carriers, time.time()
        )
        if self.signs_membership and {i.hex() for i in self._issued} - members.keys():
            self._dirty = True  # the registry lost records (restarted empty): re-push them
        own = self.directory.info.contents.keys() - self._remote_contents
        if {c.hex() for c in own} - contents.keys():
            self._dirty = True
        now = time.time()
        for blob in revocations.values():
            self._apply_blob(blob, now)
        for blob in members.values():
            self._apply_blob(blob, now)
        self._apply_pending(pending)
        self._apply_contents(contents)

    def _apply_blob(self, blob: bytes, now: float) -> MembershipRecord | None:
        if self.verifier is None:
            return None
        try:
            record = self.verifier.verify(blob, now)
        except RecordRefused as exc:
            digest = hash(blob)
            if digest not in self._refused:
                if len(self._refused) < 1024:
                    self._refused.add(digest)
                log.warning("ignoring a membership record that fails verification: %s", exc)
            return None
        identity = record.member
        if record.revoked:
            if self._revoked.get(identity, -1.0) >= record.issued:
                return record
            self._revoked[identity] = record.issued
            if self._accepted.get(identity, -1.0) <= record.issued:
                self._accepted.pop(identity, None)
                if identity in self.directory.info.members and identity != self.signer.identity:
                    with self._remote():
                        self.directory.remove_member(identity)
                    log.info("member %s revoked", node_address_of(identity))
            return record
        if record.issued <= self._revoked.get(identity, -1.0):
            return record  # an older record replayed after a revocation
        if record.issued <= self._accepted.get(identity, -1.0):
            return record
        self._accepted[identity] = record.issued
        if self.directory.info.members.get(identity) != record.roles:
            with self._remote():
                self.directory.add_member(identity, Membership(record.roles))
        return record

    def _apply_pending(self, pending: dict[str, dict[str, str]]) -> None:
        info = self.directory.info
        wanted = set()
        for hex_id in pending:
            try:
                identity = bytes.fromhex(hex_id)
            except ValueError:
                continue
            if len(identity) == 32 and identity not in info.members:
                wanted.add(identity)
        if wanted == set(info.pending):
            return
        with self._remote():
            self.directory._put(replace(info, pending=frozenset(wanted)))

    def _apply_contents(self, contents: dict[str, ContentRecord]) -> None:
        info = self.directory.info
        seen: set[bytes] = set()
        for hex_id, record in contents.items():
            try:
                content_id = bytes.fromhex(hex_id)
                name = record.name
                if name and content_guuid(name) != content_id:
                    name = ""  # a name that does not derive the id would widen token patterns
                content = ContentInfo(
                    content_id,
                    bytes.fromhex(record.owner),
                    record.flows,
                    tuple(record.codecs),
                    record.title,
                    name=name,
                )
            except ValueError:
                continue
            seen.add(content.content_id)
            if info.contents.get(content.content_id) == content:
                continue
            self._remote_contents.add(content.content_id)
            with self._remote():
                self.directory.put_content(content)
        for content_id in list(self._remote_contents - seen):
            self._remote_contents.discard(content_id)
            if content_id in self.directory.info.contents:
                with self._remote():
                    self.directory.remove_content(content_id)

    # ------------------------------------------------------------------ local changes

    class _Remote:
        def __init__(self, sync: ClusterSync) -> None:
            self.sync = sync

        def __enter__(self) -> None:
            self.sync._applying = True

        def __exit__(self, *exc: object) -> None:
            self.sync._applying = False

    def _remote(self) -> ClusterSync._Remote:
        return ClusterSync._Remote(self)

    def _observe(self, old: ClusterInfo, new: ClusterInfo) -> None:
        if self._applying:
            return
        if self.signs_membership:
            for identity, roles in new.members.items():
                if old.members.get(identity) != roles:
                    self._issue(identity, roles)
            for identity in old.members.keys() - new.members.keys():
                self._revoke(identity)
        for identity in new.pending - old.pending:
            self._write(partial(self.registry.put_pending, identity.hex(), {}), "pending")
        for identity in old.pending - new.pending:
            self._write(partial(self.registry.remove_pending, identity.hex()), "pending")
        for content_id, content in new.contents.items():
            if old.contents.get(content_id) != content:
                self._remote_contents.discard(content_id)
                self._write(partial(self._put_content, content), "content")
        for content_id in old.contents.keys() - new.contents.keys():
            self._remote_contents.discard(content_id)
            self._write(partial(self.registry.remove_content, content_id.hex()), "content")

    async def _put_content(self, content: ContentInfo) -> None:
        hex_id = content.content_id.hex()
        existing = self.state.contents.get(hex_id)
        origin = existing.origin if existing is not None and existing.origin else self.node.address
        await self.registry.put_content(
            ContentRecord(
                hex_id,
                content.owner.hex(),
                content.flows,
                tuple(content.codecs),
                content.title,
                origin,
                content.name,
            )
        )
        if origin == self.node.address:
            await self.registry.add_carrier(hex_id, self.node.address)

    def _issue(self, identity: bytes, roles: Role, *, publish: bool = True) -> None:
        assert self.host_certificate is not None
        issued = max(time.time(), self._revoked.get(identity, 0.0) + 1e-6)
        record = MembershipRecord(self.directory.name, identity, roles, issued)
        blob = sign_record(record, self.signer, self.host_certificate)
        self._issued[identity] = blob
        self._accepted[identity] = issued
        if publish:
            self._write(partial(self._send_member, identity, blob, "member"), "member")

    def _revoke(self, identity: bytes) -> None:
        assert self.host_certificate is not None
        issued = max(time.time(), self._accepted.get(identity, 0.0) + 1e-6)
        record = MembershipRecord(self.directory.name, identity, Role.NONE, issued, revoked=True)
        blob = sign_record(record, self.signer, self.host_certificate)
        self._issued.pop(identity, None)
        self._accepted.pop(identity, None)
        self._revoked[identity] = issued
        self._write(partial(self._send_member, identity, blob, "revoke"), "revoke")

    async def _send_member(self, identity: bytes, blob: bytes, kind: str) -> None:
        if kind == "revoke":
            await self.registry.put_revocation(identity.hex(), blob)
        else:
            await self.registry.put_member(identity.hex(), blob)
        await self.registry.publish(
            ClusterEvent(kind, {"blob": base64.b64encode(blob).decode()}, self.node.address)
        )

    def _write(self, action: Callable[[], object], what: str) -> None:
        try:
            self._writes.put_nowait(action)
        except asyncio.QueueFull:
            log.warning("registry write queue full, dropping a %s write (full re-push later)", what)
            self._dirty = True

    async def _writer(self) -> None:
        while True:
            action = await self._writes.get()
            try:
                result = action()
                if asyncio.iscoroutine(result):
                    await result
                await self.registry.publish(ClusterEvent("changed", {}, self.node.address))
            except RegistryUnavailable as exc:
                log.warning("registry write failed (replayed when it returns): %s", exc)
                self._dirty = True
                self.available = False
            finally:
                self._writes.task_done()

    # ------------------------------------------------------------------ events

    async def request_drain(self, address: str, on: bool) -> None:
        """Ask node ``address`` to drain (or stop draining), cluster-wide."""
        await self.registry.publish(
            ClusterEvent("drain", {"address": address, "on": on}, self.node.address)
        )

    def _on_event(self, event: ClusterEvent) -> None:
        if event.kind in ("member", "revoke"):
            raw = event.data.get("blob")
            if isinstance(raw, str):
                try:
                    blob = base64.b64decode(raw, validate=True)
                except ValueError:
                    blob = b""
                self._apply_blob(blob, time.time())
        elif event.kind == "drain":
            if event.data.get("address") == self.node.address:
                self.draining = bool(event.data.get("on"))
                log.info("draining" if self.draining else "no longer draining")
            self.refresh_soon()
        elif event.origin != self.node.address:
            self.refresh_soon()
        for listener in tuple(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("cluster event listener failed on %s", event.kind)
