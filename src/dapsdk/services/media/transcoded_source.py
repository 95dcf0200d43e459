"""A media file read through a :class:`~.transcode.MediaPipeline`: what VoD import uses to store
the rendition ladder and the supported formats instead of the file as it is.

It has the surface of :class:`~.source.FileSource` (``info``, ``packets()``, ``close()``), so the
importer signs and stores its packets unchanged. Codec work is blocking: iterate it off the event
loop (the importer runs in a thread or a CLI process).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import av

from .model import ContentKind, MediaInfo, MediaPacket, from_av_packet
from .transcode import FORMATS, FormatSpec, MediaPipeline, Rendition, open_source


class TranscodedSource:
    def __init__(
        self,
        url: str,
        *,
        ladder: Sequence[Rendition] = (),
        target: FormatSpec = FORMATS["mp4"],
        preset: str = "veryfast",
        kind: ContentKind = ContentKind.VOD,
        title: str | None = None,
    ) -> None:
        self.url = url
        try:
            self._container, source, self._streams = open_source(url)
        except (av.FFmpegError, OSError) as exc:
            raise ValueError(f"cannot open {url}: {exc}") from None
        try:
            source = replace(source, kind=kind, title=title or url.rsplit("/", 1)[-1][:255])
            if kind != ContentKind.VOD:
                source = replace(source, duration_us=0)
            self.pipeline = MediaPipeline(
                source, self._streams, ladder=ladder, target=target, preset=preset
            )
        except BaseException:
            self._container.close()
            raise
        self.info: MediaInfo = self.pipeline.info

    @property
    def transcodes(self) -> bool:
        return self.pipeline.transcodes

    def describe(self) -> list[str]:
        return self.pipeline.describe()

    def packets(self) -> Iterator[MediaPacket]:
        """Every output packet; copies come as read, encoded ones as their encoder emits them
        (each track in order; tracks interleave within a few frames)."""
        tracks = {s.index: n for n, s in enumerate(self._streams)}
        demux: Any = self._container.demux(self._streams)
        for packet in demux:
            if packet.size == 0 or (packet.dts is None and packet.pts is None):
                continue
            yield from self.pipeline.process(from_av_packet(packet, tracks[packet.stream.index]))
        yield from self.pipeline.flush()

    def close(self) -> None:
        self.pipeline.close()
        self._container.close()
