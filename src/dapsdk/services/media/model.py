"""The content model: tracks with their codec parameters, the content info a publisher signs, and
the media packets every part of the node exchanges (stream protocol, RTMP ingest, VoD store, HLS,
players).

Times are microseconds everywhere (``NO_TIMESTAMP`` = none); a track's ``time_base`` says what
the source used, and :func:`to_ticks` converts back exactly for every time base whose
denominator is at most 1,000,000 (90 kHz, 48 kHz, 1/1000, ...).

Codec parameters travel twice in :class:`MediaInfo`: as explicit fields (codec name, extradata,
time base, size, sample rate, channels) that anyone can read, and as ``setup``, a tiny NUT file
(FFmpeg's own container: a header plus one 1-byte placeholder packet per stream) written from the
source's streams. A receiver demuxes ``setup`` to get template streams and remuxes the packets with
``add_stream_from_template``, so no encoder is ever opened (opening one would replace the
extradata). :func:`open_setup` checks that the two agree: a mismatch is CONTENT_INFO_CORRUPTED.
Wire encoding: docs/avrs-protocol.md §12.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

import av
import av.container
import av.stream

from dapsdk.avrs.buffer import Reader, Writer
from dapsdk.avrs.constants import NO_TIMESTAMP
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError
from dapsdk.avrs.tsd import Tsd, encode_tsds, parse_tsds

#: The largest content info accepted (the setup blob is a few hundred bytes per track).
MAX_INFO_SIZE: Final = 256 * 1024
MAX_TRACKS: Final = 16
SOURCE_RENDITION: Final = "source"


class ContentKind(enum.IntEnum):
    LIVE = 1
    VOD = 2


class InfoArg(enum.IntEnum):
    """TSD types of an encoded :class:`MediaInfo`."""

    KIND = 0x01  #: u8 ContentKind
    DURATION = 0x02  #: i64 µs (VoD; 0 for live)
    SETUP = 0x03  #: NUT parameter-set carrier
    TITLE = 0x04  #: UTF-8
    ENCRYPTED = 0x05  #: u8 1: every packet's media is sealed with the content key
    TRACK = 0x10  #: nested TSDs (TrackArg), repeatable, in track order


class TrackArg(enum.IntEnum):
    KIND = 0x01  #: u8: 1 video, 2 audio
    CODEC = 0x02  #: ASCII FFmpeg codec name
    TIME_BASE = 0x03  #: u32 num, u32 den
    EXTRADATA = 0x04
    VIDEO = 0x05  #: u16 width, u16 height, u32 frame-rate num, u32 frame-rate den
    AUDIO = 0x06  #: u32 sample rate, u16 channels
    BIT_RATE = 0x07  #: u64 bits/s (0 unknown)
    RENDITION = 0x08  #: ASCII rendition name ("source", "720p", ...)
    SETUP_INDEX = 0x09  #: u8 index of this track's stream in the setup NUT


_KINDS: Final = {"video": 1, "audio": 2}
_KIND_NAMES: Final = {v: k for k, v in _KINDS.items()}


def corrupted(reason: str) -> AvrsProtocolError:
    return AvrsProtocolError(AvrsError.CONTENT_INFO_CORRUPTED, reason)


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """One track (flow) of a content."""

    kind: str
    """"video" or "audio"."""
    codec: str
    """FFmpeg codec name (h264, hevc, vp9, aac, opus, mp3, ...)."""
    time_base: Fraction
    extradata: bytes = field(default=b"", repr=False)
    width: int = 0
    height: int = 0
    frame_rate: Fraction | None = None
    sample_rate: int = 0
    channels: int = 0
    bit_rate: int = 0
    rendition: str = SOURCE_RENDITION
    setup_index: int = 0
    """Index of the template stream in :attr:`MediaInfo.setup`."""

    @property
    def is_video(self) -> bool:
        return self.kind == "video"

    def encode(self) -> bytes:
        items = [
            Tsd(TrackArg.KIND, bytes([_KINDS[self.kind]])),
            Tsd(TrackArg.CODEC, self.codec.encode("ascii")),
            Tsd(
                TrackArg.TIME_BASE,
                self.time_base.numerator.to_bytes(4, "little")
                + self.time_base.denominator.to_bytes(4, "little"),
            ),
            Tsd(TrackArg.BIT_RATE, max(0, self.bit_rate).to_bytes(8, "little")),
            Tsd(TrackArg.RENDITION, self.rendition.encode("ascii")),
            Tsd(TrackArg.SETUP_INDEX, bytes([self.setup_index])),
        ]
        if self.extradata:
            items.append(Tsd(TrackArg.EXTRADATA, self.extradata))
        if self.is_video:
            rate = self.frame_rate or Fraction(0, 1)
            items.append(
                Tsd(
                    TrackArg.VIDEO,
                    self.width.to_bytes(2, "little")
                    + self.height.to_bytes(2, "little")
                    + rate.numerator.to_bytes(4, "little")
                    + rate.denominator.to_bytes(4, "little"),
                )
            )
        else:
            items.append(
                Tsd(
                    TrackArg.AUDIO,
                    self.sample_rate.to_bytes(4, "little") + self.channels.to_bytes(2, "little"),
                )
            )
        return encode_tsds(items)

    @classmethod
    def decode(cls, data: bytes) -> TrackInfo:
        try:
            args = parse_tsds(data, max_total=MAX_INFO_SIZE)
            kind = _KIND_NAMES.get(args.uint(TrackArg.KIND, 1) or 0)
            codec = args.text(TrackArg.CODEC, 63)
            tb = args.fixed(TrackArg.TIME_BASE, 8)
            assert tb is not None
            time_base_num = int.from_bytes(tb[:4], "little")
            time_base_den = int.from_bytes(tb[4:], "little")
            rendition = args.text(TrackArg.RENDITION, 32, required=False) or SOURCE_RENDITION
            setup_index = args.uint(TrackArg.SETUP_INDEX, 1) or 0
            bit_rate = args.uint(TrackArg.BIT_RATE, 8, required=False) or 0
            extradata = args.get(TrackArg.EXTRADATA) or b""
            video = args.fixed(TrackArg.VIDEO, 12, required=False)
            audio = args.fixed(TrackArg.AUDIO, 6, required=False)
        except AvrsProtocolError as exc:
            raise corrupted(f"track: {exc.reason}") from None
        if kind is None or not codec or not codec.isascii():
            raise corrupted("track kind or codec missing")
        if time_base_num <= 0 or time_base_den <= 0:
            raise corrupted("track time base must be positive")
        track = cls(
            kind=kind,
            codec=codec,
            time_base=Fraction(time_base_num, time_base_den),
            extradata=extradata,
            bit_rate=bit_rate,
            rendition=rendition,
            setup_index=setup_index,
        )
        if kind == "video":
            if video is None:
                raise corrupted("video track without size")
            rate_num = int.from_bytes(video[4:8], "little")
            rate_den = int.from_bytes(video[8:12], "little")
            return _replace(
                track,
                width=int.from_bytes(video[0:2], "little"),
                height=int.from_bytes(video[2:4], "little"),
                frame_rate=Fraction(rate_num, rate_den) if rate_num and rate_den else None,
            )
        if audio is None:
            raise corrupted("audio track without sample rate")
        return _replace(
            track,
            sample_rate=int.from_bytes(audio[0:4], "little"),
            channels=int.from_bytes(audio[4:6], "little"),
        )


def _replace(track: TrackInfo, **changes: Any) -> TrackInfo:
    from dataclasses import replace

    return replace(track, **changes)


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """The content info: what a publisher signs and every subscriber receives first."""

    tracks: tuple[TrackInfo, ...]
    setup: bytes = field(default=b"", repr=False)
    kind: ContentKind = ContentKind.LIVE
    duration_us: int = 0
    title: str = ""
    encrypted: bool = False
    """Media bytes are sealed (AES-256-GCM) with a content key only the audience holds; the
    envelopes stay readable and signed, so nodes still verify, cache and route them."""

    @property
    def video_tracks(self) -> list[int]:
        return [i for i, t in enumerate(self.tracks) if t.is_video]

    @property
    def renditions(self) -> list[str]:
        seen: list[str] = []
        for track in self.tracks:
            if track.is_video and track.rendition not in seen:
                seen.append(track.rendition)
        return seen

    def flows(self) -> str:
        """The cluster CONTENT_FLOWS string: one distinct character per track."""
        spare = iter("0123456789bcdefghijklmnopqrstuwxyz")
        used: list[str] = []
        for track in self.tracks:
            letter = "v" if track.is_video else "a"
            while letter in used:
                letter = next(spare)
            used.append(letter)
        return "".join(used)

    def tracks_for(self, rendition: str | None) -> set[int]:
        """Track indexes a subscriber of ``rendition`` receives: that rendition's video (the
        first rendition when None or unknown) plus every audio track."""
        names = self.renditions
        chosen = rendition if rendition in names else (names[0] if names else None)
        return {i for i, t in enumerate(self.tracks) if not t.is_video or t.rendition == chosen}

    def encode(self) -> bytes:
        items = [
            Tsd(InfoArg.KIND, bytes([int(self.kind)])),
            Tsd(InfoArg.DURATION, int(self.duration_us).to_bytes(8, "little", signed=True)),
            Tsd(InfoArg.SETUP, self.setup),
        ]
        if self.title:
            items.append(Tsd(InfoArg.TITLE, self.title.encode()))
        if self.encrypted:
            items.append(Tsd(InfoArg.ENCRYPTED, b"\x01"))
        items += [Tsd(InfoArg.TRACK, t.encode()) for t in self.tracks]
        return encode_tsds(items)

    @classmethod
    def decode(cls, data: bytes) -> MediaInfo:
        """Parse (not verify) a content info; CONTENT_INFO_CORRUPTED when malformed."""
        if len(data) > MAX_INFO_SIZE:
            raise corrupted(f"content info of {len(data)} bytes")
        try:
            args = parse_tsds(data, max_items=MAX_TRACKS + 8, max_total=MAX_INFO_SIZE)
            kind_value = args.uint(InfoArg.KIND, 1)
            duration = args.sint(InfoArg.DURATION, 8, required=False) or 0
            setup = args.get(InfoArg.SETUP) or b""
            title = args.text(InfoArg.TITLE, 255, required=False) or ""
            encrypted = bool(args.uint(InfoArg.ENCRYPTED, 1, required=False))
        except AvrsProtocolError as exc:
            raise corrupted(exc.reason) from None
        try:
            kind = ContentKind(kind_value or 0)
        except ValueError:
            raise corrupted(f"unknown content kind {kind_value}") from None
        tracks = tuple(TrackInfo.decode(d) for d in args.all(InfoArg.TRACK))
        if not tracks or len(tracks) > MAX_TRACKS:
            raise corrupted(f"{len(tracks)} tracks (1..{MAX_TRACKS})")
        return cls(tracks, setup, kind, max(0, duration), title, encrypted)


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One coded frame of one track (a signed envelope once it went through a publisher)."""

    track: int
    data: bytes = field(repr=False)
    pts: int = NO_TIMESTAMP
    """µs."""
    dts: int = NO_TIMESTAMP
    """µs (differs from pts with B-frames)."""
    duration: int = 0
    """µs."""
    keyframe: bool = False
    seq: int = 0
    envelope: bytes = field(default=b"", repr=False)
    """The signed envelope carrying this packet (forwarded as is; empty for unsigned)."""
    end: bool = False
    """END_OF_FLOW: the last packet of its track."""
    arrival: float = 0.0
    """When the node received it (monotonic seconds; live deadlines)."""

    @property
    def size(self) -> int:
        return len(self.envelope) or len(self.data)

    @property
    def time(self) -> int:
        """The packet's position: dts when known, else pts."""
        return self.dts if self.dts != NO_TIMESTAMP else self.pts

    @property
    def shown(self) -> int:
        """When it is presented: pts when known, else dts (audio is matched to a keyframe's)."""
        return self.pts if self.pts != NO_TIMESTAMP else self.dts


# ---------------------------------------------------------------------------------------- time


def to_us(value: int | None, time_base: Fraction) -> int:
    if value is None:
        return NO_TIMESTAMP
    return round(value * time_base * 1_000_000)


def to_ticks(value_us: int, time_base: Fraction) -> int | None:
    if value_us == NO_TIMESTAMP:
        return None
    return round(Fraction(value_us, 1_000_000) / time_base)


# ---------------------------------------------------------------------------------------- PyAV


def track_from_stream(stream: Any, rendition: str = SOURCE_RENDITION, index: int = 0) -> TrackInfo:
    """The :class:`TrackInfo` of a PyAV stream (input, or an opened encoder's output stream)."""
    ctx = stream.codec_context
    time_base = stream.time_base or ctx.time_base or Fraction(1, 1_000_000)
    codec = ctx.codec.canonical_name  # "h264" also for the libx264 encoder
    if stream.type == "video":
        rate = stream.average_rate or stream.guessed_rate or getattr(ctx, "framerate", None)
        return TrackInfo(
            kind="video",
            codec=codec,
            time_base=Fraction(time_base),
            extradata=bytes(ctx.extradata or b""),
            width=int(ctx.width or 0),
            height=int(ctx.height or 0),
            frame_rate=Fraction(rate) if rate else None,
            bit_rate=int(ctx.bit_rate or stream.bit_rate or 0),
            rendition=rendition,
            setup_index=index,
        )
    if stream.type == "audio":
        return TrackInfo(
            kind="audio",
            codec=codec,
            time_base=Fraction(time_base),
            extradata=bytes(ctx.extradata or b""),
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
            bit_rate=int(ctx.bit_rate or stream.bit_rate or 0),
            rendition=rendition,
            setup_index=index,
        )
    raise ValueError(f"stream {stream.index} is {stream.type}, not audio or video")


def make_setup(streams: Sequence[Any]) -> bytes:
    """The NUT parameter-set carrier of ``streams`` (see the module docstring)."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="nut")
    try:
        templates = [out.add_stream_from_template(s) for s in streams]
        out.start_encoding()
        for template in templates:
            placeholder = av.Packet(b"\0")
            placeholder.stream = template
            placeholder.pts = placeholder.dts = 0
            placeholder.time_base = template.time_base
            out.mux(placeholder)
    finally:
        out.close()
    return buf.getvalue()


def media_info_from_streams(
    streams: Sequence[Any],
    *,
    kind: ContentKind = ContentKind.LIVE,
    duration_us: int = 0,
    title: str = "",
    renditions: Sequence[str] | None = None,
) -> MediaInfo:
    """Content info for PyAV audio/video ``streams`` (in that track order)."""
    names = list(renditions) if renditions is not None else [SOURCE_RENDITION] * len(streams)
    tracks = tuple(track_from_stream(s, names[i], i) for i, s in enumerate(streams))
    return MediaInfo(tracks, make_setup(streams), kind, duration_us, title)


def open_setup(info: MediaInfo) -> av.container.InputContainer:
    """Demux :attr:`MediaInfo.setup`; CONTENT_INFO_CORRUPTED unless its streams match the tracks.
    Close the container when done (its streams are templates for ``add_stream_from_template``)."""
    try:
        container = av.open(io.BytesIO(info.setup), "r", format="nut")
    except (av.FFmpegError, ValueError) as exc:
        raise corrupted(f"setup does not demux: {exc}") from None
    try:
        streams = list(container.streams)
        for number, track in enumerate(info.tracks):
            if not 0 <= track.setup_index < len(streams):
                raise corrupted(f"track {number}: no setup stream {track.setup_index}")
            stream = streams[track.setup_index]
            if stream.type != track.kind:
                raise corrupted(f"track {number}: setup stream is {stream.type}")
            ctx = stream.codec_context
            if bytes(ctx.extradata or b"") != track.extradata:
                raise corrupted(f"track {number}: setup extradata differs from the track's")
    except BaseException:
        container.close()
        raise
    return container


def template_streams(container: av.container.InputContainer, info: MediaInfo) -> list[Any]:
    streams = list(container.streams)
    return [streams[t.setup_index] for t in info.tracks]


def to_av_packet(packet: MediaPacket, stream: Any, time_base: Fraction) -> av.Packet[Any]:
    """An ``av.Packet`` for muxing ``packet`` into ``stream`` (times in ``time_base``)."""
    out = av.Packet(packet.data)
    out.stream = stream
    out.time_base = time_base
    out.pts = to_ticks(packet.pts, time_base)
    out.dts = to_ticks(packet.dts, time_base)
    if packet.duration:
        out.duration = to_ticks(packet.duration, time_base)
    out.is_keyframe = packet.keyframe
    return out


def from_av_packet(packet: av.Packet[Any], track: int, seq: int = 0) -> MediaPacket:
    tb = packet.time_base or Fraction(1, 1_000_000)
    return MediaPacket(
        track=track,
        data=bytes(packet),
        pts=to_us(packet.pts, tb),
        dts=to_us(packet.dts, tb),
        duration=to_us(packet.duration, tb) if packet.duration else 0,
        keyframe=bool(packet.is_keyframe),
        seq=seq,
    )


def iter_tracks(info: MediaInfo, kinds: Iterable[str]) -> list[int]:
    wanted = set(kinds)
    return [i for i, t in enumerate(info.tracks) if t.kind in wanted]


__all__ = [
    "ContentKind",
    "MediaInfo",
    "MediaPacket",
    "Reader",
    "TrackInfo",
    "Writer",
]
