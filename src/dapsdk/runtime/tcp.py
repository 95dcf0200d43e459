"""TCP transport: an ``asyncio.Protocol`` that moves bytes between a socket and a driver."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable

from .driver import ConnectionDriver


class TcpStreamProtocol(asyncio.Protocol):
    """Feeds ``data_received`` straight into the core's buffer; writes with ``writelines``."""

    def __init__(self, make_driver: Callable[[TcpStreamProtocol], ConnectionDriver | None]) -> None:
        self._make_driver = make_driver
        self.driver: ConnectionDriver | None = None
        self.transport: asyncio.Transport | None = None
        self.peername: object = None

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peername = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        # Let the kernel hold little unsent data so scheduling (control before bulk) happens here.
        transport.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
        self.driver = self._make_driver(self)
        if self.driver is None:  # refused (e.g. too many handshakes); the factory wrote a reply
            transport.close()
            return
        self.driver.attach(self)

    def data_received(self, data: bytes) -> None:
        if self.driver is not None:
            self.driver.feed(data)

    def eof_received(self) -> bool | None:
        return False  # close our side too; the core sees connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
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
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(chunks)

    def close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort_transport(self) -> None:
        if self.transport is not None:
            self.transport.abort()
