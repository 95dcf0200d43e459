"""Publishing a :mod:`source <.source>` into a node over the stream protocol: declare the content
(cluster CONTENT_ADD with one flow per track), attach it for input, START/SYNC, send the signed
content info, then every packet in a signed-media envelope, then a signed END_OF_FLOW per track.

The blocking source (demuxing, live encoding, sealing) runs in a worker thread that feeds a
bounded queue; the event loop paces (real time by default, by dts), signs each packet as it sends
it (so the envelope's TIMESTAMP is the ingest time) and waits on the content channel's high-water
mark, so nothing queues without bound. A refusal the node sends back
(CONTENT_BITRATE_EXCEEDED, SIGN_ALIEN, ...) stops publishing with :class:`PublishRefused`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from dapsdk.avrs.constants import NO_TIMESTAMP, AvrsChannel, ContentFlag, MediaFlag
from dapsdk.avrs.errors import code_token
from dapsdk.avrs.packets import Reply
from dapsdk.avrs.signing import AvrsSigner
from dapsdk.stream.channel_key import ChannelKey

from ..avrs_client import AvrsClient
from ..avrs_media import KIND_INFO, sign_media
from .hub import SignedInfo
from .model import ContentKind, MediaInfo, MediaPacket
from .source import FileSource
from .store import VodItem, VodStore

#: Packets signed ahead of sending.
QUEUE_PACKETS = 64


class Source(Protocol):
    info: MediaInfo

    def packets(self) -> Iterator[MediaPacket]: ...
    def close(self) -> None: ...


class PublishRefused(Exception):
    def __init__(self, reply: Reply) -> None:
        detail = reply.arg(0xFFF2)
        self.code = reply.code
        self.token = code_token(reply.code)
        super().__init__(
            f"{self.token}: {detail.decode('utf-8', 'replace')}" if detail else self.token
        )


@dataclass(slots=True)
class PublishStats:
    packets: int = 0
    bytes: int = 0
    media_us: int = 0
    seconds: float = 0.0
    first_sent: float = 0.0
    """Wall time (time.time()) the first media packet was sent."""


def sign_packet(signer: AvrsSigner, content_id: bytes, packet: MediaPacket) -> MediaPacket:
    flags = MediaFlag.KEYFRAME if packet.keyframe else MediaFlag.NONE
    if packet.end:
        flags |= MediaFlag.END_OF_FLOW
    envelope = sign_media(
        signer, content_id, packet.track, packet.seq, packet.data, now=time.time(),
        pts=packet.pts, dts=packet.dts, duration=packet.duration, flags=flags, version=2,
    )  # fmt: skip
    return replace(packet, envelope=envelope)


def info_envelope(signer: AvrsSigner, content_id: bytes, info: MediaInfo) -> bytes:
    return sign_media(
        signer, content_id, 0, 0, info.encode(), now=time.time(), kind=KIND_INFO, version=2
    )


async def publish(
    client: AvrsClient,
    cluster_id: bytes,
    content_id: bytes,
    source: Source,
    *,
    realtime: bool = True,
    declare: bool = True,
    on_packet: Callable[[MediaPacket], None] | None = None,
    content_key: ChannelKey | None = None,
) -> PublishStats:
    """Publish ``source`` as ``content_id``; returns when every packet was sent. With
    ``content_key`` the media bytes are sealed inside the (still signed) envelopes."""
    info = source.info
    if content_key is not None:
        info = replace(info, encrypted=True)
    if declare:
        await client.add_content(
            cluster_id, content_id, info.flows(),
            codecs=[t.codec for t in info.tracks], title=info.title,
        )  # fmt: skip
    handle = await client.attach(cluster_id, content_id, ContentFlag.STREAMING_IN)
    await client.start()
    signer = client.signer
    seqs = [0] * len(info.tracks)
    seqs[0] = 1
    client.send_content(handle, 0, info_envelope(signer, content_id, info), seq=0)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[MediaPacket | None] = asyncio.Queue(QUEUE_PACKETS)
    stop = threading.Event()

    def produce() -> None:
        try:
            for packet in source.packets():
                if stop.is_set():
                    return
                seq = seqs[packet.track]
                seqs[packet.track] = (seq + 1) & 0xFFFFFFFF
                if content_key is not None:
                    sealed = content_key.seal(AvrsChannel.CONTENT, packet.track, packet.data)
                    packet = replace(packet, data=sealed)
                asyncio.run_coroutine_threadsafe(queue.put(replace(packet, seq=seq)), loop).result()
            for track in range(len(info.tracks)):
                end = MediaPacket(track=track, data=b"", end=True, seq=seqs[track])
                asyncio.run_coroutine_threadsafe(queue.put(end), loop).result()
        finally:
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    worker = loop.run_in_executor(None, produce)
    stats = PublishStats()
    started = time.monotonic()
    first_time: int | None = None
    channel = client.channels[AvrsChannel.CONTENT]
    try:
        while (packet := await queue.get()) is not None:
            if client.content_errors:
                raise PublishRefused(client.content_errors[0])
            if realtime and packet.data:
                if first_time is None:
                    first_time = packet.time
                due = started + (packet.time - first_time) / 1_000_000
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            # signed when sent: the envelope's TIMESTAMP is the ingest time (latency behind live)
            packet = sign_packet(signer, content_id, packet)
            flags = MediaFlag.KEYFRAME if packet.keyframe else MediaFlag.NONE
            if packet.end:
                flags |= MediaFlag.END_OF_FLOW
            client.send_content(handle, packet.track, packet.envelope, pts=packet.pts,
                                dts=packet.dts, flags=flags, seq=packet.seq)  # fmt: skip
            if not stats.packets:
                stats.first_sent = time.time()
            stats.packets += 1
            stats.bytes += len(packet.data)
            if packet.data:
                stats.media_us = max(stats.media_us, packet.time + packet.duration)
            if on_packet is not None:
                on_packet(packet)
            await channel.drain()
        await worker
    finally:
        stop.set()
        while not worker.done():
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.01)
        source.close()
    stats.seconds = time.monotonic() - started
    # Control overtakes queued media, so first let the content channel empty; then STOP's
    # answer comes after any refusal of our packets (one ordered retcode channel).
    deadline = time.monotonic() + 30
    while channel.is_active and channel.queued_bytes and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await client.stop()
    if client.content_errors:
        raise PublishRefused(client.content_errors[0])
    return stats


def import_file(
    store: VodStore,
    url: str,
    name: str,
    signer: AvrsSigner,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    content_key: ChannelKey | None = None,
    source: Any = None,
) -> VodItem:
    """Import a file straight into a node's VoD store (no node running): signed by ``signer``
    (the node's identity). ``on_progress(done_us, total_us)`` after each packet."""
    from ..avrs_cluster import content_guuid

    if source is None:  # else a TranscodedSource (ladder, formats) made by the caller
        source = FileSource(url, kind=ContentKind.VOD)
    info = replace(source.info, title=name, encrypted=content_key is not None)
    content_id = content_guuid(name)
    writer = store.writer(
        content_id, name, SignedInfo(info, info_envelope(signer, content_id, info), signer.identity)
    )
    seqs = [0] * len(info.tracks)
    seqs[0] = 1
    origin: int | None = None
    try:
        for packet in source.packets():
            seq = seqs[packet.track]
            seqs[packet.track] = seq + 1
            if content_key is not None:
                sealed = content_key.seal(AvrsChannel.CONTENT, packet.track, packet.data)
                packet = replace(packet, data=sealed)
            writer.add(sign_packet(signer, content_id, replace(packet, seq=seq)))
            if on_progress is not None and packet.time != NO_TIMESTAMP:
                origin = packet.time if origin is None else origin
                on_progress(packet.time - origin, info.duration_us)
        for track in range(len(info.tracks)):
            writer.add(MediaPacket(track=track, data=b"", end=True))
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        source.close()
