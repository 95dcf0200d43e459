""" "Never SUCCESS for work not done": every request type of the permission table is sent to a real
node (in-process, real sockets) by a principal allowed to send it, and each answer is either a
documented refusal or SUCCESS whose effect the test then observes in the node's state."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dapsdk.avrs import AvrsError, ContentFlag
from dapsdk.avrs.constants import (
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    ReplyArg,
    Role,
    SessionArg,
    SessionOp,
    SignalArg,
    SignalOp,
)
from dapsdk.avrs.permissions import PERMISSIONS, RESPONSE_ONLY
from dapsdk.avrs.tsd import Tsd
from dapsdk.node.config import load_node_config
from dapsdk.node.wiring import AvrsNode, build_node
from dapsdk.services.auth import enroll_totp, format_roles, set_totp_secret, totp_code
from dapsdk.services.avrs_client import AvrsClient
from dapsdk.services.avrs_cluster import content_guuid

from .avrs_env import CLUSTER_ID, AvrsEnv

C, S, A = AvrsChannel.CLUSTER, AvrsChannel.SESSION, AvrsChannel.SIGNAL
ID = Tsd(ClusterArg.ID, CLUSTER_ID)
SID = Tsd(SessionArg.CLUSTER_ID, CLUSTER_ID)

#: Request types this node does not serve yet: each must be refused with NOT_SUPPORTED.
NOT_SERVED = {(S, SessionOp.MONITOR), (A, SignalOp.REDIRECT)}
#: Cluster requests answered by services.cluster_requests: their effects are tested in
#: tests/cluster; here a SUCCESS must come with the typed response the op defines (read ops).
TYPED_RESPONSE = {
    ClusterOp.INFO: ClusterOp.INFO,
    ClusterOp.LIST_REQ: ClusterOp.LIST_RESP,
    ClusterOp.CONTENT_LIST_REQ: ClusterOp.CONTENT_LIST_RESP,
    ClusterOp.BALANCE_REQ: ClusterOp.BALANCE_RESP,
    ClusterOp.ROUTE_FIND: ClusterOp.ROUTE_FIND,
    ClusterOp.STATS_REQ: ClusterOp.STATS_RESP,
}


class Walk:
    def __init__(self, env: AvrsEnv, node: AvrsNode) -> None:
        self.env, self.node = env, node
        self.url = node.urls[0]
        self.nodes: list[AvrsNode] = []
        self.clients: list[AvrsClient] = []
        self.secrets: dict[str, str] = {}
        self.count = 0

    async def client(self, roles: Role | None = None, *, totp: bool = False) -> AvrsClient:
        """A fresh identity: with ``roles`` a certified member (TOTP-enrolled with ``totp``),
        otherwise a stranger."""
        self.count += 1
        name = f"p{self.count}"
        identity = self.env.identity(name, roles)
        path = self.env.client_config(name, self.url)
        if roles is not None:
            path.write_text(
                f"[avrs]\nrole = {format_roles(roles)}\nhost_address = {self.url}\n"
                f"ca_certificate_file = ca/ca.crt\ncertificate_file = {name}.crt\n"
                f"private_key_file = {name}.key\nlisten = tcp://127.0.0.1:0\n"
            )
            if totp:
                secret = enroll_totp(str(identity.address)).secret
                set_totp_secret(self.env.root / "totp.secrets", identity.address, secret)
                self.secrets[name] = secret
        node = build_node(load_node_config(path))
        await node.start()
        self.nodes.append(node)
        client = await node.connect_client()
        client.name = name  # type: ignore[attr-defined]
        self.clients.append(client)
        await client.open()
        if roles is not None:
            reply = await client.join(
                CLUSTER_ID, certificate=(self.env.root / f"{name}.crt").read_bytes()
            )
            assert reply.code == AvrsError.SUCCESS
        return client

    async def owner(self) -> AvrsClient:
        """The cluster owner's key (server.key) on a client node, TOTP-enrolled."""
        secret = enroll_totp(str(self.env.server.address)).secret
        set_totp_secret(self.env.root / "totp.secrets", self.env.server.address, secret)
        self.secrets["server"] = secret
        node = build_node(load_node_config(self.env.client_config("server", self.url)))
        await node.start()
        self.nodes.append(node)
        client = await node.connect_client()
        client.name = "server"  # type: ignore[attr-defined]
        self.clients.append(client)
        await client.open()
        return client

    def totp(self, client: AvrsClient) -> str:
        return totp_code(self.secrets[client.name], now=time.time())  # type: ignore[attr-defined]

    def roles(self, client: AvrsClient) -> Role | None:
        return self.node.directory.info.roles_of(client.identity)

    def session(self, client: AvrsClient):  # type: ignore[no-untyped-def]
        return self.node.service.sessions.get(client.identity)


@pytest.fixture
async def walk(tmp_path: Path) -> AsyncIterator[Walk]:
    env = AvrsEnv(tmp_path)
    secrets = tmp_path / "totp.secrets"
    secrets.write_text("# test admins\n")
    os.chmod(secrets, 0o600)
    node = build_node(load_node_config(env.server_config("totp_secret_file = totp.secrets\n")))
    await node.start()
    w = Walk(env, node)
    try:
        yield w
    finally:
        for client in w.clients:
            await client.close()
        for n in w.nodes:
            await n.close()
        await node.close()


def member(identity: bytes, role: Role | None = None) -> list[Tsd]:
    args = [ID, Tsd(ClusterArg.MEMBER, identity)]
    if role is not None:
        args.append(Tsd(ClusterArg.ROLE, int(role).to_bytes(2, "little")))
    return args


def content(name: str) -> Tsd:
    return Tsd(ClusterArg.CONTENT_ID, content_guuid(name))


async def test_every_request_type_is_refused_or_has_its_effect(walk: Walk) -> None:
    w = walk
    seen: set[tuple[AvrsChannel, int]] = set()
    server = await w.client(Role.SERVER)
    await server.add_content(CLUSTER_ID, content_guuid("base"), "av", name="base")

    async def expect(
        client: AvrsClient,
        channel: AvrsChannel,
        op: int,
        args: list[Tsd],
        *,
        signed: bool = True,
        totp: bool = False,
    ) -> int:
        seen.add((channel, op))
        before = len(client.responses)
        reply = await client.request(
            channel, op, args, signed=signed, totp=w.totp(client) if totp else None
        )
        if (channel, op) in NOT_SERVED:
            assert reply.code == AvrsError.NOT_SUPPORTED, (channel, op, reply)
        assert isinstance(AvrsError.coerce(reply.code), AvrsError), reply  # a documented code
        if channel is C and reply.code == AvrsError.SUCCESS and op in TYPED_RESPONSE:
            typed = [r.op for r in client.responses[before:]]
            assert TYPED_RESPONSE[ClusterOp(op)] in typed, (op, typed)
        return reply.code

    ok = AvrsError.SUCCESS
    # --- cluster requests the node serves, each followed by its observed effect
    candidate = await w.client()
    assert await expect(candidate, C, ClusterOp.MEMBER_REQUEST_ADD, [ID]) == ok
    assert candidate.identity in w.node.directory.info.pending
    admin = await w.client(Role.HOST, totp=True)
    assert (
        await expect(
            admin, C, ClusterOp.MEMBER_REQUEST_APPROVE, member(candidate.identity), totp=True
        )
        == ok
    )
    assert w.roles(candidate) == Role.CLIENT
    refused = await w.client()
    await refused.join(CLUSTER_ID)
    admin = await w.client(Role.HOST, totp=True)
    assert (
        await expect(admin, C, ClusterOp.MEMBER_REQUEST_DEL, member(refused.identity), totp=True)
        == ok
    )
    assert refused.identity not in w.node.directory.info.pending and w.roles(refused) is None
    admin = await w.client(Role.HOST, totp=True)
    assert (
        await expect(
            admin, C, ClusterOp.ROLE_ASSIGN, member(candidate.identity, Role.SERVER), totp=True
        )
        == ok
    )
    assert w.roles(candidate) == Role.SERVER
    assert (
        await expect(
            candidate,
            C,
            ClusterOp.CONTENT_ADD,
            [ID, content("walk"), Tsd(ClusterArg.CONTENT_FLOWS, b"v")],
        )
        == ok
    )
    assert content_guuid("walk") in w.node.directory.info.contents
    admin = await w.client(Role.HOST, totp=True)
    assert await expect(admin, C, ClusterOp.CONTENT_DEL, [ID, content("walk")], totp=True) == ok
    assert content_guuid("walk") not in w.node.directory.info.contents
    admin = await w.client(Role.HOST, totp=True)
    assert (
        await expect(admin, C, ClusterOp.MEMBER_REMOVE, member(candidate.identity), totp=True) == ok
    )
    assert w.roles(candidate) is None
    # --- cluster requests answered by services.cluster_requests (checked inside expect())
    admin = await w.client(Role.HOST | Role.SERVER | Role.BALANCER, totp=True)
    route = Tsd(ClusterArg.ROUTE, content_guuid("base") + bytes(8))
    unserved = {
        ClusterOp.CREATE: [ID],
        ClusterOp.INFO: [ID],
        ClusterOp.LIST_REQ: [],
        ClusterOp.CONTENT_LIST_REQ: [ID],
        ClusterOp.BALANCE_REQ: [ID, content("base")],
        ClusterOp.LOAD_REPORT: [ID, Tsd(ClusterArg.LOAD, bytes(14))],
        ClusterOp.ROUTE_ADD: [ID, route],
        ClusterOp.ROUTE_DEL: [ID, route],
        ClusterOp.ROUTE_FIND: [ID, content("base")],
        ClusterOp.ROUTE_CHECK: [ID, route],
        ClusterOp.STATS_REQ: [ID],
    }
    for op, args in unserved.items():
        await expect(admin, C, op, args)
    for op, args in {
        ClusterOp.CHANGE: [ID],
        ClusterOp.CONTENT_UPDATE: [ID, content("base")],
    }.items():
        fresh = await w.client(Role.HOST | Role.SERVER, totp=True)
        await expect(fresh, C, op, args, totp=True)
    owner = await w.owner()  # DESTROY: the cluster owner only
    await expect(owner, C, ClusterOp.DESTROY, [ID], totp=True)
    # --- session requests
    viewer = await w.client(Role.CLIENT)
    seen.add((S, SessionOp.OPEN))  # w.client() sent the signed OPEN and checked SUCCESS
    assert w.session(viewer) is not None
    assert (
        await expect(
            viewer, S, SessionOp.UPDATE, [Tsd(SessionArg.DISPLAY_NAME, b"Ann")], signed=False
        )
        == ok
    )
    assert w.session(viewer).display_name == "Ann"
    assert await expect(viewer, S, SessionOp.CLUSTER_ADD, [SID], signed=False) == ok
    assert CLUSTER_ID in w.session(viewer).clusters
    assert await expect(viewer, S, SessionOp.CLUSTER_UPDATE, [SID], signed=False) == ok
    assert await expect(viewer, S, SessionOp.CLUSTER_DEL, [SID], signed=False) == ok
    assert CLUSTER_ID not in w.session(viewer).clusters
    attach = [SID, Tsd(SessionArg.CONTENT_UUID, content_guuid("base"))]
    assert await expect(viewer, S, SessionOp.CONTENT_ADD, attach, signed=False) == ok
    handle = next(iter(w.session(viewer).contents))
    flags = Tsd(SessionArg.CONTENT_FLAGS, int(ContentFlag.STREAMING_OUT).to_bytes(4, "little"))
    hid = Tsd(SessionArg.CONTENT_ID, handle.to_bytes(4, "little"))
    assert await expect(viewer, S, SessionOp.CONTENT_UPDATE, [hid, flags], signed=False) == ok
    assert await expect(viewer, S, SessionOp.START, [], signed=False) == ok
    clock = Tsd(SessionArg.CLOCK, int(time.time() * 1e6).to_bytes(8, "little", signed=True))
    assert await expect(viewer, S, SessionOp.SYNC, [clock], signed=False) == ok
    assert viewer_state(w, viewer) == "SYNCED"
    # QUALITY_REPORT is stored under the attached content
    report = [Tsd(SignalArg.RTT_US, (1234).to_bytes(4, "little"))]
    assert await expect(viewer, A, SignalOp.QUALITY_REPORT, report, signed=False) == ok
    stored = w.node.service.quality_reports(content_guuid("base"))
    assert [r.rtt_us for r in stored] == [1234]
    # interactive requests (always signed), each with its effect in the content's state
    state = w.node.service.interactive.state
    base = Tsd(SessionArg.CONTENT_UUID, content_guuid("base"))
    chat = [SID, base, Tsd(SessionArg.TEXT, b"hello")]
    assert await expect(viewer, S, SessionOp.CHAT, chat, signed=False) == (
        AvrsError.SIGN_NOT_PRESENT
    )
    assert await expect(viewer, S, SessionOp.CHAT, chat) == ok
    assert [m.text for m in state.history(content_guuid("base"))] == ["hello"]
    poll = [SID, base, Tsd(SessionArg.TEXT, b"Q?")]
    poll += [Tsd(SessionArg.POLL_OPTION, b"a"), Tsd(SessionArg.POLL_OPTION, b"b")]
    assert await expect(server, S, SessionOp.POLL_CREATE, poll) == ok  # the content's owner
    (created,) = state.polls(content_guuid("base"))
    pid = Tsd(SessionArg.POLL_ID, created.poll_id.to_bytes(4, "little"))
    vote = [SID, base, pid, Tsd(SessionArg.POLL_CHOICE, b"\x01")]
    assert await expect(viewer, S, SessionOp.POLL_VOTE, vote) == ok
    assert created.counts() == [0, 1]
    assert await expect(server, S, SessionOp.POLL_CLOSE, [SID, base, pid]) == ok
    assert not created.open
    slow = [SID, base, Tsd(SessionArg.MOD_ACTION, b"\x06"), Tsd(SessionArg.DURATION, bytes(4))]
    assert await expect(server, S, SessionOp.MODERATE, slow) == ok
    assert state.room(content_guuid("base")).slow_mode == 0.0
    assert await expect(viewer, S, SessionOp.STOP, [], signed=False) == ok
    assert viewer_state(w, viewer) == "CONTENT_SELECTED"
    assert await expect(viewer, S, SessionOp.CONTENT_REMOVE, [hid], signed=False) == ok
    assert not w.session(viewer).contents
    # ... naming a content the session does not have is refused, nothing stored
    other = [*report, Tsd(SignalArg.CONTENT_UUID, content_guuid("base"))]
    assert await expect(viewer, A, SignalOp.QUALITY_REPORT, other, signed=False) == (
        AvrsError.CONTENT_NOT_FOUND
    )
    assert len(w.node.service.quality_reports(content_guuid("base"))) == 1
    monitor = await w.client(Role.OPERATOR)
    await expect(monitor, S, SessionOp.MONITOR, [SID], signed=False)
    reply = await viewer.request(A, SignalOp.HEARTBEAT)
    seen.add((A, SignalOp.HEARTBEAT))
    assert reply.code == ok and reply.arg(ReplyArg.CLOCK) is not None
    redirect = [Tsd(SignalArg.TARGET, b"tcp://127.0.0.1:9")]
    await expect(viewer, A, SignalOp.REDIRECT, redirect, signed=False)
    software = [Tsd(SignalArg.SOFTWARE, b"walker/1")]
    assert await expect(viewer, A, SignalOp.HELLO, software, signed=False) == ok
    assert await expect(viewer, S, SessionOp.CLOSE, [], signed=False) == ok
    assert w.session(viewer) is None
    # --- every request type of the table was walked
    requests = {key for key in PERMISSIONS if key[0] in (C, S, A) and key not in RESPONSE_ONLY}
    assert requests - seen == set()


def viewer_state(w: Walk, client: AvrsClient) -> str:
    for binding in w.node.service.bindings.values():
        session = binding.conn.session
        if session is not None and session.session_id == client.identity:
            return binding.conn.state.value
    return "none"
