"""A player sink that converts to the format the player asked for.

``avrs play -o out.webm`` of an H.264 + AAC content cannot be remuxed (WebM holds VP8/VP9/AV1 and
Opus/Vorbis only). :class:`ConvertingSink` wraps the player's remuxing sink: when the output
container takes every selected track as it is, packets pass straight through (bit-exact); when it
does not, a :class:`~.transcode.MediaPipeline` converts the tracks to the format of the file
extension (``.webm``: VP9 + Opus, ``.mp4``/``.ts``/``.flv``: H.264 + AAC) before remuxing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from .model import MediaInfo, MediaPacket, open_setup, template_streams
from .transcode import FORMATS, FormatSpec, MediaPipeline

#: Output format by extension for the conversion target (mkv takes anything: no conversion).
TARGET_BY_SUFFIX = {".webm": "webm", ".mp4": "mp4", ".ts": "mp4", ".flv": "mp4", "-": "mp4"}
_MUXER_BY_SUFFIX = {".webm": "webm", ".mp4": "mp4", ".ts": "mpegts", ".flv": "flv", "-": "mpegts"}


class RemuxSink(Protocol):
    def start(self, info: MediaInfo, tracks: set[int]) -> None: ...
    def write(self, packet: MediaPacket) -> None: ...
    def close(self) -> None: ...


#: Codecs each output container holds as they are (FFmpeg 8 muxers).
ACCEPTS = {
    "webm": {"vp8", "vp9", "av1", "opus", "vorbis"},
    "mp4": {"h264", "hevc", "av1", "vp9", "aac", "mp3", "opus", "flac"},
    "mpegts": {"h264", "hevc", "mpeg2video", "aac", "mp3", "opus"},
    "flv": {"h264", "hevc", "av1", "vp9", "aac", "mp3", "opus"},
}


def container_accepts(muxer: str, info: MediaInfo, tracks: set[int]) -> bool:
    """Whether the ``muxer`` can hold the codecs of ``tracks`` as they are."""
    accepted = ACCEPTS.get(muxer)
    return accepted is None or all(info.tracks[i].codec in accepted for i in tracks)


class ConvertingSink:
    """Wraps ``inner`` (the player's remuxing sink for ``target``, a path or ``-``)."""

    def __init__(self, inner: RemuxSink, target: str) -> None:
        self.inner = inner
        suffix = "-" if target == "-" else Path(target).suffix.lower()
        self.muxer = _MUXER_BY_SUFFIX.get(suffix)
        self.format: FormatSpec | None = (
            FORMATS[TARGET_BY_SUFFIX[suffix]] if suffix in TARGET_BY_SUFFIX else None
        )
        self.pipeline: MediaPipeline | None = None
        self._index: dict[int, int] = {}
        self._setup: Any = None

    @property
    def converting(self) -> bool:
        return self.pipeline is not None

    def start(self, info: MediaInfo, tracks: set[int]) -> None:
        if self.muxer is None or self.format is None or container_accepts(self.muxer, info, tracks):
            self.inner.start(info, tracks)
            return
        chosen = sorted(tracks)
        self._index = {track: n for n, track in enumerate(chosen)}
        sub = replace(info, tracks=tuple(info.tracks[i] for i in chosen))
        self._setup = open_setup(info)
        templates = template_streams(self._setup, info)
        self.pipeline = MediaPipeline(
            sub, [templates[i] for i in chosen], target=self.format, preset="veryfast"
        )
        converted = self.pipeline.info
        self.inner.start(converted, set(range(len(converted.tracks))))

    def write(self, packet: MediaPacket) -> None:
        if self.pipeline is None:
            self.inner.write(packet)
            return
        index = self._index.get(packet.track)
        if index is None:
            return
        for out in self.pipeline.process(replace(packet, track=index)):
            self.inner.write(out)

    def close(self) -> None:
        try:
            if self.pipeline is not None:
                for out in self.pipeline.flush():
                    self.inner.write(out)
                self.pipeline.close()
        finally:
            self.inner.close()
            if self._setup is not None:
                self._setup.close()
