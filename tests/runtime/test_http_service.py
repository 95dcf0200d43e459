"""HTTP over the SERVICE channel: one node calls another's HTTP API through an existing stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dapsdk.runtime.http_service import (
    MAX_REQUEST_BODY,
    HttpRequest,
    HttpResponse,
    HttpService,
    HttpServiceError,
    http_request,
)
from dapsdk.runtime.node import StreamNode
from dapsdk.runtime.stream import Stream
from dapsdk.stream.constants import ChannelId, PacketType
from dapsdk.stream.errors import StreamClosedError

from ..conftest import listen_url

TIMEOUT = 20


@pytest.fixture
async def pair(transport: str) -> AsyncIterator[tuple[StreamNode, HttpService, Stream]]:
    async with StreamNode() as server, StreamNode() as client:
        service = HttpService(server).install()
        listener = await server.listen(listen_url(transport))
        stream = await client.connect(listener.url)
        yield server, service, stream


async def test_status_over_each_transport(
    pair: tuple[StreamNode, HttpService, Stream], transport: str
) -> None:
    server, _, stream = pair
    response = await asyncio.wait_for(stream.http_request("GET", "/api/v1/status"), TIMEOUT)
    assert response.status == 200
    assert response.header("content-type") == "application/json"
    status = response.json()
    assert status["node"] == str(server.address)
    assert status["caller"] == str(stream.owner.address)
    assert status["listeners"] == [listener.url for listener in server.listeners]
    (entry,) = status["streams"]
    assert entry["peer"] == str(stream.owner.address)
    assert entry["transport"] == transport
    assert entry["client"] is False
    assert ChannelId.SERVICE in entry["channels"]
    assert entry["stats"]["bytes_received"] > 0
    assert status["stats"]["active_channels"] >= 1


async def test_routes_see_the_authenticated_peer_and_reuse_the_channel(
    pair: tuple[StreamNode, HttpService, Stream],
) -> None:
    _, service, stream = pair

    async def echo(request: HttpRequest) -> HttpResponse:
        return HttpResponse.from_json(
            201,
            {
                "peer": str(request.peer.address),
                "got": request.json(),
                "q": request.query,
                "h": request.header("x-test"),
            },
        )

    service.route("POST", "/api/v1/echo", echo)
    first = await stream.http_request(
        "POST",
        "/api/v1/echo?a=1",
        body=b'{"x": [1, 2]}',
        headers=[("X-Test", "yes"), ("content-type", "application/json")],
    )
    assert first.status == 201
    assert first.json() == {
        "peer": str(stream.owner.address),
        "got": {"x": [1, 2]},
        "q": {"a": "1"},
        "h": "yes",
    }
    channel = stream.channel(ChannelId.SERVICE)
    # Many requests at once: one at a time on the same channel, each gets its own answer.
    results = await asyncio.wait_for(
        asyncio.gather(
            *(http_request(stream, "POST", f"/api/v1/echo?i={i}", body=b"%d" % i) for i in range(8))
        ),
        TIMEOUT,
    )
    assert [r.json()["got"] for r in results] == list(range(8))
    assert [r.json()["q"] for r in results] == [{"i": str(i)} for i in range(8)]
    assert stream.channel(ChannelId.SERVICE) is channel and channel is not None
    assert channel.is_active
    assert service.requests_served == 9


async def test_clear_http_errors(pair: tuple[StreamNode, HttpService, Stream]) -> None:
    _, service, stream = pair

    async def broken(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("handler bug")

    service.route("GET", "/broken", broken)
    missing = await stream.http_request("GET", "/nope")
    assert missing.status == 404 and "no handler" in missing.json()["error"]
    wrong = await stream.http_request("DELETE", "/api/v1/status")
    assert wrong.status == 405 and wrong.header("allow") == "GET"
    head = await stream.http_request("HEAD", "/api/v1/status")
    assert head.status == 200 and head.body == b""
    failed = await stream.http_request("GET", "/broken")
    assert failed.status == 500 and failed.json()["error"] == "internal error"
    # still usable after errors
    assert (await stream.http_request("GET", "/api/v1/status")).status == 200


async def test_oversized_body_gets_413_then_a_new_channel_serves(
    pair: tuple[StreamNode, HttpService, Stream],
) -> None:
    _, _, stream = pair
    response = await stream.http_request(
        "POST", "/api/v1/status", body=b"x" * (MAX_REQUEST_BODY + 1)
    )
    assert response.status == 413
    assert response.header("connection") == "close"
    assert (await stream.http_request("GET", "/api/v1/status")).status == 200


async def test_malformed_and_pipelined_raw_http(
    pair: tuple[StreamNode, HttpService, Stream],
) -> None:
    _, _, stream = pair
    channel = stream.channel_new(ChannelId.SERVICE)
    # Two pipelined requests in one message: answered in order.
    await channel.write(
        PacketType.DATA,
        b"GET /api/v1/status HTTP/1.1\r\nhost: a\r\n\r\nGET /missing HTTP/1.1\r\nhost: a\r\n\r\n",
    )
    received = bytearray()
    while received.count(b"HTTP/1.1 ") < 2 or not received.endswith(b"}"):
        _, data = await asyncio.wait_for(channel.receive(), TIMEOUT)
        received += data
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.index(b"HTTP/1.1 404 ") > 0
    # Garbage: 400 and the channel closes.
    await channel.write(PacketType.DATA, b"NOT HTTP AT ALL\x00\r\n\r\n")
    _, data = await asyncio.wait_for(channel.receive(), TIMEOUT)
    assert data.startswith(b"HTTP/1.1 400 ")
    with pytest.raises(StreamClosedError):  # the server closed the channel after the 400
        await asyncio.wait_for(channel.receive(), TIMEOUT)
    assert not channel.is_active
    assert (await stream.http_request("GET", "/api/v1/status")).status == 200


async def test_oversized_head_gets_431(pair: tuple[StreamNode, HttpService, Stream]) -> None:
    _, _, stream = pair
    channel = stream.channel_new(ChannelId.SERVICE)
    await channel.write(
        PacketType.DATA, b"GET / HTTP/1.1\r\nhost: a\r\nx-big: " + b"a" * 20_000 + b"\r\n\r\n"
    )
    _, data = await asyncio.wait_for(channel.receive(), TIMEOUT)
    assert data.startswith(b"HTTP/1.1 431 ")


async def test_timeouts_and_response_bound(pair: tuple[StreamNode, HttpService, Stream]) -> None:
    _, service, stream = pair
    release = asyncio.Event()

    async def slow(request: HttpRequest) -> HttpResponse:
        await release.wait()
        return HttpResponse(200, body=b"late")

    async def big(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, body=b"b" * 10_000)

    service.route("GET", "/slow", slow)
    service.route("GET", "/big", big)
    with pytest.raises(HttpServiceError, match=r"within 0\.3 s"):
        await stream.http_request("GET", "/slow", timeout=0.3)
    release.set()
    with pytest.raises(HttpServiceError, match="exceeds 100"):
        await stream.http_request("GET", "/big", max_response=100)
    ok = await stream.http_request("GET", "/big")
    assert ok.status == 200 and len(ok.body) == 10_000


async def test_peer_without_service_times_out_clearly() -> None:
    async with StreamNode() as server, StreamNode() as client:
        listener = await server.listen(listen_url("tcp"))
        stream = await client.connect(listener.url)
        with pytest.raises(HttpServiceError, match="no complete HTTP response"):
            await stream.http_request("GET", "/api/v1/status", timeout=0.3)


async def test_channel_opened_by_peer_cannot_be_used_as_client() -> None:
    async with StreamNode() as a, StreamNode() as b:
        HttpService(a).install()
        HttpService(b).install()
        accepted: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
        a.on_stream = accepted.set_result
        listener = await a.listen(listen_url("tcp"))
        stream = await b.connect(listener.url)
        assert (await stream.http_request("GET", "/api/v1/status")).status == 200
        back = await asyncio.wait_for(accepted, TIMEOUT)
        with pytest.raises(ValueError, match="opened by the peer"):
            await back.http_request("GET", "/api/v1/status")
        # The reverse direction works on another channel the peer's service listens on.
        HttpService(b, channel_id=0x12).install()
        reverse = await back.http_request("GET", "/api/v1/status", channel_id=0x12)
        assert reverse.json()["node"] == str(b.address)
