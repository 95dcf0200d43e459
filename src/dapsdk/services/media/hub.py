"""The node's in-process media API: publishers push a signed content info and signed packets,
subscribers get the content info, the GOP-cached start, then live packets through a bounded
queue. The stream protocol, RTMP ingest, the VoD store, the HLS segmenter and WebSocket players
all meet here (contract: docs/architecture.md "Media hub").

Live rules, per content:

- **GOP cache**: the packets since the latest keyframe of every video track (audio whose time is at
  or after that keyframe's included), at most ``gop_cache_bytes``; audio-only contents keep the
  last ``audio_cache_us``. A subscriber's first video packet is therefore a keyframe.
- **Bounded subscribers**: a queue of at most ``subscriber_packets`` / ``subscriber_bytes``. A
  subscriber that falls behind is flushed and skipped ahead to the next keyframe (counted in
  ``skips`` / ``dropped``), so a slow reader never grows the node's memory or slows the others.
- **Deadline**: a live packet still queued ``live_deadline`` seconds after it arrived is dropped
  (with a skip to the next keyframe) instead of being delivered late.
- **max_bitrate**: measured over the media time of the last ``bitrate_window_us``; a publisher
  above it is refused with CONTENT_BITRATE_EXCEEDED and its live content ends.

Fan-out never re-encodes or re-signs: every subscriber gets the same :class:`MediaPacket` object
(with its signed envelope); the network side frames it once per subscriber (the per-session
handle differs).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from dapsdk.avrs.constants import NO_TIMESTAMP, MediaFlag
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.signing import AvrsSigner

from ..avrs_media import KIND_INFO, sign_media
from .model import ContentKind, MediaInfo, MediaPacket

MIB: Final = 1024 * 1024


class MediaError(Exception):
    """A media request refused with an AVRS code (``code``) and a reason."""

    def __init__(self, code: AvrsError, reason: str) -> None:
        super().__init__(f"{code.token}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HubConfig:
    max_bitrate: int = 10_000_000
    """bits/s of one content (``[avrs] max_bitrate``)."""
    gop_cache_bytes: int = 8 * MIB
    audio_cache_us: int = 1_000_000
    subscriber_packets: int = 1024
    subscriber_bytes: int = 12 * MIB
    live_deadline: float = 5.0
    bitrate_window_us: int = 4_000_000
    bitrate_min_span_us: int = 1_000_000
    """The rate is judged only once this much media time was seen (a keyframe alone is a burst)."""
    bitrate_tolerance: float = 1.25
    """Measured rate may exceed max_bitrate by this factor (encoders overshoot briefly)."""
    wait_timeout: float = 30.0
    """How long a subscriber waits for a publisher that has not started."""
    gop_cache: bool = True
    """Off: a joining subscriber waits for the next keyframe (``avrs bench join`` compares)."""


@dataclass(frozen=True, slots=True)
class SignedInfo:
    """A content info with the envelope that carried it and its verified signer."""

    info: MediaInfo
    envelope: bytes
    signer: bytes


class BitrateMeter:
    """Bits over media time in a sliding window (wall time would punish files sent fast)."""

    def __init__(self, window_us: int) -> None:
        self.window_us = window_us
        self._items: deque[tuple[int, int]] = deque()
        self._bits = 0

    def add(self, time_us: int, size: int) -> None:
        if time_us == NO_TIMESTAMP:
            return
        self._items.append((time_us, size * 8))
        self._bits += size * 8
        while self._items and self._items[0][0] < time_us - self.window_us:
            self._bits -= self._items.popleft()[1]

    def rate(self, min_span_us: int) -> float | None:
        if len(self._items) < 2:
            return None
        span = self._items[-1][0] - self._items[0][0]
        if span < min_span_us:
            return None
        return self._bits * 1_000_000 / span


class Subscription:
    """One subscriber of one content: await :meth:`wait_info`, then :meth:`get` until None."""

    def __init__(
        self,
        hub: MediaHub,
        content_id: bytes,
        *,
        rendition: str | None = None,
        max_packets: int,
        max_bytes: int,
        deadline: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.content_id = content_id
        self.rendition = rendition
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.clock = clock
        self.signed: SignedInfo | None = None
        self.tracks: set[int] = set()
        self._video: set[int] = set()
        self._queue: deque[MediaPacket] = deque()
        self._bytes = 0
        self._need_keyframe = True
        self._wake = asyncio.Event()
        self.ended = False
        self.closed = False
        self.delivered = 0
        self.dropped = 0
        """Packets dropped: overflow, past the deadline, or waiting for a keyframe."""
        self.skips = 0
        """Times the subscriber was skipped ahead to the next keyframe."""
        self.started_at = clock()

    # ------------------------------------------------------------------ hub side

    def _start(self, signed: SignedInfo, cache: list[MediaPacket], *, fresh: bool = False) -> None:
        """Begin with ``cache`` (the GOP-cached start, which already begins at a keyframe with
        its matching audio), or at the very first packet of a ``fresh`` content; otherwise at the
        next keyframe."""
        self.signed = signed
        info = signed.info
        self.tracks = info.tracks_for(self.rendition)
        self._video = {i for i in self.tracks if info.tracks[i].is_video}
        self._need_keyframe = not (fresh or cache)
        self._queue.clear()
        self._bytes = 0
        for packet in cache:
            self.offer(packet)
        self._wake.set()

    def offer(self, packet: MediaPacket) -> None:
        if self.closed or packet.track not in self.tracks:
            return
        if self._need_keyframe and not self._opens(packet):
            self.dropped += 1
            return
        if len(self._queue) >= self.max_packets or self._bytes + packet.size > self.max_bytes:
            self.dropped += len(self._queue)
            self._queue.clear()
            self._bytes = 0
            self.skips += 1
            self._need_keyframe = True
            if not self._opens(packet):
                self.dropped += 1
                return
        self._need_keyframe = False
        self._queue.append(packet)
        self._bytes += packet.size
        self._wake.set()

    def _opens(self, packet: MediaPacket) -> bool:
        """May the stream (re)start at this packet? At a video keyframe; audio-only at any."""
        if not self._video:
            return True
        return packet.track in self._video and packet.keyframe

    def _end(self) -> None:
        self.ended = True
        self._wake.set()

    # ------------------------------------------------------------------ subscriber side

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    async def wait_info(self, timeout: float | None = None) -> SignedInfo:
        """The content info; waits for a publisher that has not started yet. Raises MediaError
        CONTENT_UNAVAILBLE when none came within ``timeout`` (default ``wait_timeout``)."""
        limit = self.hub.config.wait_timeout if timeout is None else timeout
        end = self.clock() + limit
        while self.signed is None:
            if self.ended or self.closed:
                raise MediaError(AvrsError.CONTENT_UNAVAILBLE, "the content ended")
            remaining = end - self.clock()
            if remaining <= 0:
                raise MediaError(AvrsError.CONTENT_UNAVAILBLE, f"no publisher within {limit:g} s")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                continue
        return self.signed

    def get_nowait(self) -> MediaPacket | None:
        """The next deliverable packet, or None when none is queued (see :attr:`ended`)."""
        now = self.clock()
        while self._queue:
            packet = self._queue.popleft()
            self._bytes -= packet.size
            if (
                self.deadline is not None
                and packet.arrival
                and now - packet.arrival > self.deadline
            ):
                self.dropped += 1
                if not self._need_keyframe:
                    self.skips += 1
                self._need_keyframe = True
                continue
            if self._need_keyframe:
                if not self._opens(packet):
                    self.dropped += 1
                    continue
                self._need_keyframe = False
            self.delivered += 1
            return packet
        return None

    async def get(self, timeout: float | None = None) -> MediaPacket | None:
        """The next packet; None once the content ended (or the subscription closed) and the
        queue is empty. Raises TimeoutError after ``timeout`` without a packet."""
        loop_end = None if timeout is None else self.clock() + timeout
        while True:
            packet = self.get_nowait()
            if packet is not None:
                return packet
            if self.ended or self.closed:
                return None
            self._wake.clear()
            remaining = None if loop_end is None else loop_end - self.clock()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("no media packet in time")
            await asyncio.wait_for(self._wake.wait(), remaining)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._bytes = 0
        self._wake.set()
        self.hub._forget(self)


class LiveContent:
    """A live content while its publisher sends: content info, GOP cache, subscribers."""

    def __init__(
        self, hub: MediaHub, content_id: bytes, signed: SignedInfo, owner: bytes, source: str
    ) -> None:
        self.hub = hub
        self.content_id = content_id
        self.signed = signed
        self.owner = owner
        self.source = source
        self.subscribers: set[Subscription] = set()
        self.meter = BitrateMeter(hub.config.bitrate_window_us)
        self._recent: deque[MediaPacket] = deque()
        self._recent_bytes = 0
        self._last_key: dict[int, MediaPacket] = {}
        self._video = set(signed.info.video_tracks)
        self.ended = False
        self.ended_tracks: set[int] = set()
        self.refused: MediaError | None = None
        self.packets = 0
        self.bytes = 0
        self.started = time.time()
        self.last_arrival = 0.0

    @property
    def info(self) -> MediaInfo:
        return self.signed.info

    def bitrate(self) -> float | None:
        return self.meter.rate(self.hub.config.bitrate_min_span_us)

    def check(self, packet: MediaPacket) -> None:
        """Raise MediaError when this packet would take the content above max_bitrate."""
        if self.refused is not None:
            raise self.refused
        self.meter.add(packet.time, packet.size)
        rate = self.bitrate()
        limit = self.hub.config.max_bitrate
        if rate is not None and rate > limit * self.hub.config.bitrate_tolerance:
            self.refused = MediaError(
                AvrsError.CONTENT_BITRATE_EXCEEDED,
                f"{rate / 1000:.0f} kbit/s above max_bitrate {limit / 1000:.0f} kbit/s",
            )
            raise self.refused

    def push(self, packet: MediaPacket) -> None:
        """Cache and fan out one packet (already verified and bitrate-checked)."""
        if self.ended:
            return
        self.packets += 1
        self.bytes += packet.size
        self.last_arrival = packet.arrival
        self._cache(packet)
        for subscriber in tuple(self.subscribers):
            subscriber.offer(packet)

    def _cache(self, packet: MediaPacket) -> None:
        config = self.hub.config
        self._recent.append(packet)
        self._recent_bytes += packet.size
        if packet.track in self._video and packet.keyframe:
            self._last_key[packet.track] = packet
        if not self._video:
            newest = packet.time
            while self._recent and self._recent[0].time < newest - config.audio_cache_us:
                self._recent_bytes -= self._recent.popleft().size
            return
        if self._last_key and len(self._last_key) == len(self._video):
            oldest = min(self._last_key.values(), key=lambda p: p.time)
            while self._recent and self._recent[0] is not oldest:
                head = self._recent[0]
                if head.track not in self._video and head.shown + head.duration > oldest.shown:
                    break  # audio matching the keyframe: keep
                self._recent_bytes -= self._recent.popleft().size
        if self._recent_bytes > config.gop_cache_bytes:
            self._recent.clear()
            self._recent_bytes = 0
            self._last_key.clear()

    def cache_for(self, tracks: set[int]) -> list[MediaPacket]:
        """The GOP-cached start for a subscriber of ``tracks``."""
        if not self.hub.config.gop_cache:
            return []
        video = [t for t in tracks if t in self._video]
        if not video:
            return [p for p in self._recent if p.track in tracks]
        key = self._last_key.get(video[0])
        if key is None:
            return []
        result: list[MediaPacket] = []
        seen_key = False
        for packet in self._recent:
            if packet is key:
                seen_key = True
            if packet.track not in tracks:
                continue
            if packet.track in self._video:
                if seen_key:
                    result.append(packet)
            elif packet.shown + packet.duration > key.shown:
                result.append(packet)  # audio sounding at or after the keyframe is shown
        return result

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for subscriber in tuple(self.subscribers):
            subscriber._end()


ContentListener = Callable[[bytes, "LiveContent | None"], None]


class LivePublisher:
    """In-process publishing (RTMP ingest, transcoders): the node signs the info and every
    packet with its own key, so subscribers verify it like any publisher."""

    def __init__(self, hub: MediaHub, content_id: bytes, signer: AvrsSigner) -> None:
        self.hub = hub
        self.content_id = content_id
        self.signer = signer
        self._seq: dict[int, int] = {}
        self.live: LiveContent | None = None

    def start(self, info: MediaInfo, *, source: str = "local") -> LiveContent:
        envelope = sign_media(
            self.signer,
            self.content_id,
            0,
            0,
            info.encode(),
            now=time.time(),
            kind=KIND_INFO,
            version=2,
        )
        signed = SignedInfo(info, envelope, self.signer.identity)
        self.live = self.hub.start_live(
            self.content_id, signed, owner=self.signer.identity, source=source
        )
        return self.live

    def push(self, packet: MediaPacket) -> None:
        """Sign and publish one packet; raises MediaError (max_bitrate) and ends the content."""
        live = self.live
        if live is None or live.ended:
            raise MediaError(AvrsError.CONTENT_UNAVAILBLE, "publisher not started or ended")
        seq = self._seq.get(packet.track, 0)
        self._seq[packet.track] = (seq + 1) & 0xFFFFFFFF
        flags = MediaFlag.KEYFRAME if packet.keyframe else MediaFlag.NONE
        if packet.end:
            flags |= MediaFlag.END_OF_FLOW
        envelope = sign_media(
            self.signer, self.content_id, packet.track, seq, packet.data, now=time.time(),
            pts=packet.pts, dts=packet.dts, duration=packet.duration, flags=flags, version=2,
        )  # fmt: skip
        signed = replace(packet, seq=seq, envelope=envelope, arrival=self.hub.clock())
        self.hub.ingest(self.content_id, signed)

    def close(self) -> None:
        if self.live is not None:
            self.hub.end_live(self.content_id, self.live)


class MediaHub:
    """Live contents and their subscribers, plus the VoD source (``vod``) when the node has a
    store. One per node."""

    def __init__(
        self, config: HubConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or HubConfig()
        self.clock = clock
        self.lives: dict[bytes, LiveContent] = {}
        self._waiting: dict[bytes, set[Subscription]] = {}
        self.listeners: list[ContentListener] = []
        """Called with (content_id, live) when a live content starts, and (content_id, None)
        when it ends (the node updates the cluster directory; gateways start segmenters)."""

    # ------------------------------------------------------------------ publishing

    def start_live(
        self, content_id: bytes, signed: SignedInfo, *, owner: bytes, source: str = "stream"
    ) -> LiveContent:
        """Begin (or restart) a live content; current subscribers switch to it (their next
        video packet is a keyframe)."""
        if signed.info.kind != ContentKind.LIVE:
            raise MediaError(AvrsError.CONTENT_INFO_CORRUPTED, "not a live content info")
        self.check_info(signed.info)
        old = self.lives.get(content_id)
        subscribers = set(old.subscribers) if old is not None else set()
        if old is not None:
            old.subscribers.clear()
            old.ended = True
        live = LiveContent(self, content_id, signed, owner, source)
        self.lives[content_id] = live
        subscribers |= self._waiting.pop(content_id, set())
        for subscriber in subscribers:
            if subscriber.closed:
                continue
            live.subscribers.add(subscriber)
            subscriber._start(signed, [], fresh=True)
        self._notify(content_id, live)
        return live

    def check_info(self, info: MediaInfo) -> None:
        """Raise CONTENT_BITRATE_EXCEEDED when the declared bitrate is above max_bitrate."""
        declared = sum(t.bit_rate for t in info.tracks)
        if declared > self.config.max_bitrate * self.config.bitrate_tolerance:
            raise MediaError(
                AvrsError.CONTENT_BITRATE_EXCEEDED,
                f"declared {declared} bit/s above max_bitrate {self.config.max_bitrate}",
            )

    def ingest(self, content_id: bytes, packet: MediaPacket, *, checked: bool = False) -> None:
        """Check (max_bitrate, unless ``checked``) and fan out a packet of a live content.
        Raises MediaError (and ends the content when the bitrate is exceeded)."""
        live = self.lives.get(content_id)
        if live is None or live.ended:
            raise MediaError(AvrsError.CONTENT_UNAVAILBLE, "no live publisher for this content")
        if not checked:
            try:
                live.check(packet)
            except MediaError:
                self.end_live(content_id, live)
                raise
        live.push(packet)
        if packet.end:
            live.ended_tracks.add(packet.track)
            if len(live.ended_tracks) >= len(live.info.tracks):
                self.end_live(content_id, live)

    def end_live(self, content_id: bytes, live: LiveContent | None = None) -> None:
        current = self.lives.get(content_id)
        if current is None or (live is not None and current is not live):
            return
        del self.lives[content_id]
        current.end()
        self._notify(content_id, None)

    def _notify(self, content_id: bytes, live: LiveContent | None) -> None:
        for listener in tuple(self.listeners):
            listener(content_id, live)

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        content_id: bytes,
        *,
        rendition: str | None = None,
        max_packets: int | None = None,
        max_bytes: int | None = None,
        deadline: float | None = -1.0,
    ) -> Subscription:
        """Subscribe to a live content; before its publisher starts, the subscription waits
        (:meth:`Subscription.wait_info`). ``deadline`` None disables the late-drop rule."""
        subscription = Subscription(
            self,
            content_id,
            rendition=rendition,
            max_packets=max_packets or self.config.subscriber_packets,
            max_bytes=max_bytes or self.config.subscriber_bytes,
            deadline=self.config.live_deadline if deadline == -1.0 else deadline,
            clock=self.clock,
        )
        live = self.lives.get(content_id)
        if live is None or live.ended:
            self._waiting.setdefault(content_id, set()).add(subscription)
            return subscription
        live.subscribers.add(subscription)
        tracks = live.info.tracks_for(rendition)
        subscription._start(live.signed, live.cache_for(tracks))
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        live = self.lives.get(subscription.content_id)
        if live is not None:
            live.subscribers.discard(subscription)
        waiting = self._waiting.get(subscription.content_id)
        if waiting is not None:
            waiting.discard(subscription)
            if not waiting:
                del self._waiting[subscription.content_id]

    def stats(self) -> dict[str, object]:
        return {
            "live": len(self.lives),
            "subscribers": sum(len(live.subscribers) for live in self.lives.values()),
            "waiting": sum(len(s) for s in self._waiting.values()),
        }
