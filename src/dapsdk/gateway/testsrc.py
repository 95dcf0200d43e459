"""Generated media for demos and tests: FFmpeg's ``testsrc`` (lavfi, through PyAV) encoded live
with libx264 into one or more renditions, and short clips written to MP4 files for VoD import."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..services.media.model import MediaPacket, from_av_packet, media_info_from_streams


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


class LadderSource:
    """A live ``testsrc`` broadcast encoded into every rendition of ``ladder``: a media
    :class:`~dapsdk.services.media.publisher.Source` (``info`` + blocking ``packets()``) for
    :func:`~dapsdk.services.media.publisher.publish` and in-process publishers. ``packets()``
    yields each frame when its time comes (real time, paced in the producing thread), so the
    publisher's signing clock is the capture clock. Track ``i`` is rendition ``ladder[i]``."""

    def __init__(
        self,
        *,
        ladder: Sequence[RenditionSpec] = DEFAULT_LADDER,
        fps: int = 30,
        duration: float | None = None,
        title: str = "testsrc",
        pattern: str = "testsrc",
    ) -> None:
        if not ladder or not 1 <= fps <= 60:
            raise ValueError("need at least one rendition and 1 <= fps <= 60")
        self.ladder = tuple(ladder)
        self.fps = fps
        self.duration = duration
        self.frames = 0
        self._stop = threading.Event()
        big = max(self.ladder, key=lambda s: s.width * s.height)
        self._source = av.open(
            f"{pattern}=size={big.width}x{big.height}:rate={fps}", "r", format="lavfi"
        )
        self._out = av.open(io.BytesIO(), "w", format="nut")
        self._streams: list[Any] = []
        for spec in self.ladder:
            options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps), "bf": "0",
                       "profile": "baseline", "x264-params": "repeat-headers=1"}  # fmt: skip
            if spec.bitrate:
                options["b"] = str(spec.bitrate)
            stream = self._out.add_stream(
                "libx264", rate=fps, width=spec.width, height=spec.height, pix_fmt="yuv420p",
                options=options,
            )  # fmt: skip
            self._streams.append(stream)
        self._out.start_encoding()
        self.info = media_info_from_streams(
            self._streams, title=title, renditions=[spec.name for spec in self.ladder]
        )

    def packets(self) -> Iterator[MediaPacket]:
        limit = None if self.duration is None else round(self.duration * self.fps)
        started = time.monotonic()
        for frame in self._source.decode(video=0):
            if self._stop.is_set() or (limit is not None and self.frames >= limit):
                break
            delay = started + self.frames / self.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # real-time pacing of a live source (worker thread)
            for track, (spec, stream) in enumerate(zip(self.ladder, self._streams, strict=True)):
                scaled = frame.reformat(spec.width, spec.height, "yuv420p")
                scaled.pict_type = av.video.frame.PictureType.NONE
                scaled.pts = self.frames
                scaled.time_base = Fraction(1, self.fps)
                for packet in stream.encode(scaled):
                    yield from_av_packet(packet, track)
            self.frames += 1

    def stop(self) -> None:
        """Make ``packets()`` return at the next frame (from any thread)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._source.close()


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
