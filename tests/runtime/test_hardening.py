"""Issue 9: peers that do not read, cheap floods, errors that must arrive, dead servers.

Each test runs against a real ``avrs stream-server`` process (or real sockets) and observes real
numbers: the server's resident memory from /proc, the client's counters, the code that arrived.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from dapsdk.runtime.channel import Channel
from dapsdk.runtime.endpoint import parse_endpoint
from dapsdk.runtime.node import StreamNode
from dapsdk.stream.base import _KEEPALIVE, _WINDOW
from dapsdk.stream.config import PeerIdentity, StreamConfig
from dapsdk.stream.connection import StreamConnection
from dapsdk.stream.constants import HEADER, ControlOp, KeepaliveKind, PacketFlag, PacketType
from dapsdk.stream.errors import ErrorCode, RemoteError, StreamClosedError

from ..servers import ROOT

MiB = 1024 * 1024


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str

    def memory_kb(self, field: str = "VmRSS") -> int:
        """Resident (VmRSS) or peak resident (VmHWM) memory of the server process in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} for pid {self.proc.pid}")


@contextmanager
def echo_server() -> Iterator[Server]:
    args = [sys.executable, "-m", "dapsdk.cli", "stream-server", "--ready"]
    args += ["--listen", "tcp://127.0.0.1:0"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            if line.startswith("listening "):
                url = line.split(" ", 1)[1].strip()
            elif line.strip() == "ready":
                break
        assert url, "stream-server did not start"
        yield Server(proc, url)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def until(condition: object, timeout: float, what: object) -> None:
    """Poll ``condition()`` until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.02)


# -- unbounded reply queues ---------------------------------------------------------------------


async def test_echo_server_holds_back_a_client_that_never_consumes_its_echoes() -> None:
    """The client reads its socket but never consumes the echoes: before, the server echoed at
    once with write_nowait and returned credit, so its queue (and RSS) grew with every byte the
    client sent. Now the server stops consuming at its high-water mark and the client's writes
    stop at its window."""
    with echo_server() as server:
        async with StreamNode() as client:
            stream = await client.connect(server.url)
            ch = stream.channel_new(0x10)  # no packet_in and no read(): echoes stay unread
            baseline = server.memory_kb()
            block = b"e" * 65536
            total = 96 * MiB

            async def writer() -> None:
                sent = 0
                while sent < total:
                    await ch.write(PacketType.DATA, block)
                    sent += len(block)

            task = asyncio.create_task(writer())

            # Wait until the client is held back (its queue at the high-water mark) or all of
            # it went through (the bug).
            def held_back() -> bool:
                # DATA queued and no credit (channel or connection) to send any of it
                return ch.queued_bytes > 0 and not stream.driver.core.has_pending_data()

            await until(
                lambda: task.done() or held_back(),
                60,
                lambda: f"the writer to finish or be held back: {ch.stats()} {stream}",
            )
            # Keepalive round trips until one changes nothing: everything the server was going
            # to grant for what it had received has arrived by the time its PONG does.
            core_stats = stream.driver.core.stats
            accepted = -1
            while ch.stats()["send_offset"] != accepted and not task.done():
                accepted = ch.stats()["send_offset"]
                pongs = core_stats.rtt_count
                stream.send_keepalive()
                await until(lambda n=pongs: core_stats.rtt_count > n, 30, "a PONG")
                await until(
                    lambda: task.done() or held_back(), 60, "the writer to be held back again"
                )
            assert not task.done(), "the server accepted everything without anyone reading"
            # server: 1 MiB channel window unread + its echo queue at ~1 MiB high water
            assert accepted <= 8 * MiB, accepted
            growth_mb = (server.memory_kb() - baseline) / 1024
            assert growth_mb < 64, growth_mb
            # Consuming the echoes lets everything through, in order.
            received = 0
            task_result = asyncio.ensure_future(task)
            while received < total:
                _, data = await asyncio.wait_for(ch.receive(), 30)
                assert data == block
                received += len(data)
            await asyncio.wait_for(task_result, 30)
            assert server.proc.poll() is None


async def test_peer_that_stops_reading_while_sending_control_is_closed_at_the_send_bound() -> None:
    """65 KB CONTROL messages, echoed by the server, while the client does not read its socket:
    CONTROL used to be sealed and written even while the transport was paused (RSS to GBs until
    the 3 s drain timer). Now it counts in max_send_queue: ERROR ENHANCE_YOUR_CALM at 16 MiB."""
    with echo_server() as server:
        async with StreamNode() as client:
            stream = await client.connect(server.url)
            ch = stream.channel_new(0x10)
            ch.packet_in = lambda _c, _t, data, _a: len(data)  # consume once we read again
            sink = stream.driver.sink
            transport = sink.transport  # type: ignore[union-attr]
            baseline = server.memory_kb("VmRSS")
            transport.pause_reading()
            message = b"c" * (65536 - 1)
            pushed = 0
            while pushed < 64 * MiB and stream.is_active:
                # pace on our own transport (the server keeps reading until it gives up)
                if transport.get_write_buffer_size() > 2 * MiB:
                    await until(
                        lambda: (
                            transport.get_write_buffer_size() <= 2 * MiB or not stream.is_active
                        ),
                        30,
                        "the server to read what we sent",
                    )
                    continue
                try:
                    ch.write_nowait(PacketType.CONTROL, message)
                except StreamClosedError:
                    break
                pushed += len(message)
                if pushed % (4 * MiB) < len(message):
                    await asyncio.sleep(0)
            peak_mb = (server.memory_kb("VmHWM") - baseline) / 1024
            transport.resume_reading()
            await asyncio.wait_for(stream.wait_closed(), 30)
            assert stream.terminated is not None
            assert stream.terminated.code == ErrorCode.ENHANCE_YOUR_CALM, stream.terminated
            assert "does not read" in stream.terminated.reason
            # 16 MiB in the core + what the transport/kernel held before pausing; generous bound
            assert peak_mb < 200, peak_mb
            assert server.proc.poll() is None


# -- errors that arrive ---------------------------------------------------------------------------


def test_error_reaches_a_client_that_sent_a_burst_before_reading() -> None:
    """A burst of bytes the server refuses: the server used to close with unread input, so the
    kernel sent a reset and the client never read the ERROR. Now it half-closes and drains."""
    with echo_server() as server:
        endpoint = parse_endpoint(server.url)
        for _ in range(5):
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=10)
            # a DATA packet before the handshake (refused at once), then 512 KiB more
            burst = HEADER.pack(4, PacketType.DATA, 0, 0, 0) + b"xxxx" + b"\0" * (512 * 1024)
            try:
                sock.sendall(burst)
            except OSError:
                pass
            received = b""
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
            except ConnectionResetError:
                pytest.fail(f"reset before the ERROR was read (got {len(received)} bytes)")
            finally:
                sock.close()
            assert len(received) >= HEADER.size + 4
            _, ptype, _, _, flags = HEADER.unpack_from(received, 0)
            assert (ptype, flags) == (PacketType.ERROR, 0)
            (code,) = struct.unpack_from("<I", received, HEADER.size)
            assert code == ErrorCode.PROTOCOL_ERROR


async def test_connect_fails_when_the_responder_refuses_finish() -> None:
    """The responder refuses the initiator's identity after FINISH (a revoked certificate, a
    policy): connect() used to return a stream that then died; now it raises."""

    def refuse(peer: PeerIdentity) -> None:
        raise PermissionError("certificate revoked")

    async with StreamNode(config=StreamConfig(peer_verifier=refuse)) as server:
        listener = await server.listen("tcp://127.0.0.1:0")
        async with StreamNode() as client:
            with pytest.raises(RemoteError) as info:
                await client.connect(listener.url)
            assert info.value.code == ErrorCode.AUTHENTICATION_FAILED
            assert not client.streams


async def test_sigkilled_server_is_reported_as_connection_loss() -> None:
    with echo_server() as server:
        async with StreamNode() as client:
            stream = await client.connect(server.url)
            ch: Channel = stream.channel_new(0x10)
            await ch.write(PacketType.DATA, b"ping")
            assert (await asyncio.wait_for(ch.receive(), 10))[1] == b"ping"
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            await asyncio.wait_for(stream.wait_closed(), 10)
            assert stream.terminated is not None
            assert stream.terminated.code == ErrorCode.CONNECTION_LOST, stream.terminated
            with pytest.raises(StreamClosedError) as info:
                await ch.receive()
            assert info.value.code == ErrorCode.CONNECTION_LOST


# -- cheap packets ----------------------------------------------------------------------------


def _cheap_packet(core: StreamConnection, kind: str) -> None:
    """Seal one packet that costs the receiver an AEAD open and carries nothing."""
    if kind == "empty DATA":
        core._append_sealed(PacketType.DATA, 0x10, PacketFlag.ENCRYPTED, b"")
    elif kind == "PONG":  # answering no PING of the server's
        core._seal_control(PacketType.KEEPALIVE, 0, _KEEPALIVE.pack(KeepaliveKind.PONG, 1))
    elif kind == "WINDOW":  # grants nothing new
        core._seal_control(PacketType.CONTROL, 0x10, _WINDOW.pack(ControlOp.WINDOW, 0, 1))
    elif kind == "DISCARD":  # no partial message to discard
        core._seal_control(PacketType.CONTROL, 0x10, bytes((ControlOp.DISCARD,)))
    elif kind == "PRIORITY":  # the urgency the channel already has
        core._seal_control(PacketType.CONTROL, 0x10, bytes((ControlOp.PRIORITY, 3)))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["empty DATA", "PONG", "WINDOW", "DISCARD", "PRIORITY"])
async def test_flood_of_cheap_packets_gets_enhance_your_calm(kind: str) -> None:
    """30,000 packets that carry nothing: before, empty DATA, PONG (and a WINDOW, DISCARD or
    PRIORITY within the 40,000 control burst) were all accepted; now ENHANCE_YOUR_CALM."""
    with echo_server() as server:
        async with StreamNode() as client:
            stream = await client.connect(server.url)
            ch = stream.channel_new(0x10)
            await ch.write(PacketType.DATA, b"hi")
            assert (await asyncio.wait_for(ch.receive(), 10))[1] == b"hi"
            core = stream.driver.core
            for i in range(30_000):
                if not stream.is_active:
                    break
                _cheap_packet(core, kind)
                if i % 2000 == 1999:
                    stream.driver.pump()
                    await asyncio.sleep(0)
            stream.driver.pump()
            # One round trip after the flood: the server answered the PING, or it closed first.
            pongs = core.stats.rtt_count
            if stream.is_active:
                stream.send_keepalive()
            await until(
                lambda: not stream.is_active or core.stats.rtt_count > pongs, 30, "PONG or ERROR"
            )
            assert stream.terminated is not None, f"{kind} flood accepted"
            assert stream.terminated.code == ErrorCode.ENHANCE_YOUR_CALM, stream.terminated
            assert server.proc.poll() is None


# -- capacity ---------------------------------------------------------------------------------


async def test_one_timer_wheel_serves_every_connection() -> None:
    """50 connections: one loop timer between them (each had its own TimerHandle), and the
    shared wheel still drives every connection's keepalive."""
    async with StreamNode() as server, StreamNode() as client:
        listener = await server.listen("tcp://127.0.0.1:0")
        streams = [await client.connect(listener.url) for _ in range(50)]
        loop = asyncio.get_running_loop()
        scheduled = sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]
        assert scheduled < 10, scheduled  # was one TimerHandle per connection and side (100+)
        assert server._timers is not None and len(server._timers) == 50
        assert client._timers is not None and len(client._timers) == 50
        # idle for keepalive_interval: every stream pings and hears its PONG through the wheel
        counts = [s.driver.core.stats.rtt_count for s in streams]
        await until(
            lambda: all(
                s.driver.core.stats.rtt_count > n for s, n in zip(streams, counts, strict=True)
            ),
            30,
            "a keepalive round trip on every stream",
        )
        assert all(s.is_active for s in streams)
