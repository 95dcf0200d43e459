"""QUIC transport (``quic://host:port``, UDP) on aioquic.

* **Reliable channels** ride one bidirectional QUIC stream (the client's first, id 0) that
  carries the dap_stream byte stream exactly as TCP does: same handshake, same sealing.
* **Realtime channels** (MEDIA, 0x04, or ids added to :attr:`RealtimeDatagrams.channels`) may
  also use QUIC DATAGRAM frames through :func:`realtime`: sealed by
  :mod:`dapsdk.stream.datagram` with keys exported from the dap_stream handshake, sent only while
  within their deadline, tolerant of loss and reordering. Received datagrams become ordinary
  messages of the open channel (``packet_in`` / ``read``), outside flow control.
* **TLS.** QUIC always runs TLS 1.3. The server uses a self-signed certificate generated on the
  fly (or one given to :class:`QuicTransport`) and clients do not verify it: the node identity is
  authenticated by the dap_stream handshake *inside* the QUIC connection (signed transcript,
  ``expected=``), never by QUIC's certificate, which only encrypts the UDP packets.
* **uvloop.** CPython's default loop reads one datagram per wake-up and drops UDP under load
  (``research/pkg_baselines.md``); run nodes that use QUIC under uvloop (:func:`install_uvloop`,
  or ``uvloop.run``). The transport works on either loop.

Bounds: aioquic's stream send buffer is unbounded (aiortc/aioquic#328), so the link pauses the
driver once :data:`SEND_HIGH_WATER` bytes are written but not yet acknowledged, and resumes it
below :data:`SEND_LOW_WATER`; realtime datagrams wait in a :class:`RealtimeQueue` of at most
:data:`REALTIME_QUEUE_DATAGRAMS` / :data:`REALTIME_QUEUE_BYTES`; received datagrams that no
channel takes wait in a deque of at most :data:`REALTIME_RECEIVE_BACKLOG` entries (oldest
dropped); a channel whose unread backlog is above :data:`REALTIME_CHANNEL_BACKLOG` bytes drops
new datagrams.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic import events as qe
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.quic.retry import QuicRetryTokenHandler
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ..stream.admission import AdmissionConfig, HandshakeAdmission
from ..stream.constants import ChannelId, PacketType
from ..stream.datagram import (
    DATAGRAM_OVERHEAD,
    DatagramOpener,
    DatagramSealer,
    RealtimeQueue,
    datagram_secrets,
)
from ..stream.events import DataReceived
from .driver import ConnectionDriver
from .endpoint import Endpoint
from .stream import Stream
from .tls import self_signed_certificate
from .transport import DriverFactory, TransportServer

log = logging.getLogger("dapsdk.runtime.quic")

#: ALPN of dap_stream over QUIC.
ALPN = "dapstream/1"
#: Written-but-unacknowledged bytes on the QUIC stream at which the driver is paused.
SEND_HIGH_WATER = 256 * 1024
#: ... and below which it resumes.
SEND_LOW_WATER = 64 * 1024
#: QUIC flow-control windows (connection and stream); aioquic's 1 MiB default halves throughput.
QUIC_WINDOW = 8 * 1024 * 1024
#: Largest DATAGRAM frame accepted (QUIC transport parameter).
MAX_DATAGRAM_FRAME = 1500
#: Largest realtime payload per datagram: what fits a 1200-byte QUIC packet after headers.
MAX_REALTIME_PAYLOAD = 1100 - DATAGRAM_OVERHEAD
REALTIME_QUEUE_DATAGRAMS = 1024
REALTIME_QUEUE_BYTES = 2 * 1024 * 1024
REALTIME_RECEIVE_BACKLOG = 1024
REALTIME_CHANNEL_BACKLOG = 1024 * 1024
#: Seconds a server waits for the client to open the dap_stream QUIC stream.
STREAM_OPEN_TIMEOUT = 5.0
#: Seconds a closing link waits for the peer's FIN before closing the QUIC connection.
CLOSE_LINGER = 2.0
#: QUIC idle timeout; dap_stream keepalives (1 s) normally detect a dead peer much sooner.
IDLE_TIMEOUT = 30.0


def install_uvloop() -> bool:
    """Make uvloop the event loop policy when it is installed; return whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


@functools.lru_cache(maxsize=1)
def _self_signed() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return self_signed_certificate("dapstream-quic", dns_names=("dapstream",), days=365)


def _configuration(is_client: bool) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        idle_timeout=IDLE_TIMEOUT,
        max_data=QUIC_WINDOW,
        max_stream_data=QUIC_WINDOW,
        max_datagram_frame_size=MAX_DATAGRAM_FRAME,
    )
    if is_client:
        config.verify_mode = ssl.CERT_NONE  # identity is proven by the dap_stream handshake
    return config


class RealtimeDatagrams:
    """Realtime datagrams of one QUIC-carried stream (see :func:`realtime`)."""

    def __init__(self, link: QuicLink) -> None:
        self._link = link
        self.channels: set[int] = {int(ChannelId.MEDIA)}
        """Channel ids allowed to use datagrams (MEDIA by default); add custom realtime ids."""
        self.stream: Stream | None = None
        """When set, received datagrams are delivered to this stream's open channels."""
        self.on_datagram: Callable[[int, bytes], None] | None = None
        """Called for each received datagram that no channel took."""
        self.queue = RealtimeQueue(
            max_datagrams=REALTIME_QUEUE_DATAGRAMS, max_bytes=REALTIME_QUEUE_BYTES
        )
        self._sealer: DatagramSealer | None = None
        self._opener: DatagramOpener | None = None
        self._received: deque[tuple[int, bytes]] = deque(maxlen=REALTIME_RECEIVE_BACKLOG)
        self._readable = asyncio.Event()
        self.sent = 0
        self.received = 0
        self.dropped_unready = 0
        self.dropped_backlog = 0

    @property
    def dropped_late(self) -> int:
        return self.queue.dropped_late

    @property
    def dropped_invalid(self) -> int:
        return self._opener.stats.dropped_total if self._opener is not None else 0

    def _keys_ready(self) -> bool:
        if self._sealer is not None:
            return True
        driver = self._link.driver
        result = driver.core.result if driver is not None else None
        if result is None:
            return False
        send, recv = datagram_secrets(result.export, is_client=self._link.is_client)
        self._sealer = DatagramSealer(send)
        self._opener = DatagramOpener(recv)
        return True

    def send(self, channel_id: int, data: bytes, *, deadline: float | None = None) -> None:
        """Queue ``data`` as one datagram on a realtime channel; it is dropped (counted in
        :attr:`dropped_late`) if it cannot leave before ``deadline`` (loop time)."""
        if channel_id not in self.channels:
            raise ValueError(f"channel 0x{channel_id:02x} is not a realtime channel")
        if len(data) > MAX_REALTIME_PAYLOAD:
            raise ValueError(
                f"datagram payload of {len(data)} bytes exceeds {MAX_REALTIME_PAYLOAD}; "
                "send it on the reliable channel instead"
            )
        if not self._keys_ready():
            raise ConnectionError("the dap_stream handshake has not completed")
        self.queue.push(channel_id, bytes(data), deadline)
        self._link.flush_soon()

    async def receive(self) -> tuple[int, bytes]:
        """The next received datagram that no channel took, as (channel id, payload)."""
        while not self._received:
            self._readable.clear()
            await self._readable.wait()
        return self._received.popleft()

    # driven by the link ----------------------------------------------------------------------

    def _flush(self, quic: QuicConnection, now: float) -> None:
        if not self.queue or self._sealer is None:
            return
        for item in self.queue.pop_due(now):
            quic.send_datagram_frame(self._sealer.seal(item.channel_id, item.payload))
            self.sent += 1

    def _datagram_received(self, data: bytes) -> None:
        if not self._keys_ready():
            self.dropped_unready += 1
            return
        assert self._opener is not None
        opened = self._opener.open(data)
        if opened is None:
            return
        channel_id, payload = opened
        self.received += 1
        stream = self.stream
        channel = stream.channels.get(channel_id) if stream is not None else None
        if stream is not None and channel is not None and channel.is_active:
            if channel.packet_in is None and channel.buf_size >= REALTIME_CHANNEL_BACKLOG:
                self.dropped_backlog += 1
                return
            stream.handle_event(
                DataReceived(
                    channel_id=channel_id,
                    packet_type=int(PacketType.DATA),
                    data=payload,
                    flow_bytes=0,
                    reserved=0,
                )
            )
            return
        if self.on_datagram is not None:
            try:
                self.on_datagram(channel_id, payload)
            except Exception:
                log.exception("on_datagram callback failed")
            return
        if len(self._received) == self._received.maxlen:
            self.dropped_backlog += 1
        self._received.append((channel_id, payload))
        self._readable.set()


def realtime(stream: Stream) -> RealtimeDatagrams:
    """The realtime datagram path of a stream carried by QUIC; binds received datagrams to the
    stream's channels. Raises ValueError for streams on other transports."""
    sink = stream.driver.sink
    if not isinstance(sink, QuicLink):
        raise ValueError(f"stream {stream.id} is not carried by QUIC")
    rt = sink.realtime
    rt.stream = stream
    return rt


#: Half-open QUIC connections (Initial received, dap_stream stream not yet open) a listener keeps.
MAX_HALF_OPEN = 256
#: Half-open connections from which a new Initial without a token gets a stateless QUIC Retry.
RETRY_THRESHOLD = 64
#: Seconds a half-open connection may take to open the dap_stream stream (TLS included).
HALF_OPEN_TIMEOUT = 5.0


def quic_admission_config() -> AdmissionConfig:
    """Admission of half-open QUIC connections (same policy as handshakes, smaller table)."""
    return AdmissionConfig(
        max_pending=MAX_HALF_OPEN, per_source=32, per_prefix=128, cookie_threshold=RETRY_THRESHOLD
    )


class _ServerState:
    def __init__(self, make_driver: DriverFactory) -> None:
        self.make_driver = make_driver
        self.closed = False
        self.admission = HandshakeAdmission(quic_admission_config())
        """Half-open QUIC connections: per source and prefix, eviction, Retry under load."""
        self.half_open: dict[QuicLink, None] = {}
        self.retries_sent = 0
        self.evicted = 0


class QuicLink(QuicConnectionProtocol):
    """One QUIC connection carrying one dap_stream connection: the driver's :class:`ByteSink`."""

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: Any = None,
        *,
        make_driver: DriverFactory,
        server: _ServerState | None = None,
    ) -> None:
        super().__init__(quic)
        self.is_client = server is None
        self._make_driver = make_driver
        self._server = server
        self.driver: ConnectionDriver | None = None
        self._stream_id: int | None = None
        self._paused = False
        self._fin_sent = False
        self._fin_received = False
        self._quic_closed = False
        self._written = 0
        self._flush_handle: asyncio.Handle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._open_timer: asyncio.TimerHandle | None = None
        self.realtime = RealtimeDatagrams(self)
        self.terminated = asyncio.Event()
        self.peername: Any = None
        """The peer's UDP address (host, port), for the node's per-source admission."""
        self.on_stream_open: Callable[[QuicLink], None] | None = None
        """Server: called once the client opened the dap_stream stream (no longer half-open)."""

    # aioquic events ---------------------------------------------------------------------------

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamDataReceived):
            self._stream_data(event)
        elif isinstance(event, qe.DatagramFrameReceived):
            self.realtime._datagram_received(event.data)
        elif isinstance(event, qe.HandshakeCompleted):
            if self.is_client:
                self._stream_id = self._quic.get_next_available_stream_id()
                self._start()
            else:
                self._open_timer = self._loop.call_later(
                    STREAM_OPEN_TIMEOUT, self._close_quic, 0x0, "no dap_stream stream opened"
                )
        elif isinstance(event, qe.StreamReset):
            if event.stream_id == self._stream_id:
                self._lost(f"QUIC stream reset by peer (code {event.error_code})")
        elif isinstance(event, qe.ConnectionTerminated):
            self._lost(
                f"QUIC connection closed (code {event.error_code}): {event.reason_phrase}"
                if event.reason_phrase or event.error_code
                else "QUIC connection closed"
            )
            self._quic_closed = True
            self._cancel_timers()
            self.terminated.set()
            if self.is_client and self._transport is not None:
                self._transport.close()

    def _stream_data(self, event: qe.StreamDataReceived) -> None:
        if self._stream_id is None and not self.is_client:
            if event.stream_id != 0:
                self._close_quic(0x1, "dap_stream must use the first bidirectional stream")
                return
            if self._open_timer is not None:
                self._open_timer.cancel()
                self._open_timer = None
            self._stream_id = 0
            if self._server is not None and self._server.closed:
                self._close_quic(0x0, "listener closed")
                return
            self._start()
        if event.stream_id != self._stream_id:
            self._close_quic(0x1, f"unexpected QUIC stream {event.stream_id}")
            return
        driver = self.driver
        if driver is None:
            return
        if event.data:
            driver.feed(event.data)
        if event.end_stream:
            self._fin_received = True
            self._lost("peer ended the QUIC stream")
            if self._fin_sent:
                self._close_quic(0x0, "")

    def _start(self) -> None:
        if self.on_stream_open is not None:
            self.on_stream_open(self)
            self.on_stream_open = None
        driver = self._make_driver(self)
        if driver is None:  # refused; the factory wrote a final ERROR
            self.close_transport()
            return
        self.driver = driver
        driver.attach(self)

    def forget(self) -> None:
        """Server: drop this half-open connection without a word (evicted or timed out)."""
        self._quic_closed = True
        self._fin_sent = True
        self._cancel_timers()
        for handle in (self._timer, self._transmit_task, self._flush_handle):
            if handle is not None:
                handle.cancel()
        self._timer = None
        self._transmit_task = None
        self._flush_handle = None
        self._lost("QUIC connection dropped by admission")
        self.terminated.set()

    def _lost(self, reason: str) -> None:
        driver = self.driver
        if driver is not None:
            driver.transport_lost(reason)

    # ByteSink ---------------------------------------------------------------------------------

    def write_chunks(self, chunks: Iterable[bytes]) -> None:
        if self._stream_id is None or self._fin_sent or self._quic_closed:
            return
        data = b"".join(chunks)
        if not data:
            return
        self._quic.send_stream_data(self._stream_id, data)
        self._written += len(data)
        if not self._paused and self._unacked() >= SEND_HIGH_WATER and self.driver is not None:
            self._paused = True
            self.driver.pause_writing()
        self.flush_soon()

    def close_transport(self) -> None:
        """End our side of the QUIC stream after queued data; close the connection once the
        peer ended its side too (or after :data:`CLOSE_LINGER`)."""
        if self._fin_sent:
            return
        self._fin_sent = True
        if self._stream_id is not None:
            try:
                self._quic.send_stream_data(self._stream_id, b"", end_stream=True)
            except Exception:  # stream already finished or reset
                pass
        self.transmit()
        if self._fin_received or self._stream_id is None:
            self._close_quic(0x0, "")
        else:
            self._linger = self._loop.call_later(CLOSE_LINGER, self._close_quic, 0x0, "")

    def abort_transport(self) -> None:
        self._fin_sent = True
        self._close_quic(0x1, "aborted")
        if self.is_client and self._transport is not None:
            self._transport.close()

    # sending ----------------------------------------------------------------------------------

    def flush_soon(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self.transmit)

    def transmit(self) -> None:
        self._flush_handle = None
        self.realtime._flush(self._quic, self._loop.time())
        super().transmit()
        if self._paused and self._unacked() <= SEND_LOW_WATER and self.driver is not None:
            self._paused = False
            self.driver.resume_writing()

    def _unacked(self) -> int:
        """Bytes written to the QUIC stream and not yet acknowledged by the peer.

        aioquic offers no public measure (aiortc/aioquic#328), so this reads the stream's
        send buffer bounds, and falls back to "everything" if their names change."""
        sid = self._stream_id
        if sid is None:
            return 0
        stream = self._quic._streams.get(sid)
        sender = getattr(stream, "sender", None)
        start = getattr(sender, "_buffer_start", None)
        stop = getattr(sender, "_buffer_stop", None)
        if isinstance(start, int) and isinstance(stop, int):
            return stop - start
        return self._written

    def _close_quic(self, code: int, reason: str) -> None:
        self._cancel_timers()
        if not self._quic_closed:
            self._quic_closed = True
            self._quic.close(error_code=code, reason_phrase=reason)
            self.transmit()

    def _cancel_timers(self) -> None:
        for handle in (self._linger, self._open_timer):
            if handle is not None:
                handle.cancel()
        self._linger = None
        self._open_timer = None


class _AdmittingQuicServer(QuicServer):
    """aioquic's server with admission of half-open connections: a new Initial without a token
    gets a stateless Retry under load (aioquic's address-validation tokens, RFC 9000 §8.1.2);
    every admitted connection is counted per source and prefix until its dap_stream stream opens,
    the least advanced oldest one is dropped (no state, no reply) when the table is full, and one
    that has not opened its stream after :data:`HALF_OPEN_TIMEOUT` is dropped."""

    def __init__(self, *, state: _ServerState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state = state
        self._retry_handler = QuicRetryTokenHandler()
        self._sweeper: asyncio.TimerHandle | None = None

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        data = cast(bytes, data)
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._configuration.connection_id_length
            )
        except ValueError:
            return
        new = (
            header.packet_type == QuicPacketType.INITIAL
            and header.destination_cid not in self._protocols
            and len(data) >= SMALLEST_MAX_DATAGRAM_SIZE
            and header.version in self._configuration.supported_versions
        )
        if not new:
            super().datagram_received(data, addr)
            return
        state = self._state
        host = str(addr[0])
        if header.token or state.admission.needs_cookie(host):
            # Validate a token, or answer with a stateless Retry (no token under load).
            self._retry = self._retry_handler
            if not header.token:
                state.retries_sent += 1
        else:
            self._retry = None  # type: ignore[assignment]
        super().datagram_received(data, addr)
        protocol = self._protocols.get(header.destination_cid)
        if not isinstance(protocol, QuicLink) or protocol in state.half_open:
            return
        now = self._loop.time()
        protocol.peername = addr
        for victim in state.admission.admit(protocol, host, now):
            assert isinstance(victim, QuicLink)
            self._drop(victim)
        state.half_open[protocol] = None
        if header.token:
            state.admission.validated(protocol)
        protocol.on_stream_open = self._opened
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(1.0, self._sweep)

    def _opened(self, link: QuicLink) -> None:
        self._state.half_open.pop(link, None)
        self._state.admission.complete(link)

    def _connection_terminated(self, protocol: QuicConnectionProtocol) -> None:
        if isinstance(protocol, QuicLink):
            self._state.half_open.pop(protocol, None)
            self._state.admission.discard(protocol)
        super()._connection_terminated(protocol)

    def _drop(self, link: QuicLink) -> None:
        """Forget a half-open connection at once: no reply, no timers, no state."""
        state = self._state
        state.half_open.pop(link, None)
        state.admission.discard(link)
        state.evicted += 1
        for cid, proto in list(self._protocols.items()):
            if proto is link:
                del self._protocols[cid]
        link.forget()

    def _sweep(self) -> None:
        self._sweeper = None
        state = self._state
        for key in state.admission.expired(self._loop.time(), HALF_OPEN_TIMEOUT):
            assert isinstance(key, QuicLink)
            self._drop(key)
        if state.half_open:
            self._sweeper = self._loop.call_later(1.0, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        super().close()


class _QuicListener:
    def __init__(
        self, server: QuicServer, transport: asyncio.DatagramTransport, state: _ServerState
    ) -> None:
        self._server = server
        self._transport = transport
        self._state = state

    def close(self) -> None:
        """Stop accepting new connections; established ones keep running until wait_closed."""
        self._state.closed = True

    async def wait_closed(self) -> None:
        self._state.closed = True
        if not self._transport.is_closing():
            self._server.close()


class QuicTransport:
    """``quic://host:port``."""

    def __init__(
        self,
        *,
        certificate: x509.Certificate | None = None,
        private_key: Any = None,
    ) -> None:
        if (certificate is None) != (private_key is None):
            raise ValueError("give both certificate and private_key, or neither")
        self._certificate = certificate
        self._private_key = private_key

    async def listen(
        self, endpoint: Endpoint, make_driver: DriverFactory
    ) -> tuple[TransportServer, Endpoint]:
        loop = asyncio.get_running_loop()
        config = _configuration(is_client=False)
        if self._certificate is None:
            config.certificate, config.private_key = _self_signed()
        else:
            config.certificate, config.private_key = self._certificate, self._private_key
        state = _ServerState(make_driver)

        def create_protocol(quic: QuicConnection, stream_handler: Any = None) -> QuicLink:
            return QuicLink(quic, make_driver=make_driver, server=state)

        transport, server = await loop.create_datagram_endpoint(
            lambda: _AdmittingQuicServer(
                state=state, configuration=config, create_protocol=create_protocol
            ),
            local_addr=(endpoint.host, endpoint.port),
        )
        port = transport.get_extra_info("sockname")[1]
        bound = Endpoint(endpoint.scheme, endpoint.host, port, endpoint.path, endpoint.node)
        return _QuicListener(server, transport, state), bound

    async def connect(self, endpoint: Endpoint, make_driver: DriverFactory) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        config = _configuration(is_client=True)
        config.server_name = endpoint.host
        quic = QuicConnection(configuration=config)
        local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: QuicLink(quic, make_driver=make_driver), local_addr=local, family=family
        )
        link = protocol
        assert isinstance(link, QuicLink)
        try:
            link.connect(addr)
            await asyncio.wait_for(link.wait_connected(), STREAM_OPEN_TIMEOUT)
        except BaseException as exc:
            link.abort_transport()
            transport.close()
            if isinstance(exc, OSError):
                raise ConnectionError(f"QUIC connect to {endpoint.url} failed: {exc!r}") from exc
            raise
        return link.abort_transport
