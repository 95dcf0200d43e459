"""VoD import: a media file demuxed with PyAV and packaged into an HLS VoD rendition.

Only H.264 video is packaged today; a file without an H.264 video stream is refused with
:class:`VodImportError` (the REST API turns it into ``CONTENT_CORRUPTED``). The import runs in a
worker thread (demuxing and muxing are CPU work) and is bounded by :data:`MAX_VOD_BYTES`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
from av.bitstream import BitStreamFilterContext

from .content import ContentCatalog, ContentState, ContentType
from .packager import MediaSample

#: Largest file the gateway imports (bytes).
MAX_VOD_BYTES = 512 * 1024 * 1024


class VodImportError(ValueError):
    """The file cannot be imported; the message says why."""


def _read_samples(path: Path) -> tuple[int, int, float, list[MediaSample]]:
    if not path.is_file():
        raise VodImportError(f"{path}: no such file")
    if path.stat().st_size > MAX_VOD_BYTES:
        raise VodImportError(f"{path}: larger than {MAX_VOD_BYTES} bytes")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise VodImportError(f"{path}: {exc}") from None
    with container:
        videos = [s for s in container.streams.video if s.codec_context.name == "h264"]
        if not videos:
            raise VodImportError(f"{path}: no H.264 video stream")
        stream = videos[0]
        tb = stream.time_base
        if tb is None:
            raise VodImportError(f"{path}: video stream has no time base")
        fps = float(stream.average_rate or 30)
        samples = []
        now = time.time()
        # AVCC (length-prefixed) to Annex B with SPS/PPS in band, as live samples arrive
        annexb = BitStreamFilterContext("h264_mp4toannexb", stream)
        packets = [q for p in container.demux(stream) for q in annexb.filter(p)]
        packets += annexb.filter(None)
        for packet in packets:
            if packet.size == 0 or packet.dts is None:
                continue
            pts = float((packet.pts if packet.pts is not None else packet.dts) * tb)
            samples.append(
                MediaSample(bytes(packet), pts, float(packet.dts * tb), packet.is_keyframe, now)
            )
        return stream.width, stream.height, fps, samples


async def import_vod(
    catalog: ContentCatalog, content_id: str, path: Path, *, title: str = ""
) -> int:
    """Import ``path`` as VoD content ``content_id``; return the number of samples packaged."""
    if content_id in catalog.contents:
        raise VodImportError(f"content {content_id!r} already exists")
    width, height, fps, samples = await asyncio.to_thread(_read_samples, path)
    if not samples:
        raise VodImportError(f"{path}: no video samples")
    content = catalog.declare(content_id, ContentType.VOD, title=title or path.stem)
    pipeline = catalog.add_rendition(content_id, f"{height}p", width=width, height=height, fps=fps)
    for sample in samples:
        pipeline.push(sample)
    catalog.finish(content_id)
    content.state = ContentState.READY
    return len(samples)
