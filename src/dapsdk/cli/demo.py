"""``avrs demo``: a whole dap_stream exchange in one process, with printed statistics.

Two nodes on loopback complete the handshake; the client opens several channels (control, file,
media, a custom channel sealed with its own key), every callback fires, a 4 MiB file crosses in
fragments, and both sides print their stats.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from typing import Any

import click

from ..runtime.channel import Channel
from ..runtime.loop import run
from ..runtime.node import ChannelProc, StreamNode
from ..runtime.stream import StreamStats
from ..stream.channel_key import ChannelKey
from ..stream.constants import ChannelId, PacketType


async def run_stream_demo(
    *, as_json: bool = False, file_size: int = 4 * 1024 * 1024
) -> dict[str, Any]:
    fired: dict[str, int] = {
        "packet_in": 0,
        "packet_out": 0,
        "ready_to_read": 0,
        "ready_to_write": 0,
    }
    shared_key = ChannelKey.generate()
    custom_id = 0x20

    def echo_new(channel: Channel) -> None:
        if channel.id == custom_id:
            channel.set_encryption(ChannelKey(shared_key.key_bytes))

        def echo(ch: Channel, ptype: int, data: bytes, _arg: object) -> int:
            ch.write_nowait(
                ptype, data if ch.id != ChannelId.FILE else hashlib.sha256(data).digest()
            )
            return len(data)

        channel.packet_in = echo

    async with StreamNode() as server, StreamNode() as client:
        for ch_id in (ChannelId.CONTROL, ChannelId.FILE, ChannelId.MEDIA, custom_id):
            server.register_channel_proc(ch_id, ChannelProc(new=echo_new))
        listener = await server.listen("tcp://127.0.0.1:0")
        session = client.session_create(listener.url)
        stream = await client.stream_create(session)
        say(as_json, f"client {client.address} -> server {stream.peer.address} over {listener.url}")

        replies: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()

        def packet_in(ch: Channel, ptype: int, data: bytes, _arg: object) -> int:
            fired["packet_in"] += 1
            replies.put_nowait((ch.id, ptype, data))
            return len(data)

        def packet_out(_ch: Channel, _t: int, _d: bytes, _arg: object) -> None:
            fired["packet_out"] += 1

        def ready_to_write(_ch: Channel, _arg: object) -> None:
            fired["ready_to_write"] += 1

        channels = {}
        for ch_id in (ChannelId.CONTROL, ChannelId.FILE, ChannelId.MEDIA, custom_id):
            ch = stream.channel_new(ch_id)
            ch.packet_in = packet_in
            ch.packet_out = packet_out
            ch.ready_to_write = ready_to_write
            channels[int(ch_id)] = ch
        channels[custom_id].set_encryption(shared_key)

        await channels[ChannelId.CONTROL].write(PacketType.CONTROL, b"hello over CONTROL")
        await channels[ChannelId.MEDIA].write(PacketType.DATA, b"\x00" * 1200)
        await channels[custom_id].write(PacketType.DATA, b"secret payload, sealed end to end")
        blob = os.urandom(file_size)
        await channels[ChannelId.FILE].write(PacketType.DATA, blob)
        results = {}
        for _ in range(4):
            ch_id, ptype, data = await asyncio.wait_for(replies.get(), 10)
            results[ch_id] = (ptype, data)
        assert results[ChannelId.FILE][1] == hashlib.sha256(blob).digest(), "file digest mismatch"
        assert results[custom_id][1] == b"secret payload, sealed end to end"

        # ready_to_read: a channel without packet_in queues messages for read().
        control = channels[ChannelId.CONTROL]
        control.packet_in = None
        readable = asyncio.Event()

        def ready_to_read(_ch: Channel, _arg: object) -> None:
            fired["ready_to_read"] += 1
            readable.set()

        control.ready_to_read = ready_to_read
        await control.write(PacketType.DATA, b"read me")
        await asyncio.wait_for(readable.wait(), 10)
        item = control.read()
        assert item == (PacketType.DATA, b"read me"), item

        stream.send_keepalive()  # one more RTT sample on top of the handshake's
        client_stats = stream.get_stats()
        server_stream = next(iter(server.streams.values()))
        server_stats = server_stream.get_stats()
        report = {
            "client": str(client.address),
            "server": str(server.address),
            "file_bytes": file_size,
            "callbacks": fired,
            "client_stats": client_stats.__dict__
            if hasattr(client_stats, "__dict__")
            else _stats(client_stats),
            "server_stats": _stats(server_stats),
        }
        report["client_stats"] = _stats(client_stats)
        await stream.close()
    return report


def _stats(stats: StreamStats) -> dict[str, Any]:
    return {
        "packets_sent": stats.packets_sent,
        "packets_received": stats.packets_received,
        "bytes_sent": stats.bytes_sent,
        "bytes_received": stats.bytes_received,
        "active_channels": stats.active_channels,
        "avg_latency_ms": round(stats.avg_latency, 3),
    }


def say(as_json: bool, text: str) -> None:
    if not as_json:
        click.echo(text)


async def run_demo(*, as_json: bool, file_size: int, frames: int) -> dict[str, Any]:
    from .demo_avrs import run_avrs_demo

    report = await run_stream_demo(as_json=as_json, file_size=file_size)
    report["avrs"] = await run_avrs_demo(frames)
    return report


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option(
    "--file-size",
    default=4 * 1024 * 1024,
    show_default=True,
    help="Bytes sent on the FILE channel.",
)
@click.option("--frames", default=60, show_default=True, help="Generated H.264 frames to stream.")
def demo(as_json: bool, file_size: int, frames: int) -> None:
    """Run the demo on an embedded default, in one process, with nothing to download.

    Part 1, dap_stream: two nodes on loopback exchange traffic on several channels (every
    callback fires, a file crosses in fragments, a channel is sealed end to end).
    Part 2, AVReStream: a cluster (CA, host/server, camera, viewers) generated in a temporary
    directory; the camera streams generated H.264, the viewer joins with a token, verifies every
    frame's signature and decodes the video; an expired token is refused."""
    report = run(run_demo(as_json=as_json, file_size=file_size, frames=frames))
    if as_json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
        return
    click.echo(f"callbacks fired: {report['callbacks']}")
    click.echo(
        f"{report['file_bytes']} bytes crossed the FILE channel in fragments; digest verified"
    )
    for side in ("client", "server"):
        s = report[f"{side}_stats"]
        click.echo(
            f"{side:6} sent {s['packets_sent']} packets / {s['bytes_sent']} B, "
            f"received {s['packets_received']} packets / {s['bytes_received']} B, "
            f"active channels {s['active_channels']}, avg latency {s['avg_latency_ms']} ms"
        )
    a = report["avrs"]
    click.echo(
        f"\nAVReStream cluster {a['cluster']!r}: server {a['server']}, camera {a['camera']}, "
        f"viewer {a['viewer']}"
    )
    click.echo(
        f"{a['frames_published']} H.264 frames published on {a['content']!r}, "
        f"{a['frames_received']} received, {a['signatures_verified']} signatures verified, "
        f"{a['pictures_decoded']} pictures decoded ({a['picture_size'][0]}x{a['picture_size'][1]}), "
        f"{a['keyframes']} keyframes, {a['video_bytes']} bytes in {a['seconds']} s"
    )
    click.echo(f"a viewer with an expired token was refused: {a['expired_token']}")
