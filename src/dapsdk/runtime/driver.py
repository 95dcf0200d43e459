"""The pump between a wire core and any byte transport (STYLE.md §6).

Every entry point does the same three steps: call the core with ``now=loop.time()``, dispatch the
core's events to the object model, then transmit and re-arm the single timer. Transports (TCP,
WebSocket, QUIC) implement :class:`ByteSink` and call :meth:`ConnectionDriver.feed` /
:meth:`ConnectionDriver.transport_lost`; they never parse bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from ..stream.connection import StreamConnection
from ..stream.events import StreamEvent, StreamTerminated
from .timers import TICK, TimerWheel

log = logging.getLogger("dapsdk.runtime")

#: DATA bytes sealed per transmit round before yielding to the event loop.
TRANSMIT_BATCH = 256 * 1024


class ByteSink(Protocol):
    """What a transport adapter offers the driver."""

    def write_chunks(self, chunks: Iterable[bytes]) -> None: ...

    def close_transport(self) -> None: ...

    def abort_transport(self) -> None: ...


class ConnectionDriver:
    """Owns one :class:`StreamConnection` and pumps it on the running loop."""

    def __init__(
        self,
        core: StreamConnection,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[StreamEvent], None],
        timers: TimerWheel | None = None,
    ) -> None:
        self.core = core
        self.loop = loop
        self.sink: ByteSink | None = None
        self._on_event = on_event
        self._timers = timers if timers is not None else TimerWheel(loop)
        self._timer_tick: int | None = None
        self._transmit_scheduled = False
        self._paused = False
        self._closed = False

    # -- transport side --------------------------------------------------------------------

    def attach(self, sink: ByteSink) -> None:
        self.sink = sink
        self.pump()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.core.receive_data(data, self.loop.time())
        # Replies (WINDOW, PONG, echoes written by callbacks) go out once per loop iteration,
        # not once per read: one write syscall for everything this iteration produced.
        self._dispatch()
        self.transmit_soon()
        self._arm_timer()

    def pause_writing(self) -> None:
        self._paused = True
        self.core.set_write_blocked(True, self.loop.time())
        self._arm_timer()

    def resume_writing(self) -> None:
        self._paused = False
        self.core.set_write_blocked(False, self.loop.time())
        self.pump()

    def transport_lost(self, reason: str) -> None:
        self.core.connection_lost(reason)
        self._closed = True
        self._dispatch()
        self._cancel_timer()

    # -- application side ------------------------------------------------------------------

    def pump(self) -> None:
        """Dispatch events, transmit, re-arm the timer."""
        self._dispatch()
        self._transmit()
        self._dispatch()  # transmitting may emit ChannelWritable
        self._arm_timer()

    def transmit_soon(self) -> None:
        """Coalesce writes issued in one loop iteration into one transmit."""
        if not self._transmit_scheduled:
            self._transmit_scheduled = True
            self.loop.call_soon(self._deferred_transmit)

    def _deferred_transmit(self) -> None:
        self._transmit_scheduled = False
        self.pump()

    def _dispatch(self) -> None:
        core = self.core
        while (event := core.next_event()) is not None:
            try:
                self._on_event(event)
            except Exception:  # a bug in a callback must not kill the connection's pump
                log.exception("event handler failed for %r", event)
            if isinstance(event, StreamTerminated):
                self._finish()

    def _transmit(self) -> None:
        sink = self.sink
        if sink is None or self._closed:
            return
        if self._paused:
            # Nothing is written while the transport is full, not even CONTROL: sealed packets
            # wait in the core, where they count against max_send_queue (a peer that does not
            # read is closed there instead of growing the transport's buffer without end).
            return
        chunks = self.core.data_to_send(TRANSMIT_BATCH, self.loop.time())
        if chunks:
            sink.write_chunks(chunks)
        if self.core.has_pending_data():
            self.transmit_soon()

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        sink = self.sink
        if sink is not None:
            chunks = self.core.data_to_send(0)
            if chunks:
                sink.write_chunks(chunks)
            sink.close_transport()

    def _arm_timer(self) -> None:
        """Keep one entry in the shared timer wheel at the core's deadline.

        A deadline that moved later (every received packet postpones the keepalive) keeps the
        earlier entry: it fires, finds nothing due and re-arms then, so a busy connection touches
        the wheel about once per keepalive interval instead of once per packet."""
        if self._closed:
            return
        deadline = self.core.get_timer()
        armed = self._timer_tick
        if deadline is None:
            if armed is not None:
                self._cancel_timer()
            return
        tick = TimerWheel.tick_of(deadline)
        if armed is not None:
            if armed <= tick:
                return
            self._timers.cancel(self, armed)
        self._timer_tick = tick
        self._timers.schedule(self, tick)

    def _cancel_timer(self) -> None:
        if self._timer_tick is not None:
            self._timers.cancel(self, self._timer_tick)
        self._timer_tick = None

    def on_timer(self) -> None:
        """Called by the timer wheel once the armed tick is reached."""
        self._timer_tick = None
        if self._closed:
            return
        deadline = self.core.get_timer()
        now = self.loop.time()
        if deadline is not None and now + TICK >= deadline:
            # loop timers may fire a little early: the deadline counts as reached
            self.core.handle_timer(max(now, deadline))
            self.pump()
        else:
            self._arm_timer()  # the deadline moved later since it was armed

    def abort(self, code: int, reason: str) -> None:
        """Terminate locally, telling the peer with an ERROR packet."""
        self.core.abort(code, reason)
        self.pump()
