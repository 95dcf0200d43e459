"""StreamNode: one dap_stream participant: identity, listeners, sessions, streams, channel handlers.

``start``/``close`` are the seed's ``dap_stream_init``/``dap_stream_deinit``. The node is the only
place that chooses a transport for an endpoint's scheme.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ..stream.config import StreamConfig
from ..stream.connection import StreamConnection, plaintext_error
from ..stream.errors import ErrorCode, ProtocolError, RemoteError
from ..stream.events import HandshakeCompleted, StreamEvent, StreamTerminated
from ..stream.identity import NodeAddress, NodeIdentity
from .channel import Channel
from .driver import ByteSink, ConnectionDriver
from .endpoint import Endpoint, parse_endpoint
from .session import Session
from .stream import Stream, StreamStats
from .transport import TransportServer, get_transport

log = logging.getLogger("dapsdk.runtime.node")

#: Unauthenticated connections (handshake in progress) a node accepts at once; more are refused
#: with ERROR(SERVER_BUSY) before any key agreement work.
DEFAULT_MAX_PENDING_HANDSHAKES = 128


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


class StreamNode:
    def __init__(
        self,
        identity: NodeIdentity | None = None,
        config: StreamConfig | None = None,
        *,
        max_pending_handshakes: int = DEFAULT_MAX_PENDING_HANDSHAKES,
        accept_unknown_channels: bool = True,
    ) -> None:
        self.identity = identity or NodeIdentity.generate()
        self.config = config or StreamConfig()
        self.max_pending_handshakes = max_pending_handshakes
        self.accept_unknown_channels = accept_unknown_channels
        self.sessions: dict[int, Session] = {}
        self.streams: dict[int, Stream] = {}
        self.listeners: list[Listener] = []
        self.known_peers: dict[NodeAddress, Endpoint] = {}
        self.channel_procs: dict[int, ChannelProc] = {}
        self.default_channel_proc: ChannelProc | None = None
        """Handlers for peer-opened channels that have no proc of their own."""
        self.on_stream: Callable[[Stream], None] | None = None
        """Called for each stream accepted by a listener, after its handshake."""
        self.pending_handshakes = 0
        self.refused_handshakes = 0
        self._pool: dict[str, Stream] = {}
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> NodeAddress:
        return self.identity.address

    # -- lifecycle ---------------------------------------------------------------------------

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
        self, target: Endpoint | str, *, expected: NodeAddress | None = None
    ) -> Stream:
        """Open a new stream to ``target`` and complete the handshake; raise on failure."""
        endpoint = parse_endpoint(target) if isinstance(target, str) else target
        expected = expected or endpoint.node
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[Stream] = loop.create_future()

        def make_driver(sink: ByteSink) -> ConnectionDriver:
            core = StreamConnection(
                self.config, self.identity, is_client=True, now=loop.time(), expected_peer=expected
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
            if self.pending_handshakes >= self.max_pending_handshakes:
                self.refused_handshakes += 1
                refusal = plaintext_error(ErrorCode.SERVER_BUSY, "too many handshakes in progress")
                sink.write_chunks([refusal])
                return None
            core = StreamConnection(self.config, self.identity, is_client=False, now=loop.time())
            return self._make_driver(core, loop, None, None, is_client=False)

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
    ) -> ConnectionDriver:
        self.pending_handshakes += 1
        state: dict[str, Stream | None] = {"stream": None}
        counted = [True]

        def uncount() -> None:
            if counted[0]:
                counted[0] = False
                self.pending_handshakes -= 1

        def on_event(event: StreamEvent) -> None:
            stream = state["stream"]
            if stream is not None:
                stream.handle_event(event)
                return
            if isinstance(event, HandshakeCompleted):
                uncount()
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

        driver = ConnectionDriver(core, loop, on_event)
        return driver

    def _stream_started(self, stream: Stream) -> None:
        self.streams[stream.id] = stream
        same_peer = [
            s
            for s in self.streams.values()
            if s.peer.address == stream.peer.address and s.is_active
        ]
        stream.primary = not any(s.primary for s in same_peer if s is not stream)
        if not stream.is_client:
            session = self._new_session(stream.peer.address, None)
            session.stream = stream
            stream.sessions.append(session)

    def _stream_ended(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)
        for session in stream.sessions:
            if not stream.is_client:
                session.is_active = False
                self.sessions.pop(session.id, None)
        if stream.primary:
            stream.primary = False
            for other in self.streams.values():
                if other.peer.address == stream.peer.address and other.is_active:
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
