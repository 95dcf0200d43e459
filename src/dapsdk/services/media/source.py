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
from collections.abc import Iterator, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from dapsdk.avrs.constants import NO_TIMESTAMP

from .model import (
    SOURCE_RENDITION,
    ContentKind,
    MediaInfo,
    MediaPacket,
    from_av_packet,
    media_info_from_streams,
)

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


#: (name, width, height, bit rate) of one generated video rendition.
Rendition = tuple[str, int, int, int]


class PatternSource:
    """The generated test picture and tone (see the module docstring). With several
    ``renditions`` the picture is encoded once per rendition (tracks 0..n-1, largest first; the
    tone is the last track), which is how a broadcaster offers adaptive streaming itself."""

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 360,
        fps: int = 30,
        duration: float | None = None,
        audio: bool = True,
        bit_rate: int = 1_000_000,
        renditions: Sequence[Rendition] | None = None,
    ) -> None:
        self.fps = fps
        self.duration = duration
        ladder = list(renditions) if renditions else [(SOURCE_RENDITION, width, height, bit_rate)]
        top_w, top_h = ladder[0][1], ladder[0][2]
        self._video = av.open(f"testsrc=size={top_w}x{top_h}:rate={fps}", "r", format="lavfi")
        self._audio = (
            av.open("sine=frequency=440:sample_rate=48000", "r", format="lavfi") if audio else None
        )
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, "w", format="nut")
        self._sizes = [(w, h) for _name, w, h, _rate in ladder]
        self._vs: list[Any] = [
            self._out.add_stream(
                "libx264",
                rate=fps,
                width=w,
                height=h,
                pix_fmt="yuv420p",
                options={
                    "preset": "ultrafast",
                    "tune": "zerolatency",
                    "g": str(fps),
                    "bf": "0",
                    "b": str(rate),
                },
            )
            for _name, w, h, rate in ladder
        ]
        streams: list[Any] = list(self._vs)
        self._as: Any = None
        if audio:
            self._as = self._out.add_stream("aac", rate=48000, layout="mono")
            streams.append(self._as)
        self._out.start_encoding()
        names = [name for name, *_rest in ladder] + ([SOURCE_RENDITION] if audio else [])
        self.info = media_info_from_streams(streams, title="testsrc", renditions=names)

    def packets(self) -> Iterator[MediaPacket]:
        video = self._video.decode(video=0)
        audio = self._audio.decode(audio=0) if self._audio is not None else None
        audio_track = len(self._vs)
        limit = None if self.duration is None else round(self.duration * self.fps)
        audio_time = Fraction(0)
        for frames, frame in enumerate(video):
            if limit is not None and frames >= limit:
                break
            now = Fraction(frames, self.fps)
            for track, (stream, (w, h)) in enumerate(zip(self._vs, self._sizes, strict=True)):
                picture = frame.reformat(width=w, height=h, format="yuv420p")
                picture.pts = frames
                picture.time_base = Fraction(1, self.fps)
                picture.pict_type = PictureType.NONE  # lavfi marks every frame I: let x264 pick
                for packet in stream.encode(picture):
                    yield from_av_packet(packet, track)
            while audio is not None and audio_time <= now:
                chunk = next(audio)
                audio_time += Fraction(chunk.samples, chunk.sample_rate)
                chunk.pts = None
                for packet in self._as.encode(chunk):
                    yield from_av_packet(packet, audio_track)
        for track, stream in enumerate(self._vs):
            for packet in stream.encode(None):
                yield from_av_packet(packet, track)
        if self._as is not None:
            for packet in self._as.encode(None):
                yield from_av_packet(packet, audio_track)

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
