"""dap_stream over real TCP sockets on loopback: handshake, channels, callbacks, bad input."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from dapsdk.runtime.channel import Channel
from dapsdk.runtime.endpoint import parse_endpoint
from dapsdk.runtime.node import ChannelProc, StreamNode
from dapsdk.stream.admission import AdmissionConfig
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.connection import StreamConnection
from dapsdk.stream.constants import HEADER, ChannelId, PacketType
from dapsdk.stream.errors import ErrorCode, ProtocolError, StreamClosedError
from dapsdk.stream.identity import NodeIdentity

from ..conftest import listen_url
from ..servers import stream_server


async def test_two_processes_exchange_on_several_channels_with_every_callback() -> None:
    with stream_server() as urls:
        async with StreamNode() as client:
            stream = await client.stream_create(client.session_create(urls[0]))
            assert stream.authorized and stream.primary
            assert stream.peer.address == parse_endpoint(urls[0]).node
            fired: dict[str, list[object]] = {k: [] for k in ("in", "out", "read", "write")}
            echoes: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()

            def packet_in(ch: Channel, ptype: int, data: bytes, arg: object) -> int:
                fired["in"].append(arg)
                echoes.put_nowait((ch.id, ptype, data))
                return len(data) if ch.id != ChannelId.FILE else 0  # FILE: leave it for read()

            channels = {}
            for ch_id in (ChannelId.CONTROL, ChannelId.FILE, ChannelId.MEDIA, 0x20):
                ch = stream.channel_new(ch_id)
                ch.callback_arg = f"arg-{ch_id}"
                ch.packet_in = packet_in
                ch.packet_out = lambda c, t, d, a: fired["out"].append(a)
                ch.ready_to_read = lambda c, a: fired["read"].append(a)
                ch.ready_to_write = lambda c, a: fired["write"].append(a)
                channels[int(ch_id)] = ch
            await channels[0].write(PacketType.CONTROL, b"ctl")
            await channels[1].write(PacketType.DATA, b"f" * 300_000)
            await channels[4].write(PacketType.DATA, b"m" * 1200)
            await channels[0x20].write(PacketType.DATA, b"custom")
            got = [await asyncio.wait_for(echoes.get(), 10) for _ in range(4)]
            assert sorted((c, t, len(d)) for c, t, d in got) == [
                (0, PacketType.CONTROL, 3),
                (1, PacketType.DATA, 300_000),
                (4, PacketType.DATA, 1200),
                (0x20, PacketType.DATA, 6),
            ]
            # packet_in returned 0 on FILE: the message stays readable and ready_to_read fired
            assert channels[1].read() == (PacketType.DATA, b"f" * 300_000)
            assert fired["read"] == ["arg-1"]
            assert sorted(fired["in"]) == sorted(["arg-0", "arg-1", "arg-4", "arg-32"])
            assert len(fired["out"]) == 4 and len(fired["write"]) == 4
            stats = stream.get_stats()
            assert stats.active_channels == 4
            assert stats.bytes_sent > 300_000 and stats.bytes_received > 300_000
            await stream.close()


async def test_peer_with_unexpected_identity_is_refused() -> None:
    async with StreamNode() as server, StreamNode() as client:
        listener = await server.listen("tcp://127.0.0.1:0")
        wrong = NodeIdentity.generate().address
        with pytest.raises(ProtocolError) as info:
            await client.connect(listener.endpoint.url.split("?")[0], expected=wrong)
        assert info.value.code == ErrorCode.AUTHENTICATION_FAILED
        assert str(wrong) in str(info.value)


async def raw_exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    writer.close()
    return data


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (HEADER.pack(1 << 31, PacketType.CONTROL, 0, 0, 0), ErrorCode.FRAME_TOO_LARGE),
        (HEADER.pack(5, PacketType.DATA, 0, 0x10, 0) + b"hello", ErrorCode.PROTOCOL_ERROR),
        (HEADER.pack(8, PacketType.CONTROL, 0, 0, 0) + b"garbage!", ErrorCode.HANDSHAKE_FAILED),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode.FRAME_TOO_LARGE),
    ],
    ids=["oversized", "data-first", "garbage-hello", "http"],
)
async def test_bad_input_gets_error_and_server_keeps_serving(payload: bytes, code: int) -> None:
    async with StreamNode() as server, StreamNode() as client:
        opened: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        server.register_channel_proc(0x10, ChannelProc(new=opened.set_result))
        listener = await server.listen("tcp://127.0.0.1:0")
        good = await client.connect(listener.url)
        ch = good.channel_new(0x10)
        reply = await raw_exchange(listener.endpoint.port, payload)
        _, ptype, _, _, flags = HEADER.unpack_from(reply)
        assert (ptype, flags) == (PacketType.ERROR, 0)
        assert struct.unpack_from("<I", reply, 12)[0] == code
        # the good stream is unaffected
        await ch.write(PacketType.DATA, b"still here")
        server_ch = await asyncio.wait_for(opened, 10)
        assert await asyncio.wait_for(server_ch.receive(), 10) == (PacketType.DATA, b"still here")


async def test_truncated_header_then_close_does_not_disturb_server() -> None:
    async with StreamNode() as server:
        listener = await server.listen("tcp://127.0.0.1:0")
        with socket.create_connection(("127.0.0.1", listener.endpoint.port)) as sock:
            sock.sendall(b"\x01\x02\x03")
        async with StreamNode() as client:
            stream = await client.connect(listener.url)
            assert stream.is_active


async def test_server_sending_garbage_gives_client_a_clear_exception() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(HEADER.pack(10, 0x77, 1, 0, 0) + b"0123456789")
        await writer.drain()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with StreamNode() as client:
        with pytest.raises(ProtocolError, match="before the handshake"):
            await client.connect(f"tcp://127.0.0.1:{port}?insecure_no_pin")
    server.close()


async def test_full_handshake_table_evicts_the_oldest_incomplete_handshake() -> None:
    # One slot; cookies only beyond it: a new connection evicts the pending one with SERVER_BUSY.
    admission = AdmissionConfig(max_pending=1, per_source=2, per_prefix=2, cookie_threshold=2)
    async with StreamNode(admission=admission) as server:
        listener = await server.listen("tcp://127.0.0.1:0")
        # A client that sends HELLO and never finishes keeps one handshake pending.
        hello = b"".join(
            StreamConnection(
                StreamConfig(), NodeIdentity.generate(), is_client=True, now=0.0
            ).data_to_send()
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.endpoint.port)
        writer.write(hello)
        response_header = await asyncio.wait_for(reader.readexactly(12), 10)
        assert HEADER.unpack(response_header)[1:3] == (PacketType.CONTROL, 1)  # RESPONSE: pending
        size = HEADER.unpack(response_header)[0]
        await asyncio.wait_for(reader.readexactly(size), 10)
        assert server.pending_handshakes == 1
        async with StreamNode() as client:
            stream = await client.connect(listener.url)
            assert stream.is_active
        # The stalled handshake was told why it was dropped.
        header = HEADER.unpack(await asyncio.wait_for(reader.readexactly(12), 10))
        assert header[1] == PacketType.ERROR
        body = await asyncio.wait_for(reader.readexactly(header[0]), 10)
        assert struct.unpack_from("<I", body)[0] == ErrorCode.SERVER_BUSY
        assert server.admission.stats.evicted == 1
        writer.close()


async def test_slow_reader_backpressures_writer_over_tcp() -> None:
    config = StreamConfig(send_high_water=512 * 1024, send_low_water=128 * 1024)
    async with StreamNode(config=config) as server, StreamNode(config=config) as client:
        listener = await server.listen("tcp://127.0.0.1:0")
        stream = await client.connect(listener.url)
        ch = stream.channel_new(0x10)
        blocked = asyncio.Event()

        async def writer() -> int:
            sent = 0
            while sent < 20 * 1024 * 1024:
                if ch.queued_bytes >= config.send_high_water:
                    blocked.set()
                await ch.write(PacketType.DATA, b"b" * 65536)
                sent += 65536
            return sent

        task = asyncio.create_task(writer())
        await asyncio.wait_for(blocked.wait(), 10)
        # nobody reads on the server: the writer is held at the high-water mark
        assert ch.queued_bytes <= config.send_high_water + 65536
        server_ch = next(iter(server.streams.values())).channel(0x10)
        assert server_ch is not None
        assert server_ch.buf_size <= config.initial_channel_window
        assert not task.done()
        # the reader drains: the writer finishes
        received = 0
        while received < 20 * 1024 * 1024:
            _, data = await asyncio.wait_for(server_ch.receive(), 10)
            received += len(data)
        assert await task == received


async def test_channel_close_fires_on_both_sides_and_write_after_close_fails() -> None:
    async with StreamNode() as server, StreamNode() as client:
        closed: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        server.register_channel_proc(
            0x30, ChannelProc(delete=lambda ch: closed.put_nowait(("server", ch.id)))
        )
        listener = await server.listen("tcp://127.0.0.1:0")
        stream = await client.connect(listener.url)
        ch = stream.channel_new(0x30)
        ch.on_close = lambda c, code, reason: closed.put_nowait(("client", c.id))
        await ch.write(PacketType.DATA, b"x")
        ch.close()
        got = {await asyncio.wait_for(closed.get(), 10) for _ in range(2)}
        assert got == {("server", 0x30), ("client", 0x30)}
        with pytest.raises(StreamClosedError):
            await ch.write(PacketType.DATA, b"late")


async def test_pooled_stream_is_shared_by_sessions_and_stats_aggregate() -> None:
    async with StreamNode() as server, StreamNode() as client:
        listener = await server.listen("tcp://127.0.0.1:0")
        s1 = client.session_create(listener.url)
        s2 = client.session_create(listener.url)
        st1 = await client.stream_create(s1)
        st2 = await client.stream_create(s2)
        assert st1 is st2 and st1.sessions == [s1, s2]
        assert client.session_find(s1.id) is s1
        client.session_delete(s1)
        assert st1.is_active
        client.session_delete(s2)  # last session gone: the pooled stream closes
        await asyncio.wait_for(st1.wait_closed(), 10)


@pytest.mark.parametrize("scheme", ["tcp"])
async def test_listen_url_helper_binds_free_port(scheme: str) -> None:
    async with StreamNode() as node:
        listener = await node.listen(listen_url(scheme))
        assert listener.endpoint.port > 0
        assert listener.endpoint.node == node.address
