"""fMP4 (CMAF) packaging with the FFmpeg ``mp4`` muxer through PyAV: no hand-written boxes.

The muxer runs with ``movflags=frag_every_frame+empty_moov+default_base_moof``: it writes the
initialisation segment (``ftyp`` + ``moov``) once and then one ``moof`` + ``mdat`` fragment per
access unit. FFmpeg emits fragment *n* when access unit *n + 1* arrives (it needs the sample's
duration), so a packaged chunk is one frame interval behind its input. The HLS renditions group
these chunks into LL-HLS parts and segments; the low-latency WebSocket mode sends them one by one
into Media Source Extensions. Only top-level box headers are *read* (to find the init segment's
end and the ``avcC`` for the CODECS attribute).
"""

from __future__ import annotations

import io
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

import av

#: Time base of the packaged track (the MPEG 90 kHz clock).
TIMESCALE = 90_000
_TB = Fraction(1, TIMESCALE)


@dataclass(frozen=True, slots=True)
class MediaSample:
    """One encoded access unit handed to a packager."""

    data: bytes
    pts: float
    """Presentation time in seconds."""
    dts: float
    """Decode time in seconds (non-decreasing)."""
    keyframe: bool
    published_at: float
    """Wall-clock time (``time.time()``) at which the publisher produced the frame."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One ``moof`` + ``mdat`` fragment written by the muxer (one access unit)."""

    data: bytes
    start: float
    """Decode time of its first sample, seconds (the fragment's ``tfdt``)."""
    duration: float
    keyframe: bool
    published_at: float


class PackagerError(ValueError):
    """The samples cannot be packaged (bad parameters, decreasing timestamps)."""


class Fmp4Packager:
    """Feeds H.264 access units (Annex B, SPS/PPS in band before each IDR) to FFmpeg's mp4
    muxer. The muxer writes the ``moov`` when the first access unit arrives (it takes the avcC
    from its SPS/PPS)."""

    def __init__(
        self,
        *,
        width: int,
        height: int,
        fps: float = 30.0,
        codec: str = "h264",
    ) -> None:
        if width < 16 or height < 16 or fps <= 0:
            raise PackagerError(f"bad video parameters {width}x{height}@{fps}")
        self.width = width
        self.height = height
        self.frame_duration = 1.0 / fps
        self._out = io.BytesIO()
        self._container = av.open(
            self._out,
            "w",
            format="mp4",
            options={
                "movflags": "frag_every_frame+empty_moov+default_base_moof",
                "flush_packets": "1",
            },
        )
        stream = self._container.add_stream(codec, rate=round(fps))
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = _TB
        self._stream = stream
        self._pending: deque[MediaSample] = deque()
        self._last_dts: int | None = None
        self.init: bytes | None = None
        self.closed = False

    def push(self, sample: MediaSample) -> list[Chunk]:
        """Mux one access unit; return the fragments the muxer completed (usually the previous
        sample's)."""
        if self.closed:
            raise PackagerError("packager is finished")
        dts = round(sample.dts * TIMESCALE)
        if self._last_dts is not None and dts <= self._last_dts:
            raise PackagerError(f"decode time {sample.dts} does not increase")
        self._last_dts = dts
        packet = av.Packet(sample.data)
        packet.stream = self._stream
        packet.time_base = _TB
        packet.dts = dts
        packet.pts = max(round(sample.pts * TIMESCALE), dts)
        packet.is_keyframe = sample.keyframe
        self._pending.append(sample)
        self._container.mux(packet)
        return self._collect()

    def finish(self) -> list[Chunk]:
        """Flush the last fragment and close the muxer."""
        if self.closed:
            return []
        self.closed = True
        self._container.close()
        return self._collect()

    def _collect(self) -> list[Chunk]:
        data = self._out.getvalue()
        self._out.seek(0)
        self._out.truncate()
        chunks: list[Chunk] = []
        for kind, box in _top_level_groups(data):
            if kind == "init":
                self.init = (self.init or b"") + box
                continue
            if not self._pending:
                continue  # a trailing box (mfra) after the last fragment
            sample = self._pending.popleft()
            duration = self._pending[0].dts - sample.dts if self._pending else self.frame_duration
            chunks.append(Chunk(box, sample.dts, duration, sample.keyframe, sample.published_at))
        return chunks


def _top_level_groups(data: bytes) -> list[tuple[str, bytes]]:
    """Split muxer output into ("init", ftyp/moov bytes) and ("fragment", moof+mdat) groups."""
    groups: list[tuple[str, bytes]] = []
    pos = 0
    fragment_start: int | None = None
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if size < 8 or pos + size > len(data):
            raise PackagerError(f"muxer wrote a truncated box {kind!r}")
        if kind in (b"ftyp", b"moov"):
            groups.append(("init", data[pos : pos + size]))
        elif kind == b"moof":
            fragment_start = pos
        elif kind == b"mdat" and fragment_start is not None:
            groups.append(("fragment", data[fragment_start : pos + size]))
            fragment_start = None
        pos += size
    return groups


def codec_string(init: bytes) -> str:
    """The RFC 6381 ``avc1.PPCCLL`` string from the init segment's ``avcC`` record."""
    at = init.find(b"avcC")
    if at < 0 or at + 8 > len(init):
        return "avc1.42e01e"
    profile, constraints, level = init[at + 5], init[at + 6], init[at + 7]
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"
