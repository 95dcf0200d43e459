"""Errors as RFC 9457 ``application/problem+json`` carrying the AVRS error code."""

from __future__ import annotations

import json

from aiohttp import web

from ..avrs.errors import AvrsError

PROBLEM_TYPE = "application/problem+json"


def problem(code: AvrsError, status: int, detail: str) -> web.Response:
    body = {
        "type": f"urn:avrs:error:{code.token}",
        "title": code.token,
        "status": status,
        "detail": detail,
        "code": int(code),
        "token": code.token,
    }
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=PROBLEM_TYPE)
