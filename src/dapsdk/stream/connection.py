"""The dap_stream connection: a sans-IO state machine (no sockets, no clock, no asyncio).

Inputs: :meth:`receive_data` (bytes from the transport), :meth:`handle_timer`, and commands
(:meth:`open_channel`, :meth:`send`, :meth:`close_channel`, :meth:`close`, :meth:`release`).
Outputs: :meth:`data_to_send` (sealed bytes, in order), :meth:`next_event`, :meth:`get_timer`.
Every method that may produce output says "transmit" in its docstring: call ``data_to_send`` after it.

Failure tiers (STYLE.md §3): a peer that breaks the protocol gets an ERROR packet and the connection
ends with one :class:`StreamTerminated`; API misuse raises ``ValueError``/``StreamClosedError`` at once.
"""

from __future__ import annotations

import logging
import struct
from collections import deque

from . import compression
from .channel import ChannelCore, ChannelState, PendingMessage
from .config import StreamConfig
from .constants import (
    HEADER,
    HEADER_SIZE,
    KNOWN_FLAGS,
    KNOWN_TYPES,
    MAX_CHANNEL_ID,
    TAG_SIZE,
    CloseScope,
    ControlOp,
    Feature,
    HandshakeStep,
    KeepaliveKind,
    PacketFlag,
    PacketType,
)
from .crypto import DirectionCipher
from .errors import (
    ErrorCode,
    FlowControlError,
    FrameTooLarge,
    ProtocolError,
    RateLimited,
    StreamClosedError,
    code_name,
)
from .events import (
    ChannelClosed,
    ChannelOpened,
    ChannelWritable,
    DataBatchReceived,
    DataReceived,
    HandshakeCompleted,
    PongReceived,
    StreamEvent,
    StreamTerminated,
)
from .handshake import MAX_HANDSHAKE_BODY, Handshake, HandshakeResult
from .identity import NodeAddress, NodeIdentity
from .ratelimit import CheapPacketPolicer, TokenBucket

log = logging.getLogger("dapsdk.stream")

_U64 = struct.Struct("<Q")
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


class StreamConnection:
    """One authenticated, encrypted, multi-channel dap_stream connection."""

    def __init__(
        self,
        config: StreamConfig,
        identity: NodeIdentity,
        *,
        is_client: bool,
        now: float,
        expected_peer: NodeAddress | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.is_client = is_client
        self.state = ConnectionState.HANDSHAKE
        self.stats = StreamStats()
        self.handshake = Handshake(
            identity, config, initiator=is_client, expected_peer=expected_peer
        )
        self.result: HandshakeResult | None = None
        self.channels: dict[int, ChannelCore] = {}
        self.terminal_event: StreamTerminated | None = None
        self._events: deque[StreamEvent] = deque()
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
        self._levels: list[deque[int]] = [deque() for _ in range(8)]
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
        if is_client:
            self._write_plain(_CONTROL, int(HandshakeStep.HELLO), self.handshake.start())
            self._handshake_sent_at = now

    # ---------------------------------------------------------------------------------- outputs

    def next_event(self) -> StreamEvent | None:
        return self._events.popleft() if self._events else None

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
        if self.state == ConnectionState.HANDSHAKE:
            return self._handshake_deadline
        deadline = min(
            self._last_ping + self.config.keepalive_interval,
            self._last_recv + self.config.keepalive_timeout,
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
        if self.state == ConnectionState.HANDSHAKE:
            if now >= self._handshake_deadline:
                self._fail(ProtocolError("handshake not completed in time", code=ErrorCode.TIMEOUT))
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
        if now >= self._last_ping + self.config.keepalive_interval:
            self.send_keepalive(now)
        for ch_id, wake in list(self._shaped.items()):
            if wake <= now:
                del self._shaped[ch_id]
                channel = self.channels.get(ch_id)
                if channel is not None:
                    self._schedule(channel)

    # --------------------------------------------------------------------------------- commands

    def send_keepalive(self, now: float) -> None:
        """Queue a KEEPALIVE ping carrying ``now`` (microseconds). (transmit)

        Allowed while a graceful close drains (liveness still matters then)."""
        if self.state != ConnectionState.CLOSING:
            self._require_established()
        self._last_ping = now
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
            if not channel.scheduled:
                channel.scheduled = True
                self._levels[channel.priority].append(channel_id)
            return queued
        self._require_established()
        channel = self._open_channel_for_send(channel_id)
        if packet_type == _CONTROL:
            limit = self._peer_max_payload - 1
            if len(data) > limit:
                raise ValueError(f"CONTROL message of {len(data)} bytes exceeds {limit}")
            self._seal_control(_CONTROL, channel_id, bytes((ControlOp.USER,)) + bytes(data))
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
            ErrorCode.PROTOCOL_ERROR, f"connection lost: {reason}", by_peer=True, send_error=False
        )

    # ----------------------------------------------------------------------------------- input

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

    def _complete_partial(self, view: memoryview) -> memoryview:
        """Top up the buffered partial packet from ``view``; parse it once whole. Returns the rest."""
        buf = self._rbuf
        if len(buf) < HEADER_SIZE:
            take = min(HEADER_SIZE - len(buf), len(view))
            buf += view[:take]
            view = view[take:]
            if len(buf) < HEADER_SIZE:
                return view
        size = HEADER.unpack_from(buf, 0)[0]
        self._check_size(size, buf)
        missing = HEADER_SIZE + size - len(buf)
        take = min(missing, len(view))
        buf += view[:take]
        view = view[take:]
        if take == missing:
            self._rbuf = bytearray()
            packet = memoryview(buf)
            try:
                self._parse(packet)
            finally:
                packet.release()
        return view

    def _check_size(self, size: int, buf: bytes | bytearray | memoryview, pos: int = 0) -> None:
        if size > self._max_body:
            _, ptype, _, ch_id, _ = HEADER.unpack_from(buf, pos)
            raise FrameTooLarge(
                f"packet announces {size} bytes, limit is {self._max_body}",
                packet_type=ptype,
                channel_id=ch_id,
            )

    def _parse(self, view: memoryview) -> int:
        """Process every whole packet in ``view``; return the bytes used."""
        pos = 0
        end_all = len(view)
        unpack = HEADER.unpack_from
        stats = self.stats
        while end_all - pos >= HEADER_SIZE:
            size, ptype, seq_id, ch_id, flags = unpack(view, pos)
            if size > self._max_body:
                self._check_size(size, view, pos)
            end = pos + HEADER_SIZE + size
            if end > end_all:
                break
            stats.packets_received += 1
            stats.bytes_received += HEADER_SIZE + size
            if self._recv is not None:
                self._receive_sealed(view, pos, end, size, ptype, seq_id, ch_id, flags)
            else:
                self._receive_handshake(
                    bytes(view[pos + HEADER_SIZE : end]), ptype, seq_id, ch_id, flags
                )
            pos = end
            if self.state == ConnectionState.TERMINATED:
                return end_all
        return pos

    def _receive_handshake(
        self, body: bytes, ptype: int, seq_id: int, ch_id: int, flags: int
    ) -> None:
        if ptype == _ERROR_T and flags == 0:
            self._handle_error_body(body)
            return
        if ptype != _CONTROL or ch_id != 0 or flags != 0:
            raise ProtocolError(
                f"packet type {ptype} (channel {ch_id}, flags 0x{flags:02x}) before the handshake completed",
                packet_type=ptype,
                channel_id=ch_id,
            )
        reply = self.handshake.receive(seq_id, body)
        if self._handshake_sent_at is not None:
            # HELLO->RESPONSE (initiator) or RESPONSE->FINISH (responder) is a round trip:
            # window auto-tuning can start before the first keepalive.
            rtt = max(self._now - self._handshake_sent_at, 1e-6)
            self._srtt = self._min_rtt = rtt
            self.stats.rtt_sum += rtt
            self.stats.rtt_count += 1
            self.stats.rtt_last = rtt
            self._handshake_sent_at = None
        if reply is not None:
            self._write_plain(_CONTROL, seq_id + 1, reply)
            if not self.is_client:
                self._handshake_sent_at = self._now
        if self.handshake.result is not None:
            self._establish(self.handshake.result)

    def _establish(self, result: HandshakeResult) -> None:
        self.result = result
        self._send = DirectionCipher(result.send_secret)
        self._recv = DirectionCipher(result.recv_secret)
        self._max_body = self.config.max_packet_payload + TAG_SIZE
        settings = result.peer_settings
        self._peer_max_payload = settings.max_packet_payload
        self._peer_channel_window = settings.initial_channel_window
        self._conn_send_max = settings.initial_connection_window
        self.state = ConnectionState.ESTABLISHED
        log.debug("handshake complete with %s (version %d)", result.peer.address, result.version)
        self._events.append(
            HandshakeCompleted(peer=result.peer, version=result.version, features=result.features)
        )

    def _receive_sealed(
        self,
        view: memoryview,
        pos: int,
        end: int,
        size: int,
        ptype: int,
        seq_id: int,
        ch_id: int,
        flags: int,
    ) -> None:
        if ptype not in KNOWN_TYPES:
            raise ProtocolError(f"unknown packet type 0x{ptype:02x}", code=ErrorCode.UNKNOWN_TYPE)
        if flags & ~KNOWN_FLAGS:
            raise ProtocolError(
                f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x}", code=ErrorCode.UNKNOWN_FLAGS
            )
        if not flags & _ENC:
            if (
                ptype == _ERROR_T
                and flags == 0
                and self._recv is not None
                and self._recv.counter == 0
            ):
                # The responder refused our FINISH before it had traffic keys: its ERROR is in
                # plaintext. Accepted only before the first sealed packet (docs/protocol.md §5).
                self._handle_error_body(bytes(view[pos + HEADER_SIZE : end]))
                return
            raise ProtocolError(
                "packet without the ENCRYPTED flag after the handshake", code=ErrorCode.UNENCRYPTED
            )
        if size < TAG_SIZE:
            raise ProtocolError(f"sealed packet of {size} bytes is shorter than its tag")
        assert self._recv is not None
        body = self._recv.open(view[pos : pos + HEADER_SIZE], seq_id, view[pos + HEADER_SIZE : end])
        if ptype == _DATA:
            self._receive_data_packet(ch_id, flags, body)
        elif ptype == _CONTROL:
            self._receive_control(ch_id, body)
        elif ptype == _KEEPALIVE_T:
            self._receive_keepalive(body)
        elif ptype == _CLOSE_T:
            self._receive_close(ch_id, body)
        else:
            self._handle_error_body(body)

    def _receive_data_packet(self, ch_id: int, flags: int, body: bytes) -> None:
        channel = self.channels.get(ch_id)
        if channel is None:
            raise ProtocolError(
                f"DATA for channel {ch_id}, which is not open",
                code=ErrorCode.UNKNOWN_CHANNEL,
                channel_id=ch_id,
            )
        fragmented = bool(flags & _FRAG)
        if flags & _BATCH:
            self._receive_batch(channel, flags, body)
            return
        payload: bytes | memoryview
        total: int | None
        if fragmented:
            payload, total = self._parse_fragment(channel, body)
        elif channel.reassembly is not None:
            raise ProtocolError(f"unfragmented DATA on channel {ch_id} inside a fragmented message")
        else:
            payload, total = body, None
        if flags & _COMP:
            assert self.result is not None
            payload = compression.decompress(
                payload, self.config.max_packet_payload, self.result.features
            )
            if not fragmented:
                body = payload
        n = len(payload)
        channel.recv_offset += n
        self._conn_recv_offset += n
        if channel.recv_offset > channel.recv_max or self._conn_recv_offset > self._conn_recv_max:
            raise FlowControlError(f"peer exceeded its credit on channel {ch_id}", channel_id=ch_id)
        if channel.state == ChannelState.CLOSING:
            self.stats.dropped_packets += 1
            self._consume_credit(ch_id, n)
            return
        if not fragmented:
            self._events.append(
                DataReceived(
                    channel_id=ch_id, packet_type=_DATA, data=body, flow_bytes=n, reserved=0
                )
            )
            return
        if total is not None:
            self._reserved += total
            channel.reassembly = bytearray()
            channel.reassembly_total = total
        reassembly = channel.reassembly
        assert reassembly is not None
        if len(reassembly) + n > channel.reassembly_total:
            raise ProtocolError(f"fragments on channel {ch_id} exceed the announced length")
        reassembly += payload
        # Reassembled bytes are held in reserved memory, not in the window: return the credit now
        # so a message larger than the window can complete.
        self._consume_credit(ch_id, n)
        if len(reassembly) == channel.reassembly_total:
            channel.reassembly = None
            self._events.append(
                DataReceived(
                    channel_id=ch_id,
                    packet_type=_DATA,
                    data=bytes(reassembly),
                    flow_bytes=0,
                    reserved=channel.reassembly_total,
                )
            )

    def _receive_batch(self, channel: ChannelCore, flags: int, body: bytes) -> None:
        assert self.result is not None
        if not self.result.features & Feature.BATCHING or flags & _FRAG:
            raise ProtocolError("BATCHED packet without the BATCHING feature, or fragmented")
        if flags & _COMP:
            body = compression.decompress(
                body, self.config.max_packet_payload, self.result.features
            )
        messages: list[bytes] = []
        append = messages.append
        unpack = _U16.unpack_from
        pos = 0
        end = len(body)
        while pos < end:
            if end - pos < 2:
                raise ProtocolError("truncated record length in a BATCHED packet")
            (n,) = unpack(body, pos)
            pos += 2
            if pos + n > end:
                raise ProtocolError(f"record of {n} bytes overruns its BATCHED packet")
            append(body[pos : pos + n])
            pos += n
        total = end - 2 * len(messages)
        ch_id = channel.id
        channel.recv_offset += total
        self._conn_recv_offset += total
        if channel.recv_offset > channel.recv_max or self._conn_recv_offset > self._conn_recv_max:
            raise FlowControlError(f"peer exceeded its credit on channel {ch_id}", channel_id=ch_id)
        if channel.state == ChannelState.CLOSING:
            self.stats.dropped_packets += 1
            self._consume_credit(ch_id, total)
            return
        self._events.append(
            DataBatchReceived(channel_id=ch_id, messages=messages, flow_bytes=total)
        )

    def _parse_fragment(self, channel: ChannelCore, body: bytes) -> tuple[memoryview, int | None]:
        """(payload, announced total or None) of a fragment; checks limits before any allocation."""
        if not body:
            raise ProtocolError("empty fragment")
        marker = body[0]
        if marker == _FRAG_NEXT:
            if channel.reassembly is None and channel.state == ChannelState.OPEN:
                raise ProtocolError(
                    f"continuation fragment on channel {channel.id} without a first fragment"
                )
            return memoryview(body)[1:], None
        if marker != _FRAG_FIRST:
            raise ProtocolError(f"unknown fragment marker {marker}")
        if channel.reassembly is not None:
            raise ProtocolError(
                f"new fragmented message on channel {channel.id} before the last completed"
            )
        if len(body) < _FIRST_FRAGMENT.size:
            raise ProtocolError("first fragment too short for its length field")
        _, total = _FIRST_FRAGMENT.unpack_from(body, 0)
        if total > self.config.max_message_size:
            raise ProtocolError(
                f"fragmented message announces {total} bytes, "
                f"limit is {self.config.max_message_size}",
                code=ErrorCode.MESSAGE_TOO_LARGE,
                channel_id=channel.id,
            )
        if self._reserved + total > self.config.connection_memory_budget:
            raise ProtocolError(
                f"fragmented message of {total} bytes exceeds the reassembly budget "
                f"({self._reserved} of {self.config.connection_memory_budget} bytes in use)",
                code=ErrorCode.ENHANCE_YOUR_CALM,
                channel_id=channel.id,
            )
        if channel.state == ChannelState.CLOSING:
            return memoryview(body)[_FIRST_FRAGMENT.size :], None
        return memoryview(body)[_FIRST_FRAGMENT.size :], total

    def _receive_control(self, ch_id: int, body: bytes) -> None:
        if not body:
            raise ProtocolError("empty CONTROL packet")
        op = body[0]
        if op == ControlOp.OPEN:
            self._police("open_close")
        elif op != ControlOp.WINDOW and op != ControlOp.REKEY:
            self._police("control")
        if op == ControlOp.USER:
            self._channel_or_error(ch_id)
            if self.channels[ch_id].state == ChannelState.OPEN:
                self._events.append(
                    DataReceived(
                        channel_id=ch_id,
                        packet_type=_CONTROL,
                        data=body[1:],
                        flow_bytes=0,
                        reserved=0,
                    )
                )
        elif op == ControlOp.OPEN:
            self._receive_open(ch_id, body)
        elif op == ControlOp.WINDOW:
            if len(body) != _WINDOW.size:
                raise ProtocolError(f"WINDOW body of {len(body)} bytes, expected {_WINDOW.size}")
            _, scope, credit = _WINDOW.unpack(body)
            self._receive_window(ch_id, scope, credit)
        elif op == ControlOp.REKEY:
            assert self._recv is not None
            self._recv.rekey()
        elif op == ControlOp.DISCARD:
            channel = self._channel_or_error(ch_id)
            if channel.reassembly is not None:
                self._reserved -= channel.reassembly_total
                channel.reassembly = None
        elif op == ControlOp.PRIORITY:
            channel = self._channel_or_error(ch_id)
            if len(body) != 2 or body[1] > 7:
                raise ProtocolError("PRIORITY body must be 2 bytes with an urgency 0..7")
            self._apply_priority(channel, body[1])
        else:
            raise ProtocolError(f"unknown control op 0x{op:02x}", code=ErrorCode.UNKNOWN_TYPE)

    def _receive_open(self, ch_id: int, body: bytes) -> None:
        existing = self.channels.get(ch_id)
        if existing is not None:
            if existing.state == ChannelState.CLOSING:
                raise ProtocolError(
                    f"OPEN of channel {ch_id} while it is closing", channel_id=ch_id
                )
            return  # simultaneous open: both sides now agree it is open
        if len(self.channels) >= self.config.max_channels:
            raise ProtocolError(
                f"peer opened more than {self.config.max_channels} channels",
                code=ErrorCode.CHANNEL_LIMIT,
            )
        channel = self._new_channel(ch_id)
        if len(body) >= 2:
            channel.priority = body[1] & 7
        self._events.append(ChannelOpened(channel_id=ch_id, by_peer=True))

    def _receive_window(self, ch_id: int, scope: int, credit: int) -> None:
        if scope == _SCOPE_CONNECTION:
            if credit > self._conn_send_max:
                self._conn_send_max = credit
            else:
                self._police("control")  # a WINDOW that grants nothing is a cheap packet
            return
        if scope != _SCOPE_CHANNEL:
            raise ProtocolError(f"unknown WINDOW scope {scope}")
        channel = self.channels.get(ch_id)
        if channel is not None and credit > channel.send_max:
            channel.send_max = credit
            if ch_id not in self._shaped:
                self._schedule(channel)
        else:
            self._police("control")

    def _receive_keepalive(self, body: bytes) -> None:
        if len(body) != _KEEPALIVE.size:
            raise ProtocolError(f"KEEPALIVE body of {len(body)} bytes, expected {_KEEPALIVE.size}")
        kind, stamp = _KEEPALIVE.unpack(body)
        if kind == KeepaliveKind.PING:
            self._police("ping")
            self._seal_control(_KEEPALIVE_T, 0, _KEEPALIVE.pack(KeepaliveKind.PONG, stamp))
        elif kind == KeepaliveKind.PONG:
            rtt = max(0.0, self._last_recv - stamp / 1e6)
            if rtt < 3600:
                self.stats.rtt_sum += rtt
                self.stats.rtt_count += 1
                self.stats.rtt_last = rtt
                self._srtt = rtt if not self._srtt else 0.875 * self._srtt + 0.125 * rtt
                self._min_rtt = rtt if not self._min_rtt else min(self._min_rtt, rtt)
                self._events.append(PongReceived(rtt=rtt))
        else:
            raise ProtocolError(f"unknown KEEPALIVE kind {kind}")

    def _receive_close(self, ch_id: int, body: bytes) -> None:
        if len(body) < _CLOSE.size:
            raise ProtocolError(f"CLOSE body of {len(body)} bytes is too short")
        scope, code = _CLOSE.unpack_from(body, 0)
        reason = self._decode_reason(body[_CLOSE.size :])
        if scope == CloseScope.STREAM:
            if self.state == ConnectionState.CLOSING and self._close_requested is not None:
                own_code, own_reason = self._close_requested
                self._terminate(own_code, own_reason or "closed", by_peer=False, send_error=False)
            else:
                self._seal_control(_CLOSE_T, 0, _CLOSE.pack(CloseScope.STREAM, code))
                self._terminate(code, reason or "closed by peer", by_peer=True, send_error=False)
            return
        if scope != CloseScope.CHANNEL:
            raise ProtocolError(f"unknown CLOSE scope {scope}")
        self._police("open_close")
        channel = self._channel_or_error(ch_id)
        by_peer = channel.state == ChannelState.OPEN
        if by_peer:
            self._seal_control(_CLOSE_T, ch_id, _CLOSE.pack(CloseScope.CHANNEL, code))
        self._remove_channel(channel)
        self._events.append(
            ChannelClosed(channel_id=ch_id, code=code, reason=reason, by_peer=by_peer)
        )

    def _handle_error_body(self, body: bytes) -> None:
        if len(body) < _ERROR.size:
            self._terminate(
                ErrorCode.PROTOCOL_ERROR,
                "malformed ERROR from peer",
                by_peer=True,
                send_error=False,
            )
            return
        (code,) = _ERROR.unpack_from(body, 0)
        reason = self._decode_reason(body[_ERROR.size :])
        self._terminate(code, reason or code_name(code), by_peer=True, send_error=False)

    # -------------------------------------------------------------------------------- internals

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
            self._levels[channel.priority].append(channel.id)

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

    def _grow(self, window: int, sent_at: float, ceiling: int) -> int:
        """Window auto-tuning: a window used up within two *minimum* RTTs limits throughput, so
        double it. The minimum, not the smoothed RTT: queueing we cause ourselves inflates the
        smoothed RTT, and growing on it would only queue more (and delay control packets)."""
        if (
            self.config.window_autotune
            and self._min_rtt > 0
            and sent_at >= 0
            and self._now - sent_at < 2 * self._min_rtt
        ):
            return min(window * 2, ceiling)
        return window

    def _consume_credit(self, ch_id: int, n: int) -> None:
        self._conn_consumed += n
        window = self._conn_window
        if self._conn_recv_max - self._conn_consumed < window // 2:
            window = self._conn_window = self._grow(
                window, self._conn_window_sent_at, self.config.connection_memory_budget
            )
            self._conn_window_sent_at = self._now
            self._conn_recv_max = self._conn_consumed + window
            self._seal_control(
                _CONTROL, 0, _WINDOW.pack(ControlOp.WINDOW, _SCOPE_CONNECTION, self._conn_recv_max)
            )
        channel = self.channels.get(ch_id)
        if channel is None or channel.state != ChannelState.OPEN:
            return
        channel.consumed += n
        if channel.recv_max - channel.consumed < channel.recv_window // 2:
            channel.recv_window = self._grow(
                channel.recv_window,
                channel.window_sent_at,
                min(self.config.max_channel_window, self._conn_window),
            )
            channel.window_sent_at = self._now
            channel.recv_max = channel.consumed + channel.recv_window
            self._seal_control(
                _CONTROL, ch_id, _WINDOW.pack(ControlOp.WINDOW, _SCOPE_CHANNEL, channel.recv_max)
            )

    def _write_plain(self, ptype: int, seq_id: int, body: bytes) -> None:
        header = HEADER.pack(len(body), ptype, seq_id, 0, 0)
        self._out.append(header + body)
        self.stats.packets_sent += 1
        self.stats.bytes_sent += HEADER_SIZE + len(body)

    def _seal_control(self, ptype: int, ch_id: int, body: bytes) -> None:
        self._append_sealed(ptype, ch_id, _ENC, body)

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

    def _send_channel_close(self, channel: ChannelCore, code: int, reason: str) -> None:
        channel.queue.clear()
        channel.queued_bytes = 0
        channel.close_after_flush = None
        channel.state = ChannelState.CLOSING
        self._unschedule(channel)
        self._shaped.pop(channel.id, None)
        self._seal_control(
            _CLOSE_T,
            channel.id,
            _CLOSE.pack(CloseScope.CHANNEL, code) + self._encode_reason(reason),
        )

    def _send_stream_close(self) -> None:
        assert self._close_requested is not None
        code, reason = self._close_requested
        self._seal_control(
            _CLOSE_T, 0, _CLOSE.pack(CloseScope.STREAM, code) + self._encode_reason(reason)
        )

    def _schedule_data(self, limit: int, now: float) -> None:
        """Seal DATA packets, up to ``limit`` bytes, from the most urgent channels with credit.

        Within one urgency, channels take turns packet by packet. A channel out of credit leaves
        the rotation until its WINDOW arrives; a rate-limited one until its bucket refills (timer);
        when the connection is out of credit, scheduling stops until a connection WINDOW. A late
        realtime message is dropped here, before it is sent.
        """
        budget = limit
        max_payload = self._peer_max_payload
        cipher = self._send
        assert cipher is not None
        levels = self._levels
        peer_bucket = self._peer_bucket
        assert self.result is not None
        batching = bool(self.result.features & Feature.BATCHING) and peer_bucket is None
        while budget > 0:
            queue = next((level for level in levels if level), None)
            if queue is None:
                break
            conn_credit = self._conn_send_max - self._conn_send_offset
            if conn_credit <= 0:
                break
            channel = self.channels[queue[0]]
            message = channel.queue[0]
            remaining = len(message.data) - message.offset
            if message.deadline is not None and now > message.deadline:
                self._drop_late(channel, message, remaining)
                continue
            channel_credit = channel.send_max - channel.send_offset
            if message.fragmented:
                first = message.offset == 0
                room = max_payload - (_FIRST_FRAGMENT.size if first else 1)
                take = min(remaining, channel_credit, conn_credit, room)
            else:
                take = remaining if remaining <= min(channel_credit, conn_credit) else 0
            if take <= 0 and remaining > 0:
                if channel_credit < conn_credit or channel_credit <= 0:
                    queue.popleft()  # waits for this channel's WINDOW
                    channel.scheduled = False
                    continue
                break  # waits for the connection's WINDOW
            if channel.bucket is not None or peer_bucket is not None:
                allowed = min(
                    channel.bucket.available(now) if channel.bucket is not None else take,
                    peer_bucket.available(now) if peer_bucket is not None else take,
                )
                if message.fragmented and allowed >= 1:
                    take = min(take, int(allowed))
                elif allowed < take:
                    wake = max(
                        channel.bucket.ready_at(take, now) if channel.bucket else now,
                        peer_bucket.ready_at(take, now) if peer_bucket else now,
                    )
                    queue.popleft()
                    channel.scheduled = False
                    self._shaped[channel.id] = wake
                    continue
                if channel.bucket is not None:
                    channel.bucket.spend(take, now)
                if peer_bucket is not None:
                    peer_bucket.spend(take, now)
            queue.popleft()
            ch_id = channel.id
            flags = _ENC
            chunk: bytes | memoryview
            if message.fragmented:
                flags |= _FRAG
                if message.offset == 0:
                    prefix = _FIRST_FRAGMENT.pack(_FRAG_FIRST, len(message.data))
                else:
                    prefix = b"\x02"
                chunk = message.data[message.offset : message.offset + take]
            elif (
                batching
                and len(channel.queue) > 1
                and take <= BATCH_MAX_MESSAGE
                and channel.queue[1].deadline is None
                and not channel.queue[1].fragmented
            ):
                batch = self._take_batch(channel, min(channel_credit, conn_credit, budget + take))
                if batch is not None:
                    body, _, take = batch
                    self._append_sealed(_DATA, ch_id, flags | _BATCH, body)
                    channel.last_seq = (cipher.counter - 1) & 0xFFFFFFFF
                    channel.send_offset += take
                    self._conn_send_offset += take
                    channel.queued_bytes -= take
                    budget -= take
                    if channel.bucket is not None:
                        channel.bucket.spend(take, now)
                    if peer_bucket is not None:
                        peer_bucket.spend(take, now)
                    self._after_dequeue(channel, queue)
                    continue
                prefix = b""
                chunk = message.data
            else:
                prefix = b""
                chunk = message.data[message.offset :] if message.offset else message.data
            if channel.compressor is not None:
                packed = channel.compressor.maybe_compress(chunk)
                if packed is not None:
                    chunk = packed
                    flags |= _COMP
            self._append_sealed(_DATA, ch_id, flags, prefix + chunk if prefix else chunk)
            channel.last_seq = (cipher.counter - 1) & 0xFFFFFFFF
            message.offset += take
            channel.send_offset += take
            self._conn_send_offset += take
            channel.queued_bytes -= take
            budget -= take
            if message.offset >= len(message.data):
                channel.queue.popleft()
            self._after_dequeue(channel, queue)
        if (
            self.state == ConnectionState.CLOSING
            and not self._stream_close_sent
            and not any(c.queue for c in self.channels.values())
        ):
            self._stream_close_sent = True
            self._send_stream_close()

    def _take_batch(self, channel: ChannelCore, credit: int) -> tuple[bytes, int, int] | None:
        """Pop consecutive small reliable messages that fit one packet and the credit.

        Returns (body, count, payload bytes) or None when fewer than two fit."""
        room = self._peer_max_payload
        parts: list[bytes | memoryview] = []
        total = 0
        count = 0
        for message in channel.queue:
            n = len(message.data)
            if (
                message.fragmented
                or message.deadline is not None
                or n > BATCH_MAX_MESSAGE
                or total + n > credit
                or 2 * (count + 1) + total + n > room
            ):
                break
            parts.append(n.to_bytes(2, "little"))
            parts.append(message.data)
            total += n
            count += 1
        if count < 2:
            return None
        popleft = channel.queue.popleft
        for _ in range(count):
            popleft()
        return b"".join(parts), count, total

    def _after_dequeue(self, channel: ChannelCore, queue: deque[int]) -> None:
        """Book-keeping after a channel's queue shrank: writability, rotation, deferred close."""
        if channel.blocked and channel.queued_bytes <= self.config.send_low_water:
            channel.blocked = False
            self._events.append(ChannelWritable(channel_id=channel.id))
        if channel.queue:
            queue.append(channel.id)
        else:
            channel.scheduled = False
            if channel.close_after_flush is not None:
                code, reason = channel.close_after_flush
                self._send_channel_close(channel, code, reason)

    def _drop_late(self, channel: ChannelCore, message: PendingMessage, remaining: int) -> None:
        """A realtime message missed its deadline: drop it before sending (DISCARD if begun)."""
        if message.offset:
            self._seal_control(_CONTROL, channel.id, bytes((ControlOp.DISCARD,)))
        channel.queue.popleft()
        channel.queued_bytes -= remaining
        channel.dropped_late += 1
        self.stats.dropped_late += 1
        queue = self._levels[channel.priority]
        queue.popleft()
        self._after_dequeue(channel, queue)

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
                    self._seal_control(_ERROR_T, 0, body)
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
