"""Channel: the seed's ``dap_stream_ch_t``, one typed conversation inside a stream.

Callbacks (all optional, called on the event loop with the channel and ``callback_arg``):

* ``packet_in(ch, type, data, arg) -> int``: a message arrived. The return value is the number of
  bytes processed; what is left (``data[n:]``) stays queued for :meth:`Channel.read`, and
  ``ready_to_read`` fires. Returning ``len(data)`` (or more) consumes the message.
* ``packet_out(ch, type, data, arg)``: after each message is queued for sending.
* ``ready_to_read(ch, arg)``: unread messages are waiting.
* ``ready_to_write(ch, arg)``: the channel accepts writes (once when it opens, and each time its
  queue drains below the low-water mark after writers were held back).

Flow control is end to end: credit returns to the sender only when a message has been consumed
(by ``packet_in`` or ``read``), so a slow reader holds back a fast writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..stream.channel_key import ChannelKey
from ..stream.constants import PacketType
from ..stream.errors import DecryptError, ErrorCode, RateLimited, StreamClosedError
from ..stream.events import DataBatchReceived, DataReceived

if TYPE_CHECKING:
    from .session import Session
    from .stream import Stream

log = logging.getLogger("dapsdk.runtime.channel")

ChannelCallback = Callable[["Channel", Any], None]
PacketCallback = Callable[["Channel", int, bytes, Any], "int | None"]

#: Unread application CONTROL messages a channel holds before it is closed (they are not
#: flow-controlled, so this bounds what a peer can make us buffer).
MAX_PENDING_CONTROL = 1024


class _BatchCredit:
    """Credit of a batch whose messages are read one by one: returned with the last of them."""

    __slots__ = ("event", "remaining")

    def __init__(self, event: DataBatchReceived, remaining: int) -> None:
        self.event = event
        self.remaining = remaining


class _Pending:
    __slots__ = ("data", "event", "ptype")

    def __init__(self, ptype: int, data: bytes, event: DataReceived | _BatchCredit | None) -> None:
        self.ptype = ptype
        self.data = data
        self.event = event


class Channel:
    def __init__(self, stream: Stream, channel_id: int, *, opened_by_peer: bool) -> None:
        self.stream = stream
        self.id = channel_id
        self.type = channel_id & 0xFF
        """Channel type (``uint8_t type``): the id's low byte; well-known ids are their own type."""
        self.opened_by_peer = opened_by_peer
        self.is_active = True
        self.packet_in: PacketCallback | None = None
        self.packet_out: PacketCallback | None = None
        self.ready_to_read: ChannelCallback | None = None
        self.ready_to_write: ChannelCallback | None = None
        self.on_close: Callable[[Channel, int, str], None] | None = None
        self.callback_arg: Any = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.key: ChannelKey | None = None
        """End-to-end key of this channel's payloads (``set_encryption``)."""
        self._pending: deque[_Pending] = deque()
        self._pending_control = 0
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._can_write = True  # mirrors _writable without a method call on the hot path
        # Hot-path references (a channel never moves to another stream or core).
        self._driver = stream.driver
        self._core = stream.driver.core
        self._high_water = stream.driver.core.config.send_high_water
        self._realtime = channel_id in self._core.config.realtime_channels
        self._closed = asyncio.Event()

    # -- identity ------------------------------------------------------------------------------

    @property
    def session(self) -> Session | None:
        return self.stream.session

    @property
    def seq_id(self) -> int:
        """seq_id of the last packet sent on this channel."""
        core = self.stream.driver.core.channels.get(self.id)
        return core.last_seq if core is not None else 0

    @property
    def buf_size(self) -> int:
        """Bytes of received messages waiting to be read."""
        return sum(len(p.data) for p in self._pending)

    @property
    def has_unread(self) -> bool:
        """Received messages are waiting to be read (cheaper than ``buf_size``)."""
        return bool(self._pending)

    @property
    def queued_bytes(self) -> int:
        """Bytes written and not yet sent (waiting for credit or the socket)."""
        return self.stream.driver.core.queued_bytes(self.id)

    def set_encryption(self, key: ChannelKey | None) -> None:
        """Seal this channel's payloads with ``key`` on top of the link encryption (None: stop).

        Both ends must set the same key; a relay that forwards the sealed payloads cannot read them.
        Compression is switched off for the channel (sealed bytes do not compress).
        """
        self.key = key
        if key is not None and self.is_active:
            self.stream.driver.core.set_compression(self.id, None)

    def set_priority(self, urgency: int) -> None:
        """RFC 9218 urgency 0 (first) .. 7 (last); may change while the channel runs."""
        self.stream.driver.core.set_priority(self.id, urgency)
        self.stream.driver.transmit_soon()

    def set_realtime(self, budget: float | None) -> None:
        """Latency budget in seconds for this channel's messages (None: never dropped)."""
        self.stream.driver.core.set_realtime(self.id, budget)
        self._realtime = budget is not None

    def set_rate_limit(self, bytes_per_second: int | None) -> None:
        """Shape this channel's sending to ``bytes_per_second`` (None: unlimited)."""
        self.stream.driver.core.set_rate_limit(self.id, bytes_per_second)

    def set_compression(self, algorithm: str | None) -> None:
        """Adaptive ``"zstd"`` / ``"lz4"`` compression of this channel's DATA (None: off).

        Refused while the channel has an end-to-end key (ciphertext does not compress).
        """
        if algorithm not in (None, "none") and self.key is not None:
            raise ValueError("compression is not used on a channel with an end-to-end key")
        self.stream.driver.core.set_compression(self.id, algorithm)

    def stats(self) -> dict[str, int]:
        """Per-channel counters: queued bytes, credit, late drops, compressed packets, priority."""
        return self.stream.driver.core.channel_stats(self.id)

    # -- writing -------------------------------------------------------------------------------

    def write_nowait(
        self,
        packet_type: int,
        data: bytes | bytearray | memoryview,
        *,
        deadline: float | None = None,
    ) -> int:
        """Queue a message without waiting; return bytes queued on the channel afterwards.

        ``deadline`` (loop time) overrides a realtime channel's default latency budget: the
        message is dropped, not sent, if it is still queued then. Raises StreamClosedError when
        the channel or stream is closed, ValueError for a bad type or an oversized CONTROL message.
        """
        if not self.is_active:
            raise StreamClosedError(f"channel {self.id} is closed", self.close_code or 0)
        payload: bytes | memoryview = bytes(data) if isinstance(data, bytearray) else data
        if self.key is not None:
            payload = self.key.seal(self.id, int(packet_type), payload)
        driver = self._driver
        if self._realtime or deadline is not None:
            # deadlines need the current time; reliable channels skip the clock read
            queued = self._core.send(
                self.id, packet_type, payload, now=driver.loop.time(), deadline=deadline
            )
        else:
            queued = self._core.send(self.id, packet_type, payload)
        if queued >= self._high_water:
            self._can_write = False
            self._writable.clear()
        driver.transmit_soon()
        if self.packet_out is not None:
            try:
                self.packet_out(self, int(packet_type), bytes(payload), self.callback_arg)
            except Exception:
                log.exception("packet_out callback of channel %d failed", self.id)
        return queued

    async def write(
        self,
        packet_type: int,
        data: bytes | bytearray | memoryview,
        *,
        deadline: float | None = None,
    ) -> None:
        """Queue a message; suspend while the channel holds more than the high-water mark."""
        if not self._can_write:
            while not self._writable.is_set():
                await self._wait_or_closed(self._writable)
        self.write_nowait(packet_type, data, deadline=deadline)

    async def drain(self) -> None:
        """Wait until the channel is below its high-water mark again."""
        while not self._writable.is_set():
            await self._wait_or_closed(self._writable)

    # -- reading -------------------------------------------------------------------------------

    def read(self) -> tuple[int, bytes] | None:
        """Take the oldest unread message as (packet type, data); None when there is none."""
        if not self._pending:
            return None
        item = self._pending.popleft()
        if item.ptype == PacketType.CONTROL:
            self._pending_control -= 1
        if not self._pending:
            self._readable.clear()
        credit = item.event
        if isinstance(credit, _BatchCredit):
            credit.remaining -= 1
            if credit.remaining == 0:
                self.stream.release(credit.event)
        elif credit is not None:
            self.stream.release(credit)
        return item.ptype, item.data

    async def receive(self) -> tuple[int, bytes]:
        """Wait for the next message. Raises StreamClosedError once the channel closed and drained."""
        while True:
            item = self.read()
            if item is not None:
                return item
            await self._wait_or_closed(self._readable)

    async def _wait_or_closed(self, event: asyncio.Event) -> None:
        if not self.is_active:
            raise StreamClosedError(
                f"channel {self.id} closed: {self.close_reason or 'closed'}", self.close_code or 0
            )
        waiter = asyncio.ensure_future(event.wait())
        closer = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({waiter, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closer.cancel()
        if not event.is_set() and not self.is_active:
            raise StreamClosedError(
                f"channel {self.id} closed: {self.close_reason or 'closed'}", self.close_code or 0
            )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close the channel (after queued data when code is 0)."""
        if self.is_active:
            self.stream.driver.core.close_channel(self.id, code, reason)
            self.stream.driver.transmit_soon()

    # -- driven by the stream ------------------------------------------------------------------

    def _deliver(self, event: DataReceived) -> None:
        data = event.data
        ptype = event.packet_type
        if self.key is not None:
            try:
                data = self.key.open(self.id, ptype, data)
            except DecryptError as exc:
                self.stream.release(event)
                self.close(ErrorCode.DECRYPT_FAILED, exc.reason)
                return
        if self.packet_in is not None:
            try:
                processed = self.packet_in(self, ptype, data, self.callback_arg)
            except Exception:
                log.exception("packet_in callback of channel %d failed", self.id)
                processed = 0
            done = len(data) if processed is None else max(0, int(processed))
            if done >= len(data):
                self.stream.release(event)
                return
            data = data[done:]
        if ptype == PacketType.CONTROL:
            if self._pending_control >= MAX_PENDING_CONTROL:
                self.stream.driver.abort(
                    RateLimited.code, f"more than {MAX_PENDING_CONTROL} unread CONTROL messages"
                )
                return
            self._pending_control += 1
        self._pending.append(_Pending(ptype, data, event))
        self._readable.set()
        self._fire(self.ready_to_read)

    def _deliver_batch(self, event: DataBatchReceived) -> None:
        """Several small messages from one packet: the same contract as :meth:`_deliver`, with
        the batch's credit returned once all of its messages are consumed."""
        messages = event.messages
        key = self.key
        packet_in = self.packet_in
        arg = self.callback_arg
        leftovers: list[bytes] = []
        for data in messages:
            if key is not None:
                try:
                    data = key.open(self.id, PacketType.DATA, data)
                except DecryptError as exc:
                    self.stream.release(event)
                    self.close(ErrorCode.DECRYPT_FAILED, exc.reason)
                    return
            if packet_in is None:
                leftovers.append(data)
                continue
            try:
                processed = packet_in(self, PacketType.DATA, data, arg)
            except Exception:
                log.exception("packet_in callback of channel %d failed", self.id)
                processed = 0
            done = len(data) if processed is None else max(0, int(processed))
            if done < len(data):
                leftovers.append(data[done:])
        if not leftovers:
            self.stream.release(event)
            return
        credit = _BatchCredit(event, len(leftovers))
        self._pending.extend(_Pending(PacketType.DATA, data, credit) for data in leftovers)
        self._readable.set()
        self._fire(self.ready_to_read)

    def _on_writable(self) -> None:
        self._can_write = True
        self._writable.set()
        self._fire(self.ready_to_write)

    def _on_opened(self) -> None:
        self._fire(self.ready_to_write)

    def _on_closed(self, code: int, reason: str) -> None:
        if not self.is_active:
            return
        self.is_active = False
        self.close_code = code
        self.close_reason = reason
        self._closed.set()
        self._can_write = True
        self._writable.set()
        if self.on_close is not None:
            try:
                self.on_close(self, code, reason)
            except Exception:
                log.exception("on_close callback of channel %d failed", self.id)

    def _fire(self, callback: ChannelCallback | None) -> None:
        if callback is None:
            return
        try:
            callback(self, self.callback_arg)
        except Exception:
            log.exception("callback of channel %d failed", self.id)

    def __repr__(self) -> str:
        state = "active" if self.is_active else "closed"
        return f"<Channel 0x{self.id:02x} {state} seq_id={self.seq_id}>"
