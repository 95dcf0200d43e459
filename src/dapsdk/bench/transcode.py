"""``avrs bench transcode``: how fast the node's rendition ladder encodes, per rendition.

A synthetic source (FFmpeg's ``testsrc2`` picture plus a tone, H.264 + AAC, encoded beforehand and
not timed) goes through :class:`~dapsdk.services.media.transcode.MediaPipeline` exactly as live
ingest (``ultrafast``) or VoD import (``veryfast``) runs it. Reported per rendition: frames and the
speed in × real time (media seconds encoded per second of encoder time); plus the decode time and
the wall-clock speed of the whole ladder (all renditions, one source decode), which is what
decides whether a live stream keeps up on this machine.
"""

from __future__ import annotations

import io
import time
from fractions import Fraction
from typing import Any

import av
import av.filter

from dapsdk.services.media.model import from_av_packet
from dapsdk.services.media.transcode import (
    DEFAULT_LADDER,
    FORMATS,
    MediaPipeline,
    Rendition,
    open_source,
)


def synthetic_source(seconds: float, height: int, fps: int = 30) -> bytes:
    """An MP4 (H.264 ultrafast, GOP 1 s + AAC) of ``testsrc2``, ``seconds`` long."""
    width = round(height * 16 / 9 / 2) * 2
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        video: Any = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "x264-params": f"keyint={fps}:scenecut=0"}
        video.bit_rate = 8_000_000
        audio: Any = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        graph = av.filter.Graph()
        source = graph.add("testsrc2", f"size={width}x{height}:rate={fps}:duration={seconds}")
        pixels = graph.add("format", "pix_fmts=yuv420p")
        sink = graph.add("buffersink")
        source.link_to(pixels)
        pixels.link_to(sink)
        graph.configure()
        while True:
            try:
                frame = sink.pull()
            except (av.error.EOFError, av.error.BlockingIOError):
                break
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        tone = av.filter.Graph()
        sine = tone.add("sine", f"frequency=440:sample_rate=48000:duration={seconds}")
        stereo = tone.add("aformat", "sample_fmts=fltp:channel_layouts=stereo")
        asink = tone.add("abuffersink")
        sine.link_to(stereo)
        stereo.link_to(asink)
        tone.configure()
        while True:
            try:
                aframe = asink.pull()
            except (av.error.EOFError, av.error.BlockingIOError):
                break
            aframe.time_base = Fraction(1, 48000)
            out.mux(audio.encode(aframe))
        out.mux(audio.encode(None))
    return buffer.getvalue()


def _run(
    data: bytes, ladder: tuple[Rendition, ...], preset: str, target: str
) -> tuple[MediaPipeline, float, float]:
    """One pass of the source through a pipeline: (pipeline, wall seconds, CPU seconds)."""
    container, info, streams = open_source(io.BytesIO(data))
    try:
        pipeline = MediaPipeline(
            info, streams, ladder=ladder, target=FORMATS[target], preset=preset
        )
        index = {stream.index: n for n, stream in enumerate(streams)}
        packets = [
            from_av_packet(p, index[p.stream.index]) for p in container.demux(streams) if p.size
        ]
    finally:
        container.close()
    started = time.perf_counter()
    cpu_started = time.process_time()
    for packet in packets:
        pipeline.process(packet)
    pipeline.flush()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    pipeline.close()
    return pipeline, wall, cpu


def run_transcode_bench(
    *,
    seconds: float = 4.0,
    height: int = 1080,
    preset: str = "ultrafast",
    ladder: tuple[Rendition, ...] = DEFAULT_LADDER,
    target: str = "mp4",
) -> dict[str, Any]:
    """Transcode a synthetic ``height``p source: each rendition alone (decode + scale + encode,
    so its speed is what one rendition costs), then the whole ladder at once."""
    data = synthetic_source(seconds, height)
    rungs = tuple(r for r in ladder if r.height < height)
    renditions: dict[str, Any] = {}
    for rung in rungs:
        pipeline, wall, cpu = _run(data, (rung,), preset, target)
        (stats,) = pipeline.stats.encoders.values()
        renditions[rung.name] = {
            "size": next(line for line in pipeline.describe() if line.startswith(rung.name))
            .split(": ")[0]
            .split(" ")[-1],
            "frames": stats.frames,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "speed_x_realtime": round(seconds / wall, 2) if wall else 0.0,
        }
    pipeline, wall, cpu = _run(data, rungs, preset, target)
    return {
        "source": {"height": height, "seconds": seconds, "codec": "h264"},
        "preset": preset,
        "target": target,
        "outputs": pipeline.describe(),
        "renditions": renditions,
        "ladder": {
            "decode_seconds": round(pipeline.stats.decode_seconds, 3),
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "speed_x_realtime": round(seconds / wall, 2) if wall else 0.0,
        },
    }
