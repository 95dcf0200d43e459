"""What the gateway serves: contents, each with renditions that package samples for HLS and for
the low-latency WebSocket mode.

A :class:`RenditionPipeline` owns one :class:`~.packager.Fmp4Packager` and one
:class:`~.hls.HlsRendition`, and fans every packaged chunk out to low-latency subscribers
(:class:`LiveSubscriber`, a bounded queue each). The :class:`ContentCatalog` is the gateway's view
of the node's contents (id, type, state, viewers) and what the REST API, the metrics and the pages
read.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from dapsdk.services.avrs_cluster import content_guuid

from .hls import HlsRendition, HlsTimings
from .packager import Chunk, Fmp4Packager, MediaSample, PackagerError

log = logging.getLogger("dapsdk.gateway.content")

#: Chunks queued for one low-latency subscriber before it is cut back to the next keyframe.
SUBSCRIBER_QUEUE = 90


class ContentType(enum.StrEnum):
    LIVE = "live"
    VOD = "vod"
    INTERACTIVE = "interactive"


class ContentState(enum.StrEnum):
    WAITING = "waiting"
    """Declared, no media yet."""
    LIVE = "live"
    READY = "ready"
    """VoD packaged and playable."""
    ENDED = "ended"


@dataclass(slots=True, eq=False)
class LiveSubscriber:
    """A low-latency viewer: a bounded queue of chunks. A viewer that falls
    :data:`SUBSCRIBER_QUEUE` chunks behind loses its queue and resumes at the next keyframe
    (counted in :attr:`skipped`)."""

    queue: asyncio.Queue[Chunk | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE)
    )
    waiting_keyframe: bool = True
    skipped: int = 0

    def offer(self, chunk: Chunk) -> None:
        if self.waiting_keyframe:
            if not chunk.keyframe:
                return
            self.waiting_keyframe = False
        try:
            self.queue.put_nowait(chunk)
        except asyncio.QueueFull:
            self.skipped += 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.waiting_keyframe = True

    def close(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class RenditionPipeline:
    """Samples in; init segment, HLS parts/segments and low-latency chunks out."""

    def __init__(
        self,
        name: str,
        *,
        width: int,
        height: int,
        fps: float = 30.0,
        live: bool = True,
        timings: HlsTimings | None = None,
    ) -> None:
        self.name = name
        self.fps = fps
        self.packager = Fmp4Packager(width=width, height=height, fps=fps)
        self.hls = HlsRendition(name, width=width, height=height, live=live, timings=timings)
        self.subscribers: set[LiveSubscriber] = set()
        self.samples = 0
        self.bytes_in = 0
        self.last_published_at: float | None = None
        self.last_packaged_lag = 0.0
        """Seconds between a sample's publication and its chunk leaving the muxer."""

    def push(self, sample: MediaSample) -> None:
        self.samples += 1
        self.bytes_in += len(sample.data)
        self.last_published_at = sample.published_at
        try:
            chunks = self.packager.push(sample)
        except (PackagerError, ValueError) as exc:
            log.warning("rendition %s dropped a sample: %s", self.name, exc)
            return
        self._emit(chunks)

    def finish(self) -> None:
        self._emit(self.packager.finish())
        self.hls.end()
        for sub in list(self.subscribers):
            sub.close()

    def _emit(self, chunks: Iterable[Chunk]) -> None:
        if self.packager.init is not None and self.hls.init is None:
            self.hls.set_init(self.packager.init)
        for chunk in chunks:
            self.last_packaged_lag = max(0.0, time.time() - chunk.published_at)
            self.hls.add(chunk)
            for sub in self.subscribers:
                sub.offer(chunk)

    def subscribe(self) -> LiveSubscriber:
        sub = LiveSubscriber()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: LiveSubscriber) -> None:
        self.subscribers.discard(sub)


@dataclass(slots=True)
class GatewayContent:
    id: str
    type: ContentType
    title: str = ""
    state: ContentState = ContentState.WAITING
    renditions: dict[str, RenditionPipeline] = field(default_factory=dict)
    viewers: int = 0
    """Viewers watching through the gateway now (HLS sessions seen recently + WebSockets)."""
    stream_viewers: int = 0
    """Viewers on the AVRS stream protocol (reported by the node's services)."""
    created_at: float = field(default_factory=time.time)
    hls_sessions: dict[str, float] = field(default_factory=dict)
    """HLS viewer id -> last request time (bounded by :data:`MAX_HLS_SESSIONS`)."""

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "type": str(self.type),
            "state": str(self.state),
            "viewers": self.viewers + self.stream_viewers,
            "title": self.title,
            "renditions": [
                {
                    "name": r.name,
                    "width": r.hls.width,
                    "height": r.hls.height,
                    "bandwidth": r.hls.bandwidth,
                    "codecs": r.hls.codecs,
                }
                for r in self.renditions.values()
            ],
        }


#: HLS viewers remembered per content (identified by a query parameter the watch page sets).
MAX_HLS_SESSIONS = 10_000
#: An HLS viewer counts as watching for this long after its last request (seconds).
HLS_SESSION_IDLE = 10.0


class ContentCatalog:
    """The contents this gateway serves."""

    def __init__(self, *, timings: HlsTimings | None = None) -> None:
        self.contents: dict[str, GatewayContent] = {}
        self.timings = timings or HlsTimings()
        self.ws_viewers = 0

    def declare(self, content_id: str, type: ContentType, *, title: str = "") -> GatewayContent:
        content = self.contents.get(content_id)
        if content is None:
            content = GatewayContent(content_id, type, title=title or content_id)
            self.contents[content_id] = content
        return content

    def add_rendition(
        self,
        content_id: str,
        name: str,
        *,
        width: int,
        height: int,
        fps: float = 30.0,
    ) -> RenditionPipeline:
        content = self.contents[content_id]
        pipeline = RenditionPipeline(
            name,
            width=width,
            height=height,
            fps=fps,
            live=content.type is not ContentType.VOD,
            timings=self.timings,
        )
        content.renditions[name] = pipeline
        return pipeline

    def push(self, content_id: str, rendition: str, sample: MediaSample) -> None:
        content = self.contents[content_id]
        content.renditions[rendition].push(sample)
        if content.state is ContentState.WAITING and content.type is not ContentType.VOD:
            content.state = ContentState.LIVE

    def finish(self, content_id: str) -> None:
        content = self.contents[content_id]
        for pipeline in content.renditions.values():
            pipeline.finish()
        content.state = (
            ContentState.READY if content.type is ContentType.VOD else ContentState.ENDED
        )

    def remove(self, content_id: str) -> None:
        """End a content and forget it (its viewers' sockets close)."""
        content = self.contents.pop(content_id, None)
        if content is None:
            return
        for pipeline in content.renditions.values():
            if not pipeline.packager.closed:
                pipeline.finish()

    def get(self, content_id: str) -> GatewayContent | None:
        """The content a URL names: by the id it is listed under, or by the name its publisher
        used (the RTMP stream key, ``avrs publish --content NAME``), whose wire id is derived as
        docs/avrs-protocol.md §11 says."""
        content = self.contents.get(content_id)
        if content is None and content_id:
            try:
                content = self.contents.get(content_guuid(content_id).hex())
            except ValueError:
                return None
        return content

    def touch_hls(self, content: GatewayContent, viewer: str, now: float) -> None:
        """Record an HLS request from ``viewer``; refresh the content's viewer count."""
        if viewer and (
            viewer in content.hls_sessions or len(content.hls_sessions) < MAX_HLS_SESSIONS
        ):
            content.hls_sessions[viewer] = now
        stale = [v for v, t in content.hls_sessions.items() if now - t > HLS_SESSION_IDLE]
        for v in stale:
            del content.hls_sessions[v]
        ws = sum(len(r.subscribers) for r in content.renditions.values())
        content.viewers = len(content.hls_sessions) + ws

    def refresh_viewers(self, now: float) -> None:
        for content in self.contents.values():
            self.touch_hls(content, "", now)

    def list(self) -> list[GatewayContent]:
        return list(self.contents.values())
