"""The dashboard and the watch page: static HTML and JavaScript from ``gateway/static``.

``hls.min.js`` is copied there from npm by ``scripts/setup.sh`` (it is not committed); without it
the watch page falls back to the browser's native HLS and then to the low-latency mode.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"
_CONTENT_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _page(name: str) -> web.Response:
    return web.Response(
        body=(STATIC_DIR / name).read_bytes(),
        content_type="text/html",
        headers={"Cache-Control": "no-cache"},
    )


async def dashboard(request: web.Request) -> web.Response:
    return _page("dashboard.html")


async def watch(request: web.Request) -> web.Response:
    if not _CONTENT_ID.match(request.match_info["content"]):
        raise web.HTTPNotFound()
    return _page("watch.html")
