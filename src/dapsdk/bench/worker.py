"""One side of one benchmark case, run as its own process.

``python -m dapsdk.bench.worker recv KIND --duration D --warmup W [...]`` listens on loopback,
prints ``{"ready": URL}``, waits for the first byte, lets ``W`` seconds of warm-up pass, counts
what its callback receives during ``D`` seconds, prints ``{"result": {...}}`` and closes the
connection. ``python -m dapsdk.bench.worker send KIND --url URL --seconds S`` connects and sends
as fast as the contender's own backpressure allows until the receiver closes (or ``S`` seconds
pass), then prints ``{"sent": {...}}``.

Every contender is measured the same way: same payloads, same process split, same event loop
(uvloop when installed), and the receiver counts application payload bytes where the library
hands them to the application (``data_received`` for TCP/TLS, the message loop for websockets,
the channel's ``packet_in`` callback for dapsdk).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from .common import (
    BULK_CHUNK,
    CONTROL_CHANNEL,
    CONTROL_RATE,
    CONTROL_SIZE,
    DATA_CHANNEL,
    KINDS,
    LOOPS,
    SMALL_SIZE,
    emit,
    loop_factory,
    now_ns,
    run,
    wait_bounded,
)

#: Seconds a receiver waits for its sender's first byte.
START_TIMEOUT = 30.0
#: Write-buffer limits of the TCP and TLS baselines: the same as dapsdk's TCP transport.
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024


class Meter:
    """What a receiver counts; the same code for every contender."""

    __slots__ = ("bytes", "first", "latencies", "msgs", "recording", "started")

    def __init__(self) -> None:
        self.bytes = 0
        self.msgs = 0
        self.started = False
        self.first = asyncio.Event()
        self.recording = False
        self.latencies: list[int] = []

    def add(self, n: int) -> None:
        self.bytes += n
        self.msgs += 1
        if not self.started:
            self.started = True
            self.first.set()

    def probe(self, sent_ns: int) -> None:
        if self.recording:
            self.latencies.append(now_ns() - sent_ns)


def payload_for(kind: str) -> bytes:
    size = SMALL_SIZE if kind.endswith("-small") else BULK_CHUNK
    return os.urandom(size)


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tls_server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def tls_client_context(cafile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def configure_dap_tls(
    scheme: str, *, cert: str | None = None, key: str | None = None, cafile: str | None = None
) -> None:
    """``wss://`` needs process-wide TLS contexts: the bench's self-signed certificate."""
    if scheme != "wss":
        return
    from ..runtime import ws

    if cert is not None and key is not None:
        ws.set_tls(server=tls_server_context(cert, key))
    if cafile is not None:
        ws.set_tls(client=tls_client_context(cafile))


def listen_url(scheme: str) -> str:
    if scheme in ("ws", "wss"):
        return f"{scheme}://127.0.0.1:0/dapstream"
    return f"{scheme}://127.0.0.1:0"


class Profiling:
    """Optional pyinstrument profile of the measured part of a worker (``--profile PATH``)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._profiler: Any = None

    def start(self) -> None:
        if self.path is None or self._profiler is not None:
            return
        from pyinstrument import Profiler

        self._profiler = Profiler(interval=0.0005, async_mode="disabled")
        self._profiler.start()

    def stop(self) -> None:
        if self._profiler is None or self.path is None:
            return
        self._profiler.stop()
        text = self._profiler.output_text(unicode=False, color=False, show_all=False)
        Path(self.path).write_text(text)
        self._profiler = None


# --------------------------------------------------------------------------------- receivers


class CountingProtocol(asyncio.Protocol):
    def __init__(self, meter: Meter, transports: list[asyncio.Transport]) -> None:
        self.meter = meter
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _nodelay(transport)
        self.transports.append(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.meter.add(len(data))


Closer = Callable[[], Awaitable[None]]


async def serve_tcp(meter: Meter, ssl_ctx: ssl.SSLContext | None) -> tuple[str, Closer]:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    server = await loop.create_server(
        lambda: CountingProtocol(meter, transports), "127.0.0.1", 0, ssl=ssl_ctx
    )
    port = server.sockets[0].getsockname()[1]

    async def close() -> None:
        server.close()
        for transport in transports:
            if not transport.is_closing():
                transport.abort()

    return f"127.0.0.1:{port}", close


async def serve_ws(meter: Meter) -> tuple[str, Closer]:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    connections: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(ws)
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                meter.add(len(message))

    server = await serve(
        handler, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None
    )
    port = next(iter(server.sockets)).getsockname()[1]

    async def close() -> None:
        server.close(close_connections=False)
        for ws in connections:
            ws.transport.abort()

    return f"ws://127.0.0.1:{port}/", close


async def serve_dap(meter: Meter, scheme: str, control: bool) -> tuple[str, Closer]:
    from ..runtime.channel import Channel
    from ..runtime.node import ChannelProc, StreamNode

    node = StreamNode()
    await node.start()

    def packet_in(ch: Channel, ptype: int, data: bytes, arg: object) -> int:
        n = len(data)
        meter.add(n)
        return n

    def probe_in(ch: Channel, ptype: int, data: bytes, arg: object) -> int:
        meter.probe(int.from_bytes(data[:8], "little"))
        return len(data)

    node.register_channel_proc(DATA_CHANNEL, ChannelProc(packet_in=packet_in))
    if control:
        node.register_channel_proc(CONTROL_CHANNEL, ChannelProc(packet_in=probe_in))
    listener = await node.listen(listen_url(scheme))

    async def close() -> None:
        for stream in list(node.streams.values()):
            stream.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(node.close(), 2.0)

    return listener.url, close


async def receiver(args: argparse.Namespace) -> None:
    kind: str = args.kind
    meter = Meter()
    if kind == "tcp-bulk":
        url, close = await serve_tcp(meter, None)
    elif kind == "tls-bulk":
        url, close = await serve_tcp(meter, tls_server_context(args.cert, args.key))
    elif kind in ("ws-bulk", "ws-small"):
        url, close = await serve_ws(meter)
    else:
        configure_dap_tls(args.scheme, cert=args.cert, key=args.key)
        url, close = await serve_dap(meter, args.scheme, control=kind == "dap-control")
    emit({"ready": url})
    profiling = Profiling(args.profile)
    try:
        await wait_bounded(meter.first.wait(), START_TIMEOUT, "the sender's first byte")
        await asyncio.sleep(args.warmup)
        profiling.start()
        t0, b0, m0, c0 = time.perf_counter(), meter.bytes, meter.msgs, time.process_time()
        meter.recording = True
        await asyncio.sleep(args.duration)
        meter.recording = False
        t1, b1, m1, c1 = time.perf_counter(), meter.bytes, meter.msgs, time.process_time()
        profiling.stop()
        emit(
            {
                "result": {
                    "bytes": b1 - b0,
                    "msgs": m1 - m0,
                    "seconds": t1 - t0,
                    "cpu_s": c1 - c0,
                    "latencies_ns": meter.latencies,
                }
            }
        )
    finally:
        await close()


# ----------------------------------------------------------------------------------- senders


class BulkSender(asyncio.Protocol):
    """Writes the chunk whenever the transport is below its high-water mark."""

    def __init__(self, chunk: bytes, done: asyncio.Future[None]) -> None:
        self.chunk = chunk
        self.done = done
        self.paused = False
        self.sent = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport: no isinstance check.
        transport = cast(asyncio.Transport, transport)
        _nodelay(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.transport = transport
        asyncio.get_running_loop().call_soon(self._fill)

    def _fill(self) -> None:
        transport = self.transport
        if transport is None:
            return
        chunk = self.chunk
        # A bounded burst per callback: the loop must keep reading the socket, or a reset by
        # the receiver is never noticed (uvloop's TLS transport may accept writes after it).
        for _ in range(64):
            if self.paused or transport.is_closing():
                return
            transport.write(chunk)
            self.sent += 1
        asyncio.get_running_loop().call_soon(self._fill)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._fill()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def send_tcp(url: str, seconds: float, ssl_ctx: ssl.SSLContext | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, _, port = url.rpartition(":")
    done: asyncio.Future[None] = loop.create_future()
    proto = BulkSender(payload_for("tcp-bulk"), done)
    transport, _ = await loop.create_connection(
        lambda: proto,
        host,
        int(port),
        ssl=ssl_ctx,
        server_hostname="localhost" if ssl_ctx is not None else None,
    )
    info: dict[str, Any] = {}
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None:
        info["tls_version"] = ssl_object.version()
        info["cipher"] = ssl_object.cipher()[0]
    stopper = loop.call_later(seconds, transport.abort)
    try:
        await done
    finally:
        stopper.cancel()
    return {"msgs": proto.sent, **info}


async def send_ws(url: str, seconds: float, kind: str) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    payload = payload_for(kind)
    sent = 0
    async with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        _nodelay(ws.transport)
        with contextlib.suppress(ConnectionClosed):
            while loop.time() < deadline:
                for _ in range(256):
                    await ws.send(payload)
                sent += 256
        ws.transport.abort()
    return {"msgs": sent}


async def send_dap(url: str, seconds: float, kind: str) -> dict[str, Any]:
    from ..runtime.node import StreamNode
    from ..stream.constants import PacketType
    from ..stream.errors import StreamClosedError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    payload = payload_for(kind)
    data = PacketType.DATA
    sent = 0
    probes = 0
    node = StreamNode()
    await node.start()
    try:
        stream = await wait_bounded(node.connect(url), 15.0, "connect and handshake")
        channel = stream.channel_new(DATA_CHANNEL)
        prober: asyncio.Task[None] | None = None
        if kind == "dap-control":
            control = stream.channel_new(CONTROL_CHANNEL)
            pad = bytes(CONTROL_SIZE - 8)

            async def probe() -> None:
                nonlocal probes
                interval = 1.0 / CONTROL_RATE
                with contextlib.suppress(StreamClosedError):
                    while True:
                        await asyncio.sleep(interval)
                        control.write_nowait(
                            PacketType.CONTROL, now_ns().to_bytes(8, "little") + pad
                        )
                        probes += 1

            prober = asyncio.create_task(probe())
        with contextlib.suppress(StreamClosedError):
            while loop.time() < deadline:
                for _ in range(256):
                    await channel.write(data, payload)
                sent += 256
        if prober is not None:
            prober.cancel()
    finally:
        for stream in list(node.streams.values()):
            stream.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(node.close(), 2.0)
    return {"msgs": sent, "probes": probes}


async def sender(args: argparse.Namespace) -> None:
    kind: str = args.kind
    profiling = Profiling(args.profile)
    t0, c0 = time.perf_counter(), time.process_time()
    profiling.start()
    try:
        if kind == "tcp-bulk":
            info = await send_tcp(args.url, args.seconds, None)
        elif kind == "tls-bulk":
            info = await send_tcp(args.url, args.seconds, tls_client_context(args.cafile))
        elif kind in ("ws-bulk", "ws-small"):
            info = await send_ws(args.url, args.seconds, kind)
        else:
            configure_dap_tls(args.url.partition(":")[0], cafile=args.cafile)
            info = await send_dap(args.url, args.seconds, kind)
    finally:
        profiling.stop()
    emit(
        {
            "sent": {
                "seconds": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0,
                **info,
            }
        }
    )


# -------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dapsdk.bench.worker")
    sub = parser.add_subparsers(dest="role", required=True)
    recv = sub.add_parser("recv", help="listen, count, print the result")
    recv.add_argument("kind", choices=KINDS)
    recv.add_argument("--duration", type=float, required=True)
    recv.add_argument("--warmup", type=float, default=0.5)
    recv.add_argument("--scheme", default="tcp", help="dapsdk endpoint scheme")
    recv.add_argument("--cert", help="PEM certificate (tls-bulk)")
    recv.add_argument("--key", help="PEM private key (tls-bulk)")
    recv.add_argument("--profile", help="write a pyinstrument profile of the window here")
    send = sub.add_parser("send", help="connect and send until the receiver closes")
    send.add_argument("kind", choices=KINDS)
    send.add_argument("--url", required=True)
    send.add_argument("--seconds", type=float, required=True, help="hard stop")
    send.add_argument("--cafile", help="PEM certificate to trust (tls-bulk)")
    send.add_argument("--profile", help="write a pyinstrument profile of the run here")
    for p in (recv, send):
        p.add_argument("--loop", choices=LOOPS, default="auto")
        p.add_argument("--cpu", type=int, default=None, help="pin the worker to this CPU")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    _, loop_name = loop_factory(args.loop)
    try:
        run(lambda: receiver(args) if args.role == "recv" else sender(args), args.loop)
    except Exception as exc:
        print(f"bench worker {args.role} {args.kind} ({loop_name}): {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
