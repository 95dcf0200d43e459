"""HLS and low-latency handlers: parse the request, ask the rendition, add cache headers.

Playback is authorised like a stream-protocol SUBSCRIBE (:func:`.auth.check_playback`): the
token comes from ``Authorization: Bearer`` or, for players that cannot set headers, from a
``?token=`` query parameter, which the playlists then append to every URI they list. Requests
without a token pass only where the node's ``loopback_no_credentials`` / ``token_required``
rules let them. Refusals are problem+json (401/403) with the AVRS code.

Cache policy (so that a CDN or an nginx cache can sit in front, docs/operations.md):

* segments, parts and init segments never change once produced: ``public, max-age=60`` for live
  (they leave the window soon after), ``max-age=86400, immutable`` for VoD, with a strong ETag;
* live media playlists: ``max-age=1``; a blocking reload (``_HLS_msn``) names one playlist
  version in its URL, so it may be cached as long as a segment lasts (``max-age=2``);
* VoD playlists and master playlists: ``max-age=5`` (master) / ``max-age=3600`` (VoD).

``If-None-Match`` with the current ETag is answered 304. While the node requires tokens
(``token_required``, the default) every ``public`` above is sent as ``private``: a shared cache
must not hand one viewer's authorised response to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from ..avrs.errors import AvrsError
from .auth import check_playback, playback_token
from .content import ContentType, GatewayContent, RenditionPipeline
from .hls import HlsRendition, NotAvailable, master_playlist
from .http_api import STATE_KEY, refuse
from .service import GatewayState

M3U8 = "application/vnd.apple.mpegurl"
MP4 = "video/mp4"
#: Seconds a low-latency socket may take to drain one chunk before the viewer is cut.
LIVE_SEND_TIMEOUT = 5.0


def _state(request: web.Request) -> GatewayState:
    return request.app[STATE_KEY]


def _authorize(request: web.Request) -> None:
    """Refuse the request unless it may play its content (module docstring)."""
    state = _state(request)
    header, _ = playback_token(request.headers.get("Authorization"), request.query.get("token"))
    check_playback(
        state.playback_rule,
        request.remote,
        header,
        state.token_verifier,
        content=request.match_info["content"],
    )


def _token_query(request: web.Request) -> str:
    """What a playlist appends to the URIs it lists: ``?token=...`` when the request's token came
    in the query (and no ``Authorization`` header), else nothing."""
    _, from_query = playback_token(request.headers.get("Authorization"), request.query.get("token"))
    return "?" + urlencode({"token": request.query["token"]}) if from_query else ""


def _content(request: web.Request) -> GatewayContent:
    state = _state(request)
    _authorize(request)
    content = state.catalog.get(request.match_info["content"])
    if content is None:
        state.http.cache_misses += 1
        raise refuse(state, AvrsError.CONTENT_NOT_FOUND, 404, "no such content")
    state.catalog.touch_hls(content, request.query.get("viewer", "")[:64], time.time())
    return content


def _rendition(request: web.Request) -> tuple[GatewayContent, RenditionPipeline]:
    content = _content(request)
    pipeline = content.renditions.get(request.match_info["rendition"])
    if pipeline is None:
        state = _state(request)
        state.http.cache_misses += 1
        raise refuse(state, AvrsError.CONTENT_FLOW_WRONG_ID, 404, "no such rendition")
    return content, pipeline


def _respond(
    request: web.Request, body: bytes, content_type: str, cache: str, *, hit: bool = True
) -> web.Response:
    state = _state(request)
    if hit:
        state.http.cache_hits += 1
    etag = '"' + hashlib.sha1(body).hexdigest()[:20] + '"'
    if state.playback_rule.token_required:
        cache = cache.replace("public", "private")
    headers = {"Cache-Control": cache, "ETag": etag, "Access-Control-Allow-Origin": "*"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


def _object_cache(content: GatewayContent) -> str:
    if content.type is ContentType.VOD:
        return "public, max-age=86400, immutable"
    return "public, max-age=60"


async def master(request: web.Request) -> web.Response:
    content = _content(request)
    renditions = [r.hls for r in content.renditions.values() if r.hls.init is not None]
    if not renditions:
        state = _state(request)
        state.http.cache_misses += 1
        raise refuse(state, AvrsError.CONTENT_UNAVAILBLE, 503, "no media packaged yet")
    text = master_playlist(renditions, _token_query(request))
    cache = "public, max-age=5" if content.type is not ContentType.VOD else "public, max-age=3600"
    return _respond(request, text.encode(), M3U8, cache)


def _int_query(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 9:
        raise refuse(_state(request), AvrsError.ARG_INCORRECT, 400, f"{name} must be a number")
    return int(value)


async def _wait(request: web.Request, hls: HlsRendition, msn: int, part: int | None) -> None:
    try:
        await hls.wait_for(msn, part)
    except NotAvailable as exc:
        state = _state(request)
        state.http.cache_misses += 1
        raise refuse(
            state, AvrsError.CONTENT_UNAVAILBLE, 404 if "far" not in str(exc) else 400, str(exc)
        ) from None


async def media_playlist(request: web.Request) -> web.Response:
    _, pipeline = _rendition(request)
    hls = pipeline.hls
    msn = _int_query(request, "_HLS_msn")
    part = _int_query(request, "_HLS_part")
    if part is not None and msn is None:
        raise refuse(_state(request), AvrsError.ARG_INCORRECT, 400, "_HLS_part needs _HLS_msn")
    if msn is not None and hls.live:
        await _wait(request, hls, msn, part)
    if hls.init is None:
        raise refuse(_state(request), AvrsError.CONTENT_UNAVAILBLE, 503, "no media packaged yet")
    if not hls.live:
        cache = "public, max-age=3600"
    elif msn is not None:
        cache = "public, max-age=2"
    else:
        cache = "public, max-age=1"
    body = hls.media_playlist(_token_query(request)).encode()
    return _respond(request, body, M3U8, cache)


async def init_segment(request: web.Request) -> web.Response:
    content, pipeline = _rendition(request)
    if pipeline.hls.init is None:
        raise refuse(_state(request), AvrsError.CONTENT_UNAVAILBLE, 503, "no media packaged yet")
    return _respond(request, pipeline.hls.init, MP4, _object_cache(content))


async def segment(request: web.Request) -> web.Response:
    content, pipeline = _rendition(request)
    msn = int(request.match_info["msn"])
    await _wait(request, pipeline.hls, msn, None)
    try:
        body = pipeline.hls.segment(msn).data()
    except NotAvailable as exc:
        _state(request).http.cache_misses += 1
        raise refuse(_state(request), AvrsError.CONTENT_UNAVAILBLE, 404, str(exc)) from None
    return _respond(request, body, MP4, _object_cache(content))


async def part(request: web.Request) -> web.Response:
    content, pipeline = _rendition(request)
    msn, index = int(request.match_info["msn"]), int(request.match_info["part"])
    await _wait(request, pipeline.hls, msn, index)
    try:
        body = pipeline.hls.part(msn, index)
    except NotAvailable as exc:
        _state(request).http.cache_misses += 1
        raise refuse(_state(request), AvrsError.CONTENT_UNAVAILBLE, 404, str(exc)) from None
    return _respond(request, body, MP4, _object_cache(content))


async def live_socket(request: web.Request) -> web.StreamResponse:
    """The low-latency mode: the init segment, then every fragment as it leaves the muxer.

    Each binary message is ``u32 header length`` + a JSON header + the fMP4 bytes. The header of
    a fragment carries its decode time (``start``) and the publisher's wall clock
    (``published_at``) so the page can measure how far behind the publisher it plays.
    """
    state = _state(request)
    content, pipeline = _rendition(request)
    if content.type is ContentType.VOD:
        raise refuse(
            state, AvrsError.CONTENT_UNAVAILBLE, 409, "low-latency mode is for live content"
        )
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
    await ws.prepare(request)
    sub = pipeline.subscribe()
    state.catalog.ws_viewers += 1
    state.catalog.touch_hls(content, "", time.time())
    reader = asyncio.ensure_future(_drain_incoming(ws))
    try:
        while pipeline.hls.init is None and not ws.closed:
            await pipeline.hls.wait_for(0, 0)
        init = pipeline.hls.init or b""
        await ws.send_bytes(_frame({"init": True, "codecs": pipeline.hls.codecs}, init))
        state.http.bytes_out += len(init)
        while not ws.closed:
            getter = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            chunk = getter.result()
            if chunk is None:
                break
            header: dict[str, object] = {
                "start": chunk.start,
                "duration": chunk.duration,
                "published_at": chunk.published_at,
                "keyframe": chunk.keyframe,
            }
            await asyncio.wait_for(ws.send_bytes(_frame(header, chunk.data)), LIVE_SEND_TIMEOUT)
            state.http.bytes_out += len(chunk.data)
    except (NotAvailable, TimeoutError, ConnectionResetError):
        pass
    finally:
        reader.cancel()
        pipeline.unsubscribe(sub)
        state.catalog.ws_viewers -= 1
        state.catalog.touch_hls(content, "", time.time())
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


def _frame(header: dict[str, object], data: bytes) -> bytes:
    head = json.dumps(header).encode()
    return len(head).to_bytes(4, "big") + head + data
