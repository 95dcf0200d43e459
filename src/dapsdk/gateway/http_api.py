"""REST API (``/api/v1``), ``/metrics`` and ``/api/openapi.json`` handlers.

Each REST route names the AVRS operation it stands for; :func:`.auth.check` applies the stream
protocol's permission table to the bearer token. Refusals are ``application/problem+json`` with
the AVRS code (:mod:`.problem`) and are counted by code for ``avrs_refusals_total``. Operations
whose feature this node does not have yet (chat, polls, chat moderation) are refused with
``NOT_SUPPORTED`` and HTTP 501, never answered with success.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from ..avrs.constants import AvrsChannel, ClusterOp, SessionOp, SignalOp
from ..avrs.errors import AvrsError
from . import metrics as metrics_mod
from .auth import Caller, Refused, caller_of, check
from .openapi import openapi_document
from .problem import problem
from .qoe import QoeReport, QoeReportError
from .service import GatewayState
from .vod import VodImportError, import_vod

STATE_KEY = web.AppKey("gateway_state", GatewayState)
REGISTRY_KEY = web.AppKey("gateway_registry", CollectorRegistry)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpRefusal(web.HTTPException):
    """Raised by handlers; rendered as problem+json by :func:`count_middleware`."""

    def __init__(self, code: AvrsError, status: int, detail: str) -> None:
        self.status_code = status
        super().__init__(reason=None)
        self.avrs_code = code
        self.detail = detail


def refuse(state: GatewayState, code: AvrsError, status: int, detail: str) -> HttpRefusal:
    state.http.refuse(code.token)
    return HttpRefusal(code, status, detail)


@web.middleware
async def count_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.http.requests += 1
    try:
        response = await handler(request)
    except HttpRefusal as exc:
        response = problem(exc.avrs_code, exc.status_code, exc.detail)
    except Refused as exc:
        state.http.refuse(exc.code.token)
        response = problem(exc.code, exc.status, exc.detail)
    except web.HTTPNotFound:
        state.http.refuse(AvrsError.ARG_INCORRECT.token)
        response = problem(AvrsError.ARG_INCORRECT, 404, "no such path")
    if isinstance(response, web.Response) and response.body is not None:
        body = response.body
        if isinstance(body, bytes | bytearray):
            state.http.bytes_out += len(body)
    return response


def _state(request: web.Request) -> GatewayState:
    return request.app[STATE_KEY]


def _caller(request: web.Request) -> Caller:
    return caller_of(request.headers.get("Authorization"), _state(request).token_verifier)


def _authorize(
    request: web.Request, channel: AvrsChannel, op: int, content: str | None = None
) -> Caller:
    state = _state(request)
    caller = _caller(request)
    check(caller, channel, op, cluster_owner=state.cluster_owner, content=content)
    return caller


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise refuse(_state(request), AvrsError.ARG_INCORRECT, 400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise refuse(_state(request), AvrsError.ARG_INCORRECT, 400, "body must be a JSON object")
    return data


def _ok(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------- metrics and OpenAPI


async def metrics(request: web.Request) -> web.Response:
    body = metrics_mod.render(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": metrics_mod.CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


# ---------------------------------------------------------------------- REST


async def get_cluster(request: web.Request) -> web.Response:
    _authorize(request, AvrsChannel.CLUSTER, ClusterOp.INFO)
    return _ok(_state(request).cluster())


async def get_nodes(request: web.Request) -> web.Response:
    _authorize(request, AvrsChannel.CLUSTER, ClusterOp.LIST_REQ)
    return _ok({"nodes": _state(request).nodes()})


async def get_contents(request: web.Request) -> web.Response:
    _authorize(request, AvrsChannel.CLUSTER, ClusterOp.LIST_REQ)
    state = _state(request)
    state.refresh_viewers()
    return _ok({"contents": [c.to_json() for c in state.catalog.list()]})


async def get_content(request: web.Request) -> web.Response:
    _authorize(request, AvrsChannel.CLUSTER, ClusterOp.LIST_REQ)
    state = _state(request)
    content = state.catalog.get(request.match_info["content"])
    if content is None:
        raise refuse(state, AvrsError.CONTENT_NOT_FOUND, 404, "no such content")
    data = content.to_json()
    data["qoe"] = state.qoe.summary(content.id, time.time())
    return _ok(data)


async def delete_content(request: web.Request) -> web.Response:
    content_id = request.match_info["content"]
    _authorize(request, AvrsChannel.CLUSTER, ClusterOp.CONTENT_DEL, content_id)
    state = _state(request)
    content = state.catalog.get(content_id)
    if content is None:
        raise refuse(state, AvrsError.CONTENT_NOT_FOUND, 404, "no such content")
    state.catalog.remove(content.id)
    return _ok({"deleted": content.id})


async def get_summary(request: web.Request) -> web.Response:
    _authorize(request, AvrsChannel.CLUSTER, ClusterOp.LIST_REQ)
    return _ok(_state(request).summary())


async def get_sessions(request: web.Request) -> web.Response:
    _authorize(request, AvrsChannel.SESSION, SessionOp.MONITOR)
    return _ok({"sessions": _state(request).sessions()})


async def post_vod(request: web.Request) -> web.Response:
    state = _state(request)
    data = await _json_body(request)
    content_id, path = data.get("id"), data.get("path")
    if not isinstance(content_id, str) or not content_id or len(content_id) > 64:
        raise refuse(state, AvrsError.ARG_INCORRECT, 400, "'id' must be a string of 1..64")
    if not isinstance(path, str) or not path:
        raise refuse(state, AvrsError.ARG_INCORRECT, 400, "'path' must be a string")
    _authorize(request, AvrsChannel.CLUSTER, ClusterOp.CONTENT_ADD)
    if state.vod_root is None:
        raise refuse(state, AvrsError.CONTENT_UNAVAILBLE, 501, "this node has no VoD directory")
    root = state.vod_root.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise refuse(state, AvrsError.ARG_INCORRECT, 400, "'path' leaves the VoD directory")
    title = data.get("title")
    try:
        samples = await import_vod(
            state.catalog, content_id, Path(target), title=title if isinstance(title, str) else ""
        )
    except VodImportError as exc:
        raise refuse(state, AvrsError.CONTENT_CORRUPTED, 422, str(exc)) from None
    return _ok({"id": content_id, "type": "vod", "samples": samples}, status=201)


async def get_qoe(request: web.Request) -> web.Response:
    _authorize(request, AvrsChannel.CLUSTER, ClusterOp.LIST_REQ)
    state = _state(request)
    content_id = request.match_info["content"]
    now = time.time()
    return _ok({**state.qoe.summary(content_id, now), "history": state.qoe.history(content_id)})


async def post_qoe(request: web.Request) -> web.Response:
    _authorize(request, AvrsChannel.SIGNAL, SignalOp.QUALITY_REPORT)
    state = _state(request)
    data = await _json_body(request)
    try:
        report = QoeReport.parse(data)
        if state.catalog.get(report.content) is None:
            raise refuse(state, AvrsError.CONTENT_NOT_FOUND, 404, "no such content")
        state.qoe.add(report, time.time())
    except QoeReportError as exc:
        raise refuse(state, AvrsError.ARG_INCORRECT, 400, str(exc)) from None
    return _ok({"accepted": True}, status=202)


async def post_kick(request: web.Request) -> web.Response:
    _authorize(request, AvrsChannel.CLUSTER, ClusterOp.MEMBER_REMOVE)
    state = _state(request)
    data = await _json_body(request)
    identity = data.get("identity")
    try:
        raw = bytes.fromhex(identity) if isinstance(identity, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise refuse(state, AvrsError.ARG_INCORRECT, 400, "'identity' must be 64 hex digits")
    if state.node is None or raw not in state.node.directory.info.members:
        raise refuse(state, AvrsError.MEMBER_NOT_FOUND, 404, "no such member")
    state.node.directory.remove_member(raw)
    return _ok({"removed": identity})


def _not_built(channel: AvrsChannel, op: int, feature: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        content = request.match_info.get("content")
        _authorize(request, channel, op, content)
        raise refuse(
            _state(request),
            AvrsError.NOT_SUPPORTED,
            501,
            f"{feature} is not available on this node yet",
        )

    return handler


def add_routes(router: web.UrlDispatcher) -> None:
    chat = _not_built(AvrsChannel.SESSION, SessionOp.CHAT, "chat")
    router.add_get("/api/v1/cluster", get_cluster)
    router.add_get("/api/v1/nodes", get_nodes)
    router.add_get("/api/v1/contents", get_contents)
    router.add_get("/api/v1/contents/{content}", get_content)
    router.add_delete("/api/v1/contents/{content}", delete_content)
    router.add_get("/api/v1/sessions", get_sessions)
    router.add_get("/api/v1/summary", get_summary)
    router.add_post("/api/v1/vod", post_vod)
    router.add_get("/api/v1/qoe/{content}", get_qoe)
    router.add_post("/api/v1/qoe", post_qoe)
    router.add_get("/api/v1/contents/{content}/chat", chat)
    router.add_post("/api/v1/contents/{content}/chat", chat)
    polls = _not_built(AvrsChannel.SESSION, SessionOp.CHAT, "polls")
    router.add_get("/api/v1/contents/{content}/polls", polls)
    router.add_post("/api/v1/contents/{content}/polls", polls)
    router.add_post(
        "/api/v1/contents/{content}/polls/{poll}/votes",
        _not_built(AvrsChannel.SESSION, SessionOp.CHAT, "polls"),
    )
    router.add_post("/api/v1/moderation/kick", post_kick)
    router.add_post(
        "/api/v1/moderation/mute",
        _not_built(AvrsChannel.CLUSTER, ClusterOp.MEMBER_REMOVE, "chat moderation"),
    )
