"""Playing a content from a node: attach (waiting for a publisher that has not declared it yet),
START (position, rendition) and SYNC, then verify what arrives and remux it with PyAV.

Every packet is checked end to end before it is used: it must be a version-2 signed-media
envelope whose signature verifies, signed by the same identity as the content info (which the
node checked against the content's owner), for this content and flow. Anything else -- a forged or
altered packet injected anywhere on the way -- is counted in ``forged`` and dropped. The node's
unsigned empty END_OF_FLOW packets end the tracks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import av

from dapsdk.avrs.constants import (
    NO_TIMESTAMP,
    AvrsChannel,
    ContentFlag,
    MediaFlag,
    SessionArg,
    SessionOp,
    SignalArg,
    SignalOp,
)
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.packets import ContentPacket, Reply
from dapsdk.avrs.tsd import Tsd
from dapsdk.stream.channel_key import ChannelKey
from dapsdk.stream.errors import DecryptError

from ..avrs_client import AvrsClient, AvrsRequestError
from ..avrs_media import KIND_INFO, parse_signed_media
from .model import MediaInfo, MediaPacket, open_setup, template_streams, to_ticks

#: Output container by file extension ("-" is MPEG-TS on stdout).
FORMATS = {".mp4": "mp4", ".ts": "mpegts", ".webm": "webm", ".mkv": "matroska", ".flv": "flv"}


class PlayError(Exception):
    def __init__(self, code: AvrsError, reason: str) -> None:
        super().__init__(f"{code.token}: {reason}")
        self.code = code


@dataclass(slots=True)
class PlayStats:
    started: float = field(default_factory=time.monotonic)
    startup_ms: float | None = None
    """From the play request to the first media packet."""
    packets: int = 0
    bytes: int = 0
    per_track: dict[int, int] = field(default_factory=dict)
    first_video_keyframe: bool | None = None
    """Whether the first video packet received was a keyframe."""
    first_time_us: int | None = None
    last_time_us: int = 0
    forged: int = 0
    """Packets dropped because they were not signed by the publisher."""
    undecryptable: int = 0
    """Packets of an encrypted content that did not open with our content key."""
    dropped: int = 0
    """Packets missing (sequence gaps)."""
    stalls: int = 0
    """Gaps of more than a second between packets of a live content."""
    switches: int = 0
    latency_ms: float | None = None
    """Behind live: now minus the publisher's signing time of the latest packet."""
    rendition: str = ""
    _last_arrival: float = 0.0
    _window: list[tuple[float, int]] = field(default_factory=list)

    def bitrate(self) -> float:
        if len(self._window) < 2:
            return 0.0
        span = self._window[-1][0] - self._window[0][0]
        return sum(b for _, b in self._window) * 8 / span if span > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "startup_ms": None if self.startup_ms is None else round(self.startup_ms, 1),
            "packets": self.packets,
            "bytes": self.bytes,
            "per_track": dict(self.per_track),
            "first_video_keyframe": self.first_video_keyframe,
            "media_seconds": round((self.last_time_us - (self.first_time_us or 0)) / 1e6, 3),
            "forged": self.forged,
            "undecryptable": self.undecryptable,
            "dropped": self.dropped,
            "stalls": self.stalls,
            "switches": self.switches,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "rendition": self.rendition,
        }


class Receiver:
    """Verifies and classifies the content packets of one subscription."""

    def __init__(
        self, content_id: bytes, stats: PlayStats, content_key: ChannelKey | None = None
    ) -> None:
        self.content_id = content_id
        self.stats = stats
        self.content_key = content_key
        self.info: MediaInfo | None = None
        self.signer: bytes | None = None
        self.ended: set[int] = set()
        self.tracks: set[int] = set()
        self._seq: dict[int, int] = {}

    @property
    def done(self) -> bool:
        return self.info is not None and self.tracks <= self.ended

    def feed(self, packet: ContentPacket) -> MediaPacket | MediaInfo | None:
        if not packet.payload:
            if packet.flags & MediaFlag.END_OF_FLOW:
                self.ended.add(packet.flow_id)
            return None
        signed = parse_signed_media(packet.payload)
        if (
            signed is None
            or signed.version < 2
            or signed.content_id != self.content_id
            or signed.flow_id != packet.flow_id
            or not signed.verify()
        ):
            self.stats.forged += 1
            return None
        if signed.kind == KIND_INFO:
            if self.signer is not None and signed.signer != self.signer:
                self.stats.forged += 1
                return None
            try:
                info = MediaInfo.decode(signed.media)
            except Exception:
                self.stats.forged += 1
                return None
            if info.encrypted and self.content_key is None:
                raise PlayError(AvrsError.CONTENT_UNAVAILBLE, "the content is encrypted: a "
                                "content key is needed to play it")  # fmt: skip
            self.info, self.signer = info, signed.signer
            return info
        if self.info is None or signed.signer != self.signer:
            self.stats.forged += 1
            return None
        if signed.flags & MediaFlag.END_OF_FLOW:
            self.ended.add(signed.flow_id)
        if not signed.media:
            return None
        media = signed.media
        if self.info.encrypted and self.content_key is not None:
            try:
                media = self.content_key.open(AvrsChannel.CONTENT, signed.flow_id, media)
            except DecryptError:
                self.stats.undecryptable += 1
                return None
        expected = self._seq.get(signed.flow_id)
        if expected is not None and signed.seq != expected:
            self.stats.dropped += (signed.seq - expected) & 0xFFFFFFFF
        self._seq[signed.flow_id] = (signed.seq + 1) & 0xFFFFFFFF
        if signed.timestamp_ms:
            self.stats.latency_ms = time.time() * 1000 - signed.timestamp_ms
        return MediaPacket(
            track=signed.flow_id, data=media, pts=signed.pts, dts=signed.dts,
            duration=signed.duration, keyframe=bool(signed.flags & MediaFlag.KEYFRAME),
            seq=signed.seq, envelope=signed.data,
        )  # fmt: skip


class FileSink:
    """Remux into a file (format from the extension) or MPEG-TS on stdout (``-``)."""

    def __init__(self, target: str, *, stdout: BinaryIO | None = None) -> None:
        self.target = target
        if target == "-":
            self.format = "mpegts"
        else:
            fmt = FORMATS.get(Path(target).suffix.lower())
            if fmt is None:
                raise ValueError(f"{target}: use one of {', '.join(FORMATS)} or -")
            self.format = fmt
        self._stdout = stdout
        self._out: Any = None
        self._streams: dict[int, Any] = {}
        self._setup: Any = None
        self._last_dts: dict[int, int] = {}

    def start(self, info: MediaInfo, tracks: set[int]) -> None:
        if self.target == "-":
            self._out = av.open(self._stdout or sys.stdout.buffer, "w", format=self.format)
        else:
            self._out = av.open(self.target, "w", format=self.format)
        self._setup = open_setup(info)
        templates = template_streams(self._setup, info)
        for index in sorted(tracks):
            try:
                self._streams[index] = self._out.add_stream_from_template(templates[index])
            except ValueError as exc:
                raise PlayError(AvrsError.CONTENT_INFO_CORRUPTED, str(exc)) from None
        self.info = info

    def write(self, packet: MediaPacket) -> None:
        stream = self._streams.get(packet.track)
        if stream is None:
            return
        track = self.info.tracks[packet.track]
        tb = track.time_base
        out = av.Packet(packet.data)
        out.stream = stream
        out.time_base = tb
        out.pts = to_ticks(packet.pts, tb)
        out.dts = to_ticks(packet.dts, tb)
        if packet.duration:
            out.duration = to_ticks(packet.duration, tb)
        out.is_keyframe = packet.keyframe
        if out.dts is not None:
            last = self._last_dts.get(packet.track)
            if last is not None and out.dts <= last:
                return  # never hand the muxer a non-increasing dts (it would fail)
            self._last_dts[packet.track] = out.dts
        self._out.mux(out)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
        if self._setup is not None:
            self._setup.close()


async def attach_waiting(
    client: AvrsClient, cluster_id: bytes, content_id: bytes, wait: float
) -> int:
    """Attach for output with ContentFlag.WAIT: a content that is not declared yet, or whose
    publisher is offline, is waited for (the node streams it once a publisher starts)."""
    del wait  # the wait happens on the node (and in play()'s receive timeout)
    try:
        return await client.attach(
            cluster_id, content_id, ContentFlag.STREAMING_OUT | ContentFlag.WAIT
        )
    except AvrsRequestError as exc:
        code = AvrsError.coerce(exc.code)
        raise PlayError(
            code if isinstance(code, AvrsError) else AvrsError.ERROR, exc.detail or exc.token
        ) from None


async def start_playback(
    client: AvrsClient, *, start_us: int | None = None, rendition: str | None = None
) -> None:
    args = []
    if start_us is not None:
        args.append(Tsd(SessionArg.START_POSITION, start_us.to_bytes(8, "little", signed=True)))
    if rendition:
        args.append(Tsd(SessionArg.RENDITION, rendition.encode("ascii")))
    await client.call(AvrsChannel.SESSION, SessionOp.START, args)
    clock = [Tsd(SessionArg.CLOCK, int(time.time() * 1_000_000).to_bytes(8, "little", signed=True))]
    await client.call(AvrsChannel.SESSION, SessionOp.SYNC, clock)


class Sink(Protocol):
    """Where played packets go: :class:`FileSink` (remux), or ``ConvertingSink`` around it."""

    def start(self, info: MediaInfo, tracks: set[int]) -> None: ...
    def write(self, packet: MediaPacket) -> None: ...
    def close(self) -> None: ...


async def play(
    client: AvrsClient,
    cluster_id: bytes,
    content_id: bytes,
    sink: Sink | None,
    *,
    start_us: int | None = None,
    rendition: str | None = None,
    duration: float | None = None,
    wait: float = 30.0,
    idle_timeout: float = 30.0,
    on_packet: Callable[[MediaPacket, PlayStats], None] | None = None,
    content_key: ChannelKey | None = None,
    on_started: Callable[[], None] | None = None,
) -> PlayStats:
    """Play until the content ends, ``duration`` seconds of media were written, or nothing came
    for ``idle_timeout`` seconds (PlayError CONTENT_UNAVAILBLE)."""
    stats = PlayStats()
    await attach_waiting(client, cluster_id, content_id, wait)
    await start_playback(client, start_us=start_us, rendition=rendition)
    if on_started is not None:
        on_started()
    receiver = Receiver(content_id, stats, content_key)
    sink_started = False
    limit = None if duration is None else int(duration * 1_000_000)
    first_wait = max(wait, idle_timeout)
    try:
        while not receiver.done:
            timeout = first_wait if receiver.info is None else idle_timeout
            try:
                packet = await client.receive_content(timeout)
            except TimeoutError:
                raise PlayError(AvrsError.CONTENT_UNAVAILBLE, "no media from the node") from None
            item = receiver.feed(packet)
            if isinstance(item, MediaInfo):
                names = item.renditions
                stats.rendition = rendition if rendition in names else (names[0] if names else "")
                receiver.tracks = item.tracks_for(rendition)
                if sink is not None and not sink_started:
                    sink.start(item, receiver.tracks)
                    sink_started = True
                continue
            if item is None:
                continue
            now = time.monotonic()
            if stats.startup_ms is None:
                stats.startup_ms = (now - stats.started) * 1000
            elif now - stats._last_arrival > 1.0 and receiver.info is not None:
                stats.stalls += 1
            stats._last_arrival = now
            stats._window.append((now, len(item.data)))
            if len(stats._window) > 200:
                del stats._window[:100]
            assert receiver.info is not None
            if receiver.info.tracks[item.track].is_video and stats.first_video_keyframe is None:
                stats.first_video_keyframe = item.keyframe
            time_us = item.time
            if time_us != NO_TIMESTAMP:
                if stats.first_time_us is None:
                    stats.first_time_us = time_us
                if limit is not None and time_us - stats.first_time_us >= limit:
                    break
                stats.last_time_us = max(stats.last_time_us, time_us + item.duration)
            stats.packets += 1
            stats.bytes += len(item.data)
            stats.per_track[item.track] = stats.per_track.get(item.track, 0) + 1
            if sink is not None:
                sink.write(item)
            if on_packet is not None:
                on_packet(item, stats)
    finally:
        if sink is not None:
            sink.close()
    return stats


async def report_quality(client: AvrsClient, stats: PlayStats) -> Reply:
    """Send the session's quality of experience to the node (signal QUALITY_REPORT): bitrate,
    loss, startup time, stalls, switches, dropped packets, latency behind live."""
    loss = 0 if not stats.packets else min(1000, stats.dropped * 1000 // stats.packets)

    def u32(value: float | None) -> bytes:
        return max(0, min(int(value or 0), 0xFFFFFFFF)).to_bytes(4, "little")

    args = [
        Tsd(SignalArg.BITRATE, int(stats.bitrate()).to_bytes(8, "little")),
        Tsd(SignalArg.LOSS_PERMILLE, loss.to_bytes(2, "little")),
        Tsd(SignalArg.STARTUP_MS, u32(stats.startup_ms)),
        Tsd(SignalArg.STALLS, u32(stats.stalls)),
        Tsd(SignalArg.SWITCHES, u32(stats.switches)),
        Tsd(SignalArg.DROPPED, u32(stats.dropped + stats.forged)),
        Tsd(SignalArg.LATENCY_MS, u32(stats.latency_ms)),
    ]
    return await client.request(AvrsChannel.SIGNAL, SignalOp.QUALITY_REPORT, args, timeout=5)
