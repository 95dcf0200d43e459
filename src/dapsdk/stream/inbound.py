"""The receive side of a connection: parsing packets from the transport's bytes and handling
each packet type (handshake, DATA with fragments/batches/compression, CONTROL ops, KEEPALIVE,
CLOSE, ERROR)."""

from __future__ import annotations

import logging

from . import compression
from .admission import COOKIE_SIZE
from .base import (
    _BATCH,
    _CLOSE,
    _CLOSE_T,
    _COMP,
    _CONTROL,
    _DATA,
    _ENC,
    _ERROR,
    _ERROR_T,
    _FIRST_FRAGMENT,
    _FRAG,
    _FRAG_FIRST,
    _FRAG_NEXT,
    _KEEPALIVE,
    _KEEPALIVE_T,
    _SCOPE_CHANNEL,
    _SCOPE_CONNECTION,
    _U16,
    _WINDOW,
    ConnectionState,
)
from .channel import ChannelCore, ChannelState
from .constants import (
    HEADER,
    HEADER_SIZE,
    KNOWN_FLAGS,
    KNOWN_TYPES,
    TAG_SIZE,
    CloseScope,
    ControlOp,
    Feature,
    HandshakeStep,
    KeepaliveKind,
)
from .crypto import DirectionCipher
from .errors import (
    ErrorCode,
    FlowControlError,
    FrameTooLarge,
    HandshakeError,
    ProtocolError,
    code_name,
)
from .events import (
    ChannelClosed,
    ChannelOpened,
    DataBatchReceived,
    DataReceived,
    HandshakeCompleted,
    PongReceived,
)
from .handshake import HandshakeResult
from .outbound import OutboundMixin

log = logging.getLogger("dapsdk.stream")


class InboundMixin(OutboundMixin):
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
        handshake = self.handshake
        assert handshake is not None  # handshake packets arrive only before establishment
        if not self.is_client and handshake.expected_step == 0:
            if seq_id == HandshakeStep.COOKIE:
                # The cookie echo of a retried connection, at most once, before HELLO (§3.7).
                if self.peer_cookie is not None or len(body) != COOKIE_SIZE:
                    raise HandshakeError("cookie echo repeated or not 20 bytes")
                self.peer_cookie = body
                return
            if seq_id == 0 and self.hello_gate is not None:
                refusal = self.hello_gate(self.peer_cookie)
                if refusal is not None:
                    self._terminate(refusal[0], refusal[1], by_peer=False, send_error=True)
                    return
        reply = handshake.receive(seq_id, body)
        if self._handshake_sent_at is not None:
            # HELLO->RESPONSE (initiator) or RESPONSE->FINISH (responder) is a round trip, but it
            # includes the peer's key agreement and signature work: a latency sample and a first
            # smoothed RTT, not the path's minimum RTT (which drives window growth). The PING sent
            # on establishment measures that within one round trip.
            rtt = max(self._now - self._handshake_sent_at, 1e-6)
            self._srtt = rtt
            self.stats.rtt_sum += rtt
            self.stats.rtt_count += 1
            self.stats.rtt_last = rtt
            self._handshake_sent_at = None
        if reply is not None:
            self._write_plain(_CONTROL, seq_id + 1, reply)
            if not self.is_client:
                self._handshake_sent_at = self._now
        if handshake.result is not None:
            self.handshake = None  # ephemeral secrets and the transcript are not needed any more
            self._establish(handshake.result)

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
        self._last_ping = self._now
        self._pings_unanswered = 1
        self._seal_control(
            _KEEPALIVE_T, 0, _KEEPALIVE.pack(KeepaliveKind.PING, int(self._now * 1e6))
        )
        if self.is_client:
            # Our FINISH may still be refused (a revoked certificate, a policy): the stream is
            # established for the application only once the responder's first sealed packet
            # (its establishment PING) authenticates, see _confirm.
            self._unconfirmed = True
            return
        self._confirm()

    def _confirm(self) -> None:
        result = self.result
        assert result is not None
        self._unconfirmed = False
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
        if self._unconfirmed:
            self._confirm()  # the responder sealed with the traffic keys: it accepted FINISH
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
        if not n:
            self._police("empty")  # an empty DATA packet carries nothing but costs an AEAD
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
        else:
            self._police("control")  # every other op, WINDOW and REKEY included
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
            else:
                self._police("empty")  # nothing to discard
        elif op == ControlOp.PRIORITY:
            channel = self._channel_or_error(ch_id)
            if len(body) != 2 or body[1] > 7:
                raise ProtocolError("PRIORITY body must be 2 bytes with an urgency 0..7")
            if channel.priority == body[1]:
                self._police("empty")  # changes nothing
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
                self._police("empty")  # a WINDOW that grants nothing
            return
        if scope != _SCOPE_CHANNEL:
            raise ProtocolError(f"unknown WINDOW scope {scope}")
        channel = self.channels.get(ch_id)
        if channel is not None and credit > channel.send_max:
            channel.send_max = credit
            if ch_id not in self._shaped:
                self._schedule(channel)
        else:
            self._police("empty")  # grants nothing, or for a channel that is not open

    def _receive_keepalive(self, body: bytes) -> None:
        if len(body) != _KEEPALIVE.size:
            raise ProtocolError(f"KEEPALIVE body of {len(body)} bytes, expected {_KEEPALIVE.size}")
        kind, stamp = _KEEPALIVE.unpack(body)
        if kind == KeepaliveKind.PING:
            self._police("ping")
            self._seal_control(_KEEPALIVE_T, 0, _KEEPALIVE.pack(KeepaliveKind.PONG, stamp))
        elif kind == KeepaliveKind.PONG:
            if self._pings_unanswered <= 0:
                self._police("empty")  # answers no PING of ours
                return
            self._pings_unanswered -= 1
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
