"""The OpenAPI 3.1 description of the REST API (served at ``/api/openapi.json``)."""

from __future__ import annotations

from typing import Any

_PROBLEM = {"$ref": "#/components/responses/Problem"}


def _op(
    summary: str,
    avrs: str,
    ok: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    params: list[str] = (),  # type: ignore[assignment]
    status: str = "200",
    public: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Authorised as the AVRS operation {avrs} (same permission table as the "
        "stream protocol).",
        "responses": {
            status: {"description": "success", "content": {"application/json": {"schema": ok}}},
            "400": _PROBLEM,
            "401": _PROBLEM,
            "403": _PROBLEM,
            "404": _PROBLEM,
        },
    }
    if public:
        op["security"] = [{}, {"bearer": []}]
    if params:
        op["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in params]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _not_built(summary: str, avrs: str, params: list[str]) -> dict[str, Any]:
    op = _op(summary, avrs, {"type": "object"}, params=params)
    op["description"] += " Not built on this node yet: answers 501 with code NOT_SUPPORTED."
    op["responses"]["501"] = _PROBLEM
    return op


def openapi_document() -> dict[str, Any]:
    obj = {"type": "object"}
    content = {
        "type": "object",
        "required": ["id", "type", "state", "viewers"],
        "properties": {
            "id": {"type": "string"},
            "type": {"enum": ["live", "vod", "interactive"]},
            "state": {"enum": ["waiting", "live", "ready", "ended"]},
            "viewers": {"type": "integer", "minimum": 0},
            "title": {"type": "string"},
            "renditions": {"type": "array", "items": obj},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AVReStream gateway API",
            "version": "1",
            "description": "REST API of an AVRS node. Errors are application/problem+json "
            "carrying the AVRS error code (`code`, `token`).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/cluster": {"get": _op("The cluster", "C INFO", obj)},
            "/api/v1/nodes": {"get": _op("Nodes, roles and load", "C LIST_REQ", obj, public=True)},
            "/api/v1/contents": {
                "get": _op(
                    "Contents",
                    "C LIST_REQ",
                    {
                        "type": "object",
                        "required": ["contents"],
                        "properties": {"contents": {"type": "array", "items": content}},
                    },
                    public=True,
                )
            },
            "/api/v1/contents/{content}": {
                "get": _op("One content", "C LIST_REQ", content, params=["content"], public=True),
                "delete": _op("End and remove a content", "C CONTENT_DEL", obj, params=["content"]),
            },
            "/api/v1/sessions": {"get": _op("Sessions", "S MONITOR", obj)},
            "/api/v1/summary": {"get": _op("Dashboard snapshot", "C LIST_REQ", obj, public=True)},
            "/api/v1/vod": {
                "post": _op(
                    "Import a media file as VoD",
                    "C CONTENT_ADD",
                    obj,
                    status="201",
                    body={
                        "type": "object",
                        "required": ["id", "path"],
                        "properties": {
                            "id": {"type": "string", "maxLength": 64},
                            "path": {"type": "string"},
                            "title": {"type": "string"},
                        },
                    },
                )
            },
            "/api/v1/qoe": {
                "post": _op(
                    "A player's quality report",
                    "A QUALITY_REPORT",
                    obj,
                    status="202",
                    public=True,
                    body={
                        "type": "object",
                        "required": ["content", "player"],
                        "properties": {
                            "content": {"type": "string"},
                            "player": {"type": "string"},
                            "kind": {"enum": ["hls", "low-latency", "cli"]},
                            "startup_ms": {"type": "number"},
                            "stalls": {"type": "integer"},
                            "stall_ms": {"type": "number"},
                            "rendition": {"type": "string"},
                            "switches": {"type": "integer"},
                            "dropped_frames": {"type": "integer"},
                            "latency_ms": {"type": "number"},
                            "buffer_s": {"type": "number"},
                        },
                    },
                )
            },
            "/api/v1/qoe/{content}": {
                "get": _op(
                    "Quality summary and 24-hour history",
                    "C LIST_REQ",
                    obj,
                    params=["content"],
                    public=True,
                )
            },
            "/api/v1/contents/{content}/chat": {
                "get": _not_built("Chat history", "S CHAT", ["content"]),
                "post": _not_built("Send a chat message", "S CHAT", ["content"]),
            },
            "/api/v1/contents/{content}/polls": {
                "get": _not_built("Polls of a content", "S CHAT", ["content"]),
                "post": _not_built("Open a poll", "S CHAT", ["content"]),
            },
            "/api/v1/contents/{content}/polls/{poll}/votes": {
                "post": _not_built("Vote", "S CHAT", ["content", "poll"])
            },
            "/api/v1/moderation/kick": {
                "post": _op(
                    "Remove a member from the cluster",
                    "C MEMBER_REMOVE",
                    obj,
                    body={
                        "type": "object",
                        "required": ["identity"],
                        "properties": {"identity": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                    },
                )
            },
            "/api/v1/moderation/mute": {
                "post": _not_built("Mute a chat participant", "C MEMBER_REMOVE", [])
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "parameters": {
                "content": {
                    "name": "content",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                "poll": {
                    "name": "poll",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "code", "token"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "integer", "description": "AVRS error code (u32)"},
                        "token": {"type": "string", "description": "AVRS error token"},
                    },
                }
            },
            "responses": {
                "Problem": {
                    "description": "refused",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
        },
    }
