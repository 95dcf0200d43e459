"""``avrs bench join``: how long a late joiner of a live stream waits for its first decodable
video frame over the stream protocol, with and without the node's GOP cache, against half the
GOP duration (what a joiner waits on average without a cache).

Set-up per phase: a host/server node in this process (sandbox cluster on loopback), a publisher
process (``avrs publish testsrc``: 640x360, 30 fps, one keyframe per second) and, once the stream
runs, ``joins`` viewers one after another at irregular moments of the GOP. A viewer's time runs
from its session OPEN to the first frame its H.264 decoder outputs. The same viewers also give the
ingest-to-play latency: from the publisher signing a packet to the viewer receiving it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av

from ..avrs.constants import AvrsChannel, ContentFlag
from ..node.sandbox import Sandbox
from ..services.auth import Role
from ..services.avrs_cluster import content_guuid
from ..services.media.hub import HubConfig
from ..services.media.model import MediaInfo
from ..services.media.player import PlayStats, Receiver, start_playback

GOP_SECONDS = 1.0
CONTENT = "bench-join"


async def _join_once(sandbox: Sandbox, url: str, index: int) -> tuple[float, list[float]]:
    node = await sandbox.start_client(f"viewer{index}", url)
    try:
        client = await node.connect_client()
        started = time.perf_counter()
        await client.open()
        await client.join(sandbox.cluster_id, token=sandbox.token(f"viewer-{index}"))
        content_id = content_guuid(CONTENT)
        await client.attach(sandbox.cluster_id, content_id, ContentFlag.STREAMING_OUT)
        await start_playback(client)
        receiver = Receiver(content_id, PlayStats())
        decoder: Any = None
        latencies: list[float] = []
        first_frame: float | None = None
        while first_frame is None or len(latencies) < 60:
            item = receiver.feed(await client.receive_content(10))
            if isinstance(item, MediaInfo):
                video = item.video_tracks[0]
                decoder = av.CodecContext.create(item.tracks[video].codec, "r")
                decoder.extradata = item.tracks[video].extradata or None
                continue
            if item is None or receiver.info is None:
                continue
            if receiver.stats.latency_ms is not None:
                latencies.append(receiver.stats.latency_ms)
            is_video = receiver.info.tracks[item.track].is_video
            if first_frame is None and is_video and decoder.decode(av.Packet(item.data)):
                first_frame = time.perf_counter()
        await client.close()
        return (first_frame - started) * 1000, latencies
    finally:
        await node.close()


async def _phase(root: Path, *, gop_cache: bool, joins: int) -> dict[str, Any]:
    sandbox = Sandbox(root)
    server = await sandbox.start_server()
    server.hub.config = HubConfig(max_bitrate=server.hub.config.max_bitrate, gop_cache=gop_cache)
    sandbox.identity("camera", Role.SERVER)
    publisher = subprocess.Popen(
        [sys.executable, "-m", "dapsdk.cli", "publish", "testsrc", "--content", CONTENT,
         "--node", server.urls[0], "--duration", "120", "--key", str(root / "camera.key"),
         "--cert", str(root / "camera.crt")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        assert publisher.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, publisher.stdout.readline)
        if not line.startswith("publishing"):
            raise RuntimeError("the publisher did not start")
        await asyncio.sleep(1.5)  # the stream runs (and the cache holds a GOP) before joining
        times: list[float] = []
        latencies: list[float] = []
        for index in range(joins):
            first, lat = await _join_once(sandbox, server.urls[0], index)
            times.append(first)
            latencies += lat
            await asyncio.sleep(0.37)  # joins land at different points of the GOP
        return {"first_frame_ms": times, "latency_ms": latencies}
    finally:
        publisher.terminate()
        publisher.wait(10)
        await server.close()


async def run_join_bench(joins: int = 8) -> dict[str, Any]:
    result: dict[str, Any] = {}
    phases: dict[str, dict[str, Any]] = {}
    for name, cache in (("gop_cache", True), ("no_cache", False)):
        with tempfile.TemporaryDirectory(prefix="avrs-bench-join-") as tmp:
            phases[name] = await _phase(Path(tmp), gop_cache=cache, joins=joins)
    result["first_frame_ms"] = {
        name: round(statistics.median(phase["first_frame_ms"]), 1) for name, phase in phases.items()
    }
    result["first_frame_ms_all"] = {
        name: [round(t, 1) for t in phase["first_frame_ms"]] for name, phase in phases.items()
    }
    result["half_gop_ms"] = GOP_SECONDS * 1000 / 2
    lat = sorted(phases["gop_cache"]["latency_ms"] + phases["no_cache"]["latency_ms"])
    result["ingest_to_play_ms"] = {
        "p50": round(lat[len(lat) // 2], 1) if lat else None,
        "p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
    }
    result["joins"] = joins
    result["transport"] = "tcp (stream protocol, loopback)"
    result["whep_ms"] = None
    result["llhls_ms"] = None
    result["channel"] = chr(AvrsChannel.CONTENT)
    return result
