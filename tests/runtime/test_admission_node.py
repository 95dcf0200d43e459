"""The node's handshake admission over real sockets: cookie retry, old peers, max_connections."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest

from dapsdk.runtime.node import StreamNode
from dapsdk.stream.admission import COOKIE_SIZE, AdmissionConfig
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.connection import StreamConnection
from dapsdk.stream.constants import HEADER, HandshakeStep, PacketType
from dapsdk.stream.errors import ErrorCode, RemoteError
from dapsdk.stream.identity import NodeIdentity

from ..conftest import listen_url
from ..servers import stream_server

ALWAYS_COOKIE = AdmissionConfig(cookie_threshold=0)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_client_under_load_retries_with_the_cookie_and_connects(transport: str) -> None:
    # The same admission on every transport, keyed by the peer's address.
    async with StreamNode(admission=ALWAYS_COOKIE) as server, StreamNode() as client:
        listener = await server.listen(listen_url(transport))
        stream = await client.connect(listener.url)
        assert stream.is_active
        stats = server.admission.stats
        await until(lambda: stats.completed == 1)
        assert (stats.cookies_sent, stats.cookies_accepted, stats.completed) == (1, 1, 1)
        assert server.pending_handshakes == 0
        await stream.close()


async def test_client_without_cookie_support_gets_a_readable_refusal() -> None:
    # An old initiator sends HELLO only; under load it reads a plaintext ERROR (code 0x16, the
    # cookie as hex) and no key agreement work is done for it.
    async with StreamNode(admission=ALWAYS_COOKIE) as server:
        listener = await server.listen("tcp://127.0.0.1:0")
        hello = StreamConnection(StreamConfig(), NodeIdentity.generate(), is_client=True, now=0)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.endpoint.port)
        writer.write(b"".join(hello.data_to_send()))
        size, ptype, seq, ch, flags = HEADER.unpack(await reader.readexactly(12))
        body = await reader.readexactly(size)
        assert (ptype, seq, ch, flags) == (PacketType.ERROR, 0, 0, 0)
        assert struct.unpack_from("<I", body)[0] == ErrorCode.RETRY_WITH_COOKIE
        assert len(bytes.fromhex(body[4:].decode("ascii"))) == COOKIE_SIZE
        assert await reader.read() == b""  # stateless: the responder closed
        assert server.pending_handshakes == 0
        writer.close()


async def test_forged_cookie_is_treated_as_none() -> None:
    async with StreamNode(admission=ALWAYS_COOKIE) as server:
        listener = await server.listen("tcp://127.0.0.1:0")
        forged = StreamConnection(
            StreamConfig(), NodeIdentity.generate(), is_client=True, now=0, cookie=b"\1" * 20
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.endpoint.port)
        writer.write(b"".join(forged.data_to_send()))
        size, ptype, *_ = HEADER.unpack(await reader.readexactly(12))
        body = await reader.readexactly(size)
        assert ptype == PacketType.ERROR
        assert struct.unpack_from("<I", body)[0] == ErrorCode.RETRY_WITH_COOKIE
        assert server.admission.stats.cookies_invalid == 1
        writer.close()


async def test_responder_without_admission_ignores_nothing_but_accepts_an_echo() -> None:
    # A client that echoes a cookie to a node that is not under load still connects.
    async with StreamNode() as server:
        listener = await server.listen("tcp://127.0.0.1:0")
        client = StreamConnection(
            StreamConfig(), NodeIdentity.generate(), is_client=True, now=0, cookie=b"\2" * 20
        )
        packets = b"".join(client.data_to_send())
        assert HEADER.unpack_from(packets)[2] == HandshakeStep.COOKIE
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.endpoint.port)
        writer.write(packets)
        _size, ptype, seq, *_ = HEADER.unpack(await reader.readexactly(12))
        assert (ptype, seq) == (PacketType.CONTROL, HandshakeStep.RESPONSE)
        writer.close()


def test_max_connections_refuses_established_sessions_with_connection_limit() -> None:
    async def scenario(url: str) -> None:
        async with StreamNode() as a, StreamNode() as b, StreamNode() as c:
            first = await a.connect(url)
            second = await b.connect(url)
            with pytest.raises(RemoteError) as info:
                await c.connect(url)
            assert info.value.code == ErrorCode.CONNECTION_LIMIT
            assert "max_connections" in info.value.reason
            await first.close()
            # The slot is free once the server saw the close: poll with a deadline.
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                try:
                    third = await c.connect(url)
                    break
                except RemoteError as exc:
                    assert exc.code == ErrorCode.CONNECTION_LIMIT
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            assert third.is_active and second.is_active

    with stream_server("tcp://127.0.0.1:0", extra_args=("--max-connections", "2")) as urls:
        asyncio.run(scenario(urls[0]))
