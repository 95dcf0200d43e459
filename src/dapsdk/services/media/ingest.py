"""Ingest into the node's media hub: who may publish, what is converted, what is transcoded.

:class:`IngestService` owns the node's :class:`~.rtmp_ingest.RtmpIngestServer`. For each accepted
publisher it opens a :class:`HubSink`, which publishes into the hub through a
:class:`~.hub.LivePublisher` (the node signs the content info and every packet, so subscribers
verify RTMP content like any other), converting and transcoding on the way when
:class:`IngestPolicy` says so:

- **admission** (:meth:`IngestPolicy.authorize`): a token in the stream key (``NAME?token=JWT``)
  must verify with the node's token verifier and grant ``publish`` on ``NAME``. Without a token, a
  publisher from a loopback address is admitted when ``loopback_no_credentials`` is set, and any
  publisher when ``token_required`` is off; everyone else is refused (NOT_AUTHORIZED);
- **format conversion** (``supported_formats``): a track whose codec is not supported is converted
  to the first supported codec of its kind that has an encoder;
- **adaptive bitrate** (``adaptive_streaming``): the ladder's renditions below the source height
  are encoded live (x264 ``ultrafast``), off the event loop (:mod:`.live_transcode`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final

from dapsdk.avrs.signing import AvrsSigner
from dapsdk.services.auth import AuthError, TokenVerifier
from dapsdk.services.avrs_cluster import content_guuid

from .hub import LivePublisher, MediaError, MediaHub
from .live_transcode import LiveTranscoder, TranscodeStats
from .model import MediaInfo, MediaPacket
from .rtmp_ingest import IngestRefused, PublishRequest, RtmpIngestServer
from .transcode import DEFAULT_LADDER, FormatSpec, MediaPipeline, Rendition

log = logging.getLogger("dapsdk.media.ingest")

#: ``supported_formats`` words that name containers, and the codecs each implies.
CONTAINER_CODECS: Final = {
    "mp4": ("h264", "aac"),
    "webm": ("vp9", "vp8", "opus"),
    "flv": ("h264", "aac"),
    "mpegts": ("h264", "aac", "mp3"),
    "ogg": ("opus",),
    "mkv": (),
}
_ALIASES: Final = {"h265": "hevc"}
VIDEO_ENCODERS: Final = {
    "h264": "libx264",
    "hevc": "libx265",
    "vp9": "libvpx-vp9",
    "vp8": "libvpx",
}
AUDIO_ENCODERS: Final = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame", "flac": "flac"}
VIDEO_CODECS: Final = ("h264", "hevc", "vp8", "vp9", "av1")


def format_policy(words: Sequence[str]) -> FormatSpec:
    """The target of ingest conversion from ``supported_formats`` (codecs and containers): the
    codecs accepted as they are, and the encoders for everything else (the first supported codec
    of each kind that has one). Raises ValueError when a kind has no encodable codec."""
    codecs: list[str] = []
    for word in words:
        word = _ALIASES.get(word.lower(), word.lower())
        for codec in CONTAINER_CODECS.get(word, (word,)):
            if codec not in codecs:
                codecs.append(codec)
    video = tuple(c for c in codecs if c in VIDEO_CODECS)
    audio = tuple(c for c in codecs if c not in VIDEO_CODECS)
    video_target = next((c for c in video if c in VIDEO_ENCODERS), None)
    audio_target = next((c for c in audio if c in AUDIO_ENCODERS), None)
    if video_target is None or audio_target is None:
        raise ValueError(
            f"supported_formats {', '.join(words)}: needs a video codec among "
            f"{', '.join(VIDEO_ENCODERS)} and an audio codec among {', '.join(AUDIO_ENCODERS)} "
            "(or a container such as mp4 or webm)"
        )
    return FormatSpec(
        "+".join(words), video, audio, VIDEO_ENCODERS[video_target], AUDIO_ENCODERS[audio_target]
    )


@dataclass(frozen=True, slots=True)
class IngestPolicy:
    loopback_no_credentials: bool = True
    token_required: bool = True
    token_verifier: TokenVerifier | None = None
    formats: FormatSpec = field(default_factory=lambda: format_policy(["h264", "aac", "webm"]))
    adaptive: bool = False
    ladder: tuple[Rendition, ...] = DEFAULT_LADDER
    live_preset: str = "ultrafast"
    clock: Callable[[], float] = time.time

    def authorize(self, request: PublishRequest) -> None:
        """Raise :class:`IngestRefused` unless ``request`` may publish (module docstring)."""
        if request.token is not None:
            if self.token_verifier is None:
                raise IngestRefused("NOT_AUTHORIZED", "this node verifies no tokens")
            try:
                verified = self.token_verifier.verify(request.token, now=self.clock())
            except AuthError as exc:
                raise IngestRefused("NOT_AUTHORIZED", f"token refused: {exc}") from None
            if not verified.grants.allows("publish", request.name):
                raise IngestRefused(
                    "NOT_AUTHORIZED", f"the token does not grant publish on {request.name!r}"
                )
            return
        if self.loopback_no_credentials and _is_loopback(request.peer_host):
            return
        if not self.token_required:
            return
        raise IngestRefused("NOT_AUTHORIZED", "a token is required (NAME?token=...)")

    def pipeline_for(self, info: MediaInfo, streams: list[Any]) -> MediaPipeline | None:
        """The live pipeline ``info`` needs, or None when it is published as it is."""
        ladder = self.ladder if self.adaptive else ()
        convert = any(
            t.codec not in (self.formats.video if t.is_video else self.formats.audio)
            for t in info.tracks
        )
        video = [t for t in info.tracks if t.is_video]
        rungs = [r for r in ladder if video and r.height < video[0].height]
        if not convert and not rungs:
            return None
        return MediaPipeline(
            info, streams, ladder=ladder, target=self.formats, preset=self.live_preset
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HubSink:
    """One RTMP stream into the hub (see :class:`~.rtmp_ingest.IngestSink`)."""

    def __init__(
        self,
        service: IngestService,
        name: str,
        publisher: LivePublisher,
    ) -> None:
        self.service = service
        self.name = name
        self.publisher = publisher
        self.transcoder: LiveTranscoder | None = None
        self.info: MediaInfo | None = None
        self.first_packet: float | None = None

    async def start(self, info: MediaInfo, streams: list[Any]) -> None:
        pipeline = self.service.policy.pipeline_for(info, streams)
        published = info if pipeline is None else pipeline.info
        try:
            self.publisher.start(published, source="rtmp")
        except MediaError as exc:
            if pipeline is not None:
                pipeline.close()
            raise IngestRefused(exc.code.token, exc.reason) from None
        self.info = published
        if pipeline is not None:
            log.info("RTMP %s: %s", self.name, "; ".join(pipeline.describe()))
            self.transcoder = LiveTranscoder(
                pipeline, self._emit, name=self.name, executor=self.service.executor
            )
            self.service.transcoders[self.name] = self.transcoder

    def _emit(self, packet: MediaPacket) -> None:
        try:
            self.publisher.push(packet)
        except MediaError as exc:
            log.warning("RTMP %s: %s", self.name, exc)

    async def push(self, packet: MediaPacket) -> None:
        if self.first_packet is None:
            self.first_packet = time.monotonic()
        if self.transcoder is not None:
            self.transcoder.submit(packet)
        else:
            self.publisher.push(packet)  # MediaError ends the stream (closes the connection)

    async def end(self, error: str | None) -> None:
        try:
            if self.transcoder is not None:
                if error is None:
                    await self.transcoder.finish()
                else:
                    await self.transcoder.abort()
        finally:
            self.service.transcoders.pop(self.name, None)
            self.publisher.close()


class IngestService:
    """RTMP ingest of one node (see the module docstring)."""

    def __init__(
        self,
        hub: MediaHub,
        signer: AvrsSigner,
        policy: IngestPolicy,
        *,
        executor: Executor | None = None,
    ) -> None:
        self.hub = hub
        self.signer = signer
        self.policy = policy
        self.executor = executor
        self.transcoders: dict[str, LiveTranscoder] = {}
        self.rtmp = RtmpIngestServer(self._authorize, self._open_sink)

    async def _authorize(self, request: PublishRequest) -> None:
        self.policy.authorize(request)

    async def _open_sink(self, request: PublishRequest) -> HubSink:
        content_id = content_guuid(request.name)
        live = self.hub.lives.get(content_id)
        if live is not None and not live.ended:
            raise IngestRefused("CONTENT_ALREADY_EXISTS", f"{request.name!r} is live already")
        return HubSink(self, request.name, LivePublisher(self.hub, content_id, self.signer))

    async def start(self, host: str, port: int) -> str:
        """Listen for RTMP publishers; returns the base URL (``rtmp://HOST:PORT/live``)."""
        await self.rtmp.start(host, port)
        return self.rtmp.url

    async def close(self) -> None:
        await self.rtmp.close()

    def transcode_stats(self) -> dict[str, TranscodeStats]:
        return {name: t.stats() for name, t in self.transcoders.items()}

    def status(self) -> dict[str, object]:
        """What ``GET /api/v1/ingest`` answers: publishers, counters, and per live transcoder its
        backlog, lag, drops and speed (``lagging`` is true while the CPU cannot keep up)."""
        rtmp = self.rtmp
        return {
            "rtmp": rtmp.url if rtmp.started else None,
            "publishing": sorted(rtmp.publishing),
            "accepted": rtmp.accepted,
            "refused": rtmp.refused,
            "formats": {
                "video": list(self.policy.formats.video),
                "audio": list(self.policy.formats.audio),
            },
            "adaptive": self.policy.adaptive,
            "ladder": [f"{r.name}:{r.video_bitrate}" for r in self.policy.ladder],
            "transcoders": {
                name: stats.as_dict() for name, stats in self.transcode_stats().items()
            },
        }
