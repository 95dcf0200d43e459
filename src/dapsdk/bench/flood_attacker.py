"""A flood attacker process for ``avrs bench flood`` and the admission tests.

``python -m dapsdk.bench.flood_attacker --kind KIND --host H --port P --sockets N`` keeps N
connections to a node open, re-opening each one the node closes, until its stdin closes; then it
prints one JSON line with its counters. Kinds (issue 9's findings):

* ``idle``: connect and send nothing;
* ``partial``: send the header and the first 100 bytes of a HELLO, then nothing;
* ``slowloris``: send a HELLO one byte every ``--drip`` seconds;
* ``hello``: send a whole (pre-computed, replayed) HELLO and never FINISH;
* ``quic``: send N QUIC Initials (real ClientHellos, one connection id each) and never answer.

It prints ``{"event": "ready", ...}`` once every socket was opened (or every Initial sent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

from aioquic.buffer import Buffer  # type: ignore[attr-defined]

from ..stream.config import StreamConfig
from ..stream.connection import StreamConnection
from ..stream.identity import NodeIdentity

KINDS = ("idle", "partial", "slowloris", "hello", "quic")


@dataclass(slots=True)
class Counters:
    connects: int = 0
    connect_errors: int = 0
    closed_by_server: int = 0
    bytes_received: int = 0
    initials_sent: int = 0


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def hello_bytes() -> bytes:
    """One client's first flight (a whole HELLO packet)."""
    core = StreamConnection(StreamConfig(), NodeIdentity.generate(), is_client=True, now=0.0)
    return b"".join(core.data_to_send())


async def _one_tcp(
    kind: str,
    host: str,
    port: int,
    payload: bytes,
    drip: float,
    counters: Counters,
    opened: asyncio.Event,
    stop: asyncio.Event,
    reconnect_delay: float,
) -> None:
    first = True
    while not stop.is_set():
        if not first and reconnect_delay:
            await asyncio.sleep(reconnect_delay)  # attacker pacing between re-opens
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counters.connect_errors += 1
            if first:
                first = False
                opened.set()
            await asyncio.sleep(0.05)  # attacker pacing after a refused connect
            continue
        counters.connects += 1
        if first:
            first = False
            opened.set()
        try:
            if kind == "partial":
                writer.write(payload[:112])
            elif kind == "hello":
                writer.write(payload)
            drip_at = 0
            while not stop.is_set():
                if kind == "slowloris" and drip_at < len(payload):
                    writer.write(payload[drip_at : drip_at + 1])
                    drip_at += 1
                    try:
                        data = await asyncio.wait_for(reader.read(65536), drip)
                    except TimeoutError:
                        continue
                else:
                    data = await reader.read(65536)
                if not data:
                    break
                counters.bytes_received += len(data)
            if not stop.is_set():
                counters.closed_by_server += 1
        except (ConnectionError, OSError):
            counters.closed_by_server += 1
        finally:
            writer.close()


async def tcp_flood(
    kind: str,
    host: str,
    port: int,
    sockets: int,
    drip: float,
    stop: asyncio.Event,
    reconnect_delay: float = 0.0,
) -> Counters:
    counters = Counters()
    payload = hello_bytes()
    events = [asyncio.Event() for _ in range(sockets)]
    tasks = []
    for i in range(sockets):
        tasks.append(
            asyncio.create_task(
                _one_tcp(
                    kind, host, port, payload, drip, counters, events[i], stop, reconnect_delay
                )
            )
        )
        if i % 100 == 99:
            await asyncio.sleep(0)  # let the first connects start
    await asyncio.gather(*(e.wait() for e in events))
    _emit({"event": "ready", "kind": kind, **asdict(counters)})
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counters


def initial_factory(host: str, port: int) -> Callable[[], bytes]:
    """Datagrams carrying one real client Initial (a TLS ClientHello), each re-protected for a
    fresh destination connection id, so every one looks like a new connection to the server
    (building a ClientHello per Initial costs 5 ms; re-protecting one costs microseconds)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.crypto import CryptoPair
    from aioquic.quic.packet import pull_quic_header

    config = QuicConfiguration(is_client=True, alpn_protocols=["dapstream/1"])
    conn = QuicConnection(configuration=config)
    conn.connect((host, port), now=0.0)
    [(datagram, _)] = conn.datagrams_to_send(now=0.0)
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=8)
    assert header.version is not None
    version = header.version
    offset = buf.tell()
    end = header.packet_length
    opener = CryptoPair()
    opener.setup_initial(cid=header.destination_cid, is_client=False, version=version)
    plain_header, payload, number = opener.decrypt_packet(datagram[:end], offset, 0)
    cid_at = 6  # first byte, version (4), DCID length (1)
    padding = datagram[end:]

    def make() -> bytes:
        cid = os.urandom(len(header.destination_cid))
        sealer = CryptoPair()
        sealer.setup_initial(cid=cid, is_client=True, version=version)
        new_header = plain_header[:cid_at] + cid + plain_header[cid_at + len(cid) :]
        return sealer.encrypt_packet(new_header, payload, number) + padding

    return make


async def quic_flood(
    host: str, port: int, initials: int, stop: asyncio.Event, rate: float = 1000.0
) -> Counters:
    counters = Counters()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    for sock in socks:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
    addr = (host, port)
    make = initial_factory(host, port)
    for i in range(initials):
        data = make()
        while True:
            try:
                socks[i % len(socks)].sendto(data, addr)
                break
            except BlockingIOError:
                await asyncio.sleep(0.001)  # attacker pacing: the socket buffer is full
        counters.initials_sent += 1
        if i % 10 == 9:
            # Paced so the node's UDP receive buffer does not simply drop most of them.
            await asyncio.sleep(10.0 / rate)
            _drain(socks, counters)
    _emit({"event": "ready", "kind": "quic", **asdict(counters)})
    while not stop.is_set():
        _drain(socks, counters)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass
    for sock in socks:
        sock.close()
    return counters


def _drain(socks: list[socket.socket], counters: Counters) -> None:
    for sock in socks:
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, OSError):
                break
            counters.bytes_received += len(data)


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    if args.kind == "quic":
        counters = await quic_flood(args.host, args.port, args.sockets, stop, args.rate)
    else:
        counters = await tcp_flood(
            args.kind, args.host, args.port, args.sockets, args.drip, stop, args.reconnect_delay
        )
    _emit({"event": "done", "kind": args.kind, **asdict(counters)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sockets", type=int, default=1000, help="sockets (or QUIC Initials)")
    parser.add_argument("--drip", type=float, default=0.5, help="slowloris: seconds per byte")
    parser.add_argument("--rate", type=float, default=1000.0, help="quic: Initials per second")
    parser.add_argument(
        "--reconnect-delay", type=float, default=0.0, help="seconds before re-opening a socket"
    )
    args = parser.parse_args(argv)
    raise_nofile(args.sockets + 256)
    try:
        import uvloop

        uvloop.run(_main(args))
    except ImportError:
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
