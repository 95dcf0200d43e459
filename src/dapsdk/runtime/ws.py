"""WebSocket transport (``ws://host:port/path``, ``wss://``) on aiohttp.

The dap_stream byte stream rides in binary WebSocket messages. Message boundaries mean nothing:
the receiver feeds each message's bytes into the wire core, which reassembles packets exactly as
it does over TCP. permessage-deflate is always off (the stream is encrypted, so it would cost
about 50× throughput for no gain, see ``research/pkg_baselines.md``).

Three ways in:

* ``node.listen("ws://host:port/path")``: a standalone aiohttp server for dap_stream only.
* :func:`mount_stream_endpoint`: the same endpoint on an existing :class:`aiohttp.web.Application`
  (the gateway's, beside HLS and the REST API), feeding connections into a given node.
* ``node.connect("ws://host:port/path")``: the aiohttp client.

``wss://`` needs TLS contexts: :func:`set_tls` sets the server context (required to listen) and
the client context (default: :func:`ssl.create_default_context`, which verifies the certificate).
TLS only hides the WebSocket from the network; the node identity is proven by the dap_stream
handshake inside it, whatever the certificate says.

Bounds: one received message is at most :data:`MAX_MESSAGE` bytes (aiohttp closes the WebSocket
with 1009 above it); the outgoing queue pauses the driver above :data:`SEND_HIGH_WATER` bytes
and resumes it below :data:`SEND_LOW_WATER`, so it holds at most the high-water mark plus one
transmit batch (512 KiB) plus control packets.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .driver import ConnectionDriver
from .endpoint import Endpoint, parse_endpoint
from .tcp import LISTEN_BACKLOG
from .transport import DriverFactory, TransportServer

if TYPE_CHECKING:
    from .node import Listener, StreamNode

log = logging.getLogger("dapsdk.runtime.ws")

#: WebSocket subprotocol offered by clients and selected by servers.
SUBPROTOCOL = "dapstream.v1"
#: Largest WebSocket message accepted or sent (bytes). Senders split larger writes.
MAX_MESSAGE = 1024 * 1024
#: Queued outgoing bytes at which the driver is paused (stops sealing DATA).
SEND_HIGH_WATER = 1024 * 1024
#: Queued outgoing bytes below which a paused driver resumes.
SEND_LOW_WATER = 256 * 1024


class _TlsSettings:
    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None


_TLS = _TlsSettings()


def set_tls(*, server: ssl.SSLContext | None = None, client: ssl.SSLContext | None = None) -> None:
    """Set the process-wide TLS contexts for ``wss://`` listeners (server) and clients.

    A ``None`` argument leaves that side unchanged. The client default verifies certificates
    against the system store; pass a context that trusts your CA (or your self-signed
    certificate) for private deployments.
    """
    if server is not None:
        _TLS.server = server
    if client is not None:
        _TLS.client = client


class WsLink:
    """One WebSocket carrying one dap_stream connection: a :class:`ByteSink` for the driver."""

    def __init__(
        self,
        ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        abort: Callable[[], None],
    ) -> None:
        self._ws = ws
        self._abort = abort
        self.driver: ConnectionDriver | None = None
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._paused = False
        self._closing = False
        self._aborted = False
        self._writer: asyncio.Task[None] | None = None
        self.peername: Any = None
        """Server: the client's TCP address (host, port), for the node's per-source admission."""

    @property
    def queued_bytes(self) -> int:
        return self._queued

    # ByteSink -------------------------------------------------------------------------------

    def write_chunks(self, chunks: Iterable[bytes]) -> None:
        if self._closing or self._aborted:
            return
        data = b"".join(chunks)
        if not data:
            return
        if len(data) <= MAX_MESSAGE:
            self._queue.append(data)
        else:
            view = memoryview(data)
            for start in range(0, len(data), MAX_MESSAGE):
                self._queue.append(bytes(view[start : start + MAX_MESSAGE]))
        self._queued += len(data)
        if not self._paused and self._queued >= SEND_HIGH_WATER and self.driver is not None:
            self._paused = True
            self.driver.pause_writing()
        self._wake.set()

    def close_transport(self) -> None:
        """Send what is queued, then close the WebSocket."""
        self._closing = True
        self._wake.set()

    def abort_transport(self) -> None:
        """Drop the connection at once, without the WebSocket closing handshake."""
        if self._aborted:
            return
        self._aborted = True
        self._queue.clear()
        self._queued = 0
        if self._writer is not None:
            self._writer.cancel()
        self._abort()

    # running ---------------------------------------------------------------------------------

    async def run(self, make_driver: DriverFactory) -> None:
        """Attach a driver and pump until the WebSocket closes."""
        self._writer = asyncio.create_task(self._write_loop())
        driver = make_driver(self)
        if driver is None:  # refused; the factory queued a final ERROR
            self.close_transport()
            await asyncio.gather(self._writer, return_exceptions=True)
            return
        self.driver = driver
        driver.attach(self)
        reason = "peer closed the WebSocket"
        ws = self._ws
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    driver.feed(msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    reason = "text message on a dap_stream WebSocket"
                    await ws.close(
                        code=aiohttp.WSCloseCode.UNSUPPORTED_DATA, message=b"binary only"
                    )
                    break
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    reason = f"WebSocket error: {ws.exception()}"
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    if ws.close_code not in (None, aiohttp.WSCloseCode.OK):
                        reason = f"WebSocket closed with code {ws.close_code}"
                    break
        except (ConnectionError, aiohttp.ClientError) as exc:
            reason = f"WebSocket failed: {exc}"
        finally:
            driver.transport_lost(reason)
            self._closing = True
            self._wake.set()
            if self._aborted:
                self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_loop(self) -> None:
        ws = self._ws
        try:
            while True:
                while self._queue:
                    data = self._queue.popleft()
                    self._queued -= len(data)
                    await ws.send_bytes(data)
                    if self._paused and self._queued <= SEND_LOW_WATER:
                        self._paused = False
                        if self.driver is not None:
                            self.driver.resume_writing()
                if self._closing:
                    break
                self._wake.clear()
                await self._wake.wait()
            if not ws.closed:
                await ws.close()
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            # RuntimeError: aiohttp refuses to send on a closing transport.
            log.debug("WebSocket write failed: %s", exc)
            self._queue.clear()
            self._queued = 0


async def _serve_request(request: web.Request, make_driver: DriverFactory) -> web.StreamResponse:
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        compress=False,
        max_msg_size=MAX_MESSAGE,
        autoping=True,
        heartbeat=None,
    )
    await ws.prepare(request)
    transport = request.transport

    def abort() -> None:
        if transport is not None:
            transport.abort()

    link = WsLink(ws, abort)
    link.peername = transport.get_extra_info("peername") if transport is not None else None
    await link.run(make_driver)
    return ws


class _Handler:
    """The aiohttp handler: refuses with 503 once the listener is closed."""

    def __init__(self) -> None:
        self.make_driver: DriverFactory | None = None
        self.closed = False
        self.active: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        make_driver = self.make_driver
        if make_driver is None or self.closed:
            return web.Response(status=503, text="dap_stream endpoint is not accepting connections")
        task = asyncio.current_task()
        assert task is not None
        self.active.add(task)
        self._idle.clear()
        try:
            return await _serve_request(request, make_driver)
        finally:
            self.active.discard(task)
            if not self.active:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class _StandaloneServer:
    def __init__(self, runner: web.AppRunner, handler: _Handler) -> None:
        self._runner = runner
        self._handler = handler

    def close(self) -> None:
        self._handler.closed = True

    async def wait_closed(self) -> None:
        self._handler.closed = True
        await self._runner.cleanup()


class WsMount:
    """A dap_stream WebSocket endpoint on an existing aiohttp application (see
    :func:`mount_stream_endpoint`). It is the node's listener for that endpoint: closing the node
    stops it accepting (new requests get 503)."""

    def __init__(self, node: StreamNode, path: str, advertise: Endpoint) -> None:
        self.node = node
        self.path = path
        self.advertise = advertise
        self.handler = _Handler()
        self.listener: Listener | None = None

    async def attach(self) -> Listener:
        """Register with the node (as one of its listeners); idempotent."""
        if self.listener is None:
            token = _MOUNTING.set(self)
            try:
                self.listener = await self.node.listen(self.advertise)
            finally:
                _MOUNTING.reset(token)
        return self.listener

    # TransportServer -------------------------------------------------------------------------

    def close(self) -> None:
        self.handler.closed = True

    async def wait_closed(self) -> None:
        self.handler.closed = True
        await self.handler.wait_idle()

    async def _on_startup(self, app: web.Application) -> None:
        await self.attach()

    async def _on_shutdown(self, app: web.Application) -> None:
        self.handler.closed = True
        for task in list(self.handler.active):
            task.cancel()


_MOUNTING: contextvars.ContextVar[WsMount | None] = contextvars.ContextVar(
    "dapsdk_ws_mounting", default=None
)


def mount_stream_endpoint(
    app: web.Application,
    node: StreamNode,
    path: str = "/dapstream",
    *,
    advertise: str | Endpoint | None = None,
) -> WsMount:
    """Serve dap_stream over WebSocket at ``path`` of ``app``, feeding connections into ``node``.

    Call before the application starts (aiohttp freezes its router then). The endpoint registers
    with the node when the application starts (or earlier, with ``await mount.attach()``), so it
    appears in ``node.listeners`` and obeys the node's handshake limits. ``advertise`` is the URL
    recorded for that listener (default ``ws://0.0.0.0:0<path>``, as the port belongs to the
    application's runner).
    """
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with '/'")
    if advertise is None:
        endpoint = Endpoint("ws", "0.0.0.0", 0, path)
    elif isinstance(advertise, str):
        endpoint = parse_endpoint(advertise)
    else:
        endpoint = advertise
    if endpoint.scheme not in ("ws", "wss"):
        raise ValueError(f"advertise URL {endpoint.url!r} is not ws:// or wss://")
    mount = WsMount(node, path, endpoint)
    app.router.add_get(path, mount.handler.handle)
    app.on_startup.append(mount._on_startup)
    app.on_shutdown.append(mount._on_shutdown)
    return mount


class WsTransport:
    """``ws://host:port/path`` (and, with ``tls=True``, ``wss://``)."""

    def __init__(self, *, tls: bool = False) -> None:
        self.tls = tls
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(
        self, endpoint: Endpoint, make_driver: DriverFactory
    ) -> tuple[TransportServer, Endpoint]:
        mount = _MOUNTING.get()
        if mount is not None:  # mount_stream_endpoint: no server of our own
            mount.handler.make_driver = make_driver
            return mount, endpoint
        ssl_context: ssl.SSLContext | None = None
        if self.tls:
            ssl_context = _TLS.server
            if ssl_context is None:
                raise ValueError(
                    "wss:// listener needs a TLS context: call dapsdk.runtime.ws.set_tls(server=...)"
                )
        handler = _Handler()
        handler.make_driver = make_driver
        app = web.Application(client_max_size=4096)
        app.router.add_get(endpoint.path, handler.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(
            runner, endpoint.host, endpoint.port, ssl_context=ssl_context, backlog=LISTEN_BACKLOG
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        port = int(runner.addresses[0][1])
        bound = Endpoint(endpoint.scheme, endpoint.host, port, endpoint.path, endpoint.node)
        return _StandaloneServer(runner, handler), bound

    async def connect(self, endpoint: Endpoint, make_driver: DriverFactory) -> Callable[[], None]:
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        url = f"{endpoint.scheme}://{host}:{endpoint.port}{endpoint.path}"
        ssl_arg: ssl.SSLContext | bool = True
        if self.tls:
            ssl_arg = _TLS.client or ssl.create_default_context()
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                url,
                protocols=(SUBPROTOCOL,),
                compress=0,
                max_msg_size=MAX_MESSAGE,
                autoping=True,
                heartbeat=None,
                ssl=ssl_arg,
            )
        except (aiohttp.ClientError, ssl.SSLError) as exc:
            await session.close()
            raise ConnectionError(f"WebSocket connect to {url} failed: {exc}") from exc
        except BaseException:
            await session.close()
            raise

        def abort() -> None:
            task = asyncio.ensure_future(session.close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        link = WsLink(ws, abort)

        async def run() -> None:
            try:
                await link.run(make_driver)
            finally:
                await session.close()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return link.abort_transport


def WssTransport() -> WsTransport:
    """``wss://``: WebSocket over TLS (contexts from :func:`set_tls`)."""
    return WsTransport(tls=True)
