"""RTMP media messages to content-model tracks and packets, demuxed by FFmpeg's FLV demuxer.

An RTMP audio, video or data message *is* the body of an FLV tag, and its message header carries
the same fields as an FLV tag header (type, length, timestamp). :class:`FlvDemuxer` re-frames the
messages as an FLV byte stream (the 9-byte file header, then per message the 11-byte tag header
and 4-byte back pointer) and lets PyAV's ``flv`` demuxer parse the media: AVC/HEVC/AAC sequence
headers become codec extradata, composition offsets become pts, Enhanced-RTMP FourCC tags (HEVC,
AV1, VP9, Opus from OBS 30+) are understood, and malformed bodies are refused by FFmpeg, not by
hand-written parsing.

The demuxer runs on its own thread (``av.open`` on a pipe blocks while it probes and reads).
:meth:`FlvDemuxer.feed` waits while more than ``buffer_limit`` bytes are unread, so a slow
consumer slows the publisher's TCP connection instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any, Final

import av
import av.container

from . import amf0
from .model import MediaInfo, MediaPacket, from_av_packet, media_info_from_streams

log = logging.getLogger("dapsdk.media.flv")

#: Probe options: enough to see both sequence headers and a frame of each track (about 0.3 s).
PROBE_OPTIONS: Final = {"analyzeduration": "500000", "probesize": "262144"}
DEFAULT_BUFFER_LIMIT: Final = 4 << 20
_FLAG_AUDIO: Final = 0x04
_FLAG_VIDEO: Final = 0x01


def flv_tag(tag_type: int, timestamp: int, body: bytes) -> bytes:
    """One FLV tag (header, body, back pointer) for an RTMP media message."""
    size = len(body)
    header = (
        bytes([tag_type])
        + size.to_bytes(3, "big")
        + (timestamp & 0xFFFFFF).to_bytes(3, "big")
        + bytes([(timestamp >> 24) & 0xFF])
        + b"\0\0\0"
    )
    return header + body + (size + 11).to_bytes(4, "big")


def flv_header(audio: bool, video: bool) -> bytes:
    flags = (_FLAG_AUDIO if audio else 0) | (_FLAG_VIDEO if video else 0)
    return b"FLV\x01" + bytes([flags]) + (9).to_bytes(4, "big") + b"\0\0\0\0"


def metadata_flags(body: bytes) -> tuple[bool, bool] | None:
    """(has audio, has video) from an onMetaData body, None when it is not one."""
    try:
        values = amf0.decode_all(body)
    except amf0.AmfError:
        return None
    if len(values) < 2 or values[0] != "onMetaData" or not isinstance(values[1], dict):
        return None
    meta = values[1]
    has_video = "videocodecid" in meta or "width" in meta
    has_audio = "audiocodecid" in meta or "audiosamplerate" in meta
    if not has_audio and not has_video:
        return None
    return has_audio, has_video


class _Pipe:
    """A blocking file-like ``read`` for PyAV, written from the event loop with back-pressure."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._space = asyncio.Event()
        self._space.set()

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._buffer and not self._eof:
                self._cond.wait()
            take = len(self._buffer) if size < 0 else min(size, len(self._buffer))
            chunk = bytes(self._buffer[:take])
            del self._buffer[:take]
            if len(self._buffer) < self._limit:
                self._loop.call_soon_threadsafe(self._space.set)
            return chunk

    async def write(self, data: bytes) -> None:
        while True:
            with self._cond:
                if self._eof:
                    return
                if len(self._buffer) < self._limit:
                    self._buffer += data
                    self._cond.notify()
                    return
                self._space.clear()
            await self._space.wait()

    def close(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def buffered(self) -> int:
        return len(self._buffer)


class FlvDemuxError(Exception):
    """The published media could not be demuxed."""


class FlvDemuxer:
    """Turns RTMP media messages into a :class:`MediaInfo` and :class:`MediaPacket` objects.

    ``on_info`` is awaited once with the tracks (before any packet), ``on_packet`` for every
    packet, both on the event loop; the demuxer thread waits for each, so their back-pressure
    reaches the publisher. :meth:`wait` returns when the stream ended, raising
    :class:`FlvDemuxError` when FFmpeg could not read it.
    """

    def __init__(
        self,
        on_info: Callable[[MediaInfo, list[Any]], Awaitable[None]],
        on_packet: Callable[[MediaPacket], Awaitable[None]],
        *,
        name: str = "",
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._pipe = _Pipe(self._loop, buffer_limit)
        self._on_info = on_info
        self._on_packet = on_packet
        self._name = name
        self._header_sent = False
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"flv-demux-{name}", daemon=True)
        self._thread.start()
        self.packets = 0

    async def feed(self, tag_type: int, timestamp: int, body: bytes) -> None:
        """Queue one media message (waits while the demuxer is ``buffer_limit`` bytes behind)."""
        if not self._header_sent:
            flags = metadata_flags(body) if tag_type == 18 else None
            audio, video = flags if flags else (True, True)
            await self._pipe.write(flv_header(audio, video))
            self._header_sent = True
        await self._pipe.write(flv_tag(tag_type, timestamp, body))

    def end(self) -> None:
        """No more messages: the demuxer drains what it has and stops."""
        self._pipe.close()

    def abort(self) -> None:
        self._stop.set()
        self._pipe.close()

    async def wait(self) -> None:
        await asyncio.shield(self._done)

    @property
    def buffered(self) -> int:
        return self._pipe.buffered

    def _call(self, coro: Awaitable[None]) -> None:
        future = asyncio.run_coroutine_threadsafe(_await(coro), self._loop)
        future.result()

    def _finish(self, error: BaseException | None) -> None:
        def settle() -> None:
            if self._done.done():
                return
            if error is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(error)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # loop closed
            pass

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._demux()
        except av.FFmpegError as exc:
            error = FlvDemuxError(f"cannot demux the published FLV stream: {exc}")
        except FlvDemuxError as exc:
            error = exc
        except BaseException as exc:  # the thread must always settle the future
            if not self._stop.is_set():
                # A refusal from the sink (max_bitrate, ...) says why in its own words.
                error = FlvDemuxError(str(exc) or repr(exc))
        finally:
            self._pipe.close()
        self._finish(error)

    def _demux(self) -> None:
        with av.open(self._pipe, "r", format="flv", options=dict(PROBE_OPTIONS)) as container:
            assert isinstance(container, av.container.InputContainer)
            streams = [s for s in container.streams if s.type in ("video", "audio")]
            if not streams:
                if self._stop.is_set():
                    return
                raise FlvDemuxError("the publisher sent no audio or video")
            video = [s for s in streams if s.type == "video"]
            audio = [s for s in streams if s.type == "audio"]
            ordered = video[:1] + audio[:1]
            index = {s.index: n for n, s in enumerate(ordered)}
            info = media_info_from_streams(ordered, title=self._name)
            self._call(self._on_info(info, ordered))
            for packet in container.demux(ordered):
                if self._stop.is_set():
                    return
                if packet.size == 0 or packet.stream.index not in index:
                    continue
                if packet.time_base is None:
                    packet.time_base = Fraction(1, 1000)
                self._call(self._on_packet(from_av_packet(packet, index[packet.stream.index])))
                self.packets += 1


async def _await(awaitable: Awaitable[None]) -> None:
    await awaitable
