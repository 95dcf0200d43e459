"""Media sources for publishing (blocking PyAV code: run it in a worker thread).

- :class:`FileSource`: any file or URL FFmpeg opens, remuxed (never re-encoded): its audio and
  video streams become the tracks, its packets are sent as they are (pts, dts, duration,
  keyframe). ``loop`` repeats it with timestamps continuing after the previous pass.
- :class:`PatternSource`: ``testsrc`` -- FFmpeg's lavfi ``testsrc`` pattern (which burns in a frame
  counter with its built-in digits, no font needed) and a 440 Hz ``sine`` tone, encoded live to
  H.264 (libx264 ultrafast, zero latency, one keyframe per second) and AAC.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from typing import Any

import av

from dapsdk.avrs.constants import NO_TIMESTAMP

from .model import ContentKind, MediaInfo, MediaPacket, from_av_packet, media_info_from_streams

TESTSRC = "testsrc"


class SourceError(Exception):
    """The source cannot be opened or has nothing to publish."""


class FileSource:
    def __init__(self, url: str, *, loop: bool = False, kind: ContentKind = ContentKind.LIVE):
        self.url = url
        self.loop = loop
        try:
            self._container = av.open(url, "r")
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {url}: {exc}") from None
        self._streams = [s for s in self._container.streams if s.type in ("video", "audio")]
        if not self._streams:
            self._container.close()
            raise SourceError(f"{url} has no audio or video stream")
        duration = self._container.duration
        self.info: MediaInfo = media_info_from_streams(
            self._streams,
            kind=kind,
            duration_us=int(duration) if duration and kind == ContentKind.VOD else 0,
            title=url.rsplit("/", 1)[-1][:255],
        )

    def packets(self) -> Iterator[MediaPacket]:
        offset = 0
        container = self._container
        while True:
            tracks = {s.index: n for n, s in enumerate(self._streams)}
            streams = [s for s in container.streams if s.index in tracks]
            end = 0
            for packet in container.demux(streams):
                if packet.size == 0 or (packet.dts is None and packet.pts is None):
                    continue
                item = from_av_packet(packet, tracks[packet.stream.index])
                if offset:
                    item = replace(item, pts=_shift(item.pts, offset), dts=_shift(item.dts, offset))
                end = max(end, item.time + item.duration)
                yield item
            container.close()
            if not self.loop or end <= offset:
                return
            offset = end
            container = av.open(self.url, "r")

    def close(self) -> None:
        self._container.close()


def _shift(value: int, offset: int) -> int:
    return value if value == NO_TIMESTAMP else value + offset


class PatternSource:
    """The generated test picture and tone (see the module docstring)."""

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 360,
        fps: int = 30,
        duration: float | None = None,
        audio: bool = True,
        bit_rate: int = 1_000_000,
    ) -> None:
        self.fps = fps
        self.duration = duration
        self._video = av.open(f"testsrc=size={width}x{height}:rate={fps}", "r", format="lavfi")
        self._audio = (
            av.open("sine=frequency=440:sample_rate=48000", "r", format="lavfi") if audio else None
        )
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, "w", format="nut")
        self._vs: Any = self._out.add_stream(
            "libx264", rate=fps, width=width, height=height, pix_fmt="yuv420p",
            options={"preset": "ultrafast", "tune": "zerolatency", "g": str(fps),
                     "bf": "0", "b": str(bit_rate)},
        )  # fmt: skip
        streams: list[Any] = [self._vs]
        self._as: Any = None
        if audio:
            self._as = self._out.add_stream("aac", rate=48000, layout="mono")
            streams.append(self._as)
        self._out.start_encoding()
        self.info = media_info_from_streams(streams, title="testsrc")

    def packets(self) -> Iterator[MediaPacket]:
        video = self._video.decode(video=0)
        audio = self._audio.decode(audio=0) if self._audio is not None else None
        limit = None if self.duration is None else round(self.duration * self.fps)
        audio_time = Fraction(0)
        for frames, frame in enumerate(video):
            if limit is not None and frames >= limit:
                break
            now = Fraction(frames, self.fps)
            frame.pts = frames
            frame.time_base = Fraction(1, self.fps)
            for packet in self._vs.encode(frame.reformat(format="yuv420p")):
                yield from_av_packet(packet, 0)
            while audio is not None and audio_time <= now:
                chunk = next(audio)
                audio_time += Fraction(chunk.samples, chunk.sample_rate)
                chunk.pts = None
                for packet in self._as.encode(chunk):
                    yield from_av_packet(packet, 1)
        for packet in self._vs.encode(None):
            yield from_av_packet(packet, 0)
        if self._as is not None:
            for packet in self._as.encode(None):
                yield from_av_packet(packet, 1)

    def close(self) -> None:
        for container in (self._video, self._audio):
            if container is not None:
                container.close()


def open_source(
    url: str, *, loop: bool = False, duration: float | None = None
) -> FileSource | PatternSource:
    if url == TESTSRC:
        return PatternSource(duration=duration)
    return FileSource(url, loop=loop)
