"""``avrs bench ingest``: RTMP ingest-to-play latency through a node.

One process runs a node (sandboxed cluster, RTMP on a free loopback port), a viewer (a dap_stream
client with a token, verifying every packet, as ``avrs play`` does) and a publisher thread that
pushes a synthetic H.264 + AAC stream in real time over RTMP with FFmpeg's RTMP client (through
PyAV). The publisher stamps each packet with the clock just before handing it to the RTMP muxer;
the viewer stamps it when it is verified. Latency = receive - send for every video packet
(matched by its decode timestamp), so it covers RTMP, FLV demuxing, the hub, signing and the
dap_stream hop to the viewer (one machine, loopback). Reported: median, p95 and max, and the
viewer's startup time.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dapsdk.avrs import AvrsError
from dapsdk.node.config import load_node_config
from dapsdk.node.sandbox import Sandbox
from dapsdk.node.wiring import build_node
from dapsdk.services.avrs_cluster import content_guuid
from dapsdk.services.media.model import MediaPacket
from dapsdk.services.media.player import PlayStats, play

from .transcode import synthetic_source

#: The publisher, run as its own process (PyAV keeps the GIL while FFmpeg connects, so it cannot
#: share a process with the node it connects to). Prints "dts_ms monotonic" per video packet;
#: CLOCK_MONOTONIC is the same clock in every process of the machine.
PUSHER = """
import sys, time, av
source, url = sys.argv[1], sys.argv[2]
sent = []
with av.open(source) as inp, av.open(url, "w", format="flv") as out:
    streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
    started = time.monotonic()
    for packet in inp.demux(list(inp.streams)):
        if not packet.size or packet.dts is None or packet.time_base is None:
            continue
        at = float(packet.dts * packet.time_base)
        time.sleep(max(0.0, started + at - time.monotonic()))
        video = packet.stream.type == "video"
        packet.stream = streams[packet.stream.index]
        if video:
            sent.append((round(at * 1000), time.monotonic()))
        out.mux(packet)
for key, at in sent:
    print(key, repr(at))
"""


async def _push(path: Path, url: str) -> dict[int, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUSHER, str(path), url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"publisher failed: {err.decode(errors='replace').strip()}")
    sent: dict[int, float] = {}
    for line in out.decode().splitlines():
        key, at = line.split()
        sent[int(key)] = float(at)
    return sent


async def run_ingest_bench(*, seconds: float = 6.0, height: int = 360) -> dict[str, Any]:
    data = synthetic_source(seconds, height)
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Sandbox(Path(tmp))
        config = sandbox.server_config("rtmp_listen = 127.0.0.1:0\nadaptive_streaming = false\n")
        node = build_node(load_node_config(config))
        await node.start()
        viewer_node = None
        try:
            rtmp = dict(node.announcements)["rtmp"].removesuffix("/NAME")
            viewer_node = await sandbox.start_client("viewer", node.urls[0])
            client = await viewer_node.connect_client()
            await client.open()
            reply = await client.join(
                sandbox.cluster_id, token=sandbox.token(str(viewer_node.address))
            )
            if reply.code != AvrsError.SUCCESS:
                raise RuntimeError(f"viewer join refused: {reply.token}")
            received: dict[int, float] = {}

            def on_packet(packet: MediaPacket, stats: PlayStats) -> None:
                if packet.track == 0:  # the video track (video comes first)
                    received.setdefault(round(packet.time / 1000), time.monotonic())

            playing = asyncio.ensure_future(
                play(
                    client,
                    sandbox.cluster_id,
                    content_guuid("bench"),
                    None,
                    wait=30,
                    on_packet=on_packet,
                )
            )
            source = Path(tmp) / "source.mp4"
            source.write_bytes(data)
            sent = await asyncio.wait_for(_push(source, f"{rtmp}/bench"), seconds + 60)
            stats = await asyncio.wait_for(playing, 60)
            await client.close()
        finally:
            if viewer_node is not None:
                await viewer_node.close()
            await node.close()
    # Both sides see the source's decode timestamps (ms in FLV, µs at the viewer), but the FLV
    # muxer may shift the whole timeline (by the audio priming delay, for example): use the shift
    # under which the most timestamps match.
    shift = max(range(-500, 501), key=lambda d: sum(1 for key in received if key - d in sent))
    latencies = [
        (at - sent[key - shift]) * 1000 for key, at in received.items() if key - shift in sent
    ]
    if not latencies:
        raise RuntimeError("no video packet could be matched between publisher and viewer")
    latencies.sort()
    return {
        "source": {"height": height, "seconds": seconds},
        "video_packets_matched": len(latencies),
        "video_packets_sent": len(sent),
        "timeline_shift_ms": shift,
        "latency_ms": {
            "median": round(statistics.median(latencies), 1),
            "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
            "max": round(latencies[-1], 1),
            "min": round(latencies[0], 1),
        },
        "viewer_startup_ms": round(stats.startup_ms or 0.0, 1),
        "forged": stats.forged,
    }
