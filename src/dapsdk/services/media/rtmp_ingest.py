"""The RTMP ingest server: OBS and ``ffmpeg -f flv rtmp://HOST:PORT/APP/NAME`` publish into the
node. The asyncio adapter around :mod:`.rtmp` (protocol) and :mod:`.flv_demux` (media).

One TCP port serves any number of publishers (bounded by ``max_connections``); the stream key
names the content, and ``NAME?token=JWT`` carries an access token. :class:`RtmpIngestServer` asks
its ``authorize`` callback (composition decides: token verifier, publish grant, loopback rule) and
hands accepted streams to ``open_sink``, which returns the :class:`IngestSink` the tracks and
packets go to (the node's live hub).

Failure handling: a protocol violation, a demux error, a refused publish, a handshake that is not
done within ``handshake_timeout`` or a publisher silent for ``idle_timeout`` closes that
connection with a logged reason; other connections are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

from .flv_demux import DEFAULT_BUFFER_LIMIT, FlvDemuxer, FlvDemuxError
from .model import MediaInfo, MediaPacket
from .rtmp import (
    DEFAULT_MAX_MESSAGE,
    MediaMessage,
    PlayRequested,
    PublishEnded,
    PublishRequested,
    RtmpError,
    RtmpServerConnection,
)

log = logging.getLogger("dapsdk.media.rtmp")

READ_SIZE: Final = 65536
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
DEFAULT_IDLE_TIMEOUT: Final = 30.0
DEFAULT_MAX_CONNECTIONS: Final = 64


class IngestRefused(Exception):
    """A publish is not allowed. ``code`` is the AVRS error name, sent in the onStatus text."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """What a publisher asked for."""

    app: str
    name: str
    """Content name: the stream key without its query string."""
    token: str | None
    peer_host: str
    """The publisher's IP address."""
    query: dict[str, str]


class IngestSink(Protocol):
    """Where an accepted stream goes (the node's live hub adapts to this)."""

    async def start(self, info: MediaInfo, streams: list[Any]) -> None:
        """The tracks, once demuxed (``streams`` are the PyAV input streams, usable as
        templates)."""

    async def push(self, packet: MediaPacket) -> None:
        """One packet (may wait: back-pressure reaches the publisher)."""

    async def end(self, error: str | None) -> None:
        """The stream ended: normally (``error`` None) or with the reason."""


Authorize = Callable[[PublishRequest], Awaitable[None]]
OpenSink = Callable[[PublishRequest], Awaitable[IngestSink]]


def parse_stream_key(key: str) -> tuple[str, dict[str, str]]:
    """``NAME?token=...&x=y`` -> (NAME, {"token": ..., "x": "y"}) (first value of each)."""
    name, _, query = key.partition("?")
    values = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items() if v}
    return name, values


class RtmpIngestServer:
    """Accepts RTMP publishers on one TCP port."""

    def __init__(
        self,
        authorize: Authorize,
        open_sink: OpenSink,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        demux_buffer: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        self._authorize = authorize
        self._open_sink = open_sink
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.demux_buffer = demux_buffer
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sessions: dict[str, _Session] = {}
        """Publishing sessions by content name."""
        self.publishing: set[str] = set()
        """Content names being published right now."""
        self.refused = 0
        """Connections closed for a protocol violation, a refusal or a timeout."""
        self.accepted = 0

    async def start(self, host: str = "127.0.0.1", port: int = 1935) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=READ_SIZE)

    @property
    def started(self) -> bool:
        return self._server is not None and bool(self._server.sockets)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("RTMP server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        assert self._server is not None and self._server.sockets
        host = self._server.sockets[0].getsockname()[0]
        return f"rtmp://{host}:{self.port}/live"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= self.max_connections:
            log.warning("RTMP: refusing a connection: %d already open", len(self._tasks))
            self.refused += 1
            writer.close()
            return
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        session = _Session(self, reader, writer, str(peer[0]) if peer else "")
        try:
            await session.run()
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            await session.cleanup()


class _Session:
    def __init__(
        self,
        server: RtmpIngestServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer_host: str,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer_host = peer_host
        self.conn = RtmpServerConnection(max_message_size=server.max_message_size)
        self.demuxer: FlvDemuxer | None = None
        self.sink: IngestSink | None = None
        self.name: str | None = None
        self.error: str | None = None
        self.demux_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while True:
                timeout = (
                    self.server.idle_timeout
                    if self.conn.handshake_done
                    else self.server.handshake_timeout
                )
                try:
                    data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
                except TimeoutError:
                    self._fail(f"no data for {timeout:.0f} s")
                    return
                if not data:
                    return
                self.conn.receive_data(data)
                await self._flush()
                if not await self._handle_events():
                    return
                if self.demux_task is not None and self.demux_task.done():
                    return
        except RtmpError as exc:
            self._fail(str(exc))
        except (ConnectionError, OSError) as exc:
            self.error = self.error or f"connection lost: {exc}"

    def _fail(self, reason: str) -> None:
        self.error = reason
        self.server.refused += 1
        log.warning("RTMP %s (%s): closing: %s", self.peer_host, self.name or "-", reason)

    async def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)
            await self.writer.drain()

    async def _handle_events(self) -> bool:
        while (event := self.conn.next_event()) is not None:
            if isinstance(event, MediaMessage):
                if self.demuxer is not None:
                    await self.demuxer.feed(event.tag_type, event.timestamp, event.body)
            elif isinstance(event, PublishRequested):
                if not await self._publish(event):
                    return False
            elif isinstance(event, PublishEnded):
                if self.demuxer is not None:
                    self.demuxer.end()
            elif isinstance(event, PlayRequested):
                self.conn.reject_play(event.stream_id, "this node does not serve RTMP playback")
                await self._flush()
                self._fail("RTMP play refused")
                return False
        return True

    async def _publish(self, event: PublishRequested) -> bool:
        name, query = parse_stream_key(event.name)
        request = PublishRequest(self.conn.app, name, query.get("token"), self.peer_host, query)
        try:
            if self.demuxer is not None:
                raise IngestRefused("CONTENT_ALREADY_EXISTS", "one publish per connection")
            if not name:
                raise IngestRefused("CONTENT_NOT_FOUND", "empty stream key")
            if name in self.server.publishing:
                raise IngestRefused("CONTENT_ALREADY_EXISTS", f"{name!r} is already published")
            await self.server._authorize(request)
            self.sink = await self.server._open_sink(request)
        except IngestRefused as refusal:
            self.conn.reject_publish(event.stream_id, "NetStream.Publish.BadName", str(refusal))
            with contextlib.suppress(ConnectionError, OSError):
                await self._flush()
            self._fail(f"publish of {name!r} refused: {refusal}")
            return False
        self.name = name
        self.server.publishing.add(name)
        self.server.sessions[name] = self
        self.server.accepted += 1
        log.info("RTMP %s publishes %r", self.peer_host, name)
        sink = self.sink
        self.demuxer = FlvDemuxer(
            sink.start, sink.push, name=name, buffer_limit=self.server.demux_buffer
        )
        self.demux_task = asyncio.create_task(self.demuxer.wait())
        self.conn.accept_publish(event.stream_id, name)
        await self._flush()
        return True

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.demuxer is not None:
            if self.error is None:
                self.demuxer.end()
            else:
                self.demuxer.abort()
            assert self.demux_task is not None
            try:
                await self.demux_task
            except FlvDemuxError as exc:
                if self.error is None:
                    self.server.refused += 1
                self.error = self.error or str(exc)
                log.warning("RTMP %s (%s): closed: %s", self.peer_host, self.name, exc)
            except asyncio.CancelledError:
                self.demuxer.abort()
        if self.sink is not None:
            with contextlib.suppress(Exception):
                await self.sink.end(self.error)
        if self.name is not None:
            self.server.publishing.discard(self.name)
            self.server.sessions.pop(self.name, None)
