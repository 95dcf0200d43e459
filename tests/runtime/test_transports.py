"""dap_stream behaviour over every transport (tcp, ws, quic): real sockets on loopback.

The ``transport`` fixture (tests/conftest.py) parametrizes over ``STREAM_TRANSPORTS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration

from dapsdk.runtime import ws as ws_transport
from dapsdk.runtime.channel import Channel
from dapsdk.runtime.endpoint import Endpoint
from dapsdk.runtime.node import ChannelProc, StreamNode
from dapsdk.runtime.quic import ALPN, realtime
from dapsdk.runtime.stream import Stream
from dapsdk.runtime.tls import self_signed_certificate, write_pem_pair
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.constants import HEADER, ChannelId, PacketType
from dapsdk.stream.errors import ErrorCode, ProtocolError
from dapsdk.stream.identity import NodeIdentity

from ..conftest import listen_url
from ..servers import stream_server

TIMEOUT = 20


# -- raw clients: send arbitrary bytes over a transport, collect what the server answers ----------


async def raw_exchange(endpoint: Endpoint, payload: bytes) -> bytes:
    """Send ``payload`` as the stream's bytes; return every byte the server sends until it closes."""
    if endpoint.scheme == "tcp":
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        writer.write(payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        return data
    if endpoint.scheme == "ws":
        url = f"ws://{endpoint.host}:{endpoint.port}{endpoint.path}"
        out = bytearray()
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as wsc:
            await wsc.send_bytes(payload)
            while True:
                msg = await asyncio.wait_for(wsc.receive(), TIMEOUT)
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                out += msg.data
        return bytes(out)
    if endpoint.scheme == "quic":
        return await _raw_quic(endpoint, payload)
    raise AssertionError(endpoint.scheme)


class _Collector(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data = bytearray()
        self.ended = asyncio.Event()

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamDataReceived):
            self.data += event.data
            if event.end_stream:
                self.ended.set()
        elif isinstance(event, qe.ConnectionTerminated):
            self.ended.set()


async def _raw_quic(endpoint: Endpoint, payload: bytes) -> bytes:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
    config.verify_mode = ssl.CERT_NONE
    async with quic_connect(
        endpoint.host, endpoint.port, configuration=config, create_protocol=_Collector
    ) as proto:
        assert isinstance(proto, _Collector)
        quic = proto._quic
        quic.send_stream_data(quic.get_next_available_stream_id(), payload)
        proto.transmit()
        await asyncio.wait_for(proto.ended.wait(), TIMEOUT)
        return bytes(proto.data)


def error_code_of(reply: bytes) -> int:
    """The code of the ERROR packet the server answered with."""
    assert len(reply) >= 16, reply
    _, ptype, _, _, flags = HEADER.unpack_from(reply)
    assert (ptype, flags) == (PacketType.ERROR, 0)
    return int(struct.unpack_from("<I", reply, 12)[0])


# -- behaviour on each transport --------------------------------------------------------------


async def test_handshake_and_multichannel_echo(transport: str) -> None:
    async with StreamNode() as server, StreamNode() as client:

        def echo(ch: Channel, ptype: int, data: bytes, arg: object) -> int:
            ch.write_nowait(ptype, data[::-1])
            return len(data)

        for ch_id in (ChannelId.CONTROL, ChannelId.FILE, ChannelId.MEDIA, 0x20):
            server.register_channel_proc(ch_id, ChannelProc(packet_in=echo))
        accepted: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
        server.on_stream = accepted.set_result
        listener = await server.listen(listen_url(transport))
        assert listener.endpoint.scheme == transport and listener.endpoint.port > 0
        stream = await client.connect(listener.url)
        assert stream.peer.address == server.address
        server_stream = await asyncio.wait_for(accepted, TIMEOUT)
        assert server_stream.peer.address == client.address
        sent = {
            ChannelId.CONTROL: (PacketType.CONTROL, b"control"),
            ChannelId.FILE: (PacketType.DATA, bytes(range(256)) * 1000),
            ChannelId.MEDIA: (PacketType.DATA, b"m" * 1200),
            0x20: (PacketType.DATA, b"custom"),
        }
        channels = {int(ch_id): stream.channel_new(ch_id) for ch_id in sent}
        for ch_id, (ptype, data) in sent.items():
            await channels[int(ch_id)].write(ptype, data)
        for ch_id, (ptype, data) in sent.items():
            got = await asyncio.wait_for(channels[int(ch_id)].receive(), TIMEOUT)
            assert got == (ptype, data[::-1])
        stats = stream.get_stats()
        assert stats.active_channels == 4 and stats.bytes_received > 256_000
        await stream.close()
        await asyncio.wait_for(server_stream.wait_closed(), TIMEOUT)


async def test_five_megabyte_message(transport: str) -> None:
    async with StreamNode() as server, StreamNode() as client:
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def packet_in(ch: Channel, ptype: int, data: bytes, arg: object) -> int:
            received.set_result(data)
            return len(data)

        server.register_channel_proc(ChannelId.FILE, ChannelProc(packet_in=packet_in))
        listener = await server.listen(listen_url(transport))
        stream = await client.connect(listener.url)
        blob = hashlib.shake_256(b"five megabytes").digest(5 * 1024 * 1024)
        await stream.channel_new(ChannelId.FILE).write(PacketType.DATA, blob)
        data = await asyncio.wait_for(received, 60)
        assert len(data) == len(blob) and data == blob
        await stream.close()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x00garbage bytes that are not a handshake\xff" * 3, ErrorCode.FRAME_TOO_LARGE),
        (HEADER.pack(8, PacketType.CONTROL, 0, 0, 0) + b"garbage!", ErrorCode.HANDSHAKE_FAILED),
        (HEADER.pack(1 << 31, PacketType.CONTROL, 0, 0, 0), ErrorCode.FRAME_TOO_LARGE),
        (b"\x01\x02\x03", ErrorCode.TIMEOUT),
    ],
    ids=["garbage", "garbage-hello", "oversized", "truncated-header"],
)
async def test_bad_input_gets_error_and_close_while_server_serves_others(
    transport: str, payload: bytes, code: int
) -> None:
    config = StreamConfig(handshake_timeout=1.0)  # the truncated header waits for this
    async with StreamNode(config=config) as server, StreamNode() as client:
        opened: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        server.register_channel_proc(0x10, ChannelProc(new=opened.set_result))
        listener = await server.listen(listen_url(transport))
        good = await client.connect(listener.url)
        ch = good.channel_new(0x10)
        reply = await raw_exchange(listener.endpoint, payload)
        assert error_code_of(reply) == code
        # the good stream is unaffected, and new clients are still served
        await ch.write(PacketType.DATA, b"still here")
        server_ch = await asyncio.wait_for(opened, TIMEOUT)
        assert await asyncio.wait_for(server_ch.receive(), TIMEOUT) == (
            PacketType.DATA,
            b"still here",
        )
        another = await client.connect(listener.url)
        assert another.is_active and good.is_active


async def test_client_expecting_another_identity_is_refused(transport: str) -> None:
    async with StreamNode() as server, StreamNode() as client:
        listener = await server.listen(listen_url(transport))
        wrong = NodeIdentity.generate().address
        url = listener.url.split("?")[0]
        with pytest.raises(ProtocolError) as info:
            await client.connect(url, expected=wrong)
        assert info.value.code == ErrorCode.AUTHENTICATION_FAILED
        assert not client.streams
        # the right identity (from the listener URL) is accepted
        stream = await client.connect(listener.url)
        assert stream.peer.address == server.address


async def test_slow_reader_backpressures_writer(transport: str) -> None:
    config = StreamConfig(send_high_water=512 * 1024, send_low_water=128 * 1024)
    total = 8 * 1024 * 1024
    async with StreamNode(config=config) as server, StreamNode(config=config) as client:
        opened: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        server.register_channel_proc(0x10, ChannelProc(new=opened.set_result))
        listener = await server.listen(listen_url(transport))
        stream = await client.connect(listener.url)
        ch = stream.channel_new(0x10)
        blocked = asyncio.Event()

        async def writer() -> int:
            sent = 0
            while sent < total:
                if ch.queued_bytes >= config.send_high_water:
                    blocked.set()
                await ch.write(PacketType.DATA, b"b" * 65536)
                sent += 65536
            return sent

        task = asyncio.create_task(writer())
        await asyncio.wait_for(blocked.wait(), TIMEOUT)
        server_ch = await asyncio.wait_for(opened, TIMEOUT)
        # Nobody reads on the server: once the first window's worth has arrived, the writer is
        # held at the high-water mark and the receiver holds no more than the window.
        arrived = asyncio.Event()
        server_ch.ready_to_read = lambda c, a: arrived.set()
        while server_ch.buf_size < config.initial_channel_window:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), TIMEOUT)
        assert ch.queued_bytes <= config.send_high_water + 65536
        assert server_ch.buf_size <= config.initial_channel_window
        assert not task.done()
        received = 0
        while received < total:
            _, data = await asyncio.wait_for(server_ch.receive(), TIMEOUT)
            received += len(data)
        assert await asyncio.wait_for(task, TIMEOUT) == received


async def test_one_node_listens_on_every_transport_at_once() -> None:
    async with StreamNode() as server:
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        def packet_in(ch: Channel, ptype: int, data: bytes, arg: object) -> int:
            queue.put_nowait((ch.stream.endpoint.scheme if ch.stream.endpoint else "?", data))
            return len(data)

        server.register_channel_proc(0x10, ChannelProc(packet_in=packet_in))
        listeners = [await server.listen(listen_url(s)) for s in ("tcp", "ws", "quic")]
        assert [x.endpoint.scheme for x in server.listeners] == ["tcp", "ws", "quic"]
        clients = [StreamNode() for _ in listeners]
        try:
            streams = []
            for client, listener in zip(clients, listeners, strict=True):
                await client.start()
                stream = await client.connect(listener.url)
                streams.append(stream)
                await stream.channel_new(0x10).write(
                    PacketType.DATA, listener.endpoint.scheme.encode()
                )
            got = sorted([(await asyncio.wait_for(queue.get(), TIMEOUT))[1] for _ in streams])
            assert got == [b"quic", b"tcp", b"ws"]
            assert len(server.streams) == 3
            assert {s.peer.address for s in server.streams.values()} == {c.address for c in clients}
        finally:
            for client in clients:
                await client.close()


async def test_server_process_serves_every_transport_from_one_node() -> None:
    """``avrs stream-server`` (another process) listening on tcp, ws and quic URLs at once."""
    with stream_server(*(listen_url(s) for s in ("tcp", "ws", "quic"))) as urls:
        assert [u.split(":")[0] for u in urls] == ["tcp", "ws", "quic"]
        async with StreamNode() as client:
            peers = set()
            for url in urls:
                stream = await client.connect(url)
                peers.add(stream.peer.address)
                channel = stream.channel_new(0x10)
                await channel.write(PacketType.DATA, url.encode())
                reply = await asyncio.wait_for(channel.receive(), TIMEOUT)
                assert reply == (PacketType.DATA, url.encode())
            assert len(peers) == 1  # one node behind all three


# -- WebSocket specifics ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ssl.SSLContext, Path]]:
    """A self-signed certificate for 127.0.0.1 and a server context using it."""
    cert, key = self_signed_certificate("127.0.0.1", ip_addresses=("127.0.0.1",))
    cert_file, key_file = write_pem_pair(cert, key, tmp_path_factory.mktemp("wss"), "wss")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    yield server_ctx, cert_file


async def test_wss_with_self_signed_certificate(
    tls_contexts: tuple[ssl.SSLContext, Path],
) -> None:
    server_ctx, cert_file = tls_contexts
    async with StreamNode() as server, StreamNode() as client:
        with pytest.raises(ValueError, match="set_tls"):
            saved = ws_transport._TLS.server
            ws_transport._TLS.server = None
            try:
                await server.listen(listen_url("wss"))
            finally:
                ws_transport._TLS.server = saved
        ws_transport.set_tls(server=server_ctx)
        listener = await server.listen(listen_url("wss"))
        # The default client context verifies certificates: a self-signed one is refused.
        ws_transport._TLS.client = None
        with pytest.raises(ConnectionError, match="WebSocket connect"):
            await client.connect(listener.url)
        ws_transport.set_tls(client=ssl.create_default_context(cafile=str(cert_file)))
        try:
            stream = await client.connect(listener.url)
            ch = stream.channel_new(0x10)
            server.register_channel_proc(
                0x11, ChannelProc(packet_in=lambda c, t, d, a: c.write_nowait(t, d) and len(d))
            )
            echo = stream.channel_new(0x11)
            await echo.write(PacketType.DATA, b"over tls")
            assert await asyncio.wait_for(echo.receive(), TIMEOUT) == (PacketType.DATA, b"over tls")
            await ch.write(PacketType.DATA, b"x" * 100_000)
            await stream.close()
        finally:
            ws_transport._TLS.client = None


async def test_websocket_mounted_on_an_existing_app_beside_rest() -> None:
    async with StreamNode() as node, StreamNode() as client:
        app = web.Application()

        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"hello": "rest"})

        app.router.add_get("/api/hello", hello)
        mount = ws_transport.mount_stream_endpoint(app, node, "/dapstream")
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        node.register_channel_proc(
            0x10, ChannelProc(packet_in=lambda c, t, d, a: received.set_result(d))
        )
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            assert mount.listener is not None and mount.listener in node.listeners
            stream = await client.connect(f"ws://127.0.0.1:{port}/dapstream", expected=node.address)
            await stream.channel_new(0x10).write(PacketType.DATA, b"via the gateway port")
            assert await asyncio.wait_for(received, TIMEOUT) == b"via the gateway port"
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/api/hello") as resp,
            ):
                assert resp.status == 200 and await resp.json() == {"hello": "rest"}
            # a WebSocket without compression was negotiated: no permessage-deflate
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(f"ws://127.0.0.1:{port}/dapstream", compress=15) as raw,
            ):
                assert raw.compress == 0
            await stream.close()
        finally:
            await runner.cleanup()


async def test_websocket_text_message_closes_the_connection() -> None:
    async with StreamNode() as server:
        listener = await server.listen(listen_url("ws"))
        url = f"ws://127.0.0.1:{listener.endpoint.port}/dapstream"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as raw:
            await raw.send_str("hello")
            msg = await asyncio.wait_for(raw.receive(), TIMEOUT)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert raw.close_code == aiohttp.WSCloseCode.UNSUPPORTED_DATA
        async with StreamNode() as client:
            assert (await client.connect(listener.url)).is_active


# -- QUIC specifics -----------------------------------------------------------------------------


async def test_quic_realtime_datagrams_reach_the_media_channel() -> None:
    async with StreamNode() as server, StreamNode() as client:
        media: asyncio.Queue[bytes] = asyncio.Queue()
        server.register_channel_proc(
            ChannelId.MEDIA, ChannelProc(packet_in=lambda c, t, d, a: media.put_nowait(d))
        )
        server.on_stream = realtime  # bind received datagrams to the stream's channels
        listener = await server.listen(listen_url("quic"))
        stream = await client.connect(listener.url)
        channel = stream.channel_new(ChannelId.MEDIA)
        await channel.write(PacketType.DATA, b"opened")  # reliable: the channel is open
        assert await asyncio.wait_for(media.get(), TIMEOUT) == b"opened"
        rt = realtime(stream)
        loop = asyncio.get_running_loop()
        rt.send(ChannelId.MEDIA, b"late frame", deadline=loop.time() - 1.0)
        for i in range(20):
            rt.send(ChannelId.MEDIA, b"frame %d" % i, deadline=loop.time() + 5.0)
        got = {await asyncio.wait_for(media.get(), TIMEOUT) for _ in range(20)}
        assert got == {b"frame %d" % i for i in range(20)}  # loopback: nothing lost
        assert rt.dropped_late == 1 and rt.sent == 20
        server_rt = realtime(next(iter(server.streams.values())))
        assert server_rt.received == 20 and server_rt.dropped_invalid == 0
        with pytest.raises(ValueError, match="not a realtime channel"):
            rt.send(ChannelId.FILE, b"x")
        with pytest.raises(ValueError, match="exceeds"):
            rt.send(ChannelId.MEDIA, b"x" * 5000)
        await stream.close()


async def test_realtime_requires_a_quic_stream() -> None:
    async with StreamNode() as server, StreamNode() as client:
        listener = await server.listen(listen_url("tcp"))
        stream = await client.connect(listener.url)
        with pytest.raises(ValueError, match="not carried by QUIC"):
            realtime(stream)


def test_quic_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> bytes:
        async with StreamNode() as server, StreamNode() as client:
            received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            server.register_channel_proc(
                0x10, ChannelProc(packet_in=lambda c, t, d, a: received.set_result(d))
            )
            listener = await server.listen(listen_url("quic"))
            stream = await client.connect(listener.url)
            await stream.channel_new(0x10).write(PacketType.DATA, b"u" * 1_000_000)
            data = await asyncio.wait_for(received, TIMEOUT)
            await stream.close()
            return data

    assert uvloop.run(scenario()) == b"u" * 1_000_000


async def test_connect_to_nothing_fails_cleanly(transport: str) -> None:
    async with StreamNode() as node:
        listener = await node.listen(listen_url(transport))
        port = listener.endpoint.port
    async with StreamNode() as client:
        path = "/dapstream" if transport == "ws" else ""
        with pytest.raises((ConnectionError, OSError)):
            await client.connect(f"{transport}://127.0.0.1:{port}{path}?insecure_no_pin")
