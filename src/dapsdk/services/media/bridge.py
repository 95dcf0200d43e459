"""The stream protocol side of the media hub: content packets from publishers into the
:class:`~.hub.MediaHub`, and one delivery task per subscribed session out of it.

In: the first content callback of the node verifies every signed-media envelope (version 2)
before anything else sees it: the signature, the signer (the content's owner), the envelope's
content and flow against the outer packet, then a content info (CONTENT_INFO_CORRUPTED when it
does not parse or its setup does not match its tracks) or the bitrate (CONTENT_BITRATE_EXCEEDED).
Refusals go back to the publisher as content retcodes. A payload that is not a version-2 envelope
is relayed as before (opaque, to every synchronised subscriber) unless the content has a media
info, in which case it is CONTENT_CORRUPTED.

Out: on SYNC each STREAMING_OUT content of the session gets a task that sends the content info,
then the packets (GOP-cached start for live, from the keyframe at or before START_POSITION for
VoD), then one empty END_OF_FLOW packet per track. The task waits while the session's content
channel is above its high-water mark; a live subscriber falling behind is skipped ahead by its
bounded hub queue. STOP pauses (VoD resumes at the next packet, or at a new START_POSITION).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from dapsdk.avrs.constants import (
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    MediaFlag,
    SessionArg,
    SessionOp,
)
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError
from dapsdk.avrs.events import (
    AvrsEvent,
    ClusterRequestReceived,
    ContentDetached,
    ContentReceived,
    SessionStateChanged,
    StreamControl,
)
from dapsdk.avrs.packets import ContentPacket
from dapsdk.avrs.permissions import SUBSCRIBE
from dapsdk.avrs.sessions import SessionContent
from dapsdk.avrs.state import SessionState
from dapsdk.stream.errors import DapError

from ..avrs_media import KIND_INFO, SignedMedia, parse_signed_media
from .hub import MediaError, MediaHub, SignedInfo
from .model import ContentKind, MediaInfo, MediaPacket, open_setup
from .store import VodStore, VodWriter

if TYPE_CHECKING:
    from dapsdk.avrs.connection import AvrsConnection

    from ..avrs_channels import AvrsBinding, AvrsService

log = logging.getLogger("dapsdk.media.bridge")

_STREAMING = (SessionState.SYNCED, SessionState.STREAMING)


class MediaSource(Protocol):
    """What a delivery reads: a live :class:`~.hub.Subscription` or a VoD reader."""

    async def wait_info(self, timeout: float | None = None) -> SignedInfo: ...
    async def get(self, timeout: float | None = None) -> MediaPacket | None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class _Start:
    position: int | None = None
    rendition: str | None = None


def check_info(signed: SignedMedia) -> MediaInfo:
    """Decode a content info envelope's payload and check its setup; raises AvrsProtocolError
    CONTENT_INFO_CORRUPTED."""
    info = MediaInfo.decode(signed.media)
    open_setup(info).close()
    return info


class MediaBridge:
    def __init__(self, service: AvrsService, hub: MediaHub, vod: VodStore | None = None) -> None:
        self.service = service
        self.hub = hub
        self.vod = vod
        self._verified: tuple[ContentPacket, SignedMedia, MediaInfo | None] | None = None
        self._starts: dict[int, _Start] = {}
        self._tasks: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._resume: dict[tuple[int, int], int] = {}
        self._imports: dict[bytes, tuple[int, VodWriter]] = {}
        """content id -> (id of the importing binding, its writer)."""
        self._publishers: dict[bytes, int] = {}
        """content id -> id of the binding publishing it."""
        self.refused = 0
        service.content_callbacks.add(self.check_content)
        service.media_handler = self.handle_content
        service.listeners.append(self.on_event)

    # ------------------------------------------------------------------ in

    def check_content(
        self, conn: AvrsConnection, slot: SessionContent, packet: ContentPacket, _size: int
    ) -> int:
        """The content callback: verify before anything acts on the packet."""
        self._verified = None
        content = slot.content
        signed = parse_signed_media(packet.payload)
        live = self.hub.lives.get(content.content_id)
        if signed is None or signed.version < 2:
            if live is not None:
                return self._refuse(AvrsError.CONTENT_CORRUPTED)
            return int(AvrsError.SUCCESS)  # opaque relay (legacy, end-to-end sealed payloads)
        if signed.content_id != content.content_id or signed.flow_id != packet.flow_id:
            return self._refuse(AvrsError.CONTENT_CORRUPTED)
        if not signed.verify():
            return self._refuse(AvrsError.SIGN_INCORRECT)
        if signed.signer != content.owner:
            return self._refuse(AvrsError.SIGN_ALIEN)
        info: MediaInfo | None = None
        if signed.kind == KIND_INFO:
            try:
                info = check_info(signed)
            except AvrsProtocolError as exc:
                log.info("content info refused: %s", exc.reason)
                return self._refuse(exc.code)
            if len(info.tracks) > len(content.flows):
                return self._refuse(AvrsError.CONTENT_INFO_CORRUPTED)
            try:
                self.hub.check_info(info)
            except MediaError as exc:
                return self._refuse(exc.code)
        elif live is None:
            if not self._vod_accepts(content.content_id):
                return self._refuse(AvrsError.CONTENT_UNAVAILBLE)  # no content info yet
        else:
            try:
                live.check(_media_packet(signed, self.hub.clock()))
            except MediaError as exc:
                self.hub.end_live(content.content_id, live)
                return self._refuse(exc.code)
        self._verified = (packet, signed, info)
        return int(AvrsError.SUCCESS)

    def _refuse(self, code: AvrsError) -> int:
        self.refused += 1
        return int(code)

    def handle_content(self, binding: AvrsBinding, event: ContentReceived) -> bool:
        """Called by the service for an accepted content packet; True when the hub took it
        (False: relay it the legacy way)."""
        verified, self._verified = self._verified, None
        if verified is None or verified[0] is not event.packet:
            return False
        _packet, signed, info = verified
        content_id = event.content_id
        if info is not None:
            if info.kind == ContentKind.VOD and self.vod is not None:
                return self._vod_info(binding, content_id, signed, info)
            session = binding.conn.session
            try:
                self.hub.start_live(
                    content_id,
                    SignedInfo(info, signed.data, signed.signer or b""),
                    owner=signed.signer or b"",
                    source=f"stream {binding.stream.id}"
                    + ("" if session is None else f" session {session.session_id.hex()[:8]}"),
                )
            except MediaError as exc:
                log.info("live content refused: %s", exc)
                return True
            self._publishers[content_id] = id(binding)
            return True
        if self.hub.lives.get(content_id) is None:
            return self._vod_packet(content_id, signed)
        try:
            self.hub.ingest(content_id, _media_packet(signed, self.hub.clock()), checked=True)
        except MediaError:
            pass  # already refused by check_content on the same packet
        return True

    def _vod_info(
        self, binding: AvrsBinding, content_id: bytes, signed: SignedMedia, info: MediaInfo
    ) -> bool:
        """A VoD content info: start importing into the store (replacing an unfinished one)."""
        assert self.vod is not None
        old = self._imports.pop(content_id, None)
        if old is not None:
            old[1].abort()
        writer = self.vod.writer(
            content_id, info.title or content_id.hex(),
            SignedInfo(info, signed.data, signed.signer or b""),
        )  # fmt: skip
        self._imports[content_id] = (id(binding), writer)
        return True

    def _vod_packet(self, content_id: bytes, signed: SignedMedia) -> bool:
        entry = self._imports.get(content_id)
        if entry is None:
            return False
        writer = entry[1]
        writer.add(_media_packet(signed, 0.0))
        if writer.complete:
            del self._imports[content_id]
            item = writer.commit()
            log.info("VoD %s imported: %d packets, %d segments", item.name, len(item.packets),
                     len(item.segments))  # fmt: skip
        return True

    def _vod_accepts(self, content_id: bytes) -> bool:
        """Whether a VoD import of ``content_id`` is in progress."""
        return content_id in self._imports

    def _abort_imports(self, key: int) -> None:
        for content_id, (owner, writer) in list(self._imports.items()):
            if owner == key:
                del self._imports[content_id]
                writer.abort()

    # ------------------------------------------------------------------ out

    def on_event(self, binding: AvrsBinding, event: AvrsEvent) -> None:
        key = id(binding)
        if isinstance(event, StreamControl):
            if event.op == SessionOp.START:
                position = event.args.sint(SessionArg.START_POSITION, 8, required=False)
                rendition = event.args.text(SessionArg.RENDITION, 32, required=False)
                self._starts[key] = _Start(position, rendition)
            elif event.op == SessionOp.SYNC:
                self._start_deliveries(binding)
        elif isinstance(event, ContentDetached):
            self._cancel(key, event.handle, forget=True)
            self._end_publisher(binding, event.content_id)
        elif isinstance(event, ClusterRequestReceived) and event.op == ClusterOp.CONTENT_DEL:
            content_id = event.args.get(ClusterArg.CONTENT_ID)
            directory = self.service.directory
            if (
                content_id is not None
                and self.vod is not None
                and content_id not in directory.info.contents
                and self.vod.remove(content_id)
            ):
                log.info("VoD %s removed", content_id.hex())
        elif isinstance(event, SessionStateChanged):
            if event.new not in _STREAMING:
                for task_key in [k for k in self._tasks if k[0] == key]:
                    self._cancel(*task_key, forget=event.new is not SessionState.CONTENT_SELECTED)
                for content_id, publisher in list(self._publishers.items()):
                    if publisher == key:
                        self._end_publisher(binding, content_id)
                self._abort_imports(key)
            if event.new in (SessionState.CLOSED, SessionState.ERROR):
                self._starts.pop(key, None)
                for resume_key in [k for k in self._resume if k[0] == key]:
                    del self._resume[resume_key]

    def _end_publisher(self, binding: AvrsBinding, content_id: bytes) -> None:
        if self._publishers.get(content_id) == id(binding):
            del self._publishers[content_id]
            self.hub.end_live(content_id)

    def _cancel(self, key: int, handle: int, *, forget: bool) -> None:
        task = self._tasks.pop((key, handle), None)
        if task is not None:
            task.cancel()
        if forget:
            self._resume.pop((key, handle), None)

    def _start_deliveries(self, binding: AvrsBinding) -> None:
        session = binding.conn.session
        if session is None:
            return
        start = self._starts.pop(id(binding), _Start())
        for slot in list(session.contents.values()):
            if not slot.streams_output:
                continue
            key = (id(binding), slot.handle)
            if key in self._tasks:
                continue
            index = None if start.position is not None else self._resume.pop(key, None)
            if start.position is not None:
                self._resume.pop(key, None)
            source = self._open(slot.content.content_id, start, index)
            task = asyncio.get_running_loop().create_task(
                self._deliver(binding, slot, source), name=f"media-delivery-{key}"
            )
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._done, key))

    def _done(self, key: tuple[int, int], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    def _open(self, content_id: bytes, start: _Start, index: int | None) -> MediaSource:
        if self.vod is not None and content_id not in self.hub.lives and self.vod.has(content_id):
            return self.vod.open_reader(
                content_id, start_us=start.position, index=index, rendition=start.rendition
            )
        return self.hub.subscribe(content_id, rendition=start.rendition)

    async def _deliver(
        self, binding: AvrsBinding, slot: SessionContent, source: MediaSource
    ) -> None:
        key = (id(binding), slot.handle)
        tracks = 0
        try:
            signed = await source.wait_info()
            session = binding.conn.session
            visible = self.service.directory.visible_to(
                None if session is None else session.session_id
            )
            if slot.content.content_id not in visible.contents:
                # attached with WAIT before it existed: the grants must allow it now
                raise MediaError(AvrsError.CONTENT_NOT_FOUND, "not visible to this session")
            tracks = len(signed.info.tracks)
            self._send(binding, ContentPacket(slot.handle, 0, 0, signed.envelope,
                                              flags=MediaFlag.DISCONTINUITY))  # fmt: skip
            while True:
                packet = await source.get()
                if packet is None:
                    break
                if not binding.service.allowed(binding, slot.content.content_id, SUBSCRIBE):
                    return  # membership or grant ended (issue 8): the service ends the session
                flags = MediaFlag.KEYFRAME if packet.keyframe else MediaFlag.NONE
                if packet.end:
                    flags |= MediaFlag.END_OF_FLOW
                self._send(binding, ContentPacket(slot.handle, packet.track, packet.seq,
                                                  packet.envelope, packet.pts, packet.dts, flags))  # fmt: skip
                index = getattr(source, "index", None)
                if index is not None:
                    self._resume[key] = index
                await self._drain(binding)
            self._resume.pop(key, None)
        except MediaError as exc:
            log.info("delivery of %s ended: %s", slot.content.content_id.hex(), exc)
        except (AvrsProtocolError, DapError, ConnectionError):
            return  # the session stopped or the stream closed
        finally:
            source.close()
        try:
            for track in range(max(tracks, 1)):
                self._send(binding, ContentPacket(slot.handle, track, 0, b"",
                                                  flags=MediaFlag.END_OF_FLOW))  # fmt: skip
        except (AvrsProtocolError, DapError):
            pass

    def _send(self, binding: AvrsBinding, packet: ContentPacket) -> None:
        binding.conn.send_content(packet)
        binding.transmit()

    async def _drain(self, binding: AvrsBinding) -> None:
        channel = binding.channels.get(AvrsChannel.CONTENT)
        if channel is not None and channel.is_active:
            await channel.drain()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


def _media_packet(signed: SignedMedia, arrival: float) -> MediaPacket:
    return MediaPacket(
        track=signed.flow_id,
        data=signed.media,
        pts=signed.pts,
        dts=signed.dts,
        duration=signed.duration,
        keyframe=bool(signed.flags & MediaFlag.KEYFRAME),
        seq=signed.seq,
        envelope=signed.data,
        end=bool(signed.flags & MediaFlag.END_OF_FLOW),
        arrival=arrival,
    )
