"""The seed's media scenarios under their seed names: live broadcasting
(``avrs_create_stream`` + ``avrs_start_broadcasting``), video on demand (``avrs_create_vod_session``
+ ``avrs_session_start_playback``) and a server starting a content (``avrs_server_start_content_stream``),
with their config structs and the ``AVRS_STREAM_*`` / ``AVRS_QUALITY_*`` constants.

They run on the node ``avrs_plugin_init`` started, like the rest of :mod:`dapsdk.compat.avrs`:
broadcasting connects to the configured host with the node's identity and certificate (a SERVER
or HOST certificate may publish) and publishes through the stream protocol; a VoD session is an
``avrs_session_t`` whose playback starts at ``start_position`` with the rendition of
``quality_preference``. Packets are then read with ``avrs_session_receive_packet``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..avrs.constants import ContentFlag, Role
from ..avrs.errors import AvrsError
from ..services.avrs_client import AvrsClient, AvrsRequestError
from ..services.avrs_cluster import content_guuid
from ..services.media.hub import LivePublisher, MediaError
from ..services.media.model import MediaPacket
from ..services.media.player import start_playback
from ..services.media.publisher import PublishRefused, PublishStats, publish
from ..services.media.source import FileSource, PatternSource, SourceError
from ..stream.channel_key import ChannelKey
from ..stream.errors import DapError
from .avrs import _plugin, _run_streaming, avrs_session_authenticate, avrs_session_create
from .avrs_structs import AVRS_ERROR, AVRS_SUCCESS, avrs_session_t

log = logging.getLogger("dapsdk.compat")


class avrs_stream_type_t(enum.IntEnum):
    AVRS_STREAM_LIVE = 0
    AVRS_STREAM_VOD = 1
    AVRS_STREAM_INTERACTIVE = 2


class avrs_quality_t(enum.IntEnum):
    AVRS_QUALITY_AUTO = 0
    AVRS_QUALITY_LOW = 1  #: 360p
    AVRS_QUALITY_SD = 2  #: 480p
    AVRS_QUALITY_HD = 3  #: 720p
    AVRS_QUALITY_FULL_HD = 4  #: 1080p


AVRS_STREAM_LIVE: Final = avrs_stream_type_t.AVRS_STREAM_LIVE
AVRS_STREAM_VOD: Final = avrs_stream_type_t.AVRS_STREAM_VOD
AVRS_STREAM_INTERACTIVE: Final = avrs_stream_type_t.AVRS_STREAM_INTERACTIVE
AVRS_QUALITY_AUTO: Final = avrs_quality_t.AVRS_QUALITY_AUTO
AVRS_QUALITY_LOW: Final = avrs_quality_t.AVRS_QUALITY_LOW
AVRS_QUALITY_SD: Final = avrs_quality_t.AVRS_QUALITY_SD
AVRS_QUALITY_HD: Final = avrs_quality_t.AVRS_QUALITY_HD
AVRS_QUALITY_FULL_HD: Final = avrs_quality_t.AVRS_QUALITY_FULL_HD

#: quality -> (rendition name, width, height, bit rate) of generated (testsrc) video.
QUALITY_LADDER: Final = {
    avrs_quality_t.AVRS_QUALITY_LOW: ("360p", 640, 360, 800_000),
    avrs_quality_t.AVRS_QUALITY_SD: ("480p", 854, 480, 1_400_000),
    avrs_quality_t.AVRS_QUALITY_HD: ("720p", 1280, 720, 2_800_000),
    avrs_quality_t.AVRS_QUALITY_FULL_HD: ("1080p", 1920, 1080, 5_000_000),
}


@dataclass(slots=True)
class avrs_stream_config_t:
    """``avrs_stream_config_t``; the fields after ``adaptive`` are dapsdk's."""

    type: int = AVRS_STREAM_LIVE
    quality: int = AVRS_QUALITY_HD
    encryption: bool = False
    """Seal the media with ``content_key`` (viewers need the same key)."""
    adaptive: bool = False
    """Offer the lower renditions too (generated sources encode one per rung)."""
    source: str = "testsrc"
    """What to broadcast: ``testsrc`` or a file/URL FFmpeg opens (remuxed)."""
    duration: float | None = None
    """testsrc: seconds to broadcast (None: until ``avrs_stop_broadcasting``)."""
    content_key: ChannelKey | None = None
    realtime: bool = True


@dataclass(slots=True, eq=False)
class avrs_stream_t:
    name: str
    config: avrs_stream_config_t
    content_id: bytes
    client: AvrsClient | None = field(default=None, repr=False)
    task: Any = field(default=None, repr=False)
    started: bool = False
    stats: PublishStats | None = None
    last_error: int = AVRS_SUCCESS
    last_error_detail: str = ""


@dataclass(slots=True)
class avrs_vod_config_t:
    content_id: str = ""
    start_position: float = 0.0
    """Seconds into the content; playback starts at the keyframe at or before it."""
    quality_preference: int = AVRS_QUALITY_AUTO


def _renditions(config: avrs_stream_config_t) -> list[tuple[str, int, int, int]]:
    quality = avrs_quality_t(config.quality or AVRS_QUALITY_HD)
    top = QUALITY_LADDER[quality]
    if not config.adaptive:
        return [top]
    return [rung for q, rung in QUALITY_LADDER.items() if q <= quality][::-1]


def avrs_create_stream(name: str, config: avrs_stream_config_t) -> avrs_stream_t | None:
    """A live stream named ``name`` (not started). None, with the reason logged, when the
    configuration cannot be served: not LIVE, encryption without a content key, an unknown
    quality, or ``adaptive`` for a file source (the broadcaster cannot re-encode a file)."""
    problem = None
    if config.type != AVRS_STREAM_LIVE:
        problem = "avrs_create_stream makes live streams (VoD: avrs_create_vod_session)"
    elif config.encryption and config.content_key is None:
        problem = "encryption needs config.content_key (a ChannelKey shared with the viewers)"
    elif config.quality not in list(avrs_quality_t):
        problem = f"unknown quality {config.quality}"
    elif config.adaptive and config.source != "testsrc":
        problem = "adaptive renditions of a file need the node's transcoder (adaptive_streaming)"
    if problem is not None:
        log.error("avrs_create_stream %s: %s", name, problem)
        return None
    try:
        content_id = content_guuid(name)
    except ValueError as exc:
        log.error("avrs_create_stream: %s", exc)
        return None
    return avrs_stream_t(name, config, content_id)


def _open_source(config: avrs_stream_config_t) -> FileSource | PatternSource:
    if config.source == "testsrc":
        return PatternSource(duration=config.duration, renditions=_renditions(config))
    return FileSource(config.source)


def avrs_start_broadcasting(stream: avrs_stream_t, timeout: float = 30.0) -> int:
    """Connect, declare the content and start publishing in the background; returns 0 once the
    content info is on its way (viewers can join), or an AVRS code (``stream.last_error``)."""
    try:
        loop, node = _plugin()
    except RuntimeError as exc:
        stream.last_error, stream.last_error_detail = AVRS_ERROR, str(exc)
        return AVRS_ERROR
    if not node.role & (Role.SERVER | Role.HOST) or node.credentials.certificate_der is None:
        stream.last_error = int(AvrsError.SIGN_ALIEN)
        stream.last_error_detail = "broadcasting needs a SERVER or HOST certificate"
        return stream.last_error

    async def begin() -> asyncio.Future[None]:
        source = await asyncio.get_running_loop().run_in_executor(None, _open_source, stream.config)
        client = await node.connect_client()
        stream.client = client
        await client.open()
        reply = await client.join(
            node.directory.cluster_id, certificate=node.credentials.certificate_der
        )
        if reply.code != AvrsError.SUCCESS:
            raise AvrsRequestError(reply)
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_packet(_packet: MediaPacket) -> None:
            if not first.done():
                first.set_result(None)

        async def run() -> None:
            try:
                stream.stats = await publish(
                    client, node.directory.cluster_id, stream.content_id, source,
                    realtime=stream.config.realtime, on_packet=on_packet,
                    content_key=stream.config.content_key if stream.config.encryption else None,
                )  # fmt: skip
            except PublishRefused as exc:
                stream.last_error, stream.last_error_detail = exc.code, str(exc)
            finally:
                if not first.done():
                    first.set_result(None)

        stream.task = asyncio.ensure_future(run())
        return first

    try:
        first = loop.run(begin(), timeout=timeout)
        loop.run(_wait(first), timeout=timeout)
    except AvrsRequestError as exc:
        stream.last_error, stream.last_error_detail = exc.code, str(exc)
        return exc.code
    except (SourceError, DapError, ConnectionError, TimeoutError, OSError) as exc:
        stream.last_error, stream.last_error_detail = AVRS_ERROR, str(exc)
        return AVRS_ERROR
    stream.started = stream.last_error == AVRS_SUCCESS
    return stream.last_error


async def _wait(future: asyncio.Future[None]) -> None:
    await future


def avrs_stream_wait(stream: avrs_stream_t, timeout: float | None = None) -> int:
    """(dapsdk) Wait until a finite source was broadcast completely; its AVRS code."""
    if stream.task is None:
        return AVRS_ERROR
    loop, _node = _plugin()
    try:
        loop.run(_wait(stream.task), timeout=timeout)
    except TimeoutError:
        return AVRS_ERROR
    return stream.last_error


def avrs_stop_broadcasting(stream: avrs_stream_t) -> int:
    """(dapsdk) Stop publishing and close the stream's connection."""
    loop, _node = _plugin()

    async def stop() -> None:
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        if stream.client is not None:
            await stream.client.close()

    try:
        loop.run(stop())
    except (DapError, ConnectionError, TimeoutError) as exc:
        log.info("avrs_stop_broadcasting: %s", exc)
    stream.started = False
    return AVRS_SUCCESS


# -- video on demand ---------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class avrs_vod_session_t(avrs_session_t):
    """An ``avrs_session_t`` with its VoD playback settings."""

    start_position: float = 0.0
    quality_preference: int = AVRS_QUALITY_AUTO


def avrs_create_vod_session(
    vod_config: avrs_vod_config_t, *, client_id: str | None = None, server: str | None = None
) -> avrs_vod_session_t | None:
    """A session that will play ``vod_config.content_id`` from ``start_position``."""
    base = avrs_session_create(client_id, vod_config.content_id, server=server)
    if base is None:
        return None
    if vod_config.start_position < 0:
        log.error("avrs_create_vod_session: start_position must be >= 0")
        return None
    return avrs_vod_session_t(
        base.client_id, base.content_id, base.content_name, base.cluster_id, base.signer,
        base.server, start_position=vod_config.start_position,
        quality_preference=vod_config.quality_preference,
    )  # fmt: skip


def avrs_session_start_playback(session: avrs_session_t, credentials: object = None) -> int:
    """Authenticate (with ``credentials``, default the node's certificate) if not done yet,
    attach the content (waiting for it when it is not there yet), START at the session's
    position with its quality's rendition, SYNC. Then read with ``avrs_session_receive_packet``."""
    if not session.authenticated and not avrs_session_authenticate(session, credentials):
        return session.last_error
    client = session.client
    assert client is not None
    position = getattr(session, "start_position", 0.0)
    quality = getattr(session, "quality_preference", AVRS_QUALITY_AUTO)
    rendition = QUALITY_LADDER[avrs_quality_t(quality)][0] if quality else None

    async def run() -> None:
        session.handle = await client.attach(
            session.cluster_id, session.content_id, ContentFlag.STREAMING_OUT | ContentFlag.WAIT
        )
        await start_playback(
            client, start_us=int(position * 1_000_000) if position else None, rendition=rendition
        )

    return _run_streaming(session, "start_playback", run)


# -- server side -------------------------------------------------------------------------------


_local_publishers: dict[bytes, LivePublisher] = {}
_feeders: dict[bytes, asyncio.Future[None]] = {}


def avrs_server_start_content_stream(
    content_id: str | bytes, source: str | Path | None = None
) -> int:
    """Start serving a content from this (server) node.

    Without ``source``: a VoD item of the node's store (``avrs vod add``) becomes available to
    sessions (CONTENT_NOT_FOUND when the store does not have it). With ``source`` (a file FFmpeg
    opens, or ``testsrc``): the node publishes it live itself, signed with its identity, through
    its in-process media hub (remuxed in real time; the content ends with the source)."""
    try:
        loop, node = _plugin()
        guuid = content_guuid(content_id)
    except (RuntimeError, ValueError) as exc:
        log.error("avrs_server_start_content_stream: %s", exc)
        return AVRS_ERROR
    if not node.role & (Role.SERVER | Role.HOST):
        log.error("avrs_server_start_content_stream: the node is not a server")
        return int(AvrsError.SIGN_ALIEN)
    store = None if node.media is None else node.media.vod
    if source is None:
        if store is None or not store.has(guuid):
            return int(AvrsError.CONTENT_NOT_FOUND)
        item = store.get(guuid)
        existing = node.directory.info.contents.get(guuid)
        if existing is None or not existing.available:
            from ..avrs.directory import ContentInfo

            info = item.info
            node.directory.put_content(
                ContentInfo(guuid, item.signed.signer, info.flows(),
                            tuple(t.codec for t in info.tracks), info.title[:255])
            )  # fmt: skip
        return AVRS_SUCCESS

    async def start() -> None:
        media_source = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: PatternSource() if str(source) == "testsrc" else FileSource(str(source)),
        )
        publisher = LivePublisher(node.hub, guuid, node.signer)
        publisher.start(media_source.info, source=f"local {source}")
        _local_publishers[guuid] = publisher
        _feeders[guuid] = asyncio.ensure_future(_feed(publisher, media_source))

    try:
        loop.run(start())
    except (SourceError, MediaError, OSError) as exc:
        log.error("avrs_server_start_content_stream: %s", exc)
        return getattr(exc, "code", AVRS_ERROR)
    return AVRS_SUCCESS


async def _feed(publisher: LivePublisher, source: FileSource | PatternSource) -> None:
    """Push a source's packets into the hub in real time (by dts), then end the content."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[MediaPacket | None] = asyncio.Queue(64)

    def produce() -> None:
        try:
            for packet in source.packets():
                asyncio.run_coroutine_threadsafe(queue.put(packet), loop).result()
        finally:
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    worker = loop.run_in_executor(None, produce)
    start = loop.time()
    first: int | None = None
    try:
        while (packet := await queue.get()) is not None:
            first = packet.time if first is None else first
            delay = start + (packet.time - first) / 1_000_000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            publisher.push(packet)
        tracks = len(source.info.tracks)
        for track in range(tracks):
            publisher.push(MediaPacket(track=track, data=b"", end=True))
        await worker
    except MediaError as exc:
        log.warning("local content stream ended: %s", exc)
    finally:
        publisher.close()
        source.close()
        _local_publishers.pop(publisher.content_id, None)
        _feeders.pop(publisher.content_id, None)


__all__ = [
    "AVRS_QUALITY_AUTO",
    "AVRS_QUALITY_FULL_HD",
    "AVRS_QUALITY_HD",
    "AVRS_QUALITY_LOW",
    "AVRS_QUALITY_SD",
    "AVRS_STREAM_INTERACTIVE",
    "AVRS_STREAM_LIVE",
    "AVRS_STREAM_VOD",
    "avrs_create_stream",
    "avrs_create_vod_session",
    "avrs_quality_t",
    "avrs_server_start_content_stream",
    "avrs_session_start_playback",
    "avrs_start_broadcasting",
    "avrs_stop_broadcasting",
    "avrs_stream_config_t",
    "avrs_stream_t",
    "avrs_stream_type_t",
    "avrs_stream_wait",
    "avrs_vod_config_t",
    "avrs_vod_session_t",
]
