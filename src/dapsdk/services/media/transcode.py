"""Transcoding with PyAV: the rendition ladder (adaptive bitrate) and format conversion.

A :class:`MediaPipeline` takes a source content (its :class:`MediaInfo` and PyAV template
streams) and produces the content the node stores or serves:

- video: the source track (copied byte for byte when its codec belongs to the target format,
  else converted), then one track per ladder rendition whose height is *below* the source's
  (the ladder is capped to the source: nothing is upscaled, and the source itself serves its own
  height);
- audio: the source track, copied or converted.

Each output track's ``rendition`` names it (``source``, ``720p``, ...). The source is decoded
once; every rendition encodes from the same frames, and a rendition frame is forced to be an IDR
keyframe exactly where the source has a keyframe (x264 ``forced-idr``, scene cuts off), so all
renditions switch at the same instants.

Formats (``supported_formats``): ``mp4`` = H.264 + AAC, ``webm`` = VP9 (or VP8) + Opus. The first
supported format is the one ingest converts to.

Pipelines do blocking codec work: run them off the event loop (:mod:`.live_transcode` uses a
thread pool). A pipeline is not thread-safe; one content uses one pipeline at a time.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Final

import av
import av.container
from av.codec.context import Flags
from av.video.frame import PictureType

from .model import (
    SOURCE_RENDITION,
    MediaInfo,
    MediaPacket,
    TrackInfo,
    from_av_packet,
    media_info_from_streams,
    to_ticks,
)

US: Final = Fraction(1, 1_000_000)


@dataclass(frozen=True, slots=True)
class Rendition:
    """One rung of the ladder."""

    name: str
    height: int
    video_bitrate: int
    """bits/s."""

    def __post_init__(self) -> None:
        if self.height < 16 or self.height % 2 or self.video_bitrate < 10_000:
            raise ValueError(f"rendition {self.name!r}: need an even height >= 16, bitrate >= 10k")


DEFAULT_LADDER: Final = (
    Rendition("1080p", 1080, 5_000_000),
    Rendition("720p", 720, 2_800_000),
    Rendition("480p", 480, 1_400_000),
    Rendition("360p", 360, 800_000),
)

_RUNG = re.compile(r"^\s*(\d+)p\s*:\s*(\d+)\s*([kKmM]?)\s*$")


def parse_ladder(text: str) -> tuple[Rendition, ...]:
    """``"1080p:5000k,720p:2800k"`` -> renditions (highest first). Raises ValueError."""
    rungs: list[Rendition] = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _RUNG.match(part)
        if match is None:
            raise ValueError(f"rendition {part.strip()!r} is not HEIGHTp:BITRATE[k|M]")
        height, rate, unit = int(match[1]), int(match[2]), match[3].lower()
        rate *= {"": 1, "k": 1000, "m": 1_000_000}[unit]
        rungs.append(Rendition(f"{height}p", height, rate))
    if not rungs:
        raise ValueError("empty rendition ladder")
    if len({r.height for r in rungs}) != len(rungs):
        raise ValueError("two renditions with the same height")
    return tuple(sorted(rungs, key=lambda r: -r.height))


def ladder_for(source_height: int, ladder: Sequence[Rendition]) -> list[Rendition]:
    """The renditions made for a source of ``source_height``: those strictly below it."""
    return [r for r in ladder if r.height < source_height]


def scaled_width(width: int, height: int, target_height: int) -> int:
    """Width keeping the aspect ratio, rounded to an even number."""
    return max(16, round(width * target_height / height / 2) * 2)


@dataclass(frozen=True, slots=True)
class FormatSpec:
    name: str
    video: tuple[str, ...]
    audio: tuple[str, ...]
    video_encoder: str
    audio_encoder: str


#: In :attr:`FormatSpec.video` / ``audio``: every codec is kept as it is.
ANY: Final = "*"
#: Keep the source's codecs; renditions are H.264 (what VoD import does without ``--formats``).
KEEP_SOURCE: Final = FormatSpec("source", (ANY,), (ANY,), "libx264", "aac")

FORMATS: Final = {
    "mp4": FormatSpec("mp4", ("h264",), ("aac",), "libx264", "aac"),
    "webm": FormatSpec("webm", ("vp9", "vp8"), ("opus",), "libvpx-vp9", "libopus"),
}


def parse_formats(values: Sequence[str]) -> tuple[FormatSpec, ...]:
    specs = []
    for value in values:
        spec = FORMATS.get(value.strip().lower())
        if spec is None:
            raise ValueError(f"unknown format {value!r} (supported: {', '.join(FORMATS)})")
        specs.append(spec)
    if not specs:
        raise ValueError("supported_formats is empty")
    return tuple(specs)


def _decoder_name(codec: str) -> str:
    return "libvpx-vp9" if codec == "vp9" else codec


@dataclass(slots=True)
class EncoderStats:
    """Work done by one output track's encoder."""

    frames: int = 0
    seconds: float = 0.0
    """CPU-thread time spent encoding (wall time of encode calls)."""
    media_us: int = 0
    """Media time encoded (µs): last - first frame pts."""
    _first: int | None = None

    def count(self, pts_us: int, spent: float) -> None:
        self.frames += 1
        self.seconds += spent
        if self._first is None:
            self._first = pts_us
        self.media_us = max(self.media_us, pts_us - self._first)

    @property
    def speed(self) -> float:
        """× real time (media seconds per encoding second)."""
        return (self.media_us / 1e6) / self.seconds if self.seconds else 0.0


class _Encoder:
    """One output encoder, with an in-memory output stream as its template (never muxed: the
    stream only carries the codec parameters, filled when the encoder opens)."""

    def __init__(
        self,
        name: str,
        *,
        video: tuple[int, int, Fraction] | None = None,
        audio: tuple[int, str] | None = None,
        bitrate: int,
        options: dict[str, str],
    ) -> None:
        self._buffer = io.BytesIO()
        self.container = av.open(self._buffer, "w", format="matroska")
        if video is not None:
            width, height, rate = video
            stream: Any = self.container.add_stream(name, rate=rate)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, 90000)
        else:
            assert audio is not None
            sample_rate, layout = audio
            stream = self.container.add_stream(name, rate=sample_rate)
            stream.layout = layout
        stream.bit_rate = bitrate
        stream.codec_context.flags |= Flags.global_header
        stream.options = dict(options)
        self.stream = stream
        self.container.start_encoding()  # opens the encoder: extradata now known
        self.stats = EncoderStats()

    def encode(self, frame: av.frame.Frame | None) -> list[av.Packet[Any]]:
        started = time.perf_counter()
        packets = list(self.stream.codec_context.encode(frame))
        spent = time.perf_counter() - started
        if frame is not None and frame.pts is not None and frame.time_base is not None:
            self.stats.count(round(frame.pts * frame.time_base * 1_000_000), spent)
        else:
            self.stats.seconds += spent
        return packets

    def close(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, ValueError):
            pass


@dataclass(slots=True)
class _Output:
    """How one output track is made."""

    track: int
    source_track: int
    encoder: _Encoder | None = None
    """None: the source packets are copied."""
    size: tuple[int, int] | None = None
    rendition: str = SOURCE_RENDITION
    reformatter: Any = None


@dataclass(slots=True)
class PipelineStats:
    packets_in: int = 0
    packets_out: int = 0
    decode_seconds: float = 0.0
    encoders: dict[str, EncoderStats] = field(default_factory=dict)
    """Keyed by output description ("720p h264", "audio aac")."""


class MediaPipeline:
    """Source content -> stored/served content (see the module docstring)."""

    def __init__(
        self,
        source: MediaInfo,
        source_streams: Sequence[Any],
        *,
        ladder: Sequence[Rendition] = (),
        target: FormatSpec = FORMATS["mp4"],
        preset: str = "veryfast",
        title: str | None = None,
    ) -> None:
        if len(source_streams) != len(source.tracks):
            raise ValueError("one template stream per source track")
        self.source = source
        self.target = target
        self.preset = preset
        self.stats = PipelineStats()
        self._outputs: list[_Output] = []
        self._decoders: dict[int, Any] = {}
        self._by_source: dict[int, list[_Output]] = {}
        streams: list[Any] = []
        renditions: list[str] = []
        video_tracks = [i for i, t in enumerate(source.tracks) if t.is_video]
        audio_tracks = [i for i, t in enumerate(source.tracks) if not t.is_video]
        for index in video_tracks[:1]:
            track = source.tracks[index]
            copy = track.codec in target.video or ANY in target.video
            rungs = ladder_for(track.height, ladder)
            if copy:
                self._add(_Output(len(self._outputs), index), source_streams[index], streams)
            else:
                self._add(
                    self._video_output(index, track, track.height, track.bit_rate or 0, "source"),
                    None,
                    streams,
                )
            renditions.append(SOURCE_RENDITION)
            for rung in rungs:
                self._add(
                    self._video_output(index, track, rung.height, rung.video_bitrate, rung.name),
                    None,
                    streams,
                )
                renditions.append(rung.name)
        for index in audio_tracks[:1]:
            track = source.tracks[index]
            if track.codec in target.audio or ANY in target.audio:
                self._add(_Output(len(self._outputs), index), source_streams[index], streams)
            else:
                self._add(self._audio_output(index, track), None, streams)
            renditions.append(SOURCE_RENDITION)
        if not self._outputs:
            raise ValueError("the source has no audio or video track")
        # The templates are only read here: a source container may close after construction
        # (readers of the output take templates from ``info.setup``).
        info = media_info_from_streams(
            streams,
            kind=source.kind,
            duration_us=source.duration_us,
            title=source.title if title is None else title,
            renditions=renditions,
        )
        # Tracks name their codec (h264), not the encoder that made them (libx264).
        tracks = tuple(
            replace(track, codec=stream.codec_context.codec.canonical_name)
            for track, stream in zip(info.tracks, streams, strict=True)
        )
        self.info = replace(info, tracks=tracks)

    @property
    def transcodes(self) -> bool:
        """Whether any output track is encoded (False: a pure copy)."""
        return any(output.encoder is not None for output in self._outputs)

    def _add(self, output: _Output, template: Any, streams: list[Any]) -> None:
        self._outputs.append(output)
        self._by_source.setdefault(output.source_track, []).append(output)
        streams.append(template if output.encoder is None else output.encoder.stream)

    def _video_output(
        self, index: int, track: TrackInfo, height: int, bitrate: int, rendition: str
    ) -> _Output:
        width = (
            scaled_width(track.width, track.height, height)
            if height != track.height
            else (track.width)
        )
        rate = track.frame_rate or Fraction(30)
        bitrate = bitrate or max(300_000, width * height * 3)
        if self.target.video_encoder == "libx264":
            options = {
                "preset": self.preset,
                "x264-params": "scenecut=0:forced-idr=1:keyint=600:min-keyint=1",
            }
            if self.preset == "ultrafast":
                options["tune"] = "zerolatency"
        else:
            options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",
                "g": "600",
                "row-mt": "1",
            }
        encoder = _Encoder(
            self.target.video_encoder,
            video=(width, height, rate),
            bitrate=bitrate,
            options=options,
        )
        self._ensure_decoder(index, track)
        return _Output(len(self._outputs), index, encoder, (width, height), rendition)

    def _audio_output(self, index: int, track: TrackInfo) -> _Output:
        rate = 48000 if self.target.audio_encoder == "libopus" else (track.sample_rate or 48000)
        layout = "stereo" if track.channels != 1 else "mono"
        encoder = _Encoder(
            self.target.audio_encoder, audio=(rate, layout), bitrate=128_000, options={}
        )
        self._ensure_decoder(index, track)
        return _Output(len(self._outputs), index, encoder)

    def _ensure_decoder(self, index: int, track: TrackInfo) -> None:
        if index in self._decoders:
            return
        decoder: Any = av.CodecContext.create(_decoder_name(track.codec), "r")
        if track.extradata:
            decoder.extradata = track.extradata
        if track.is_video:
            decoder.thread_type = "AUTO"
        else:
            decoder.sample_rate = track.sample_rate
            if track.channels:
                decoder.layout = "stereo" if track.channels == 2 else "mono"
        self._decoders[index] = decoder

    # -- processing -----------------------------------------------------------------------

    def process(self, packet: MediaPacket) -> list[MediaPacket]:
        """The output packets ``packet`` gives (copies at once, encodes as frames come out)."""
        return self.copy(packet) + self.encode(packet)

    def encodes(self, track: int) -> bool:
        """Whether packets of source ``track`` go through a decoder (see :meth:`encode`)."""
        return any(o.encoder is not None for o in self._by_source.get(track, []))

    def copy(self, packet: MediaPacket) -> list[MediaPacket]:
        """The copied outputs of ``packet`` (cheap: no codec work)."""
        self.stats.packets_in += 1
        result = [
            _retrack(packet, output.track)
            for output in self._by_source.get(packet.track, [])
            if output.encoder is None
        ]
        self.stats.packets_out += len(result)
        return result

    def encode(self, packet: MediaPacket) -> list[MediaPacket]:
        """The encoded outputs ``packet`` gives now (blocking codec work: run it off the loop)."""
        encoded = [o for o in self._by_source.get(packet.track, []) if o.encoder is not None]
        result: list[MediaPacket] = []
        if encoded and not packet.end and packet.data:
            for frame in self._decode(packet.track, packet):
                for output in encoded:
                    result += self._encode(output, frame)
        self.stats.packets_out += len(result)
        return result

    def flush(self) -> list[MediaPacket]:
        """Drain decoders and encoders (end of the source)."""
        result: list[MediaPacket] = []
        for index, decoder in self._decoders.items():
            encoded = [o for o in self._by_source[index] if o.encoder is not None]
            try:
                frames = list(decoder.decode(None))
            except av.FFmpegError:
                frames = []
            for frame in frames:
                if frame.time_base is None:
                    frame.time_base = US
                for output in encoded:
                    result += self._encode(output, frame)
        for output in self._outputs:
            if output.encoder is not None:
                result += self._packets(output, output.encoder.encode(None))
        self.stats.packets_out += len(result)
        return result

    def close(self) -> None:
        for output in self._outputs:
            if output.encoder is not None:
                output.encoder.close()
        self._decoders.clear()

    def describe(self) -> list[str]:
        """One line per output track: what it is and how it is made."""
        lines = []
        for output, track in zip(self._outputs, self.info.tracks, strict=True):
            how = (
                "copy"
                if output.encoder is None
                else f"encode {output.encoder.stream.codec_context.name}"
            )
            size = f" {track.width}x{track.height}" if track.is_video else ""
            lines.append(f"{track.rendition} {track.kind} {track.codec}{size}: {how}")
        return lines

    def _decode(self, index: int, packet: MediaPacket) -> list[av.frame.Frame]:
        decoder = self._decoders[index]
        av_packet = av.Packet(packet.data)
        av_packet.time_base = US
        av_packet.pts = to_ticks(packet.pts, US)
        av_packet.dts = to_ticks(packet.dts, US)
        started = time.perf_counter()
        try:
            frames = list(decoder.decode(av_packet))
        except av.FFmpegError:
            frames = []  # a corrupt packet: skip it, the decoder resyncs at the next keyframe
        for frame in frames:
            if frame.time_base is None:
                frame.time_base = US
        self.stats.decode_seconds += time.perf_counter() - started
        return frames

    def _encode(self, output: _Output, frame: av.frame.Frame) -> list[MediaPacket]:
        encoder = output.encoder
        assert encoder is not None
        if isinstance(frame, av.VideoFrame):
            assert output.size is not None
            width, height = output.size
            scaled = frame.reformat(width=width, height=height, format="yuv420p")
            scaled.pts = frame.pts
            scaled.time_base = frame.time_base
            scaled.pict_type = PictureType.I if frame.key_frame else PictureType.NONE
            packets = encoder.encode(scaled)
        else:
            packets = encoder.encode(frame)
        name = f"{output.rendition} {encoder.stream.codec_context.name}"
        self.stats.encoders[name] = encoder.stats
        return self._packets(output, packets)

    @staticmethod
    def _packets(output: _Output, packets: list[av.Packet[Any]]) -> list[MediaPacket]:
        return [from_av_packet(p, output.track) for p in packets if p.size]


def _retrack(packet: MediaPacket, track: int) -> MediaPacket:
    if packet.track == track:
        return packet
    # the signed envelope names the source track, so a re-tracked packet carries none
    return dataclasses.replace(packet, track=track, envelope=b"")


def open_source(
    source: str | io.BytesIO,
) -> tuple[av.container.InputContainer, MediaInfo, list[Any]]:
    """Open a media file (path, URL or in-memory bytes): its container, content info (first video
    and first audio track) and template streams."""
    container = av.open(source)
    assert isinstance(container, av.container.InputContainer)
    video = [s for s in container.streams if s.type == "video"][:1]
    audio = [s for s in container.streams if s.type == "audio"][:1]
    streams = video + audio
    if not streams:
        container.close()
        raise ValueError(f"{source}: no audio or video stream")
    duration = int(container.duration or 0)
    from .model import ContentKind

    info = media_info_from_streams(streams, kind=ContentKind.VOD, duration_us=duration)
    return container, info, streams
