"""``avrs demo``: the whole system in one process on loopback (``node/demo_cluster.py``).

``avrs demo --transport`` is the lower-level walkthrough: two nodes on loopback complete the
dap_stream handshake, open several channels (control, file, media, a custom channel sealed with
its own key), every callback fires, a 4 MiB file crosses in fragments; then a single-server AVRS
exchange with signature checks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
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
    """Progress text: stdout, or stderr when stdout carries the JSON summary."""
    click.echo(text, err=as_json)


async def run_demo(*, as_json: bool, file_size: int, frames: int) -> dict[str, Any]:
    from .demo_avrs import run_avrs_demo

    report = await run_stream_demo(as_json=as_json, file_size=file_size)
    report["avrs"] = await run_avrs_demo(frames)
    return report


async def run_cluster_demo(
    *, http_port: int, duration: float | None, clients: int, as_json: bool
) -> dict[str, Any]:
    """The whole system (``node/demo_cluster.py``) until Ctrl-C or ``duration`` seconds."""
    from ..node.demo_cluster import DemoCluster
    from .signals import wait_for_stop_signal

    with tempfile.TemporaryDirectory(prefix="avrs-demo-") as tmp:
        demo = DemoCluster(Path(tmp), http_port=http_port, clients=clients)
        try:
            await demo.start()
            say(as_json, f"dashboard  {demo.http}/")
            for content in demo.contents:
                say(as_json, f"watch      {content['watch']}   ({content['type']})")
            say(as_json, f"metrics    {demo.http}/metrics   API {demo.http}/api/v1/contents")
            for node in demo.node_summaries():
                say(
                    as_json,
                    f"node       {node['name']:9} {','.join(node['roles']):9} {node['address']}",
                )
            say(as_json, "Ctrl-C stops the demo" if duration is None else f"running {duration:g} s")
            stop = asyncio.ensure_future(
                asyncio.sleep(duration) if duration is not None else wait_for_stop_signal()
            )
            while not stop.done():
                await asyncio.wait({stop}, timeout=2.0)
                if not stop.done():
                    say(as_json, _live_line(demo))
            return demo.report()
        finally:
            await demo.close()


def _live_line(demo: Any) -> str:
    nodes = demo.node_summaries()
    sessions = sum(n["sessions"] for n in nodes)
    parts = [f"{len(nodes)} nodes, {sessions} sessions"]
    for node in demo.nodes.values():
        gateway = node.gateway
        if gateway is None:
            continue
        for content in gateway.catalog.list():
            rates = "/".join(f"{r.hls.bandwidth / 1e3:.0f}" for r in content.renditions.values())
            parts.append(
                f"{content.id} {rates} kb/s {content.viewers + content.stream_viewers} viewers"
            )
    for client in demo.clients:
        s = client.summary()
        latency = "-" if s["latency_ms"] is None else f"{s['latency_ms']:.0f} ms"
        parts.append(f"{client.name} {s['frames_decoded']} frames {latency}")
    return " | ".join(parts)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object at the end.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--http-port", default=8080, show_default=True, help="Gateway port of server 1.")
@click.option("--clients", default=3, show_default=True, help="Viewer clients to connect.")
@click.option(
    "--transport",
    is_flag=True,
    help="Instead: the dap_stream and single-server AVRS walkthrough (prints stats, exits).",
)
@click.option("--file-size", default=4 * 1024 * 1024, show_default=True, help="(--transport)")
@click.option("--frames", default=60, show_default=True, help="(--transport)")
def demo(
    as_json: bool,
    duration: float | None,
    http_port: int,
    clients: int,
    transport: bool,
    file_size: int,
    frames: int,
) -> None:
    """The whole system in one process on loopback, on an embedded default (nothing to set up).

    A cluster (host, balancer, two servers with the HTTP gateway, an operator), a live testsrc
    broadcast in two renditions, a VoD item imported from a generated clip, an interactive
    broadcast, and viewer clients that join through the balancer, verify and decode what they
    receive and report their quality. Prints the dashboard and watch URLs and a live summary
    until Ctrl-C (or ``--duration``); then a summary per client (``--json``: one object)."""
    from ..node.demo_cluster import DemoError

    if transport:
        _transport_demo(as_json, file_size, frames)
        return
    if not 1 <= clients <= 50:
        raise click.BadParameter("--clients must be 1..50")
    try:
        report = run(
            run_cluster_demo(
                http_port=http_port, duration=duration, clients=clients, as_json=as_json
            )
        )
    except (OSError, DemoError) as exc:
        raise click.ClickException(f"cannot start the demo: {exc}") from None
    if as_json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
        return
    for client in report["clients"]:
        click.echo(
            f"{client['name']}: {client['content']} ({client['rendition']}) on {client['server']}"
            f"{' (sent there by the balancer)' if client['via_balancer'] else ' (its origin)'}: "
            f"{client['frames_received']} frames received, {client['frames_decoded']} decoded, "
            f"first frame {client['first_frame_ms']} ms, {client['rendition_switches']} switches"
            + (f", error {client['error']}" if client["error"] else "")
        )


def _transport_demo(as_json: bool, file_size: int, frames: int) -> None:
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
