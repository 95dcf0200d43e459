"""The state shared by every part of a :class:`~dapsdk.stream.connection.StreamConnection`:
its fields, the channel table, sealing primitives, error handling and termination.

The connection is one class split over modules by job (STYLE.md warns against one 3,600-line
file): this base; :mod:`.outbound` (scheduling, sealing DATA, credit); :mod:`.inbound` (parsing and
packet handlers); :mod:`.connection` (the public sans-IO surface).
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable

from .channel import ChannelCore, ChannelState
from .config import StreamConfig
from .constants import (
    HEADER,
    HEADER_SIZE,
    ControlOp,
    HandshakeStep,
    PacketFlag,
    PacketType,
)
from .crypto import DirectionCipher
from .errors import (
    ErrorCode,
    ProtocolError,
    RateLimited,
    StreamClosedError,
)
from .events import (
    StreamEvent,
    StreamTerminated,
)
from .handshake import MAX_HANDSHAKE_BODY, Handshake, HandshakeResult
from .identity import NodeAddress, NodeIdentity
from .ratelimit import CheapPacketPolicer, TokenBucket

log = logging.getLogger("dapsdk.stream")

#: Admission hook of a responder, called with the echoed cookie (or None) when a whole HELLO
#: arrived and before any key agreement: None to proceed, or (code, reason) to answer with a
#: plaintext ERROR and close (``RETRY_WITH_COOKIE`` carries the cookie as hex in the reason).
HelloGate = Callable[[bytes | None], tuple[int, str] | None]

# Wire layouts of the bodies (docs/protocol.md §5), shared by the outbound and inbound parts.

_CLOSE = struct.Struct("<BI")
_ERROR = struct.Struct("<I")
_KEEPALIVE = struct.Struct("<BQ")
_WINDOW = struct.Struct("<BBQ")  # op, scope, absolute credit
_FIRST_FRAGMENT = struct.Struct("<BQ")  # marker 1, total length
_FRAG_FIRST = 1
_FRAG_NEXT = 2
_SCOPE_CHANNEL = 0
_SCOPE_CONNECTION = 1
_ENC = int(PacketFlag.ENCRYPTED)
_FRAG = int(PacketFlag.FRAGMENTED)
_COMP = int(PacketFlag.COMPRESSED)
_BATCH = int(PacketFlag.BATCHED)
_U16 = struct.Struct("<H")
#: Messages up to this size are packed together into one packet when several are queued.
BATCH_MAX_MESSAGE = 4096
_DATA = int(PacketType.DATA)
_CONTROL = int(PacketType.CONTROL)
_KEEPALIVE_T = int(PacketType.KEEPALIVE)
_CLOSE_T = int(PacketType.CLOSE)
_ERROR_T = int(PacketType.ERROR)


def plaintext_error(code: int, reason: str, *, max_reason: int = 1024) -> bytes:
    """A whole unencrypted ERROR packet, as sent before keys exist (protocol.md §5): e.g. a
    server refusing a connection before any handshake work (``SERVER_BUSY``)."""
    body = _ERROR.pack(code) + reason.encode("utf-8")[:max_reason]
    return HEADER.pack(len(body), _ERROR_T, 0, 0, 0) + body


class ConnectionState:
    HANDSHAKE = "handshake"
    ESTABLISHED = "established"
    CLOSING = "closing"  # we sent CLOSE(stream); waiting for the peer's
    TERMINATED = "terminated"


class StreamStats:
    """Counters for ``dap_stream_get_stats``. Bytes are wire bytes (headers and tags included)."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "dropped_late",
        "dropped_packets",
        "packets_received",
        "packets_sent",
        "rtt_count",
        "rtt_last",
        "rtt_sum",
    )

    def __init__(self) -> None:
        self.packets_sent = 0
        self.packets_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.dropped_packets = 0
        self.dropped_late = 0  # realtime messages dropped before sending because they were late
        self.rtt_sum = 0.0
        self.rtt_count = 0
        self.rtt_last = 0.0

    @property
    def avg_latency_ms(self) -> float:
        """Mean keepalive round-trip time in milliseconds (0.0 before the first sample)."""
        return 1000.0 * self.rtt_sum / self.rtt_count if self.rtt_count else 0.0


class ConnectionBase:
    """Fields and shared helpers; not used on its own."""

    def __init__(
        self,
        config: StreamConfig,
        identity: NodeIdentity,
        *,
        is_client: bool,
        now: float,
        expected_peer: NodeAddress | None = None,
        cookie: bytes | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.is_client = is_client
        self.state = ConnectionState.HANDSHAKE
        self.stats = StreamStats()
        self.handshake: Handshake | None = Handshake(
            identity, config, initiator=is_client, expected_peer=expected_peer
        )
        """Dropped once established (its ephemeral secrets are no longer needed)."""
        self.result: HandshakeResult | None = None
        self.channels: dict[int, ChannelCore] = {}
        self.terminal_event: StreamTerminated | None = None
        # A list read from _events_read (an empty deque costs 600 bytes, a list 56)
        self._events: list[StreamEvent] = []
        self._events_read = 0
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._rbuf = bytearray()
        self._send: DirectionCipher | None = None
        self._recv: DirectionCipher | None = None
        self._max_body = MAX_HANDSHAKE_BODY
        self._peer_max_payload = 512
        self._peer_channel_window = 0
        self._conn_send_offset = 0
        self._conn_send_max = 0
        self._conn_recv_offset = 0
        self._conn_recv_max = config.initial_connection_window
        self._conn_consumed = 0
        self._reserved = 0  # reassembly memory promised to partial or undelivered messages
        # Channels with queued DATA, one round-robin per RFC 9218 urgency (0 goes first).
        # Created on first use: an idle connection does not pay for 8 deques.
        self._levels: list[deque[int]] = []
        self._shaped: dict[int, float] = {}  # channel -> when its rate limit lets it send again
        self._peer_bucket = (
            TokenBucket(config.peer_rate_limit, max(config.peer_rate_limit, 2 * 65536), now)
            if config.peer_rate_limit
            else None
        )
        self._policer = CheapPacketPolicer(
            {
                "open_close": config.open_close_rate,
                "ping": config.ping_rate,
                "control": config.control_rate,
                "empty": config.empty_rate,
            },
            now,
        )
        self._now = now
        self._srtt = 0.0
        self._min_rtt = 0.0  # lowest RTT seen: the path's delay without our own queueing
        self._conn_window = config.initial_connection_window
        self._conn_window_sent_at = -1.0
        self._handshake_deadline = now + config.handshake_timeout
        self._last_recv = now
        self._last_ping = now
        self._write_blocked_since: float | None = None
        self._close_requested: tuple[int, str] | None = None
        self._stream_close_sent = False
        self._handshake_sent_at: float | None = None  # for the first RTT sample
        self.hello_gate: HelloGate | None = None
        """Responder: asked before any key agreement work for a HELLO (admission policy)."""
        self.peer_cookie: bytes | None = None
        """Responder: the cookie the initiator echoed before its HELLO, if any."""
        # Initiator: FINISH sent, but the responder has not yet proven (by its first sealed
        # packet) that it accepted it; HandshakeCompleted waits for that (protocol.md §3.8).
        self._unconfirmed = False
        self._pings_unanswered = 0  # a PONG beyond these answers nothing: a cheap packet
        if is_client:
            if cookie is not None:
                self._write_plain(_CONTROL, int(HandshakeStep.COOKIE), cookie)
            assert self.handshake is not None
            self._write_plain(_CONTROL, int(HandshakeStep.HELLO), self.handshake.start())
            self._handshake_sent_at = now

    def _decode_reason(self, raw: bytes) -> str:
        return raw[: self.config.max_error_reason].decode("utf-8", errors="replace")

    def _encode_reason(self, reason: str) -> bytes:
        return reason.encode("utf-8")[: self.config.max_error_reason]

    def _require_established(self) -> None:
        if self.state == ConnectionState.TERMINATED:
            event = self.terminal_event
            raise StreamClosedError(
                f"stream terminated: {event.reason}" if event else "stream terminated",
                event.code if event else ErrorCode.NO_ERROR,
            )
        if self.state == ConnectionState.HANDSHAKE:
            raise StreamClosedError("handshake not complete")
        if self.state == ConnectionState.CLOSING:
            raise StreamClosedError("stream is closing")

    def _peer_max_channels(self) -> int:
        assert self.result is not None
        return min(self.result.peer_settings.max_channels, self.config.max_channels)

    def _peer_max_message(self) -> int:
        assert self.result is not None
        return self.result.peer_settings.max_message_size

    def _schedule(self, channel: ChannelCore) -> None:
        if not channel.scheduled and channel.queue:
            channel.scheduled = True
            (self._levels or self._new_levels())[channel.priority].append(channel.id)

    def _new_levels(self) -> list[deque[int]]:
        self._levels = [deque() for _ in range(8)]
        return self._levels

    def _unschedule(self, channel: ChannelCore) -> None:
        if channel.scheduled:
            channel.scheduled = False
            self._levels[channel.priority].remove(channel.id)

    def _apply_priority(self, channel: ChannelCore, priority: int) -> None:
        if channel.priority == priority:
            return
        was_scheduled = channel.scheduled
        self._unschedule(channel)
        channel.priority = priority
        if was_scheduled:
            self._schedule(channel)

    def _make_bucket(self, rate: int | None) -> TokenBucket | None:
        if not rate:
            return None
        burst = max(rate, 2 * self._peer_max_payload)
        return TokenBucket(rate, burst, self._now)

    def _police(self, kind: str) -> None:
        if not self._policer.allow(kind, self._now):
            raise RateLimited(f"too many {kind.replace('_', '/')} packets from peer")

    def _new_channel(self, channel_id: int) -> ChannelCore:
        channel = ChannelCore(
            channel_id, self._peer_channel_window, self.config.initial_channel_window
        )
        channel.priority = 0 if channel_id == 0 else self.config.default_priority
        if channel_id in self.config.realtime_channels:
            channel.realtime_budget = self.config.realtime_deadline
        channel.bucket = self._make_bucket(self.config.channel_rate_limit)
        self.channels[channel_id] = channel
        return channel

    def _channel_or_error(self, ch_id: int) -> ChannelCore:
        channel = self.channels.get(ch_id)
        if channel is None:
            raise ProtocolError(
                f"packet for channel {ch_id}, which is not open",
                code=ErrorCode.UNKNOWN_CHANNEL,
                channel_id=ch_id,
            )
        return channel

    def _open_channel_for_send(self, channel_id: int) -> ChannelCore:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise ValueError(f"channel {channel_id} is not open")
        if channel.state != ChannelState.OPEN or channel.close_after_flush is not None:
            raise StreamClosedError(f"channel {channel_id} is closing")
        return channel

    def _remove_channel(self, channel: ChannelCore) -> None:
        if channel.reassembly is not None:
            self._reserved -= channel.reassembly_total
        self.channels.pop(channel.id, None)
        self._unschedule(channel)
        self._shaped.pop(channel.id, None)

    def _write_plain(self, ptype: int, seq_id: int, body: bytes) -> None:
        header = HEADER.pack(len(body), ptype, seq_id, 0, 0)
        self._out.append(header + body)
        self.stats.packets_sent += 1
        self.stats.bytes_sent += HEADER_SIZE + len(body)

    def _seal_control(self, ptype: int, ch_id: int, body: bytes) -> None:
        if self.state == ConnectionState.TERMINATED:
            return  # nothing goes out after the terminal ERROR/CLOSE
        self._append_sealed(ptype, ch_id, _ENC, body)
        if self._out_bytes > self.config.max_send_queue:
            # Sealed packets pile up only while the transport cannot take them (the peer does
            # not read): CONTROL counts in the send bound like DATA.
            self._send_queue_exceeded()

    def send_queue_bytes(self) -> int:
        """Bytes waiting for the peer: unsent DATA of every channel plus sealed packets the
        transport has not taken yet (bounded by ``max_send_queue``)."""
        return self._out_bytes + sum(c.queued_bytes for c in self.channels.values())

    def _check_send_queue(self, added: int) -> None:
        """Called when a channel passes its high-water mark (rare): enforce ``max_send_queue``
        on what was queued before the message of ``added`` bytes (one message may exceed it)."""
        if self.send_queue_bytes() - added > self.config.max_send_queue:
            self._send_queue_exceeded()

    def _send_queue_exceeded(self) -> None:
        self._fail(
            RateLimited(
                f"peer does not read: {self.send_queue_bytes()} bytes queued for it "
                f"(bound {self.config.max_send_queue})"
            )
        )

    def _append_sealed(self, ptype: int, ch_id: int, flags: int, body: bytes | memoryview) -> None:
        cipher = self._send
        assert cipher is not None
        if cipher.packets_on_key >= self.config.rekey_after_packets:
            rekey = cipher.seal(_CONTROL, 0, _ENC, bytes((ControlOp.REKEY,)))
            self._out.append(rekey)
            self.stats.packets_sent += 1
            self.stats.bytes_sent += len(rekey)
            cipher.rekey()
        header, sealed = cipher.seal_parts(ptype, ch_id, flags, body)
        self._out.append(header)
        self._out.append(sealed)
        size = HEADER_SIZE + len(sealed)
        self.stats.packets_sent += 1
        self.stats.bytes_sent += size
        self._out_bytes += size

    def _fail(self, exc: ProtocolError) -> None:
        log.debug("protocol error: %s", exc)
        self._terminate(exc.code, exc.reason, by_peer=False, send_error=True)

    def _terminate(self, code: int, reason: str, *, by_peer: bool, send_error: bool) -> None:
        if self.state == ConnectionState.TERMINATED:
            return
        if send_error:
            body = _ERROR.pack(code) + self._encode_reason(reason)
            if self._send is not None:
                try:
                    self._append_sealed(_ERROR_T, 0, _ENC, body)
                except ProtocolError:
                    pass
            else:
                self._write_plain(_ERROR_T, 0, body)
        self.state = ConnectionState.TERMINATED
        for channel in self.channels.values():
            channel.queue.clear()
            channel.scheduled = False
        for level in self._levels:
            level.clear()
        self._shaped.clear()
        event = StreamTerminated(code=code, reason=reason, by_peer=by_peer)
        self.terminal_event = event
        self._events.append(event)
