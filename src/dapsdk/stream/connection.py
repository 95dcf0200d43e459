"""The dap_stream connection: a sans-IO state machine (no sockets, no clock, no asyncio).

Inputs: :meth:`receive_data` (bytes from the transport), :meth:`handle_timer`, and commands
(:meth:`open_channel`, :meth:`send`, :meth:`close_channel`, :meth:`close`, :meth:`release`).
Outputs: :meth:`data_to_send` (sealed bytes, in order), :meth:`next_event`, :meth:`get_timer`.
Every method that may produce output says "transmit" in its docstring: call ``data_to_send`` after it.

Failure tiers (STYLE.md §3): a peer that breaks the protocol gets an ERROR packet and the connection
ends with one :class:`StreamTerminated`; API misuse raises ``ValueError``/``StreamClosedError`` at once.
"""

from __future__ import annotations

from . import compression
from .base import (
    _CONTROL,
    _DATA,
    _KEEPALIVE,
    _KEEPALIVE_T,
    ConnectionBase,
    ConnectionState,
    StreamStats,
    plaintext_error,
)
from .channel import ChannelState, PendingMessage
from .constants import (
    MAX_CHANNEL_ID,
    ControlOp,
    Feature,
    KeepaliveKind,
)
from .errors import (
    ErrorCode,
    ProtocolError,
)
from .events import (
    DataBatchReceived,
    DataReceived,
    StreamEvent,
)
from .inbound import InboundMixin

__all__ = [
    "ConnectionBase",
    "ConnectionState",
    "StreamConnection",
    "StreamStats",
    "plaintext_error",
]


class StreamConnection(InboundMixin):
    """One authenticated, encrypted, multi-channel dap_stream connection."""

    def next_event(self) -> StreamEvent | None:
        events = self._events
        index = self._events_read
        if index >= len(events):
            return None
        event = events[index]
        index += 1
        if index == len(events):
            events.clear()
            index = 0
        self._events_read = index
        return event

    def data_to_send(self, limit: int = 1 << 20, now: float | None = None) -> list[bytes]:
        """Sealed bytes to write: control first, then DATA by urgency, round-robin within one.

        ``limit`` bounds how many DATA bytes are sealed now; the rest waits for the next call, so
        control packets queued later still overtake bulk data. ``now`` (default: the last time the
        core saw) drops late realtime messages and applies rate limits. Write the chunks in order.
        """
        if now is not None:
            self._now = now
        if self.state == ConnectionState.ESTABLISHED or self.state == ConnectionState.CLOSING:
            self._schedule_data(limit, self._now)
        out = self._out
        self._out = []
        self._out_bytes = 0
        return out

    def has_pending_data(self) -> bool:
        """True when DATA is queued and credit allows sending some of it."""
        return self._conn_send_max > self._conn_send_offset and any(self._levels)

    def get_timer(self) -> float | None:
        """Earliest deadline: handshake, keepalive ping, peer silence, or a stuck socket."""
        if self.state == ConnectionState.TERMINATED:
            return None
        if self.state == ConnectionState.HANDSHAKE or self._unconfirmed:
            return self._handshake_deadline
        # Keepalive only on an idle connection: a PING is due once nothing arrived (and no PING
        # went out) for keepalive_interval; any received packet proves the peer alive.
        last_recv = self._last_recv
        deadline = min(
            max(self._last_ping, last_recv) + self.config.keepalive_interval,
            last_recv + self.config.keepalive_timeout,
        )
        if self._write_blocked_since is not None:
            deadline = min(deadline, self._write_blocked_since + self.config.keepalive_timeout)
        if self._shaped:
            deadline = min(deadline, min(self._shaped.values()))
        return deadline

    def handle_timer(self, now: float) -> None:
        """Fire whatever deadlines have passed; safe to call early or twice. (transmit)"""
        if self.state == ConnectionState.TERMINATED:
            return
        self._now = max(self._now, now)
        if self.state == ConnectionState.HANDSHAKE or self._unconfirmed:
            if now >= self._handshake_deadline:
                self._fail(
                    ProtocolError(
                        "handshake not completed in time"
                        if self.state == ConnectionState.HANDSHAKE
                        else "the responder did not confirm the handshake in time",
                        code=ErrorCode.TIMEOUT,
                    )
                )
            return
        if now >= self._last_recv + self.config.keepalive_timeout:
            self._fail(
                ProtocolError(
                    f"peer silent for {now - self._last_recv:.1f} s", code=ErrorCode.TIMEOUT
                )
            )
            return
        blocked = self._write_blocked_since
        if blocked is not None and now >= blocked + self.config.keepalive_timeout:
            self._fail(
                ProtocolError(
                    f"socket did not drain for {now - blocked:.1f} s", code=ErrorCode.TIMEOUT
                )
            )
            return
        if now >= max(self._last_ping, self._last_recv) + self.config.keepalive_interval:
            self.send_keepalive(now)
        for ch_id, wake in list(self._shaped.items()):
            if wake <= now:
                del self._shaped[ch_id]
                channel = self.channels.get(ch_id)
                if channel is not None:
                    self._schedule(channel)

    def send_keepalive(self, now: float) -> None:
        """Queue a KEEPALIVE ping carrying ``now`` (microseconds). (transmit)

        Allowed while a graceful close drains (liveness still matters then)."""
        if self.state != ConnectionState.CLOSING:
            self._require_established()
        self._last_ping = now
        self._pings_unanswered = min(self._pings_unanswered + 1, 64)
        self._seal_control(_KEEPALIVE_T, 0, _KEEPALIVE.pack(KeepaliveKind.PING, int(now * 1e6)))

    def set_write_blocked(self, blocked: bool, now: float) -> None:
        """The transport reports that its socket stopped (or resumed) draining."""
        if blocked:
            if self._write_blocked_since is None:
                self._write_blocked_since = now
        else:
            self._write_blocked_since = None

    def open_channel(
        self, channel_id: int, priority: int | None = None, *, realtime: bool | None = None
    ) -> None:
        """Open a channel (idempotent if the peer opened it already). (transmit)

        ``priority``: RFC 9218 urgency 0..7 (default: 0 for the CONTROL channel, else the config's
        default). ``realtime``: messages carry a deadline (default: id in ``realtime_channels``).
        """
        self._require_established()
        if not 0 <= channel_id <= MAX_CHANNEL_ID:
            raise ValueError(f"channel id {channel_id} is outside 0..0xFFFF")
        existing = self.channels.get(channel_id)
        if existing is not None:
            if existing.state == ChannelState.CLOSING:
                raise ValueError(f"channel {channel_id} is still closing")
            return
        if len(self.channels) >= self._peer_max_channels():
            raise ValueError(f"channel limit {self._peer_max_channels()} reached")
        channel = self._new_channel(channel_id)
        if priority is not None:
            if not 0 <= priority <= 7:
                raise ValueError(f"priority {priority} is outside 0..7")
            channel.priority = priority
        if realtime is not None:
            channel.realtime_budget = self.config.realtime_deadline if realtime else None
        self._seal_control(_CONTROL, channel_id, bytes((ControlOp.OPEN, channel.priority)))

    def set_priority(self, channel_id: int, priority: int) -> None:
        """Change a running channel's urgency (0..7); tells the peer. (transmit)"""
        self._require_established()
        if not 0 <= priority <= 7:
            raise ValueError(f"priority {priority} is outside 0..7")
        channel = self._open_channel_for_send(channel_id)
        self._apply_priority(channel, priority)
        self._seal_control(_CONTROL, channel_id, bytes((ControlOp.PRIORITY, priority)))

    def set_realtime(self, channel_id: int, budget: float | None) -> None:
        """Give a channel's messages a latency budget in seconds (None: reliable, never dropped)."""
        channel = self._open_channel_for_send(channel_id)
        if budget is not None and budget <= 0:
            raise ValueError("realtime budget must be > 0 seconds")
        channel.realtime_budget = budget

    def set_rate_limit(self, channel_id: int, bytes_per_second: int | None) -> None:
        """Shape one channel's DATA to ``bytes_per_second`` (None: unlimited)."""
        channel = self._open_channel_for_send(channel_id)
        channel.bucket = self._make_bucket(bytes_per_second)

    def set_compression(self, channel_id: int, algorithm: str | int | None) -> None:
        """Compress this channel's DATA with ``"zstd"`` or ``"lz4"`` (None/"none": off).

        Refused on the SECURITY channel and unless the peer offered the algorithm.
        """
        channel = self._open_channel_for_send(channel_id)
        if algorithm is None:
            algo = compression.NONE
        elif isinstance(algorithm, str):
            algo = compression.algorithm_from_name(algorithm)
        else:
            algo = int(algorithm)
        if algo == compression.NONE:
            channel.compressor = None
            return
        if channel_id == 0x03:
            raise ValueError(
                "compression is never used on the SECURITY channel (it carries secrets)"
            )
        feature = compression.FEATURE_OF.get(algo)
        if feature is None:
            raise ValueError(f"unknown compression algorithm {algorithm!r}")
        assert self.result is not None
        if not self.result.features & feature:
            raise ValueError(f"the peer did not negotiate {feature.name}")
        channel.compressor = compression.AdaptiveCompressor(algo)

    def channel_stats(self, channel_id: int) -> dict[str, int]:
        """Counters of one channel (queued bytes, credit, drops, compression)."""
        channel = self.channels.get(channel_id)
        if channel is None:
            return {}
        return {
            "queued_bytes": channel.queued_bytes,
            "send_offset": channel.send_offset,
            "send_credit": channel.send_max - channel.send_offset,
            "recv_offset": channel.recv_offset,
            "recv_window": channel.recv_window,
            "dropped_late": channel.dropped_late,
            "compressed_packets": channel.compressor.compressed if channel.compressor else 0,
            "priority": channel.priority,
        }

    def send(
        self,
        channel_id: int,
        packet_type: int,
        data: bytes | memoryview,
        *,
        now: float | None = None,
        deadline: float | None = None,
    ) -> int:
        """Queue a message; return the bytes now queued on the channel. (transmit)

        DATA is flow-controlled and fragmented when larger than one packet; CONTROL messages are
        small (one packet), not flow-controlled, and jump the queue. On a realtime channel the
        message gets ``deadline`` (default ``now`` + the channel's budget) and is dropped, not
        sent, if it is still queued after it.
        """
        if now is not None:
            self._now = now
        channel = self.channels.get(channel_id)
        if (
            packet_type == _DATA
            and channel is not None
            and self.state is ConnectionState.ESTABLISHED
            and channel.state is ChannelState.OPEN
            and channel.close_after_flush is None
            and len(data) <= self._peer_max_payload
        ):
            # Hot path: a DATA message that fits one packet on an open channel.
            if deadline is None and channel.realtime_budget is not None:
                deadline = self._now + channel.realtime_budget
            channel.queue.append(PendingMessage(_DATA, data, False, deadline))
            queued = channel.queued_bytes = channel.queued_bytes + len(data)
            if queued >= self.config.send_high_water:
                channel.blocked = True
                self._check_send_queue(len(data))
                self._require_established()
            if not channel.scheduled:
                channel.scheduled = True
                (self._levels or self._new_levels())[channel.priority].append(channel_id)
            return queued
        self._require_established()
        channel = self._open_channel_for_send(channel_id)
        if packet_type == _CONTROL:
            limit = self._peer_max_payload - 1
            if len(data) > limit:
                raise ValueError(f"CONTROL message of {len(data)} bytes exceeds {limit}")
            self._seal_control(_CONTROL, channel_id, bytes((ControlOp.USER,)) + bytes(data))
            self._require_established()  # the send bound may have closed the connection
            return channel.queued_bytes
        if packet_type != _DATA:
            raise ValueError(f"packet type {packet_type} cannot be written by the application")
        size = len(data)
        if size > self._peer_max_message():
            raise ValueError(
                f"message of {size} bytes exceeds the peer's maximum {self._peer_max_message()}"
            )
        fragmented = size > self._peer_max_payload
        assert self.result is not None
        if fragmented and not self.result.features & Feature.FRAGMENTATION:
            raise ValueError(
                "peer does not support fragmentation; message is larger than one packet"
            )
        view = data if isinstance(data, memoryview) else memoryview(data)
        if deadline is None and channel.realtime_budget is not None:
            deadline = self._now + channel.realtime_budget
        channel.queue.append(PendingMessage(_DATA, view, fragmented, deadline))
        channel.queued_bytes += size
        if channel.queued_bytes >= self.config.send_high_water:
            channel.blocked = True
            self._check_send_queue(size)
            self._require_established()
        self._schedule(channel)
        return channel.queued_bytes

    def queued_bytes(self, channel_id: int) -> int:
        channel = self.channels.get(channel_id)
        return channel.queued_bytes if channel is not None else 0

    def close_channel(
        self, channel_id: int, code: int = ErrorCode.NO_ERROR, reason: str = ""
    ) -> None:
        """Close one channel: after its queued data when ``code`` is 0, at once otherwise. (transmit)"""
        channel = self.channels.get(channel_id)
        if channel is None or channel.state != ChannelState.OPEN:
            return
        if code == ErrorCode.NO_ERROR and channel.queue:
            channel.close_after_flush = (code, reason)
            return
        self._send_channel_close(channel, code, reason)

    def close(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close the whole stream: after queued data when ``code`` is 0, at once otherwise. (transmit)"""
        if self.state == ConnectionState.TERMINATED:
            return
        if self.state == ConnectionState.HANDSHAKE:
            self._terminate(
                code, reason or "closed during handshake", by_peer=False, send_error=True
            )
            return
        if self.state == ConnectionState.CLOSING:
            return
        if code != ErrorCode.NO_ERROR:
            for channel in self.channels.values():
                channel.queue.clear()
                channel.queued_bytes = 0
                channel.scheduled = False
            for level in self._levels:
                level.clear()
        self._close_requested = (code, reason)
        self.state = ConnectionState.CLOSING  # CLOSE(stream) goes out once queued DATA is sent

    def abort(self, code: int, reason: str) -> None:
        """Terminate at once with an ERROR packet to the peer (local fault or policy). (transmit)"""
        self._terminate(code, reason, by_peer=False, send_error=True)

    def release(self, event: DataReceived | DataBatchReceived) -> None:
        """The application consumed a received message: return its credit. (transmit)"""
        if self.state not in (ConnectionState.ESTABLISHED, ConnectionState.CLOSING):
            return
        self._reserved -= event.reserved
        if event.flow_bytes:
            self._consume_credit(event.channel_id, event.flow_bytes)

    def connection_lost(self, reason: str = "transport closed") -> None:
        """The transport went away (EOF or error)."""
        if self.state == ConnectionState.TERMINATED:
            return
        if self.state == ConnectionState.CLOSING and self._close_requested is not None:
            code, text = self._close_requested
            self._terminate(code, text or "closed", by_peer=False, send_error=False)
            return
        self._terminate(
            ErrorCode.CONNECTION_LOST, f"connection lost: {reason}", by_peer=True, send_error=False
        )

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Feed bytes from the transport. (transmit)

        Whole packets are parsed straight from ``data``; only a packet cut by the end of ``data``
        is copied, into a buffer that never holds more than one packet (header size checked first).
        """
        if self.state == ConnectionState.TERMINATED:
            return
        self._last_recv = now
        self._now = now
        view = memoryview(data)
        try:
            if self._rbuf:
                view = self._complete_partial(view)
            if len(view):
                used = self._parse(view)
                if used < len(view) and self.state != ConnectionState.TERMINATED:
                    self._rbuf = bytearray(view[used:])
        except ProtocolError as exc:
            self._fail(exc)
        if self.state == ConnectionState.TERMINATED:
            self._rbuf = bytearray()
