"""Live contents of the node's media hub, packaged by the gateway.

:class:`HubFeed` listens to :attr:`MediaHub.listeners <dapsdk.services.media.hub.MediaHub>`: when a
live content starts it declares it in the catalog with one rendition per H.264 video rendition of
its content info, and runs one hub subscription per rendition that feeds the rendition's
packager; when the content ends the renditions finish (playlists get ``#EXT-X-ENDLIST``, viewers'
sockets close). Packets arrive already verified by the media bridge; the publisher's clock is the
TIMESTAMP of the signed envelope, which the low-latency page and LL-HLS ``PROGRAM-DATE-TIME`` use
to show the delay behind the publisher. AVCC samples (``avcC`` extradata, as from MP4 or RTMP) go
through FFmpeg's ``h264_mp4toannexb`` bitstream filter first. Other codecs are not packaged yet
(counted in :attr:`HubFeed.skipped_tracks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from fractions import Fraction
from typing import Any

from av.bitstream import BitStreamFilterContext

from ..avrs.constants import NO_TIMESTAMP
from ..services.avrs_cluster import content_guuid
from ..services.avrs_media import parse_signed_media
from ..services.media.hub import LiveContent, MediaError, MediaHub
from ..services.media.model import MediaInfo, MediaPacket, open_setup, to_av_packet
from .content import ContentCatalog, ContentState, ContentType, RenditionPipeline
from .packager import MediaSample

log = logging.getLogger("dapsdk.gateway.hub")

#: Codec names of H.264 tracks (an encoder's output stream is named after the encoder).
H264_NAMES = frozenset({"h264", "libx264", "libopenh264", "h264_v4l2m2m", "h264_vaapi"})
#: Seconds a rendition's subscription waits for the content info.
INFO_TIMEOUT = 10.0


class AnnexB:
    """H.264 samples as the packager takes them: Annex B with SPS/PPS in band before every
    keyframe. AVCC samples (``avcC`` extradata) go through ``h264_mp4toannexb``; Annex B samples
    whose parameter sets are only in the extradata (an encoder with a global header) get the
    extradata put in front of each keyframe."""

    def __init__(self, info: MediaInfo, track: int) -> None:
        extradata = info.tracks[track].extradata
        self._prefix = (
            extradata if extradata[:3] == b"\0\0\1" or extradata[:4] == b"\0\0\0\1" else b""
        )
        self._container: Any = None
        self._bsf: BitStreamFilterContext | None = None
        self._stream: Any = None
        if extradata[:1] == b"\x01":  # an avcC record: samples are length-prefixed
            self._container = open_setup(info)
            self._stream = list(self._container.streams)[info.tracks[track].setup_index]
            self._bsf = BitStreamFilterContext("h264_mp4toannexb", self._stream)
        self._tb = Fraction(1, 1_000_000)

    def __call__(self, packet: MediaPacket) -> bytes:
        if self._bsf is None:
            return self._prefix + packet.data if packet.keyframe else packet.data
        out = b"".join(
            bytes(p) for p in self._bsf.filter(to_av_packet(packet, self._stream, self._tb))
        )
        return out

    def close(self) -> None:
        if self._container is not None:
            self._container.close()


class HubFeed:
    def __init__(self, catalog: ContentCatalog, hub: MediaHub) -> None:
        self.catalog = catalog
        self.hub = hub
        self.names: dict[bytes, tuple[str, ContentType]] = {}
        self.tasks: dict[bytes, list[asyncio.Task[None]]] = {}
        self.skipped_tracks = 0
        self.packets = 0
        hub.listeners.append(self._on_live)

    def name(self, name: str, type: ContentType = ContentType.LIVE) -> bytes:
        """Serve hub content ``content_guuid(name)`` under ``name`` (else its 32 hex digits)."""
        guuid = content_guuid(name)
        self.names[guuid] = (name, type)
        return guuid

    def close(self) -> None:
        if self._on_live in self.hub.listeners:
            self.hub.listeners.remove(self._on_live)
        for tasks in self.tasks.values():
            for task in tasks:
                task.cancel()
        self.tasks.clear()

    def _on_live(self, content_id: bytes, live: LiveContent | None) -> None:
        name, type = self.names.get(content_id, (content_id.hex(), ContentType.LIVE))
        if live is None:
            if name in self.catalog.contents:
                self.catalog.finish(name)
            return
        for task in self.tasks.pop(content_id, []):
            task.cancel()
        info = live.info
        self.catalog.remove(name)
        content = self.catalog.declare(name, type, title=info.title or name)
        content.state = ContentState.LIVE
        tasks = []
        for rendition in info.renditions:
            track = next(
                i for i, t in enumerate(info.tracks) if t.is_video and t.rendition == rendition
            )
            spec = info.tracks[track]
            if spec.codec not in H264_NAMES or spec.width < 16 or spec.height < 16:
                self.skipped_tracks += 1
                continue
            fps = float(spec.frame_rate) if spec.frame_rate else 30.0
            label = rendition if rendition and rendition != "source" else f"{spec.height}p"
            pipeline = self.catalog.add_rendition(
                name, label, width=spec.width, height=spec.height, fps=fps
            )
            tasks.append(
                asyncio.get_running_loop().create_task(
                    self._pump(content_id, rendition, track, info, pipeline)
                )
            )
        self.tasks[content_id] = tasks

    async def _pump(
        self,
        content_id: bytes,
        rendition: str,
        track: int,
        info: MediaInfo,
        pipeline: RenditionPipeline,
    ) -> None:
        sub = self.hub.subscribe(content_id, rendition=rendition)
        annexb = None
        try:
            await sub.wait_info(INFO_TIMEOUT)
            annexb = AnnexB(info, track)
            while (packet := await sub.get()) is not None:
                if packet.track != track or not packet.data or packet.pts == NO_TIMESTAMP:
                    continue
                published_at = time.time()
                signed = parse_signed_media(packet.envelope) if packet.envelope else None
                if signed is not None and signed.timestamp_ms is not None:
                    published_at = signed.timestamp_ms / 1000.0
                dts = packet.dts if packet.dts != NO_TIMESTAMP else packet.pts
                data = annexb(packet)
                if not data:
                    continue
                self.packets += 1
                pipeline.push(
                    MediaSample(data, packet.pts / 1e6, dts / 1e6, packet.keyframe, published_at)
                )
        except MediaError as exc:
            log.info("rendition %s of %s: %s", rendition, content_id.hex(), exc)
        finally:
            sub.close()
            if annexb is not None:
                with contextlib.suppress(Exception):
                    annexb.close()
