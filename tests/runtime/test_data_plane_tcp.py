"""Issue 3 over real sockets: big messages, killed peers, relays, priorities under saturation."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import textwrap

from dapsdk.runtime.channel import Channel
from dapsdk.runtime.node import ChannelProc, StreamNode
from dapsdk.stream.channel_key import ChannelKey
from dapsdk.stream.constants import PacketType
from dapsdk.stream.errors import ErrorCode

TIMEOUT = 30


async def test_50_mb_message_arrives_while_another_channel_keeps_flowing() -> None:
    async with StreamNode() as server, StreamNode() as client:
        got: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

        def new(ch: Channel) -> None:
            ch.packet_in = lambda c, t, d, a: got.put_nowait((c.id, d)) or len(d)

        server.default_channel_proc = ChannelProc(new=new)
        listener = await server.listen("tcp://127.0.0.1:0")
        stream = await client.connect(listener.url)
        bulk = stream.channel_new(0x10)
        chat = stream.channel_new(0x11)
        blob = os.urandom(50 * 1024 * 1024)
        bulk_task = asyncio.create_task(bulk.write(PacketType.DATA, blob))
        for i in range(20):
            await chat.write(PacketType.DATA, f"chat {i}".encode())
        order = []
        big = b""
        while not big:
            ch_id, data = await asyncio.wait_for(got.get(), TIMEOUT)
            order.append(ch_id)
            if ch_id == 0x10:
                big = data
        await bulk_task
        assert hashlib.sha256(big).digest() == hashlib.sha256(blob).digest()
        # all 20 chat messages overtook the 50 MB message, which needs ~800 packets
        assert order.count(0x11) == 20 and order[-1] == 0x10


async def test_control_message_overtakes_a_saturated_bulk_channel() -> None:
    async with StreamNode() as server, StreamNode() as client:
        arrivals: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

        def new(ch: Channel) -> None:
            ch.packet_in = lambda c, t, d, a: arrivals.put_nowait((c.id, t)) or len(d)

        server.default_channel_proc = ChannelProc(new=new)
        listener = await server.listen("tcp://127.0.0.1:0")
        stream = await client.connect(listener.url)
        bulk = stream.channel_new(0x10)
        control = stream.channel_new(0x00)
        for _ in range(200):  # 12.8 MB queued: far more than windows and socket buffers
            bulk.write_nowait(PacketType.DATA, bytes(64_000))
        first = await asyncio.wait_for(arrivals.get(), TIMEOUT)  # bulk is flowing now
        assert first == (0x10, PacketType.DATA)
        control.write_nowait(PacketType.CONTROL, b"stop")
        seen_bulk = 1
        while True:
            ch_id, ptype = await asyncio.wait_for(arrivals.get(), TIMEOUT)
            if ch_id == 0x00:
                assert ptype == PacketType.CONTROL
                break
            seen_bulk += 1
        assert seen_bulk < 100, f"control waited behind {seen_bulk} of 200 bulk messages"


async def test_channel_key_payload_is_forwarded_by_a_relay_without_the_key() -> None:
    key = ChannelKey.generate()
    async with StreamNode() as relay, StreamNode() as sender, StreamNode() as receiver:
        delivered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        seen_by_relay: list[bytes] = []
        receiver_listener = await receiver.listen("tcp://127.0.0.1:0")

        def receiver_new(ch: Channel) -> None:
            ch.set_encryption(ChannelKey(key.key_bytes))
            ch.packet_in = lambda c, t, d, a: delivered.set_result(d) or len(d)

        receiver.register_channel_proc(0x20, ChannelProc(new=receiver_new))
        onward = await relay.connect(receiver_listener.url)
        onward_ch = onward.channel_new(0x20)

        def relay_new(ch: Channel) -> None:  # no key here: forwards sealed bytes as they are
            def forward(c: Channel, t: int, d: bytes, a: object) -> int:
                seen_by_relay.append(d)
                onward_ch.write_nowait(t, d)
                return len(d)

            ch.packet_in = forward

        relay.register_channel_proc(0x20, ChannelProc(new=relay_new))
        relay_listener = await relay.listen("tcp://127.0.0.1:0")
        stream = await sender.connect(relay_listener.url)
        ch = stream.channel_new(0x20)
        ch.set_encryption(key)
        secret = b"only the ends may read this"
        await ch.write(PacketType.DATA, secret)
        assert await asyncio.wait_for(delivered, TIMEOUT) == secret
        assert seen_by_relay and secret not in seen_by_relay[0]


PEER_SCRIPT = textwrap.dedent(
    """
    import asyncio, subprocess, sys
    from dapsdk.runtime.node import StreamNode

    async def main():
        node = StreamNode()
        await node.start()
        stream = await node.connect(sys.argv[1])
        stream.channel_new(0x10).write_nowait(1, b"hello")
        sock = stream.driver.sink.transport.get_extra_info("socket")
        # A child holds the socket open, so killing this process sends no FIN.
        holder = subprocess.Popen(["sleep", "60"], pass_fds=[sock.fileno()])
        print(holder.pid, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_sigkilled_peer_without_fin_is_detected_within_keepalive_timeout() -> None:
    async with StreamNode() as server:
        hello: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        server.register_channel_proc(0x10, ChannelProc(new=hello.set_result))
        listener = await server.listen("tcp://127.0.0.1:0")
        peer = subprocess.Popen(
            [sys.executable, "-c", PEER_SCRIPT, listener.url], stdout=subprocess.PIPE, text=True
        )
        holder_pid = None
        try:
            assert peer.stdout is not None
            holder_pid = int(await asyncio.to_thread(peer.stdout.readline))
            await asyncio.wait_for(hello, TIMEOUT)
            stream = next(iter(server.streams.values()))
            os.kill(peer.pid, signal.SIGKILL)
            killed_at = asyncio.get_running_loop().time()
            await asyncio.wait_for(stream.wait_closed(), TIMEOUT)
            detected_after = asyncio.get_running_loop().time() - killed_at
            assert stream.terminated is not None
            assert stream.terminated.code == ErrorCode.TIMEOUT
            assert "silent" in stream.terminated.reason
            # silence is counted from the last packet, so detection comes at most one timeout
            # after the kill (plus one timer tick)
            assert detected_after <= server.config.keepalive_timeout + 1.0
        finally:
            peer.kill()
            peer.wait()
            if holder_pid is not None:
                os.kill(holder_pid, signal.SIGKILL)
