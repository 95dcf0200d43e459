"""AVRS over real dap_stream streams: nodes built from real config files, on loopback sockets,
with real certificates and tokens. A publisher and a viewer go through the whole session life
cycle (open with a signed request, authenticate, select content, start, stream, close)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dapsdk.avrs import AvrsError, MediaFlag, SessionState
from dapsdk.avrs.events import AvrsEvent, ContentReceived, SessionStateChanged
from dapsdk.node.config import load_node_config
from dapsdk.node.wiring import AvrsNode, build_node
from dapsdk.runtime.node import StreamNode
from dapsdk.services.auth import ClusterCA, Role
from dapsdk.services.avrs_channels import AVRS_CHANNEL_IDS, AvrsBinding
from dapsdk.services.avrs_client import AvrsClient, AvrsRequestError
from dapsdk.services.avrs_cluster import content_guuid
from dapsdk.services.avrs_media import parse_signed_media, sign_media
from dapsdk.stream.channel_key import ChannelKey
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.errors import DapError

from .avrs_env import CLUSTER_ID, AvrsEnv, der, start_publisher

CONTENT = "lecture-1"
CONTENT_ID = content_guuid(CONTENT)
TIMEOUT = 10.0


@pytest.fixture
def env(tmp_path: Path) -> AvrsEnv:
    return AvrsEnv(tmp_path)


@pytest.fixture
async def server(env: AvrsEnv) -> AsyncIterator[AvrsNode]:
    node = build_node(load_node_config(env.server_config()))
    await node.start()
    try:
        yield node
    finally:
        await node.close()


async def client_node(env: AvrsEnv, server: AvrsNode, name: str, *, cert: bool) -> AvrsNode:
    if cert:
        env.identity(name, Role.SERVER)
    else:
        env.identity(name)
    node = build_node(load_node_config(env.client_config(name, server.urls[0], certificate=cert)))
    await node.start()
    return node


async def publisher(env: AvrsEnv, server: AvrsNode) -> tuple[AvrsNode, AvrsClient, int]:
    return await start_publisher(env, server.urls[0], CONTENT, title="L1")


async def test_session_end_to_end(env: AvrsEnv, server: AvrsNode) -> None:
    received_by_callback: list[int] = []

    def on_content(avrs_ch: object, content: object, packet: object, size: int) -> int:
        received_by_callback.append(size)
        return int(AvrsError.SUCCESS)

    server.service.content_callbacks.add(on_content)
    states: list[SessionState] = []

    def watch(binding: AvrsBinding, event: AvrsEvent) -> None:
        if isinstance(event, SessionStateChanged):
            states.append(event.new)

    server.service.listeners.append(watch)
    # The channels are dap_stream channel procs of the server's node, under the seed's ids.
    assert set(server.stream_node.channel_procs) >= {ord(c) for c in "ArCcS"}
    assert tuple(ord(c) for c in "ArCcS") == AVRS_CHANNEL_IDS

    pub_node, pub, pub_handle = await publisher(env, server)
    viewer_node = await client_node(env, server, "viewer", cert=False)
    try:
        viewer = await viewer_node.connect_client()
        opened = await viewer.open()
        assert opened.session_id == viewer.identity and not opened.resumed
        token = env.token(str(viewer_node.address), content=(CONTENT,))
        reply = await viewer.join(CLUSTER_ID, token=token)
        assert reply.code == AvrsError.SUCCESS, reply
        handle = await viewer.attach(CLUSTER_ID, CONTENT_ID)
        await viewer.start()

        payloads = [bytes([i]) * (100 + i) for i in range(5)]
        for i, media in enumerate(payloads):
            envelope = sign_media(pub.signer, CONTENT_ID, i % 2, i, media, now=time.time())
            last = MediaFlag.END_OF_FLOW if i == len(payloads) - 1 else MediaFlag.NONE
            pub.send_content(pub_handle, i % 2, envelope, flags=MediaFlag.KEYFRAME | last)
        got = [await viewer.receive_content(TIMEOUT) for _ in payloads]
        assert [p.handle for p in got] == [handle] * len(payloads)
        assert [p.flow_id for p in got] == [i % 2 for i in range(len(payloads))]
        for media, packet in zip(payloads, got, strict=True):
            signed = parse_signed_media(packet.payload)
            assert signed is not None and signed.verify()
            assert signed.media == media and signed.signer == pub.identity
            assert signed.content_id == CONTENT_ID
        assert got[-1].flags & MediaFlag.END_OF_FLOW
        # The server ran the content callbacks on every published packet.
        assert len(received_by_callback) == len(payloads)
        assert not pub.content_errors

        viewer_binding = next(
            b
            for b in server.service.bindings.values()
            if b.conn.session is not None and b.conn.session.session_id == viewer.identity
        )
        assert viewer_binding.conn.state is SessionState.STREAMING
        await viewer.close_session()
        assert viewer_binding.conn.state is SessionState.CLOSED
        assert server.service.sessions.get(viewer.identity) is None
        for expected in (
            SessionState.AUTHENTICATED,
            SessionState.CONTENT_SELECTED,
            SessionState.STREAM_OPEN,
            SessionState.SYNCED,
            SessionState.STREAMING,
            SessionState.CLOSED,
        ):
            assert expected in states
        await viewer.close()
    finally:
        await pub.close()
        await viewer_node.close()
        await pub_node.close()


async def _viewer(env: AvrsEnv, server: AvrsNode, name: str) -> tuple[AvrsNode, AvrsClient]:
    node = await client_node(env, server, name, cert=False)
    client = await node.connect_client()
    await client.open()
    return node, client


@pytest.mark.parametrize("kind", ["forged", "expired", "other_subject", "garbage"])
async def test_bad_token_refused(env: AvrsEnv, server: AvrsNode, kind: str) -> None:
    pub_node, pub, _ = await publisher(env, server)
    node, viewer = await _viewer(env, server, "viewer")
    try:
        subject = str(node.address)
        token = {
            "forged": lambda: env.forged_token(subject),
            "expired": lambda: env.token(subject, issued=env.now - 7200, ttl=3600),
            "other_subject": lambda: env.token(str(pub_node.address)),
            "garbage": lambda: "not.a.token",
        }[kind]()
        reply = await viewer.join(CLUSTER_ID, token=token)
        assert reply.code == AvrsError.MEMBER_SECURITY_ISSUE, reply
        detail = AvrsRequestError(reply).detail
        expected = {
            "forged": "signature",
            "expired": "expired",
            "other_subject": "issued to node",
            "garbage": "does not decode",
        }[kind]
        assert expected in detail
        # Not a member: subscribing is refused before any handle exists.
        with pytest.raises(AvrsRequestError) as refused:
            await viewer.attach(CLUSTER_ID, CONTENT_ID)
        assert refused.value.code == AvrsError.SIGN_ALIEN
    finally:
        await viewer.close()
        await pub.close()
        await node.close()
        await pub_node.close()


async def test_token_grants_limit_contents(env: AvrsEnv, server: AvrsNode) -> None:
    pub_node, pub, _ = await publisher(env, server)
    node, viewer = await _viewer(env, server, "viewer")
    try:
        token = env.token(str(node.address), content=("another-lecture",))
        assert (await viewer.join(CLUSTER_ID, token=token)).code == AvrsError.SUCCESS
        with pytest.raises(AvrsRequestError) as refused:
            await viewer.attach(CLUSTER_ID, CONTENT_ID)
        assert refused.value.code == AvrsError.CONTENT_NOT_FOUND
    finally:
        await viewer.close()
        await pub.close()
        await node.close()
        await pub_node.close()


async def test_content_sealed_end_to_end(env: AvrsEnv, server: AvrsNode) -> None:
    """With a content key the node forwards payloads it cannot read."""
    seen_by_server: list[bytes] = []
    server.service.content_callbacks.add(
        lambda ch, content, packet, size: seen_by_server.append(packet.payload) or 0
    )
    pub_node, pub, pub_handle = await publisher(env, server)
    node, viewer = await _viewer(env, server, "viewer")
    try:
        assert (await viewer.join(CLUSTER_ID, token=env.token(str(node.address)))).code == 0
        await viewer.attach(CLUSTER_ID, CONTENT_ID)
        await viewer.start()
        key = ChannelKey.generate()
        pub.content_key = ChannelKey(key.key_bytes)
        viewer.content_key = ChannelKey(key.key_bytes)
        pub.send_content(pub_handle, 1, b"secret frame")
        packet = await viewer.receive_content(TIMEOUT)
        assert packet.payload == b"secret frame"
        assert seen_by_server and b"secret frame" not in seen_by_server[0]
    finally:
        await viewer.close()
        await pub.close()
        await node.close()
        await pub_node.close()


async def test_certificate_of_another_ca_refused_at_handshake(
    env: AvrsEnv, server: AvrsNode
) -> None:
    rogue_ca = ClusterCA.create("main_cluster", now=env.now)
    identity = env.identity("rogue")
    cert = rogue_ca.issue(identity.public_key, Role.SERVER, now=env.now)
    async with StreamNode(identity, StreamConfig(certificate=der(cert))) as rogue:
        # The initiator proves itself in the last handshake message, so the refusal may come
        # as a failed connect or as the stream being closed with an error right after.
        try:
            stream = await asyncio.wait_for(rogue.connect(server.urls[0]), TIMEOUT)
        except (DapError, ConnectionError):
            pass
        else:
            await asyncio.wait_for(stream.wait_closed(), TIMEOUT)
            assert stream.error is not None, "the server accepted a rogue certificate"
            assert "CA" in str(stream.error)
    assert not any(
        b.stream.peer.address == identity.address for b in server.service.bindings.values()
    )


async def test_slow_viewer_misses_live_packets(env: AvrsEnv, server: AvrsNode) -> None:
    """A viewer that does not read is skipped once its content channel is congested; the
    publisher is never held back and the node's queue stays bounded."""
    count, size = 120, 60_000
    arrived = asyncio.Event()
    seen = [0]

    def on_event(binding: AvrsBinding, event: AvrsEvent) -> None:
        if isinstance(event, ContentReceived):
            seen[0] += 1
            if seen[0] == count:
                arrived.set()

    server.service.listeners.append(on_event)
    pub_node, pub, pub_handle = await publisher(env, server)
    node, viewer = await _viewer(env, server, "viewer")
    try:
        assert (await viewer.join(CLUSTER_ID, token=env.token(str(node.address)))).code == 0
        await viewer.attach(CLUSTER_ID, CONTENT_ID)
        await viewer.start()
        for seq in range(count):
            pub.send_content(pub_handle, 1, seq.to_bytes(4, "little") * (size // 4))
        await asyncio.wait_for(arrived.wait(), TIMEOUT)
        binding = next(
            b
            for b in server.service.bindings.values()
            if b.conn.session is not None and b.conn.session.session_id == viewer.identity
        )
        assert binding.dropped > 0
        high_water = binding.stream.config.send_high_water
        assert binding.channels[ord("c")].queued_bytes < high_water + 2 * size
        first = await viewer.receive_content(TIMEOUT)
        assert first.seq == 0  # what was sent arrives in order
    finally:
        await viewer.close()
        await pub.close()
        await node.close()
        await pub_node.close()


async def test_a_node_reaches_another_nodes_http_api_over_its_stream(
    env: AvrsEnv, server: AvrsNode
) -> None:
    viewer_node = await client_node(env, server, "http-viewer", cert=False)
    try:
        client = await viewer_node.connect_client()
        response = await client.stream.http_request("GET", "/api/v1/status", timeout=TIMEOUT)
        assert response.status == 200
        status = response.json()
        assert status["node"] == str(server.address)
        missing = await client.stream.http_request("GET", "/nope", timeout=TIMEOUT)
        assert missing.status == 404
        await client.close()
    finally:
        await viewer_node.close()
