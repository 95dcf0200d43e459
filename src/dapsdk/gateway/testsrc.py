"""Generated media for demos and tests: FFmpeg's ``testsrc`` (lavfi, through PyAV) encoded live
with libx264 into one or more renditions, and short clips written to MP4 files for VoD import."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .packager import MediaSample


@dataclass(frozen=True, slots=True)
class RenditionSpec:
    name: str
    width: int
    height: int
    bitrate: int = 0
    """Target bits per second (0: the encoder's default CRF)."""


DEFAULT_LADDER = (
    RenditionSpec("360p", 640, 360, 800_000),
    RenditionSpec("180p", 320, 180, 250_000),
)

SampleSink = Callable[[str, MediaSample], None]


def _encoder(spec: RenditionSpec, fps: int) -> av.VideoCodecContext:
    codec = av.CodecContext.create("libx264", "w")
    codec.width = spec.width
    codec.height = spec.height
    codec.pix_fmt = "yuv420p"
    codec.framerate = Fraction(fps)
    codec.time_base = Fraction(1, fps)
    codec.gop_size = fps
    options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}
    if spec.bitrate:
        codec.bit_rate = spec.bitrate
    codec.options = options
    return codec


class TestPatternSource:
    """A live ``testsrc`` broadcast: every frame encoded into each rendition of ``ladder`` and
    handed to ``sink(rendition, sample)`` in real time (``fps`` frames per second)."""

    def __init__(
        self,
        sink: SampleSink,
        *,
        ladder: Sequence[RenditionSpec] = DEFAULT_LADDER,
        fps: int = 30,
        pattern: str = "testsrc",
    ) -> None:
        if not ladder or fps < 1 or fps > 60:
            raise ValueError("need at least one rendition and 1 <= fps <= 60")
        self.sink = sink
        self.ladder = tuple(ladder)
        self.fps = fps
        self.pattern = pattern
        self.frames = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        big = max(self.ladder, key=lambda s: s.width * s.height)
        source = av.open(
            f"{self.pattern}=size={big.width}x{big.height}:rate={self.fps}", format="lavfi"
        )
        encoders = {spec.name: _encoder(spec, self.fps) for spec in self.ladder}
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for frame in source.decode(video=0):
                due = started + self.frames / self.fps
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing to real time, not synchronisation
                captured = time.time()
                for spec in self.ladder:
                    scaled = frame.reformat(spec.width, spec.height, "yuv420p")
                    scaled.pict_type = av.video.frame.PictureType.NONE
                    scaled.pts = self.frames
                    scaled.time_base = Fraction(1, self.fps)
                    for packet in encoders[spec.name].encode(scaled):
                        self.sink(spec.name, _sample(packet, self.fps, captured))
                self.frames += 1
        finally:
            source.close()


def _sample(
    packet: av.Packet,  # type: ignore[type-arg]
    fps: int,
    captured: float,
) -> MediaSample:
    pts = float((packet.pts or 0) / fps)
    dts = float((packet.dts if packet.dts is not None else packet.pts or 0) / fps)
    return MediaSample(bytes(packet), pts, dts, bool(packet.is_keyframe), captured)


def write_test_clip(
    path: Path, *, seconds: float = 6.0, width: int = 480, height: int = 270, fps: int = 30
) -> Path:
    """Encode ``seconds`` of ``testsrc2`` to an H.264 MP4 at ``path`` (1 s GOP)."""
    frames = max(1, round(seconds * fps))
    source = av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi")
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = fps
        stream.codec_context.options = {"preset": "ultrafast", "profile": "baseline"}
        for index, frame in enumerate(source.decode(video=0)):
            if index >= frames:
                break
            frame = frame.reformat(width, height, "yuv420p")
            frame.pict_type = av.video.frame.PictureType.NONE
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    source.close()
    return path
