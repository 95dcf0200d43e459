"""AVRS on real dap_stream streams, node side: the five channels ``A r C c S`` registered as
dap_stream channel procs, one sans-IO :class:`~dapsdk.avrs.AvrsConnection` per stream, and the
pump between them (``receive`` -> events -> ``data_to_send`` -> ``channel.write_nowait``, plus the
core's reply timer on the event loop).

Per node, :class:`AvrsService` shares the :class:`SessionRegistry` (resume across connections),
the :class:`ReplayGuard` (a request captured on one connection fails on another) and the
:class:`ContentCallbacks` (the seed's global ``avrs_ch_pkt_in_content_add_callback`` list). Cluster
requests are answered by the :class:`~.avrs_cluster.ClusterDirectory`; media a publisher sends is
fanned out to every session that subscribed to the same content and is synchronised.

``now`` for the core is wall-clock ``time.time()`` (signed timestamps are compared across machines).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from dapsdk.avrs.callbacks import ContentCallbacks
from dapsdk.avrs.config import AvrsConfig
from dapsdk.avrs.connection import AvrsConnection
from dapsdk.avrs.constants import AvrsChannel, SignalOp
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError
from dapsdk.avrs.events import (
    AvrsEvent,
    ClusterRequestReceived,
    ContentReceived,
    SignalReceived,
)
from dapsdk.avrs.packets import ContentPacket
from dapsdk.avrs.permissions import PUBLISH, SUBSCRIBE
from dapsdk.avrs.session_core import INTERACTIVE_OPS
from dapsdk.avrs.sessions import AvrsSession, SessionRegistry
from dapsdk.avrs.signing import identity_of
from dapsdk.avrs.verification import SecondFactor, content_decision
from dapsdk.runtime.channel import Channel
from dapsdk.runtime.node import ChannelProc, StreamNode
from dapsdk.runtime.stream import Stream
from dapsdk.stream.constants import PacketType
from dapsdk.stream.errors import DapError, ErrorCode

from .avrs_cluster import ClusterDirectory, GrantedView
from .avrs_interactive import InteractiveService
from .quality import QualityReport, QualityStore

if TYPE_CHECKING:
    from .cluster_requests import ClusterRequests

log = logging.getLogger("dapsdk.avrs.service")

#: The dap_stream channel ids of AVRS, in the seed's order (``DAP_AVRS$K_CH_*``).
AVRS_CHANNEL_IDS: Final = tuple(int(c) for c in AvrsChannel)
#: Urgency of the request/answer channels (content keeps the default 3: control goes first).
CONTROL_PRIORITY: Final = 1
#: Seconds between membership sweeps (expired tokens and certificates, a changed CRL, closed
#: streams that carried a certificate): a revoked member is cut off within this plus one event
#: loop turn, well inside the 1 s the protocol promises.
SWEEP_INTERVAL: Final = 0.25

EventListener = Callable[["AvrsBinding", AvrsEvent], None]
#: Takes an accepted content packet (True) or leaves it to the opaque relay (False).
MediaHandler = Callable[["AvrsBinding", ContentReceived], bool]


def channel_priority(channel_id: int) -> int:
    return 3 if channel_id == AvrsChannel.CONTENT else CONTROL_PRIORITY


class AvrsBinding:
    """One stream's AVRS endpoint: the core connection plus the stream's AVRS channels."""

    def __init__(self, service: AvrsService, stream: Stream) -> None:
        self.service = service
        self.stream = stream
        self.conn = AvrsConnection(
            GrantedView(service.directory, self._identity),
            service.config,
            sessions=service.sessions,
            replay_guard=service.replay_guard,
            content_callbacks=service.content_callbacks,
            peer=stream.peer.public_key,
            second_factor=service.second_factor,
        )
        self.channels: dict[int, Channel] = {}
        self.conn.unsupported[(AvrsChannel.SIGNAL, SignalOp.REDIRECT)] = (
            "REDIRECT is sent by nodes to clients; a node does not follow one"
        )
        for op in INTERACTIVE_OPS:  # the service's InteractiveService answers them
            self.conn._machine.unsupported.pop(op, None)
        self.auth_cache: dict[tuple[bytes, tuple[AvrsChannel, int]], tuple[int, bytes, bool]] = {}
        """(content, operation) -> (directory version, session id, allowed)."""
        self.lost = False
        self.dropped = 0
        """Content packets not sent to this peer because its content channel was congested."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def _identity(self) -> bytes | None:
        session = self.conn.session
        return None if session is None else session.session_id

    # ------------------------------------------------------------------ from the channels

    def attach(self, channel: Channel) -> None:
        self.channels[channel.id] = channel

    def packet_in(self, channel: Channel, data: bytes) -> None:
        self.conn.receive(channel.id, data, time.time())
        self.pump()

    def detach(self, channel: Channel) -> None:
        self.channels.pop(channel.id, None)
        if not self.lost and (not self.stream.is_active or not self.channels):
            self.lost = True
            self.conn.connection_lost(time.time())
            self._cancel_timer()
            self.pump()
            self.service._binding_lost(self)

    # ------------------------------------------------------------------ pump

    def pump(self) -> None:
        """Dispatch the core's events, send what it queued, re-arm its timer."""
        while (event := self.conn.next_event()) is not None:
            self.service._dispatch(self, event)
        self.transmit()
        self._arm_timer()

    def transmit(self) -> None:
        high_water = self.stream.config.send_high_water
        for channel_id, payload in self.conn.data_to_send():
            channel = self._channel(channel_id)
            if channel is None:
                log.debug("stream %d: no channel 0x%02x to send on", self.stream.id, channel_id)
                continue
            if channel_id != AvrsChannel.CONTENT and channel.queued_bytes >= high_water:
                # Replies are refused, not queued without end: a peer that keeps sending
                # requests without reading their replies is closed (docs/reliability.md).
                self.stream.abort(
                    ErrorCode.ENHANCE_YOUR_CALM,
                    f"peer does not read its replies: {channel.queued_bytes} bytes queued "
                    f"on channel 0x{channel_id:02x}",
                )
                return
            try:
                channel.write_nowait(PacketType.DATA, payload)
            except DapError as exc:
                log.debug("stream %d: channel 0x%02x: %s", self.stream.id, channel_id, exc)

    def _channel(self, channel_id: int) -> Channel | None:
        channel = self.channels.get(channel_id)
        if channel is not None and channel.is_active:
            return channel
        if not self.stream.is_active:
            return None
        try:
            channel = self.stream.channel_new(channel_id, priority=channel_priority(channel_id))
        except DapError:
            return None
        self.channels[channel_id] = channel
        return channel

    def congested(self) -> bool:
        """The content channel holds at least the high-water mark: the peer reads too slowly."""
        channel = self.channels.get(AvrsChannel.CONTENT)
        if channel is None or not channel.is_active:
            return False
        return channel.queued_bytes >= self.stream.config.send_high_water

    def _arm_timer(self) -> None:
        deadline = None if self.lost else self.conn.get_timer()
        if deadline == self._timer_at:
            return
        self._cancel_timer()
        if deadline is None:
            return
        loop = self.stream.driver.loop
        self._timer_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - time.time()), self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        deadline = self._timer_at
        self._timer = None
        self._timer_at = None
        self.conn.handle_timer(max(deadline or 0.0, time.time()))
        self.pump()

    def __repr__(self) -> str:
        return f"<AvrsBinding stream={self.stream.id} state={self.conn.state.value}>"


class AvrsService:
    """AVRS for every stream of a :class:`StreamNode` (register with :meth:`register`)."""

    def __init__(
        self,
        directory: ClusterDirectory,
        config: AvrsConfig | None = None,
        *,
        content_callbacks: ContentCallbacks | None = None,
        second_factor: SecondFactor | None = None,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.directory = directory
        self.config = config if config is not None else AvrsConfig()
        self.second_factor = second_factor
        """TOTP check of administrative requests (None: every one is refused)."""
        self.sweep_interval = sweep_interval
        self.quality = QualityStore()
        self.interactive = InteractiveService(self)
        """Chat, polls and moderation (:mod:`.avrs_interactive`)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.sessions = SessionRegistry(
            resume_timeout=self.config.resume_timeout,
            max_contents=self.config.max_contents_per_session,
        )
        self.replay_guard = self.config.replay_guard()
        self.content_callbacks = (
            content_callbacks if content_callbacks is not None else ContentCallbacks()
        )
        self.bindings: dict[int, AvrsBinding] = {}
        """Active bindings by stream id."""
        self.listeners: list[EventListener] = []
        """Called with every core event after the service handled it (metrics, tests, apps)."""
        self.last_cluster_reply: tuple[int, str | None] | None = None
        """``(code, detail)`` answered to the cluster request the listeners are seeing."""
        self._by_conn: dict[int, AvrsBinding] = {}
        self._node: StreamNode | None = None
        self.media_handler: MediaHandler | None = None
        """The media hub's entry (:class:`~.media.bridge.MediaBridge`); packets it does not take
        are relayed opaquely by :meth:`publish`."""
        self.requests: ClusterRequests | None = None
        """Serves the cluster requests the directory does not (info, balance, routes, ...)."""

    # ------------------------------------------------------------------ registration

    def register(self, node: StreamNode) -> None:
        """Register the five AVRS channel procs on ``node`` (``avrs_ch_init``)."""
        proc = ChannelProc(new=self._channel_new, delete=self._channel_delete)
        for channel_id in AVRS_CHANNEL_IDS:
            node.register_channel_proc(channel_id, proc)
        self._node = node

    def unregister(self) -> None:
        """Remove the channel procs (``avrs_ch_deinit``); open channels keep their callbacks."""
        node, self._node = self._node, None
        if node is None:
            return
        for channel_id in AVRS_CHANNEL_IDS:
            node.channel_procs.pop(channel_id, None)

    @property
    def registered(self) -> bool:
        return self._node is not None

    def binding_for(self, stream: Stream) -> AvrsBinding:
        binding = self.bindings.get(stream.id)
        if binding is None:
            binding = AvrsBinding(self, stream)
            self.bindings[stream.id] = binding
            self._by_conn[id(binding.conn)] = binding
            self._arm_sweeper()
        return binding

    def binding_of(self, conn: AvrsConnection) -> AvrsBinding | None:
        """The binding that owns a core connection (content callbacks receive the core)."""
        return self._by_conn.get(id(conn))

    def _channel_new(self, channel: Channel) -> None:
        binding = self.binding_for(channel.stream)
        binding.attach(channel)

        def packet_in(ch: Channel, _ptype: int, data: bytes, _arg: object) -> int:
            binding.packet_in(ch, data)
            return len(data)

        channel.packet_in = packet_in

    def _channel_delete(self, channel: Channel) -> None:
        binding = self.bindings.get(channel.stream.id)
        if binding is not None:
            binding.detach(channel)

    def _binding_lost(self, binding: AvrsBinding) -> None:
        self.bindings.pop(binding.stream.id, None)
        self._by_conn.pop(id(binding.conn), None)
        if self.requests is not None:
            self.requests.binding_lost(binding)
        self.sweep()  # a certificate join or handshake ends with its stream

    # ------------------------------------------------------------------ membership lifetimes

    def quality_reports(self, content_id: bytes) -> list[QualityReport]:
        """The QUALITY_REPORTs received about ``content_id`` (bounded, newest last)."""
        return self.quality.reports(content_id)

    def _arm_sweeper(self) -> None:
        if self._sweeper is not None or self._node is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sweeper = loop.call_later(self.sweep_interval, self._on_sweep)

    def _on_sweep(self) -> None:
        self._sweeper = None
        try:
            self.sweep()
        finally:
            self._arm_sweeper()

    def sweep(self) -> None:
        """Drop the role sources whose credential ended, then end the sessions that lost the
        right to what they do."""
        streams = [] if self._node is None else list(self._node.streams.values())
        live = {s.id for s in streams if s.is_active}
        certified = {
            (identity_of(s.peer.public_key), s.peer.certificate)
            for s in streams
            if s.is_active and s.peer.certificate is not None
        }
        self.directory.sweep(time.time(), live_streams=live, certified=certified)
        self.enforce()

    def enforce(self) -> None:
        """End, with MEMBER_REVOKED, every session of an identity that lost a role source and no
        longer may do what its attached contents need; close its stream when it is no member at
        all any more (a revoked certificate ends the connection it authenticated)."""
        ended = self.directory.ended
        if not ended:
            return
        self.directory.ended = set()
        info = self.directory.info
        now = time.time()
        for binding in list(self.bindings.values()):
            session = binding.conn.session
            peer = identity_of(binding.stream.peer.public_key)
            sid = None if session is None else session.session_id
            if sid not in ended and peer not in ended:
                continue
            gone = (sid is not None and info.roles_of(sid) is None) or (
                peer in ended and info.roles_of(peer) is None and sid in (None, peer)
            )
            if session is not None and gone:
                log.info(
                    "stream %d: membership of %s ended; session closed",
                    binding.stream.id,
                    binding.stream.peer.address,
                )
                binding.conn.end_session(
                    AvrsError.MEMBER_REVOKED, "the membership behind this session ended"
                )
                binding.pump()
            elif session is not None:
                for handle, code in self._disallowed(session, now):
                    log.info("stream %d: content %d detached (%s)", binding.stream.id, handle,
                             AvrsError(code).token)  # fmt: skip
                    binding.conn.detach_content(handle, code, "no longer allowed: " + code.token)
                binding.pump()
            if gone and binding.stream.is_active:
                task = asyncio.ensure_future(binding.stream.close(0, "membership ended"))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def _disallowed(self, session: AvrsSession, now: float) -> list[tuple[int, AvrsError]]:
        """(handle, code) of the attached contents the session may no longer use."""
        info = self.directory.info
        result = []
        for slot in list(session.contents.values()):
            content = info.contents.get(slot.content.content_id, slot.content)
            for needed, operation in (
                (slot.accepts_input, PUBLISH),
                (slot.streams_output, SUBSCRIBE),
            ):
                if not needed:
                    continue
                decision = content_decision(info, session.session_id, content, operation, now)
                if not decision.allowed:
                    result.append((slot.handle, decision.code))
                    break
        return result

    def allowed(
        self, binding: AvrsBinding, content_id: bytes, operation: tuple[AvrsChannel, int]
    ) -> bool:
        """May ``binding``'s session still PUBLISH / SUBSCRIBE ``content_id``? Cached per
        directory version, so fan-out pays a dict lookup per packet."""
        session = binding.conn.session
        if session is None:
            return False
        sid = session.session_id
        version = self.directory.version
        key = (content_id, operation)
        cached = binding.auth_cache.get(key)
        if cached is not None and cached[0] == version and cached[1] == sid:
            return cached[2]
        info = self.directory.info
        content = info.contents.get(content_id)
        ok = content is not None and (
            content_decision(info, sid, content, operation, time.time()).allowed
        )
        if len(binding.auth_cache) > 256:
            binding.auth_cache.clear()
        binding.auth_cache[key] = (version, sid, ok)
        return ok

    # ------------------------------------------------------------------ events

    def _dispatch(self, binding: AvrsBinding, event: AvrsEvent) -> None:
        if isinstance(event, ClusterRequestReceived):
            if self.requests is None or not self.requests.handle(binding, event):
                code, detail = self.directory.handle_request(
                    event, time.time(), stream_id=binding.stream.id
                )
                binding.conn.reply(event.request_id, code, detail=detail)
                self.last_cluster_reply = (code, detail)
            self.enforce()
        elif isinstance(event, ContentReceived):
            if not self.allowed(binding, event.content_id, PUBLISH):
                self.directory.ended.add(event.session_id)
                self.enforce()
            else:
                handler = self.media_handler
                if handler is None or not handler(binding, event):
                    self.publish(event.content_id, event.packet, exclude=binding)
        elif isinstance(event, SignalReceived) and event.op == SignalOp.QUALITY_REPORT:
            report = QualityReport.from_args(event.args, event.session_id, time.time())
            for content_id in event.content_ids:
                self.quality.add(content_id, report)
            if self.requests is not None:
                self.requests.quality_report(binding, event.args)
        self.interactive.on_event(binding, event)
        for listener in tuple(self.listeners):
            try:
                listener(binding, event)
            except Exception:
                log.exception("AVRS event listener failed on %r", event)
        self.last_cluster_reply = None

    # ------------------------------------------------------------------ media out

    def publish(
        self, content_id: bytes, packet: ContentPacket, *, exclude: AvrsBinding | None = None
    ) -> int:
        """Send ``packet`` of content ``content_id`` to every session that subscribed to it and is
        synchronised (SYNCED or STREAMING). Returns how many sessions it was sent to.

        Live media does not wait for slow viewers: a viewer whose content channel is above the
        high-water mark misses the packet (counted in :attr:`AvrsBinding.dropped`), so one slow
        reader neither blocks the publisher nor grows the node's memory."""
        sent = 0
        for binding in list(self.bindings.values()):
            if binding is exclude or binding.lost:
                continue
            session = binding.conn.session
            if session is None:
                continue
            for slot in list(session.contents.values()):
                if slot.content.content_id != content_id or not slot.streams_output:
                    continue
                if not self.allowed(binding, content_id, SUBSCRIBE):
                    continue  # membership or grant ended: enforce() closes the session
                if binding.congested():
                    binding.dropped += 1
                    continue
                try:
                    binding.conn.send_content(replace(packet, handle=slot.handle))
                except AvrsProtocolError:
                    continue  # not synchronised yet, or stopped
                sent += 1
            binding.pump()
        return sent

    async def close(self) -> None:
        """Forget every binding (the node closes the streams)."""
        for binding in list(self.bindings.values()):
            binding._cancel_timer()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.unregister()
