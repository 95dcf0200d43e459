"""HTTP over a stream: the SERVICE channel (0x02) carries HTTP/1.1 requests and responses.

One node calls another node's HTTP API (REST, status, metrics) through an existing
authenticated, encrypted stream, without a separate connection. The channel's messages carry the
bytes of an ordinary HTTP/1.1 connection, framed by ``h11``; message boundaries mean nothing.

* **Roles.** The side that opens the SERVICE channel is the HTTP client, the side that accepts
  it (its node runs :class:`HttpService`) is the server. A node that wants to call back its peer
  on the same stream passes another ``channel_id`` (any id the peer's service is installed on).
* **One request at a time per channel.** Concurrent :func:`http_request` calls on one stream
  queue behind a lock. The server answers requests strictly in order, so pipelined requests are
  also served (one after another); while a handler runs, the server reads nothing more, and the
  channel's flow-control credit holds the client back.
* **Identity.** Handlers see :attr:`HttpRequest.peer`, the node identity the stream's handshake
  proved, so authorization needs no tokens on this path.
* **Bounds.** Request head :data:`MAX_HEAD` bytes (h11's ``max_incomplete_event_size``); request
  body :data:`MAX_REQUEST_BODY`; response body :data:`MAX_RESPONSE_BODY` (checked on both
  sides). Beyond them the server answers 431/413/500 and closes the channel; the client raises
  :class:`HttpServiceError`.
* **Errors.** Malformed HTTP → 400 and the channel closes; unknown path → 404; known path, other
  method → 405 with ``Allow``; a handler that raises → 500 (logged); a handler that takes longer
  than :data:`HANDLER_TIMEOUT` → 504.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import h11

from ..stream.config import PeerIdentity
from ..stream.constants import ChannelId, PacketType
from ..stream.errors import DapError, ErrorCode, StreamClosedError
from .channel import Channel
from .node import ChannelProc

if TYPE_CHECKING:
    from .node import StreamNode
    from .stream import Stream

log = logging.getLogger("dapsdk.runtime.http")

#: Largest request line plus headers (h11's default, after node/Tomcat/IIS/Apache).
MAX_HEAD = 16 * 1024
#: Largest request body a server accepts.
MAX_REQUEST_BODY = 1024 * 1024
#: Largest response body a server sends and a client accepts.
MAX_RESPONSE_BODY = 16 * 1024 * 1024
#: Seconds a handler may run before the server answers 504.
HANDLER_TIMEOUT = 30.0
#: Default seconds :func:`http_request` waits for the whole response.
DEFAULT_TIMEOUT = 10.0
#: ``Server`` header.
SERVER_NAME = "dapsdk-stream-http/1"


class HttpServiceError(DapError):
    """The request could not be completed (channel closed, timeout, response too large, bad
    HTTP from the peer)."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str
    """The request target as sent (path and query)."""
    path: str
    query: dict[str, str]
    headers: list[tuple[str, str]]
    """Header names lower-cased, in order."""
    body: bytes
    peer: PeerIdentity
    """The node identity proven by the stream's handshake."""
    stream: Stream

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key == lname:
                return value
        return default

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Header names lower-cased (on the client side), in order."""
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    def json(self) -> Any:
        return json.loads(self.body)

    @classmethod
    def from_json(cls, status: int, value: Any) -> HttpResponse:
        return cls(
            status,
            [("content-type", "application/json")],
            json.dumps(value, separators=(",", ":")).encode(),
        )

    @classmethod
    def error(cls, status: int, message: str) -> HttpResponse:
        return cls.from_json(status, {"error": message, "status": status})


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class HttpService:
    """The server side: routes on a node, answering requests that arrive on SERVICE channels.

    ``/api/v1/status`` is registered by default. Call :meth:`install` once to accept SERVICE
    channels on the node (it replaces any other ChannelProc for that id)."""

    def __init__(
        self,
        node: StreamNode,
        *,
        channel_id: int = ChannelId.SERVICE,
        privileged: Callable[[PeerIdentity], bool] | None = None,
        public: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.node = node
        self.privileged = privileged
        """Who sees the full ``/api/v1/status`` (peers, listeners, per-stream statistics); None:
        every authenticated peer (a bare stream node knows no roles). The AVRS node passes "host
        or operator"; everyone else gets only :attr:`public` facts."""
        self.public = public
        """The public facts of ``/api/v1/status`` (version, roles, load)."""
        self.channel_id = int(channel_id)
        self.routes: dict[str, dict[str, Handler]] = {}
        self.started = time.time()
        self.requests_served = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.route("GET", "/api/v1/status", self._status)

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` (upper case) on the exact ``path``."""
        if not path.startswith("/"):
            raise ValueError(f"path {path!r} must start with '/'")
        self.routes.setdefault(path, {})[method.upper()] = handler

    def install(self) -> HttpService:
        self.node.register_channel_proc(self.channel_id, ChannelProc(new=self._channel_opened))
        return self

    # -- serving -------------------------------------------------------------------------------

    def _channel_opened(self, channel: Channel) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, channel: Channel) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            while True:
                request = await self._read_request(conn, channel)
                if request is None:
                    return
                response = await self._dispatch(request)
                self.requests_served += 1
                if not await self._send(conn, channel, response, head=request.method == "HEAD"):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    channel.close()
                    return
                conn.start_next_cycle()
        except StreamClosedError:
            return
        except Exception:
            log.exception("HTTP service on channel %d failed", channel.id)
            channel.close(ErrorCode.INTERNAL_ERROR, "HTTP service failed")

    async def _read_request(self, conn: h11.Connection, channel: Channel) -> HttpRequest | None:
        """The next complete request, or None after answering an error (channel then closed)."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._fail(conn, channel, exc.error_status_hint, f"bad request: {exc}")
                return None
            if event is h11.NEED_DATA:
                ptype, data = await channel.receive()
                if ptype == PacketType.DATA:
                    conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                head = event
                # h11 bounds only heads that arrive in pieces; a complete one is checked here.
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > MAX_HEAD:
                    await self._fail(conn, channel, 431, f"request head above {MAX_HEAD} bytes")
                    return None
                length = _content_length(event.headers)
                if length is not None and length > MAX_REQUEST_BODY:
                    await self._fail(conn, channel, 413, f"body above {MAX_REQUEST_BODY} bytes")
                    return None
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST_BODY:
                    await self._fail(conn, channel, 413, f"body above {MAX_REQUEST_BODY} bytes")
                    return None
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("latin-1")
                parts = urlsplit(target)
                return HttpRequest(
                    method=head.method.decode("ascii", "replace"),
                    target=target,
                    path=parts.path or "/",
                    query=dict(parse_qsl(parts.query)),
                    headers=[
                        (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in head.headers
                    ],
                    body=bytes(body),
                    peer=channel.stream.peer,
                    stream=channel.stream,
                )
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _dispatch(self, request: HttpRequest) -> HttpResponse:
        methods = self.routes.get(request.path)
        if methods is None:
            return HttpResponse.error(404, f"no handler for {request.path}")
        handler = methods.get(request.method)
        if handler is None and request.method == "HEAD":
            handler = methods.get("GET")
        if handler is None:
            allowed = ", ".join(sorted(methods))
            response = HttpResponse.error(405, f"{request.method} not allowed; use {allowed}")
            return HttpResponse(405, [*response.headers, ("allow", allowed)], response.body)
        try:
            return await asyncio.wait_for(handler(request), HANDLER_TIMEOUT)
        except TimeoutError:
            return HttpResponse.error(504, f"handler took longer than {HANDLER_TIMEOUT} s")
        except Exception:
            log.exception("HTTP handler for %s %s failed", request.method, request.path)
            return HttpResponse.error(500, "internal error")

    async def _send(
        self, conn: h11.Connection, channel: Channel, response: HttpResponse, *, head: bool
    ) -> bool:
        if len(response.body) > MAX_RESPONSE_BODY:
            response = HttpResponse.error(500, f"response body above {MAX_RESPONSE_BODY} bytes")
        headers = [
            (k, v)
            for k, v in response.headers
            if k.lower() not in ("content-length", "transfer-encoding")
        ]
        headers += [("content-length", str(len(response.body))), ("server", SERVER_NAME)]
        try:
            data = _emit(conn, h11.Response(status_code=response.status, headers=headers))
            if response.body and not head:
                data += _emit(conn, h11.Data(data=response.body))
            data += _emit(conn, h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            log.warning("cannot send HTTP response on channel %d: %s", channel.id, exc)
            channel.close(ErrorCode.PROTOCOL_ERROR, "HTTP state error")
            return False
        await channel.write(PacketType.DATA, data)
        return True

    async def _fail(
        self, conn: h11.Connection, channel: Channel, status: int, message: str
    ) -> None:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = HttpResponse.error(status, message)
            headers = [
                *body.headers,
                ("content-length", str(len(body.body))),
                ("connection", "close"),
            ]
            try:
                data = _emit(conn, h11.Response(status_code=status, headers=headers))
                data += _emit(conn, h11.Data(data=body.body)) + _emit(conn, h11.EndOfMessage())
                await channel.write(PacketType.DATA, data)
            except (h11.LocalProtocolError, StreamClosedError):
                pass
        channel.close()

    # -- built-in handlers ---------------------------------------------------------------------

    async def _status(self, request: HttpRequest) -> HttpResponse:
        node = self.node
        facts: dict[str, Any] = {"node": str(node.address)}
        if self.public is not None:
            facts.update(self.public())
        if self.privileged is not None and not self.privileged(request.peer):
            facts["access"] = "public"
            facts["detail"] = "peers, listeners and statistics need host or operator credentials"
            return HttpResponse.from_json(200, facts)
        streams = []
        for stream in list(node.streams.values()):
            endpoint = stream.endpoint
            scheme = _transport_name(stream)
            streams.append(
                {
                    "id": stream.id,
                    "peer": str(stream.peer.address),
                    "transport": scheme,
                    "client": stream.is_client,
                    "primary": stream.primary,
                    "endpoint": endpoint.url if endpoint is not None else None,
                    "channels": sorted(stream.channels),
                    "stats": asdict(stream.get_stats()),
                }
            )
        return HttpResponse.from_json(
            200,
            {
                **facts,
                "access": "full",
                "uptime": round(time.time() - self.started, 3),
                "listeners": [listener.url for listener in node.listeners],
                "streams": streams,
                "stats": asdict(node.get_stats()),
                "requests_served": self.requests_served,
                "caller": str(request.peer.address),
            },
        )


def _transport_name(stream: Stream) -> str:
    sink = stream.driver.sink
    name = type(sink).__name__ if sink is not None else ""
    return {"TcpStreamProtocol": "tcp", "WsLink": "ws", "QuicLink": "quic"}.get(name, name)


def _both_done(conn: h11.Connection) -> bool:
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


def _emit(conn: h11.Connection, event: h11.Event) -> bytes:
    return conn.send(event) or b""


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# -- the client side ---------------------------------------------------------------------------


class _ClientState:
    def __init__(self) -> None:
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.lock = asyncio.Lock()


_clients: weakref.WeakKeyDictionary[Channel, _ClientState] = weakref.WeakKeyDictionary()
#: Channels whose HTTP connection ended; the next request waits for them to close, then opens
#: the id afresh.
_retired: weakref.WeakSet[Channel] = weakref.WeakSet()


def _retire(channel: Channel) -> None:
    _clients.pop(channel, None)
    _retired.add(channel)


async def _wait_closed(channel: Channel, timeout: float) -> None:
    """Discard what is left on a retired channel until it has closed."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await channel.receive()
    except StreamClosedError:
        return
    except TimeoutError:
        raise HttpServiceError(f"channel {channel.id} did not close within {timeout} s") from None


async def http_request(
    stream: Stream,
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    timeout: float = DEFAULT_TIMEOUT,
    channel_id: int = ChannelId.SERVICE,
    max_response: int = MAX_RESPONSE_BODY,
) -> HttpResponse:
    """Send one HTTP request to the stream's peer over its SERVICE channel; return the response.

    Raises :class:`HttpServiceError` when the channel closes before a full response, on timeout
    (the channel is then closed, as its HTTP state is unknown), or when the response is larger
    than ``max_response``."""
    channel = stream.channels.get(int(channel_id))
    if channel is not None and channel in _retired:
        await _wait_closed(channel, timeout)
    if channel is None or not channel.is_active:
        channel = stream.channel_new(channel_id)
    if channel.opened_by_peer:
        raise ValueError(
            f"channel 0x{channel.id:02x} was opened by the peer (it is the HTTP client there); "
            "use another channel_id for requests in this direction"
        )
    state = _clients.get(channel)
    if state is None:
        state = _clients[channel] = _ClientState()
    async with state.lock:
        conn = state.conn
        if conn.our_state is not h11.IDLE:
            raise HttpServiceError(f"HTTP connection on channel {channel.id} is unusable")
        request_headers = [("host", str(stream.peer.address)), *headers]
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            request_headers.append(("content-length", str(len(body))))
        try:
            data = _emit(conn, h11.Request(method=method, target=target, headers=request_headers))
            if body:
                data += _emit(conn, h11.Data(data=body))
            data += _emit(conn, h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise ValueError(f"invalid request: {exc}") from None
        try:
            async with asyncio.timeout(timeout):
                await channel.write(PacketType.DATA, data)
                response = await _read_response(conn, channel, max_response)
        except TimeoutError:
            _retire(channel)
            channel.close(ErrorCode.CANCELLED, "HTTP request timed out")
            raise HttpServiceError(
                f"no complete HTTP response to {method} {target} within {timeout} s"
            ) from None
        except StreamClosedError as exc:
            _retire(channel)
            raise HttpServiceError(
                f"channel closed before the response to {method} {target}: {exc}"
            ) from None
        except HttpServiceError:
            _retire(channel)
            channel.close(ErrorCode.CANCELLED, "bad HTTP response")
            raise
        if _both_done(conn):
            conn.start_next_cycle()
        else:  # the server will close (Connection: close); the next request opens a new channel
            _retire(channel)
        return response


async def _read_response(conn: h11.Connection, channel: Channel, max_response: int) -> HttpResponse:
    head: h11.Response | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise HttpServiceError(f"bad HTTP response: {exc}") from None
        if event is h11.NEED_DATA:
            ptype, data = await channel.receive()
            if ptype == PacketType.DATA:
                conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            head = event
            length = _content_length(event.headers)
            if length is not None and length > max_response:
                raise HttpServiceError(f"response of {length} bytes exceeds {max_response}")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_response:
                raise HttpServiceError(f"response exceeds {max_response} bytes")
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return HttpResponse(
                head.status_code,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers],
                bytes(body),
            )
        elif isinstance(event, h11.ConnectionClosed):
            raise HttpServiceError("peer closed the HTTP connection before responding")
        # InformationalResponse (1xx): keep reading
