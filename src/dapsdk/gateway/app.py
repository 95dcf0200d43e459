"""The gateway: one aiohttp application on the node's HTTP port.

Fixed paths: ``/`` dashboard, ``/watch/<content>`` watch page, ``/hls/<content>/master.m3u8``
HLS, ``/live/<content>/<rendition>`` the low-latency fMP4-over-WebSocket mode, ``/metrics``
Prometheus, ``/api/openapi.json`` and ``/api/v1/...`` the REST API, ``/ws`` the dap_stream
WebSocket transport (mounted from :mod:`dapsdk.runtime.ws` when a node is given), ``/static/``
the page assets. Handlers live in :mod:`.http_hls`, :mod:`.http_api` and :mod:`.pages`; the logic
behind them in :mod:`.service`, :mod:`.content`, :mod:`.hls` and :mod:`.qoe`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..runtime.endpoint import Endpoint
from ..runtime.ws import WsMount
from . import http_api, http_hls, pages
from .content import ContentCatalog
from .hls import HlsTimings
from .hub_feed import HubFeed
from .metrics import build_registry
from .service import GatewayState, NodeLister

if TYPE_CHECKING:
    from ..node.wiring import AvrsNode

log = logging.getLogger("dapsdk.gateway")


class Gateway:
    """Build with :meth:`create`; :meth:`start` listens, :meth:`close` stops."""

    def __init__(
        self,
        node: AvrsNode | None = None,
        *,
        catalog: ContentCatalog | None = None,
        node_lister: NodeLister | None = None,
        vod_root: Path | None = None,
        timings: HlsTimings | None = None,
        mount_ws: bool = True,
    ) -> None:
        self.state = GatewayState(
            node, catalog or ContentCatalog(timings=timings), node_lister=node_lister
        )
        self.state.vod_root = vod_root
        self.registry = build_registry(lambda: self.state)
        self.app = web.Application(client_max_size=1024 * 1024)
        self.app[http_api.STATE_KEY] = self.state
        self.app[http_api.REGISTRY_KEY] = self.registry
        self.app.middlewares.append(http_api.count_middleware)
        r = self.app.router
        r.add_get("/", pages.dashboard)
        r.add_get("/watch/{content}", pages.watch)
        r.add_static("/static/", pages.STATIC_DIR, show_index=False, append_version=False)
        r.add_get("/hls/{content}/master.m3u8", http_hls.master)
        r.add_get("/hls/{content}/{rendition}/index.m3u8", http_hls.media_playlist)
        r.add_get("/hls/{content}/{rendition}/init.mp4", http_hls.init_segment)
        r.add_get(r"/hls/{content}/{rendition}/seg{msn:\d+}.m4s", http_hls.segment)
        r.add_get(r"/hls/{content}/{rendition}/part{msn:\d+}.{part:\d+}.m4s", http_hls.part)
        r.add_get("/live/{content}/{rendition}", http_hls.live_socket)
        r.add_get("/metrics", http_api.metrics)
        r.add_get("/api/openapi.json", http_api.openapi)
        http_api.add_routes(r)
        self._ws: WsMount | None = None
        if node is not None and mount_ws:
            # registered with the node once the port is known (start), so that the node's
            # listener list shows the real ws://HOST:PORT/ws URL
            self._ws = WsMount(node.stream_node, "/ws", Endpoint("ws", "127.0.0.1", 0, "/ws"))
            r.add_get("/ws", self._ws.handler.handle)
        self.feed = HubFeed(self.state.catalog, node.hub) if node is not None else None
        """The node's live contents (media hub) into the catalog (see :meth:`HubFeed.name`)."""
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def catalog(self) -> ContentCatalog:
        return self.state.catalog

    @property
    def url(self) -> str:
        if self.state.url is None:
            raise RuntimeError("gateway not started")
        return self.state.url

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> str:
        """Listen on ``host:port`` (0: a free port); return the base URL."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        self.state.url = f"http://{host}:{self.port}"
        if self._ws is not None:
            self._ws.advertise = Endpoint("ws", host, self.port, "/ws")
            try:
                await self._ws.attach()
            except BaseException:
                await self.close()
                raise
        log.info("gateway listening on %s", self.state.url)
        return self.state.url

    async def close(self) -> None:
        if self.feed is not None:
            self.feed.close()
        for content in self.catalog.list():
            for rendition in content.renditions.values():
                for sub in list(rendition.subscribers):
                    sub.close()
        if self._ws is not None:
            self._ws.close()
            for task in list(self._ws.handler.active):
                task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
