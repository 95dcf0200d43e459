"""TCP transport: an ``asyncio.Protocol`` that moves bytes between a socket and a driver."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable
from typing import cast

from .driver import ConnectionDriver
from .endpoint import Endpoint
from .transport import DriverFactory, TransportServer

#: Linux's TCP_NOTSENT_LOWAT (not exported by the socket module).
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
NOTSENT_LOWAT_BYTES = 128 * 1024
#: Listen backlog (the kernel caps it at net.core.somaxconn, 4096 on current Linux): a flood of
#: connects must not overflow the accept queue, or a legitimate client's SYN is dropped and
#: retried a second later; the node's admission, not the kernel, decides whom to keep.
LISTEN_BACKLOG = 4096
#: Bytes the transport buffers before it asks the driver to pause (bounded sealed backlog).
WRITE_HIGH_WATER = 128 * 1024
#: Seconds a closing connection waits for the peer to read our last packets (ERROR/CLOSE) and
#: close its side, after our FIN; then the socket is aborted.
CLOSE_LINGER = 2.0


class TcpStreamProtocol(asyncio.Protocol):
    """Feeds ``data_received`` straight into the core's buffer; writes with ``writelines``."""

    def __init__(self, make_driver: DriverFactory) -> None:
        self._make_driver = make_driver
        self.driver: ConnectionDriver | None = None
        self.transport: asyncio.Transport | None = None
        self.peername: object = None
        self._eof_sent = False
        self._linger: asyncio.TimerHandle | None = None

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.peername = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # Keep unsent data in user space, where the core still orders it (control
                # before bulk), not in the kernel (Cloudflare's HTTP/2 prioritisation advice).
                sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT_BYTES)
            except OSError:
                pass
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_HIGH_WATER // 4)
        self.driver = self._make_driver(self)
        if self.driver is None:  # refused (e.g. too many handshakes); the factory wrote a reply
            self.close_transport()
            return
        self.driver.attach(self)

    def data_received(self, data: bytes) -> None:
        if self.driver is not None:
            self.driver.feed(data)

    def eof_received(self) -> bool | None:
        return False  # close our side too; the core sees connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self.driver is not None:
            self.driver.transport_lost(str(exc) if exc else "peer closed the connection")

    def pause_writing(self) -> None:
        if self.driver is not None:
            self.driver.pause_writing()

    def resume_writing(self) -> None:
        if self.driver is not None:
            self.driver.resume_writing()

    # ByteSink -------------------------------------------------------------------------------

    def write_chunks(self, chunks: Iterable[bytes]) -> None:
        if self.transport is not None and not self._eof_sent and not self.transport.is_closing():
            self.transport.writelines(chunks)

    def close_transport(self) -> None:
        """Close so that our last packet (ERROR, CLOSE) reaches the peer: half-close (FIN after
        the buffered bytes) and keep reading, discarding, until the peer closes too. Closing
        with unread input would make the kernel send a reset, which can destroy the ERROR
        before the peer reads it. A peer that neither reads nor closes is cut off after
        ``CLOSE_LINGER`` seconds."""
        transport = self.transport
        if transport is None or self._eof_sent or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        self._eof_sent = True
        transport.write_eof()
        if not transport.is_reading():
            transport.resume_reading()
        self._linger = asyncio.get_running_loop().call_later(CLOSE_LINGER, transport.abort)

    def abort_transport(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _TcpServer:
    def __init__(self, server: asyncio.AbstractServer) -> None:
        self._server = server

    def close(self) -> None:
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


class TcpTransport:
    """``tcp://host:port``: the default transport."""

    async def listen(
        self, endpoint: Endpoint, make_driver: DriverFactory
    ) -> tuple[TransportServer, Endpoint]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: TcpStreamProtocol(make_driver),
            endpoint.host,
            endpoint.port,
            backlog=LISTEN_BACKLOG,
        )
        port = server.sockets[0].getsockname()[1]
        bound = Endpoint(endpoint.scheme, endpoint.host, port, endpoint.path, endpoint.node)
        return _TcpServer(server), bound

    async def connect(self, endpoint: Endpoint, make_driver: DriverFactory) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(
            lambda: TcpStreamProtocol(make_driver), endpoint.host, endpoint.port
        )
        return transport.abort
