"""Bulk throughput of dap_stream over each transport (tcp, ws, quic), one process, loopback.

Usage: python scripts/bench_transports.py [--mb 64] [--uvloop] [tcp ws quic]
Prints MB/s of application payload delivered through one channel (64 KiB writes).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from dapsdk.runtime.node import ChannelProc, StreamNode


async def bulk(scheme: str, total: int, chunk: int = 65536) -> float:
    async with StreamNode() as server, StreamNode() as client:
        done = asyncio.get_running_loop().create_future()
        received = [0]

        def packet_in(ch: object, ptype: int, data: bytes, arg: object) -> int:
            received[0] += len(data)
            if received[0] >= total and not done.done():
                done.set_result(None)
            return len(data)

        server.register_channel_proc(0x10, ChannelProc(packet_in=packet_in))
        path = "/dapstream" if scheme in ("ws", "wss") else ""
        listener = await server.listen(f"{scheme}://127.0.0.1:0{path}")
        stream = await client.connect(listener.url)
        channel = stream.channel_new(0x10)
        blob = b"\xa5" * chunk
        start = time.perf_counter()
        for _ in range(total // chunk):
            await channel.write(1, blob)
        await asyncio.wait_for(done, 120)
        elapsed = time.perf_counter() - start
        await stream.close()
        return total / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("schemes", nargs="*", default=["tcp", "ws", "quic"])
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    for scheme in args.schemes:
        total = args.mb * 1024 * 1024
        if args.uvloop:
            import uvloop

            rate = uvloop.run(bulk(scheme, total))
        else:
            rate = asyncio.run(bulk(scheme, total))
        loop = "uvloop" if args.uvloop else "asyncio"
        print(f"{scheme:5s} {loop:8s} {args.mb} MiB: {rate:8.1f} MB/s")


if __name__ == "__main__":
    main()
