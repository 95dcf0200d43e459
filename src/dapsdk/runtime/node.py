"""StreamNode: one dap_stream participant: identity, listeners, sessions, streams, channel handlers.

``start``/``close`` are the seed's ``dap_stream_init``/``dap_stream_deinit``. The node is the only
place that chooses a transport for an endpoint's scheme.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace

from ..stream.admission import COOKIE_SIZE, AdmissionConfig, HandshakeAdmission
from ..stream.config import StreamConfig
from ..stream.connection import StreamConnection
from ..stream.errors import ErrorCode, ProtocolError, RemoteError
from ..stream.events import HandshakeCompleted, StreamEvent, StreamTerminated
from ..stream.identity import NodeAddress, NodeIdentity
from .channel import Channel
from .driver import ByteSink, ConnectionDriver
from .endpoint import Endpoint, parse_endpoint
from .known_hosts import KnownHosts, host_key, pinned_identity
from .session import Session
from .stream import Stream, StreamStats
from .timers import TimerWheel
from .transport import TransportServer, get_transport

log = logging.getLogger("dapsdk.runtime.node")

#: Unauthenticated connections (handshake in progress) a node keeps at once; a new connection
#: beyond it evicts the least advanced, oldest one (stream/admission.py).
DEFAULT_MAX_PENDING_HANDSHAKES = AdmissionConfig().max_pending


#: Handshake-refusal log lines per second at most; the rest are counted and summarised.
REFUSAL_LOG_PER_SECOND = 10


class _LogBudget:
    """At most ``per_second`` log lines per one-second window; when a window had more, one line
    says how many were suppressed."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._window = -1.0
        self._used = 0
        self._suppressed = 0

    def allow(self, now: float) -> bool:
        window = float(int(now))
        if window != self._window:
            if self._suppressed:
                log.info("refuse: %d more handshake refusals not logged", self._suppressed,
                         extra={"event": "refuse", "suppressed": self._suppressed})  # fmt: skip
            self._window, self._used, self._suppressed = window, 0, 0
        if self._used < self.per_second:
            self._used += 1
            return True
        self._suppressed += 1
        return False


def peer_host(sink: object) -> str:
    """The remote address of a transport adapter (its ``peername``), "" when unknown."""
    peername = getattr(sink, "peername", None)
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername) if peername else ""


@dataclass(slots=True)
class ChannelProc:
    """Handlers for channels a peer opens (the C ``dap_stream_ch_proc_add``): ``new`` runs when
    the channel opens and may set callbacks; ``delete`` when it closes; ``packet_in`` /
    ``packet_out`` become the channel's callbacks."""

    new: Callable[[Channel], None] | None = None
    delete: Callable[[Channel], None] | None = None
    packet_in: Callable[[Channel, int, bytes, object], int | None] | None = None
    packet_out: Callable[[Channel, int, bytes, object], int | None] | None = None


@dataclass(frozen=True, slots=True)
class Listener:
    endpoint: Endpoint
    """Where the node listens; the port is the bound one (useful with port 0)."""
    server: TransportServer

    @property
    def url(self) -> str:
        return self.endpoint.url


def cookie_from_error(exc: RemoteError) -> bytes | None:
    """The cookie of a ``RETRY_WITH_COOKIE`` refusal (hex in the reason), or None."""
    if exc.code != ErrorCode.RETRY_WITH_COOKIE:
        return None
    try:
        cookie = bytes.fromhex(exc.reason.strip())
    except ValueError:
        return None
    return cookie if len(cookie) == COOKIE_SIZE else None


class StreamNode:
    def __init__(
        self,
        identity: NodeIdentity | None = None,
        config: StreamConfig | None = None,
        *,
        max_pending_handshakes: int | None = None,
        admission: AdmissionConfig | None = None,
        max_connections: int | None = None,
        accept_unknown_channels: bool = True,
    ) -> None:
        self.identity = identity or NodeIdentity.generate()
        self.config = config or StreamConfig()
        admission = admission or AdmissionConfig()
        if max_pending_handshakes is not None:
            admission = replace(
                admission,
                max_pending=max_pending_handshakes,
                per_source=min(admission.per_source, max_pending_handshakes),
                per_prefix=min(admission.per_prefix, max_pending_handshakes),
                cookie_threshold=min(admission.cookie_threshold, max_pending_handshakes),
            )
        self.admission = HandshakeAdmission(admission)
        """Handshakes in progress on this node's listeners (per-source limits, eviction, cookies)."""
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections = {max_connections}: must be >= 1 or None")
        self.max_connections = max_connections
        """Established streams accepted by the listeners; None: unlimited."""
        self.accepted_streams = 0
        """Established streams accepted by the listeners now."""
        self.refused_connections = 0
        """Connections refused because ``max_connections`` streams were established."""
        self.accept_unknown_channels = accept_unknown_channels
        self.sessions: dict[int, Session] = {}
        self.streams: dict[int, Stream] = {}
        self.listeners: list[Listener] = []
        self.known_peers: dict[NodeAddress, Endpoint] = {}
        self.channel_procs: dict[int, ChannelProc] = {}
        self.default_channel_proc: ChannelProc | None = None
        """Handlers for peer-opened channels that have no proc of their own."""
        self._refusal_log = _LogBudget(REFUSAL_LOG_PER_SECOND)
        """A flood of refused handshakes must not become a flood of log lines."""
        self.known_hosts: KnownHosts | None = None
        """Trust-on-first-use pins for URLs without ``?node=`` (see :mod:`.known_hosts`)."""
        self.on_stream: Callable[[Stream], None] | None = None
        """Called for each stream accepted by a listener, after its handshake."""
        self._pending: dict[
            Hashable, ConnectionDriver
        ] = {}  # admission key -> driver, in handshake
        self._next_key = 0
        self._pool: dict[str, Stream] = {}
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: TimerWheel | None = None
        self._by_peer: dict[NodeAddress, dict[int, Stream]] = {}

    @property
    def address(self) -> NodeAddress:
        return self.identity.address

    @property
    def max_pending_handshakes(self) -> int:
        return self.admission.config.max_pending

    @property
    def pending_handshakes(self) -> int:
        """Handshakes in progress on this node's listeners."""
        return len(self.admission)

    @property
    def refused_handshakes(self) -> int:
        """Handshakes evicted or answered with a cookie instead of key agreement work."""
        stats = self.admission.stats
        return stats.evicted + stats.cookies_sent

    # -- lifecycle ---------------------------------------------------------------------------

    def _timer_wheel(self, loop: asyncio.AbstractEventLoop) -> TimerWheel:
        """The one timer wheel all of this node's connections share (runtime/timers.py)."""
        wheel = self._timers
        if wheel is None or wheel.loop is not loop:
            wheel = self._timers = TimerWheel(loop)
        return wheel

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = True

    async def close(self) -> None:
        for listener in self.listeners:
            listener.server.close()
        for stream in list(self.streams.values()):
            if stream.is_active:
                stream.driver.core.close(ErrorCode.NO_ERROR, "node shutting down")
                stream.driver.pump()
        waits = [asyncio.ensure_future(s.wait_closed()) for s in list(self.streams.values())]
        if waits:
            # A graceful close waits for the peer's CLOSE; a peer that never answers is cut off.
            _, pending = await asyncio.wait(waits, timeout=self.config.keepalive_timeout)
            for task in pending:
                task.cancel()
            for stream in list(self.streams.values()):
                if stream.driver.sink is not None:
                    stream.driver.sink.abort_transport()
        for listener in self.listeners:
            await listener.server.wait_closed()
        self.listeners.clear()
        self.sessions.clear()
        self._started = False

    async def __aenter__(self) -> StreamNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- channel handlers --------------------------------------------------------------------

    def register_channel_proc(self, channel_id: int, proc: ChannelProc) -> None:
        self.channel_procs[int(channel_id)] = proc

    def _accept_channel(self, channel: Channel) -> bool:
        proc = self.channel_procs.get(channel.id) or self.default_channel_proc
        if proc is None:
            return self.accept_unknown_channels
        channel.packet_in = proc.packet_in
        channel.packet_out = proc.packet_out
        if proc.new is not None:
            proc.new(channel)
        return True

    def _channel_deleted(self, channel: Channel) -> None:
        proc = self.channel_procs.get(channel.id) or self.default_channel_proc
        if proc is not None and proc.delete is not None:
            try:
                proc.delete(channel)
            except Exception:
                log.exception("delete handler of channel %d failed", channel.id)

    # -- sessions ----------------------------------------------------------------------------

    def session_create(self, target: Endpoint | str | NodeAddress) -> Session:
        """A session for a node, given by URL/endpoint or by a node address with a known endpoint."""
        if isinstance(target, NodeAddress):
            endpoint = self.known_peers.get(target)
            if endpoint is None:
                raise ValueError(f"no endpoint known for node {target}; add it to known_peers")
            endpoint = Endpoint(
                endpoint.scheme, endpoint.host, endpoint.port, endpoint.path, target
            )
        elif isinstance(target, str):
            endpoint = parse_endpoint(target)
        else:
            endpoint = target
        return self._new_session(endpoint.node, endpoint)

    def _new_session(self, node_addr: NodeAddress | None, endpoint: Endpoint | None) -> Session:
        while True:
            session_id = secrets.randbits(32) or 1
            if session_id not in self.sessions:
                break
        session = Session(session_id, node_addr, endpoint)
        self.sessions[session_id] = session
        return session

    def session_find(self, session_id: int) -> Session | None:
        return self.sessions.get(session_id)

    def session_delete(self, session: Session) -> None:
        session.is_active = False
        self.sessions.pop(session.id, None)
        stream = session.stream
        if stream is not None and session in stream.sessions:
            stream.sessions.remove(session)
            if not stream.sessions and stream.is_client and stream.is_active:
                stream.driver.core.close(ErrorCode.NO_ERROR, "last session deleted")
                stream.driver.pump()
        session.stream = None

    # -- streams -----------------------------------------------------------------------------

    async def stream_create(self, session: Session) -> Stream:
        """Connect the session to its node (``dap_stream_create``), reusing a pooled stream."""
        if session.endpoint is None:
            raise ValueError(f"session {session.id} has no endpoint to connect to")
        key = session.endpoint.url
        stream = self._pool.get(key)
        if stream is None or not stream.is_active:
            stream = await self.connect(session.endpoint)
            self._pool[key] = stream
        if session.node_addr is None:
            session.node_addr = stream.peer.address
        session.stream = stream
        if session not in stream.sessions:
            stream.sessions.append(session)
        return stream

    async def stream_delete(self, stream: Stream) -> None:
        await stream.close()

    async def connect(
        self,
        target: Endpoint | str,
        *,
        expected: NodeAddress | None = None,
        insecure_no_pin: bool = False,
    ) -> Stream:
        """Open a new stream to ``target`` and complete the handshake; raise on failure.

        A responder under load answers the first HELLO with a cookie (``RETRY_WITH_COOKIE``);
        the handshake is then repeated once on a new connection with the cookie echoed.

        The peer must prove a pinned identity: ``expected``, the URL's ``?node=``, or the
        :attr:`known_hosts` entry (trust on first use); ``insecure_no_pin`` (or ``?insecure_no_pin``
        in the URL) connects without one; anything else raises
        :class:`~.known_hosts.PinRequired` before connecting."""
        endpoint = parse_endpoint(target) if isinstance(target, str) else target
        remember = False
        if expected is None:
            expected, remember = pinned_identity(
                endpoint, self.known_hosts, insecure_no_pin=insecure_no_pin
            )
        try:
            stream = await self._connect_once(endpoint, expected, None)
        except RemoteError as exc:
            cookie = cookie_from_error(exc)
            if cookie is None:
                raise
            stream = await self._connect_once(endpoint, expected, cookie)
        if remember and self.known_hosts is not None:
            self.known_hosts.remember(endpoint, stream.peer.address)
            log.warning(
                "trust on first use: pinned %s to node %s in %s",
                host_key(endpoint),
                stream.peer.address,
                self.known_hosts.path,
            )
        return stream

    async def _connect_once(
        self, endpoint: Endpoint, expected: NodeAddress | None, cookie: bytes | None
    ) -> Stream:
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[Stream] = loop.create_future()

        def make_driver(sink: ByteSink) -> ConnectionDriver:
            core = StreamConnection(
                self.config,
                self.identity,
                is_client=True,
                now=loop.time(),
                expected_peer=expected,
                cookie=cookie,
            )
            return self._make_driver(core, loop, endpoint, handshake, is_client=True)

        transport = get_transport(endpoint.scheme)
        try:
            abort = await transport.connect(endpoint, make_driver)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {endpoint.url}: {exc}") from exc
        try:
            # The core enforces handshake_timeout itself; this outer bound only guards against a
            # transport that never delivered connection_made.
            return await asyncio.wait_for(handshake, self.config.handshake_timeout + 1.0)
        except TimeoutError:
            abort()
            raise ProtocolError(
                f"handshake with {endpoint.url} did not complete", code=ErrorCode.TIMEOUT
            ) from None
        except BaseException:
            abort()
            raise

    async def listen(self, target: Endpoint | str) -> Listener:
        """Listen on ``target`` (``tcp://host:port``; port 0 picks a free one)."""
        endpoint = parse_endpoint(target) if isinstance(target, str) else target
        transport = get_transport(endpoint.scheme)
        loop = asyncio.get_running_loop()

        def make_driver(sink: ByteSink) -> ConnectionDriver | None:
            return self._accept(sink, loop)

        server, bound = await transport.listen(endpoint, make_driver)
        bound = Endpoint(bound.scheme, bound.host, bound.port, bound.path, self.address)
        listener = Listener(bound, server)
        self.listeners.append(listener)
        return listener

    def _make_driver(
        self,
        core: StreamConnection,
        loop: asyncio.AbstractEventLoop,
        endpoint: Endpoint | None,
        handshake: asyncio.Future[Stream] | None,
        *,
        is_client: bool,
        admission_key: int | None = None,
    ) -> ConnectionDriver:
        state: dict[str, Stream | None] = {"stream": None}

        def uncount() -> None:
            if admission_key is not None:
                self.admission.discard(admission_key)
                self._pending.pop(admission_key, None)

        def on_event(event: StreamEvent) -> None:
            stream = state["stream"]
            if stream is not None:
                stream.handle_event(event)
                return
            if isinstance(event, HandshakeCompleted):
                if admission_key is not None:
                    self.admission.complete(admission_key)
                    self._pending.pop(admission_key, None)
                    if (
                        self.max_connections is not None
                        and self.accepted_streams >= self.max_connections
                    ):
                        self.refused_connections += 1
                        driver.abort(
                            ErrorCode.CONNECTION_LIMIT,
                            f"node has max_connections ({self.max_connections}) streams",
                        )
                        return
                stream = Stream(self, driver, event.peer, endpoint=endpoint, is_client=is_client)
                state["stream"] = stream
                self._stream_started(stream)
                if handshake is not None and not handshake.done():
                    handshake.set_result(stream)
                elif handshake is None and self.on_stream is not None:
                    self.on_stream(stream)
            elif isinstance(event, StreamTerminated):
                uncount()
                if handshake is not None and not handshake.done():
                    error: Exception
                    if event.by_peer:
                        error = RemoteError(event.code, event.reason)
                    else:
                        error = ProtocolError(event.reason, code=ErrorCode.coerce(event.code))  # type: ignore[arg-type]
                    handshake.set_exception(error)
                elif (
                    handshake is None
                    and log.isEnabledFor(logging.INFO)
                    and self._refusal_log.allow(loop.time())
                ):
                    name = getattr(driver.sink, "peername", None)
                    log.info(
                        "refuse: handshake %s: %s",
                        "closed by peer" if event.by_peer else "refused",
                        event.reason,
                        extra={
                            "event": "refuse",
                            "code": int(event.code),
                            "peer": f"{name[0]}:{name[1]}" if isinstance(name, tuple) else "-",
                            "local": str(self.address),
                        },
                    )

        driver = ConnectionDriver(core, loop, on_event, self._timer_wheel(loop))
        return driver

    def _accept(self, sink: ByteSink, loop: asyncio.AbstractEventLoop) -> ConnectionDriver:
        """A listener accepted a connection: admit it (evicting others if need be)."""
        now = loop.time()
        self._next_key += 1
        key = self._next_key
        host = peer_host(sink)
        for victim in self.admission.admit(key, host, now):
            evicted = self._pending.pop(victim, None)
            if evicted is None:
                continue
            handshake = evicted.core.handshake
            if handshake is not None and handshake.expected_step == 0 and evicted.sink is not None:
                # No HELLO yet (idle, partial or slow sockets): closed without a word, which
                # spares a write per flood connection; the core ends when the transport does.
                # Aborted, not half-closed: there is no ERROR to deliver, so nothing to linger for.
                evicted.sink.abort_transport()
            else:
                evicted.abort(ErrorCode.SERVER_BUSY, "handshake evicted: too many in progress")
        core = StreamConnection(self.config, self.identity, is_client=False, now=now)
        driver = self._make_driver(core, loop, None, None, is_client=False, admission_key=key)
        self._pending[key] = driver

        def gate(cookie: bytes | None) -> tuple[int, str] | None:
            if self.max_connections is not None and self.accepted_streams >= self.max_connections:
                self.refused_connections += 1
                self.admission.discard(key)
                self._pending.pop(key, None)
                return (
                    ErrorCode.CONNECTION_LIMIT,
                    f"node has max_connections ({self.max_connections}) streams",
                )
            verdict = self.admission.hello(key, cookie, loop.time())
            if verdict.proceed:
                return None
            self._pending.pop(key, None)
            if verdict.cookie:
                return ErrorCode.RETRY_WITH_COOKIE, verdict.cookie.hex()
            return ErrorCode.SERVER_BUSY, "handshake evicted: too many in progress"

        core.hello_gate = gate
        return driver

    def _stream_started(self, stream: Stream) -> None:
        self.streams[stream.id] = stream
        if not stream.is_client:
            self.accepted_streams += 1
        if log.isEnabledFor(logging.INFO):
            log.info(
                "connect: stream %d %s %s",
                stream.id,
                "to" if stream.is_client else "from",
                stream.peer.address,
                extra={"event": "connect", **stream.log_fields()},
            )
        # Streams indexed by peer: finding the peer's other streams must not scan all of them
        # (at 10,000 streams that scan was most of the node's CPU during a connect ramp).
        same_peer = self._by_peer.setdefault(stream.peer.address, {})
        stream.primary = not any(s.primary and s.is_active for s in same_peer.values())
        same_peer[stream.id] = stream
        if not stream.is_client:
            session = self._new_session(stream.peer.address, None)
            session.stream = stream
            stream.sessions.append(session)

    def _stream_ended(self, stream: Stream) -> None:
        if self.streams.pop(stream.id, None) is not None and not stream.is_client:
            self.accepted_streams -= 1
        for session in stream.sessions:
            if not stream.is_client:
                session.is_active = False
                self.sessions.pop(session.id, None)
        same_peer = self._by_peer.get(stream.peer.address)
        if same_peer is not None:
            same_peer.pop(stream.id, None)
            if not same_peer:
                del self._by_peer[stream.peer.address]
        if stream.primary:
            stream.primary = False
            for other in (same_peer or {}).values():
                if other.is_active:
                    other.primary = True
                    break
        for key, pooled in list(self._pool.items()):
            if pooled is stream:
                del self._pool[key]

    # -- statistics --------------------------------------------------------------------------

    def get_stats(self) -> StreamStats:
        """Totals over every active stream of this node."""
        all_stats = [s.get_stats() for s in self.streams.values()]
        latencies = [s.avg_latency for s in all_stats if s.avg_latency > 0]
        return StreamStats(
            packets_sent=sum(s.packets_sent for s in all_stats),
            packets_received=sum(s.packets_received for s in all_stats),
            bytes_sent=sum(s.bytes_sent for s in all_stats),
            bytes_received=sum(s.bytes_received for s in all_stats),
            active_channels=sum(s.active_channels for s in all_stats),
            avg_latency=sum(latencies) / len(latencies) if latencies else 0.0,
        )
