"""HLS renditions: fMP4 chunks grouped into LL-HLS parts and segments, and the playlists.

A :class:`HlsRendition` receives the packager's chunks (one access unit each). Chunks are grouped
into *parts* of at most :attr:`HlsTimings.part_target` seconds and parts into *segments* that
start on a keyframe and last at least :attr:`HlsTimings.segment_target`. Live renditions keep a
sliding window of :attr:`HlsTimings.window` segments (older ones are dropped: bounded memory);
VoD renditions keep everything and end with ``#EXT-X-ENDLIST``.

Low-latency HLS (RFC 8216bis): ``#EXT-X-PART`` lines for the newest segments, a
``#EXT-X-PRELOAD-HINT`` for the next part, ``CAN-BLOCK-RELOAD=YES``: a playlist request with
``_HLS_msn``/``_HLS_part`` waits until that part exists (or :attr:`HlsTimings.block_timeout`).
Part and segment requests for the very next part block the same way (the preload hint).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field

from .packager import Chunk, codec_string


@dataclass(frozen=True, slots=True)
class HlsTimings:
    part_target: float = 0.2
    segment_target: float = 1.0
    window: int = 8
    """Segments kept by a live rendition (the playlist lists them all)."""
    parts_listed: int = 3
    """Newest segments whose parts are listed."""
    block_timeout: float = 6.0
    """Longest a blocking request waits (3 target durations, as the RFC suggests)."""


@dataclass(slots=True)
class Part:
    data: bytearray = field(default_factory=bytearray)
    duration: float = 0.0
    independent: bool = False


@dataclass(slots=True)
class Segment:
    msn: int
    start: float
    published_at: float
    parts: list[Part] = field(default_factory=list)
    complete: bool = False

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts)

    def data(self) -> bytes:
        return b"".join(bytes(p.data) for p in self.parts)


class NotAvailable(LookupError):
    """The requested segment or part is gone from the window or too far in the future."""


class HlsRendition:
    """One rendition's segments and parts. Not thread-safe; all calls on the event loop."""

    def __init__(
        self,
        name: str,
        *,
        width: int,
        height: int,
        bandwidth_hint: int = 0,
        live: bool = True,
        timings: HlsTimings | None = None,
    ) -> None:
        self.name = name
        self.width = width
        self.height = height
        self.live = live
        self.timings = timings or HlsTimings()
        self.init: bytes | None = None
        self.segments: deque[Segment] = deque()
        self.ended = False
        self.bytes_total = 0
        self._bandwidth_hint = bandwidth_hint
        self._first_start: float | None = None
        self._last_end: float | None = None
        self._changed = asyncio.Event()
        self._open: Part | None = None
        self.version = 0

    # ------------------------------------------------------------------ input

    def set_init(self, init: bytes) -> None:
        self.init = init

    def add(self, chunk: Chunk) -> None:
        """Append one chunk. A keyframe at least ``segment_target`` after the segment's start
        opens a new segment; a part is closed as soon as one more chunk of the same length would
        overrun ``part_target`` (so it is listed without waiting for the next frame)."""
        if self.ended:
            return
        t = self.timings
        current = self.segments[-1] if self.segments else None
        if current is None and not chunk.keyframe:
            return  # wait for the first keyframe
        if current is None or (
            chunk.keyframe and chunk.start - current.start >= t.segment_target - 1e-3
        ):
            if current is not None:
                self._close_part(current)
                current.complete = True
            msn = current.msn + 1 if current is not None else 0
            current = Segment(msn, chunk.start, chunk.published_at)
            self.segments.append(current)
            if self.live:
                while len(self.segments) > t.window:
                    self.segments.popleft()
        if self._open is None:
            self._open = Part(independent=chunk.keyframe)
        self._open.data += chunk.data
        self._open.duration += chunk.duration
        if self._open.duration + chunk.duration > t.part_target + 1e-3:
            self._close_part(current)
        self.bytes_total += len(chunk.data)
        if self._first_start is None:
            self._first_start = chunk.start
        self._last_end = chunk.start + chunk.duration
        self._notify()

    def _close_part(self, segment: Segment) -> None:
        if self._open is not None and self._open.data:
            segment.parts.append(self._open)
        self._open = None

    def end(self) -> None:
        """No more chunks (VoD complete, or the live broadcast stopped)."""
        if self.segments:
            self._close_part(self.segments[-1])
            self.segments[-1].complete = True
        self.ended = True
        self._notify()

    def _notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ state

    @property
    def bandwidth(self) -> int:
        """Bits per second over what was packaged (or the hint before any media)."""
        if self._first_start is None or self._last_end is None:
            return self._bandwidth_hint or 500_000
        span = self._last_end - self._first_start
        if span <= 0.5:
            return self._bandwidth_hint or 500_000
        return int(self.bytes_total * 8 / span)

    @property
    def codecs(self) -> str:
        return codec_string(self.init) if self.init else "avc1.42e01e"

    def _position(self) -> tuple[int, int]:
        """(msn, part index) of the newest closed part; (-1, -1) before any."""
        if not self.segments:
            return -1, -1
        last = self.segments[-1]
        return last.msn, len(last.parts) - 1

    def _has(self, msn: int, part: int | None) -> bool:
        if self.ended:
            return True
        last_msn, last_part = self._position()
        if part is None:
            return msn < last_msn or (msn == last_msn and self.segments[-1].complete)
        return (msn, part) <= (last_msn, last_part)

    async def wait_for(self, msn: int, part: int | None) -> None:
        """Block until segment ``msn`` (part ``part``) exists; raise :class:`NotAvailable` if
        it is more than two segments ahead or does not appear within the block timeout."""
        last_msn, _ = self._position()
        if msn > last_msn + 2:
            raise NotAvailable(f"msn {msn} is too far ahead of {last_msn}")
        deadline = time.monotonic() + self.timings.block_timeout
        while not self._has(msn, part):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotAvailable(f"msn {msn} part {part} did not appear in time")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def segment(self, msn: int) -> Segment:
        for seg in self.segments:
            if seg.msn == msn:
                return seg
        raise NotAvailable(f"segment {msn} is not in the window")

    def part(self, msn: int, index: int) -> bytes:
        seg = self.segment(msn)
        if index >= len(seg.parts):
            raise NotAvailable(f"part {msn}.{index} does not exist")
        return bytes(seg.parts[index].data)

    # ------------------------------------------------------------------ playlists

    def media_playlist(self, query: str = "") -> str:
        """The media playlist; ``query`` (e.g. ``?token=...``) is appended to every URI in it."""
        t = self.timings
        complete = [s for s in self.segments if s.complete]
        target = max([math.ceil(s.duration) for s in complete] + [math.ceil(t.segment_target)])
        lines = ["#EXTM3U", "#EXT-X-VERSION:9" if self.live else "#EXT-X-VERSION:7"]
        lines.append(f"#EXT-X-TARGETDURATION:{target}")
        if self.live and not self.ended:
            lines.append(
                f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * t.part_target:.3f}"
            )
            lines.append(f"#EXT-X-PART-INF:PART-TARGET={t.part_target:.3f}")
        else:
            lines.append(
                "#EXT-X-PLAYLIST-TYPE:VOD" if not self.live else "#EXT-X-PLAYLIST-TYPE:EVENT"
            )
        first = self.segments[0].msn if self.segments else 0
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first}")
        lines.append(f'#EXT-X-MAP:URI="init.mp4{query}"')
        with_parts = self.live and not self.ended
        listed = {s.msn for s in list(self.segments)[-t.parts_listed :]}
        for seg in self.segments:
            if not seg.complete and not with_parts:
                continue
            if self.live:
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_iso(seg.published_at)}")
            if with_parts and seg.msn in listed:
                for index, part in enumerate(seg.parts):
                    attrs = f'DURATION={part.duration:.5f},URI="part{seg.msn}.{index}.m4s{query}"'
                    if part.independent:
                        attrs += ",INDEPENDENT=YES"
                    lines.append(f"#EXT-X-PART:{attrs}")
            if seg.complete:
                lines.append(f"#EXTINF:{seg.duration:.5f},")
                lines.append(f"seg{seg.msn}.m4s{query}")
        if with_parts and self.segments:
            msn, index = self._next_part()
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part{msn}.{index}.m4s{query}"')
        if self.ended or not self.live:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def _next_part(self) -> tuple[int, int]:
        """Where the next part will be: a new segment once this one reached its target."""
        last = self.segments[-1]
        if last.complete or last.duration >= self.timings.segment_target - 1e-3:
            return last.msn + 1, 0
        return last.msn, len(last.parts)


def master_playlist(renditions: list[HlsRendition], query: str = "") -> str:
    """The multivariant playlist; ``query`` is appended to every media playlist URI."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in sorted(renditions, key=lambda r: r.bandwidth, reverse=True):
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={r.bandwidth},RESOLUTION={r.width}x{r.height},"
            f'CODECS="{r.codecs}"'
        )
        lines.append(f"{r.name}/index.m3u8{query}")
    return "\n".join(lines) + "\n"


def _iso(wall: float) -> str:
    ms = round(wall * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
