"""The send side of a connection: DATA scheduling (urgency, round-robin, deadlines, shaping,
batching, compression) and the credit it grants the peer."""

from __future__ import annotations

from collections import deque

from .base import (
    _BATCH,
    _CLOSE,
    _CLOSE_T,
    _COMP,
    _CONTROL,
    _DATA,
    _ENC,
    _FIRST_FRAGMENT,
    _FRAG,
    _FRAG_FIRST,
    _SCOPE_CHANNEL,
    _SCOPE_CONNECTION,
    _WINDOW,
    BATCH_MAX_MESSAGE,
    ConnectionBase,
    ConnectionState,
)
from .channel import ChannelCore, ChannelState, PendingMessage
from .constants import (
    CloseScope,
    ControlOp,
    Feature,
)
from .events import (
    ChannelWritable,
)


class OutboundMixin(ConnectionBase):
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
