"""Media that AVRS publishers send into this node, packaged by the gateway.

The node's :class:`~dapsdk.services.avrs_channels.AvrsService` fans every accepted content packet
out to its AVRS viewers and then tells its listeners; :class:`AvrsFeed` is such a listener. For a
content bound with :meth:`AvrsFeed.bind`, each flow is one rendition (flow index -> rendition
spec). A payload in the signed-media envelope is verified (signature, and the signer must be the
content's owner) and its TIMESTAMP is the publisher's wall clock, which the low-latency page and
LL-HLS ``PROGRAM-DATE-TIME`` use to show the delay behind the publisher. A packet that fails the
check is dropped and counted in :attr:`AvrsFeed.rejected`.

:func:`publisher_sink` is the other end: it turns encoded samples into signed content packets on
a publishing :class:`~dapsdk.services.avrs_client.AvrsClient`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..avrs.constants import NO_TIMESTAMP, MediaFlag
from ..avrs.events import AvrsEvent, ContentReceived
from ..services.avrs_cluster import content_guuid
from ..services.avrs_media import parse_signed_media, sign_media
from .content import ContentCatalog, ContentType
from .packager import MediaSample
from .testsrc import RenditionSpec

if TYPE_CHECKING:
    from ..services.avrs_channels import AvrsBinding, AvrsService
    from ..services.avrs_client import AvrsClient

log = logging.getLogger("dapsdk.gateway.feed")

#: Flow letters of a content whose flows are video renditions (flow i = rendition i).
RENDITION_FLOWS = "vwxyzrstu"


@dataclass(frozen=True, slots=True)
class _Binding:
    name: str
    flows: dict[int, str]


class AvrsFeed:
    def __init__(self, catalog: ContentCatalog, service: AvrsService) -> None:
        self.catalog = catalog
        self.service = service
        self.bound: dict[bytes, _Binding] = {}
        self.accepted = 0
        self.rejected = 0
        service.listeners.append(self._on_event)

    def bind(
        self,
        name: str,
        ladder: Sequence[RenditionSpec],
        *,
        type: ContentType = ContentType.LIVE,
        title: str = "",
        fps: float = 30.0,
    ) -> bytes:
        """Package content ``name``: flow ``i`` carries rendition ``ladder[i]``. Returns the
        content GUUID."""
        if not ladder or len(ladder) > len(RENDITION_FLOWS):
            raise ValueError(f"need 1..{len(RENDITION_FLOWS)} renditions")
        self.catalog.declare(name, type, title=title)
        for spec in ladder:
            self.catalog.add_rendition(
                name, spec.name, width=spec.width, height=spec.height, fps=fps
            )
        guuid = content_guuid(name)
        self.bound[guuid] = _Binding(name, {i: spec.name for i, spec in enumerate(ladder)})
        return guuid

    def close(self) -> None:
        if self._on_event in self.service.listeners:
            self.service.listeners.remove(self._on_event)

    def _on_event(self, _binding: AvrsBinding, event: AvrsEvent) -> None:
        if not isinstance(event, ContentReceived):
            return
        bound = self.bound.get(event.content_id)
        if bound is None or bound.name not in self.catalog.contents:
            return
        packet = event.packet
        rendition = bound.flows.get(packet.flow_id)
        if rendition is None:
            self.rejected += 1
            return
        published_at = time.time()
        media = packet.payload
        pts_us = packet.pts
        signed = parse_signed_media(packet.payload)
        if signed is not None:
            content = self.service.directory.info.contents.get(event.content_id)
            if not signed.verify() or content is None or signed.signer != content.owner:
                self.rejected += 1
                return
            media = signed.media
            if signed.timestamp_ms is not None:
                published_at = signed.timestamp_ms / 1000.0
            if signed.pts != NO_TIMESTAMP:
                pts_us = signed.pts
        if pts_us == NO_TIMESTAMP:
            self.rejected += 1
            return
        dts_us = packet.dts if packet.dts != NO_TIMESTAMP else pts_us
        sample = MediaSample(
            media,
            pts_us / 1e6,
            dts_us / 1e6,
            bool(packet.flags & MediaFlag.KEYFRAME),
            published_at,
        )
        self.accepted += 1
        self.catalog.push(bound.name, rendition, sample)
        if packet.flags & MediaFlag.END_OF_FLOW:
            self.catalog.finish(bound.name)


def publisher_sink(
    client: AvrsClient, handle: int, content_id: bytes, ladder: Sequence[RenditionSpec]
) -> Callable[[str, MediaSample], None]:
    """A :class:`~.testsrc.TestPatternSource` sink that publishes each sample as a signed
    content packet (flow = the rendition's index in ``ladder``)."""
    flows = {spec.name: i for i, spec in enumerate(ladder)}
    seqs = dict.fromkeys(flows.values(), 0)

    def sink(rendition: str, sample: MediaSample) -> None:
        flow = flows[rendition]
        pts = round(sample.pts * 1e6)
        flags = MediaFlag.KEYFRAME if sample.keyframe else MediaFlag.NONE
        envelope = sign_media(
            client.signer, content_id, flow, seqs[flow], sample.data,
            now=sample.published_at, pts=pts, flags=flags,
        )  # fmt: skip
        seqs[flow] += 1
        client.send_content(handle, flow, envelope, pts=pts, flags=flags)

    return sink
