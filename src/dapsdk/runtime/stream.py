"""Stream: the seed's ``dap_stream_t``: one authenticated, encrypted connection to a peer node."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..stream.config import PeerIdentity, StreamConfig
from ..stream.constants import ChannelId
from ..stream.errors import ErrorCode, RemoteError, StreamClosedError
from ..stream.events import (
    ChannelClosed,
    ChannelOpened,
    ChannelWritable,
    DataBatchReceived,
    DataReceived,
    StreamEvent,
    StreamTerminated,
)
from .channel import Channel
from .driver import ConnectionDriver
from .endpoint import Endpoint

if TYPE_CHECKING:
    from .http_service import HttpResponse
    from .node import StreamNode
    from .session import Session

log = logging.getLogger("dapsdk.runtime.stream")
_stream_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class StreamStats:
    """The seed's ``dap_stream_stats_t``."""

    packets_sent: int
    packets_received: int
    bytes_sent: int
    bytes_received: int
    active_channels: int
    avg_latency: float
    """Mean keepalive round-trip time in milliseconds."""


class Stream:
    def __init__(
        self,
        node: StreamNode,
        driver: ConnectionDriver,
        peer: PeerIdentity,
        *,
        endpoint: Endpoint | None,
        is_client: bool,
    ) -> None:
        self.id = next(_stream_ids)
        self.owner = node
        self.driver = driver
        self.peer = peer
        self.endpoint = endpoint
        self.is_client = is_client
        self.authorized = True
        """Mutually authenticated: the handshake proved the peer's identity (and policy accepted it)."""
        self.primary = False
        self.is_active = True
        self.sessions: list[Session] = []
        self.channels: dict[int, Channel] = {}
        self.terminated: StreamTerminated | None = None
        self._closed: asyncio.Event | None = None  # created by the first wait_closed()

    # -- seed fields ---------------------------------------------------------------------------

    @property
    def node(self):  # type: ignore[no-untyped-def]  # NodeAddress; named as the seed's field
        return self.peer.address

    @property
    def session(self) -> Session | None:
        return self.sessions[0] if self.sessions else None

    @property
    def config(self) -> StreamConfig:
        return self.driver.core.config

    @property
    def channels_count(self) -> int:
        return len(self.channels)

    # -- channels ------------------------------------------------------------------------------

    def channel_new(
        self,
        channel_id: int | ChannelId,
        *,
        priority: int | None = None,
        realtime: bool | None = None,
    ) -> Channel:
        """Open a channel (``dap_stream_ch_new``); returns the existing one if already open.

        ``priority``: urgency 0..7 (default 0 for CONTROL, 3 otherwise); ``realtime``: messages
        carry a deadline and are dropped when late (default for MEDIA)."""
        self._require_active()
        channel_id = int(channel_id)
        existing = self.channels.get(channel_id)
        if existing is not None and existing.is_active:
            return existing
        self.driver.core.open_channel(channel_id, priority, realtime=realtime)
        channel = Channel(self, channel_id, opened_by_peer=False)
        if realtime is not None:
            channel._realtime = realtime
        self.channels[channel_id] = channel
        self.driver.transmit_soon()
        self.driver.loop.call_soon(channel._on_opened)
        return channel

    def channel(self, channel_id: int) -> Channel | None:
        return self.channels.get(int(channel_id))

    def channel_delete(
        self, channel: Channel, code: int = ErrorCode.NO_ERROR, reason: str = ""
    ) -> None:
        """Close a channel (``dap_stream_ch_delete``)."""
        channel.close(code, reason)

    # -- stream operations ---------------------------------------------------------------------

    def get_stats(self) -> StreamStats:
        stats = self.driver.core.stats
        return StreamStats(
            packets_sent=stats.packets_sent,
            packets_received=stats.packets_received,
            bytes_sent=stats.bytes_sent,
            bytes_received=stats.bytes_received,
            active_channels=sum(1 for c in self.channels.values() if c.is_active),
            avg_latency=stats.avg_latency_ms,
        )

    def send_keepalive(self) -> None:
        self._require_active()
        self.driver.core.send_keepalive(self.driver.loop.time())
        self.driver.transmit_soon()

    def process_keepalive(self) -> None:
        """Run the keepalive logic now: send a due ping, declare a silent peer dead."""
        if self.is_active:
            self.driver.core.handle_timer(self.driver.loop.time())
            self.driver.pump()

    def start_async_processing(self) -> None:
        """Hand pending work to the callbacks: ``ready_to_read`` for channels holding unread
        messages, ``ready_to_write`` for every open channel. Later events call them as they come."""
        for channel in list(self.channels.values()):
            if channel.buf_size or channel._pending:
                channel._fire(channel.ready_to_read)
            if channel.is_active:
                channel._fire(channel.ready_to_write)

    @property
    def binding(self) -> bytes:
        """32 bytes unique to this stream, equal on both ends (channel binding for signatures)."""
        result = self.driver.core.result
        assert result is not None
        return result.export(b"stream binding")

    def release(self, event: DataReceived | DataBatchReceived) -> None:
        self.driver.core.release(event)
        self.driver.transmit_soon()
        for session in self.sessions:
            session.touch()

    async def close(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close the stream (after queued data when code is 0) and wait until it is closed."""
        if self.is_active:
            self.driver.core.close(code, reason)
            self.driver.pump()
        await self.wait_closed()

    async def http_request(self, method: str, target: str, **kwargs: Any) -> HttpResponse:
        """HTTP request to the peer over the SERVICE channel (see :mod:`.http_service`)."""
        from .http_service import http_request

        return await http_request(self, method, target, **kwargs)

    def abort(self, code: int = ErrorCode.CANCELLED, reason: str = "aborted") -> None:
        self.driver.abort(code, reason)

    async def wait_closed(self) -> None:
        if self.terminated is not None:
            return
        if self._closed is None:
            self._closed = asyncio.Event()
        await self._closed.wait()

    def _require_active(self) -> None:
        if not self.is_active:
            term = self.terminated
            raise StreamClosedError(
                f"stream {self.id} is closed" + (f": {term.reason}" if term else ""),
                term.code if term else 0,
            )

    @property
    def error(self) -> RemoteError | None:
        """Why the stream ended, when it ended abnormally."""
        term = self.terminated
        if term is None or term.code == ErrorCode.NO_ERROR:
            return None
        return RemoteError(term.code, term.reason)

    # -- events from the driver ----------------------------------------------------------------

    def handle_event(self, event: StreamEvent) -> None:
        if isinstance(event, DataBatchReceived):
            channel = self.channels.get(event.channel_id)
            if channel is not None:
                channel._deliver_batch(event)
            else:
                self.release(event)
        elif isinstance(event, DataReceived):
            channel = self.channels.get(event.channel_id)
            if channel is not None:
                channel._deliver(event)
            else:
                self.release(event)
        elif isinstance(event, ChannelWritable):
            channel = self.channels.get(event.channel_id)
            if channel is not None:
                channel._on_writable()
        elif isinstance(event, ChannelOpened):
            self._peer_opened(event.channel_id)
        elif isinstance(event, ChannelClosed):
            channel = self.channels.pop(event.channel_id, None)
            if channel is not None:
                channel._on_closed(event.code, event.reason)
                self.owner._channel_deleted(channel)
        elif isinstance(event, StreamTerminated):
            self._on_terminated(event)

    def _peer_opened(self, channel_id: int) -> None:
        channel = Channel(self, channel_id, opened_by_peer=True)
        self.channels[channel_id] = channel
        if not self.owner._accept_channel(channel):
            self.channels.pop(channel_id, None)
            self.driver.core.close_channel(
                channel_id, ErrorCode.CHANNEL_REFUSED, "no handler for this channel"
            )
            return
        self.driver.loop.call_soon(channel._on_opened)

    @property
    def peer_socket(self) -> str:
        """The peer's socket address ``host:port`` where the transport knows it, else ``-``."""
        name = getattr(self.driver.sink, "peername", None)
        if isinstance(name, tuple) and len(name) >= 2:
            host = f"[{name[0]}]" if ":" in str(name[0]) else name[0]
            return f"{host}:{name[1]}"
        return "-"

    def log_fields(self) -> dict[str, object]:
        """Structured log fields of this stream: peer socket, peer node address, own address."""
        return {
            "peer": self.peer_socket,
            "node": str(self.peer.address),
            "local": str(self.owner.address),
            "stream": self.id,
        }

    def _on_terminated(self, event: StreamTerminated) -> None:
        self.terminated = event
        self.is_active = False
        if log.isEnabledFor(logging.INFO):
            log.info(
                "disconnect: stream %d with %s ended: %s",
                self.id,
                self.peer.address,
                event.reason or "closed",
                extra={"event": "disconnect", "code": int(event.code), **self.log_fields()},
            )
        for channel in list(self.channels.values()):
            channel._on_closed(event.code, event.reason)
            self.owner._channel_deleted(channel)
        if self._closed is not None:
            self._closed.set()
        self.owner._stream_ended(self)

    def __repr__(self) -> str:
        return f"<Stream {self.id} peer={self.peer.address} active={self.is_active} primary={self.primary}>"
