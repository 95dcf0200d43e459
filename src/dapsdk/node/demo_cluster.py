"""The whole AVRS system in one process on loopback, for ``avrs demo`` (the README's ``make
demo``) and its test.

Composition: a cluster CA and access tokens generated in a directory; a host, a balancer, two
servers and an operator built from INI files with :func:`~.wiring.build_node`, sharing one
embedded registry (the in-memory backend every node of a process can share); each server runs the
HTTP gateway (the first on ``http_port``). Contents: a live ``testsrc`` broadcast in two
renditions published by a camera node into server 1, an interactive broadcast published into
server 2, and a VoD item imported on server 2 from a clip generated with PyAV. Viewer clients
join at the balancer with an access token, ask it where to go (BALANCE_REQ), follow its REDIRECT
to a server, play over the stream protocol (every packet's signature verified by the player),
decode the H.264 with PyAV and post quality reports to that server's gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av

from ..avrs import AvrsError
from ..avrs.constants import AvrsChannel, ClusterArg, ClusterOp
from ..avrs.tsd import Tsd
from ..gateway.content import ContentType
from ..gateway.service import registry_nodes
from ..gateway.testsrc import LadderSource, RenditionSpec, write_test_clip
from ..gateway.vod import import_vod
from ..services.auth import (
    ClusterCA,
    Role,
    TokenGrants,
    TokenIssuer,
    save_certificate,
    save_private_key,
)
from ..services.avrs_client import AvrsClient
from ..services.avrs_cluster import cluster_guuid, content_guuid
from ..services.media.model import MediaPacket
from ..services.media.player import PlayError, PlayStats, play
from ..services.media.publisher import publish
from ..services.registry.memory import MemoryRegistry
from ..stream.identity import NodeIdentity
from .config import load_node_config
from .wiring import AvrsNode, build_node

log = logging.getLogger("dapsdk.demo")

CLUSTER = "demo_cluster"
LIVE = "demo-live"
INTERACTIVE = "demo-interactive"
VOD = "demo-vod"
LIVE_LADDER = (RenditionSpec("360p", 640, 360, 700_000), RenditionSpec("180p", 320, 180, 200_000))
INTERACTIVE_LADDER = (RenditionSpec("270p", 480, 270, 400_000),)
HEARTBEAT = 0.5
#: Seconds between a demo client's quality reports.
QOE_INTERVAL = 2.0


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which."""


@dataclass
class DemoClient:
    name: str
    content: str
    rendition: str
    server: str = ""
    gateway: str = ""
    via_balancer: bool = False
    """The server the balancer chose carries the content (else the client went to its origin)."""
    balanced_to: str = ""
    """The URL the balancer's REDIRECT named."""
    frames_received: int = 0
    frames_decoded: int = 0
    first_frame_ms: float | None = None
    stats: PlayStats | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "name": self.name,
            "content": self.content,
            "rendition": self.rendition,
            "server": self.server,
            "via_balancer": self.via_balancer,
            "balanced_to": self.balanced_to,
            "frames_received": self.frames_received,
            "frames_decoded": self.frames_decoded,
            "first_frame_ms": None
            if self.first_frame_ms is None
            else round(self.first_frame_ms, 1),
            "rendition_switches": s.switches if s else 0,
            "stalls": s.stalls if s else 0,
            "latency_ms": None if s is None or s.latency_ms is None else round(s.latency_ms, 1),
            "forged": s.forged if s else 0,
            "error": self.error,
        }


class DemoCluster:
    def __init__(self, root: Path, *, http_port: int = 8080, clients: int = 3) -> None:
        self.root = root
        self.http_port = http_port
        self.client_count = clients
        self.now = time.time()
        self.registry = MemoryRegistry()
        self.nodes: dict[str, AvrsNode] = {}
        self.gateways: dict[str, str] = {}
        """node address -> gateway URL"""
        self.clients: list[DemoClient] = []
        self.contents: list[dict[str, str]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._sources: list[LadderSource] = []
        self._closers: list[Any] = []
        self.ca = ClusterCA.create(CLUSTER, now=self.now)
        self.ca.save(root / "ca", now=self.now)
        self.keys: dict[str, NodeIdentity] = {}
        self.issuer: TokenIssuer | None = None
        self.cluster_id = cluster_guuid(CLUSTER)

    # ------------------------------------------------------------------ credentials and configs

    def _identity(self, name: str, roles: Role | None) -> NodeIdentity:
        identity = NodeIdentity.generate()
        save_private_key(self.root / f"{name}.key", identity.private_key)
        if roles is not None:
            cert = self.ca.issue(identity.public_key, roles, now=self.now, days=2)
            save_certificate(self.root / f"{name}.crt", cert)
        self.keys[name] = identity
        return identity

    def token(self, subject: str, role: Role = Role.CLIENT, ttl: float = 24 * 3600) -> str:
        assert self.issuer is not None
        grants = TokenGrants(
            role=role, subscribe=True, moderate=role != Role.CLIENT, content_ids="*"
        )
        return self.issuer.issue(subject, grants, now=time.time(), ttl=ttl)

    def _config(self, name: str, role: str, *, listen: bool, host_url: str | None) -> Path:
        lines = [
            "[avrs]",
            f"role = {role}",
            f"cluster_id = {CLUSTER}",
            "ca_certificate_file = ca/ca.crt",
            "token_issuers = host.crt",
            f"heartbeat_interval = {HEARTBEAT}",
            "data_dir =",
            "rtmp_listen =",
            "http_listen =",
        ]
        if (self.root / f"{name}.crt").exists():
            lines += [f"certificate_file = {name}.crt", f"private_key_file = {name}.key"]
        else:
            lines.append(f"identity_file = {name}.key")
        if listen:
            lines.append("listen = tcp://127.0.0.1:0")
        if host_url is not None:
            lines.append(f"host_address = {host_url}")
        path = self.root / f"{name}.cfg"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def _node(self, name: str, role: str, *, listen: bool, host_url: str | None) -> AvrsNode:
        config = load_node_config(self._config(name, role, listen=listen, host_url=host_url))
        node = build_node(config, registry=self.registry)
        await node.start()
        await node.wait_joined()
        self.nodes[name] = node
        return node

    # ------------------------------------------------------------------ bring-up

    async def start(self) -> None:
        host_id = self._identity("host", Role.HOST)
        self.issuer = TokenIssuer(host_id, Role.HOST, CLUSTER)
        for name, roles in (
            ("balancer", Role.BALANCER),
            ("server-1", Role.SERVER),
            ("server-2", Role.SERVER),
            ("operator", Role.OPERATOR),
            ("camera-1", Role.SERVER),
            ("camera-2", Role.SERVER),
        ):
            self._identity(name, roles)
        host = await self._node("host", "host", listen=True, host_url=None)
        host_url = host.urls[0]
        s1 = await self._node("server-1", "server", listen=True, host_url=host_url)
        s2 = await self._node("server-2", "server", listen=True, host_url=host_url)
        balancer = await self._node("balancer", "balancer", listen=True, host_url=host_url)
        await self._node("operator", "operator", listen=False, host_url=host_url)
        # servers and the balancer become members at the host, which signs their membership
        # records (the balancer only sends clients to verified servers)
        for name, node in (("server-1", s1), ("server-2", s2), ("balancer", balancer)):
            await self._join_at_host(name, node, host_url)
        vod_dir = self.root / "vod"
        vod_dir.mkdir(exist_ok=True)
        g1 = await s1.start_gateway(
            "127.0.0.1", self.http_port, vod_root=vod_dir, node_lister=self._node_list(s1)
        )
        self.gateways[str(s1.address)] = g1.url
        g2 = await s2.start_gateway(
            "127.0.0.1", 0, vod_root=vod_dir, node_lister=self._node_list(s2)
        )
        self.gateways[str(s2.address)] = g2.url
        await self._wait(lambda: self._registry_complete(), 20, "every node in the registry")
        await self._wait(self._balancer_ready, 20, "the balancer to see both servers")
        await self._operator_joins(host_url)

        # contents
        assert g1.feed is not None and g2.feed is not None
        g1.feed.name(LIVE, ContentType.LIVE)
        g2.feed.name(INTERACTIVE, ContentType.INTERACTIVE)
        await self._publish("camera-1", s1, LIVE, LIVE_LADDER, "Live test pattern")
        await self._publish("camera-2", s2, INTERACTIVE, INTERACTIVE_LADDER, "Interactive session")
        clip = await asyncio.to_thread(write_test_clip, vod_dir / "clip.mp4", seconds=12)
        await import_vod(g2.catalog, VOD, clip, title="Generated clip")
        self.contents = [
            {"id": LIVE, "type": "live", "watch": f"{g1.url}/watch/{LIVE}"},
            {"id": VOD, "type": "vod", "watch": f"{g2.url}/watch/{VOD}"},
            {"id": INTERACTIVE, "type": "interactive", "watch": f"{g2.url}/watch/{INTERACTIVE}"},
        ]
        await self._wait(
            lambda: LIVE in g1.catalog.contents and INTERACTIVE in g2.catalog.contents,
            20,
            "the live and interactive contents in the gateways",
        )
        # clients through the balancer
        plan = [
            (LIVE, LIVE_LADDER[0].name),
            (INTERACTIVE, INTERACTIVE_LADDER[0].name),
            (LIVE, LIVE_LADDER[1].name),
        ]
        for index in range(self.client_count):
            content, rendition = plan[index % len(plan)]
            client = DemoClient(f"viewer-{index + 1}", content, rendition)
            self.clients.append(client)
            self._tasks.append(asyncio.ensure_future(self._run_client(client)))

    def _node_list(self, node: AvrsNode) -> Any:
        def lister() -> list[dict[str, Any]]:
            nodes = registry_nodes(node, self.gateways.get(str(node.address)))
            for entry in nodes:
                entry["http"] = self.gateways.get(entry["address"], entry["http"])
            return nodes

        return lister

    def _registry_complete(self) -> bool:
        sync = self.nodes["server-1"].sync
        listed = set(sync.state.nodes) if sync is not None else set()
        wanted = {str(n.address) for name, n in self.nodes.items() if name != "operator"}
        return wanted <= listed

    async def _join_at_host(self, name: str, node: AvrsNode, host_url: str) -> None:
        client = await node.connect_client(host_url)
        try:
            await client.open()
            cert = (self.root / f"{name}.crt").read_bytes()
            reply = await client.join(self.cluster_id, certificate=cert)
            if reply.code != AvrsError.SUCCESS:
                raise DemoError(f"{name} could not join at the host: {reply.token}")
        finally:
            await client.close()

    def _balancer_ready(self) -> bool:
        requests = self.nodes["balancer"].requests
        return requests is not None and len(requests.balancer.servers()) >= 2

    async def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise DemoError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def _member(self, name: str, url: str, **credentials: Any) -> tuple[AvrsNode, AvrsClient]:
        node = self.nodes.get(name)
        if node is None:
            role = "client" if "token" in credentials else "server"
            host_url = self.nodes["host"].urls[0]  # a server-role node joins at its host itself
            node = await self._node(name, role, listen=role == "server", host_url=host_url)
        client = await node.connect_client(url)
        await client.open()
        reply = await client.join(self.cluster_id, **credentials)
        if reply.code != AvrsError.SUCCESS:
            raise DemoError(f"{name} could not join at {url}: {reply.token}")
        self._closers.append(client)
        return node, client

    async def _operator_joins(self, host_url: str) -> None:
        cert = (self.root / "operator.crt").read_bytes()
        await self._member("operator", host_url, certificate=cert)

    async def _publish(
        self, name: str, server: AvrsNode, content: str, ladder: Any, title: str
    ) -> None:
        cert = (self.root / f"{name}.crt").read_bytes()
        _node, client = await self._member(name, server.urls[0], certificate=cert)
        source = LadderSource(ladder=ladder, title=title)
        self._sources.append(source)
        task = asyncio.ensure_future(
            publish(client, self.cluster_id, content_guuid(content), source)
        )
        self._tasks.append(task)

    async def _run_client(self, client: DemoClient) -> None:
        try:
            self._identity(client.name, None)
            balancer_url = self.nodes["balancer"].urls[0]
            token = self.token(client.name)
            node, at_balancer = await self._member(client.name, balancer_url, token=token)
            client.balanced_to = await self._balance(at_balancer, client.content) or ""
            target = self._origin(client.content)
            # the balancer weighs load against locality; a server that does not carry the
            # content cannot serve it yet (no origin-to-edge relay), so the viewer goes to the
            # content's origin then
            client.via_balancer = client.balanced_to == target
            viewer = await node.connect_client(target)
            self._closers.append(viewer)
            await viewer.open()
            reply = await viewer.join(self.cluster_id, token=token)
            if reply.code != AvrsError.SUCCESS:
                raise DemoError(f"join at {target}: {reply.token}")
            server = next(n for n in self.nodes.values() if target in n.urls)
            client.server = str(server.address)
            client.gateway = self.gateways.get(client.server, "")
            await self._play(client, viewer)
        except asyncio.CancelledError:
            raise
        except (DemoError, PlayError, OSError, ConnectionError, TimeoutError) as exc:
            client.error = str(exc)
            log.warning("%s: %s", client.name, exc)

    async def _balance(self, client: AvrsClient, content: str) -> str | None:
        """BALANCE_REQ for ``content``; the URL of the REDIRECT that follows (None on refusal)."""
        reply = await client.request(
            AvrsChannel.CLUSTER, ClusterOp.BALANCE_REQ,
            [Tsd(ClusterArg.ID, self.cluster_id), Tsd(ClusterArg.CONTENT_ID, content_guuid(content))],
            signed=True,
        )  # fmt: skip
        if reply.code != AvrsError.SUCCESS:
            return None
        try:
            url, _reason = await asyncio.wait_for(client.redirects.get(), 10)
        except TimeoutError:
            return None
        return url

    def _origin(self, content: str) -> str:
        name = "server-1" if content == LIVE else "server-2"
        return self.nodes[name].urls[0]

    async def _play(self, client: DemoClient, viewer: AvrsClient) -> None:
        decoder = av.CodecContext.create("h264", "r")
        stats_box: list[PlayStats] = []

        def on_packet(packet: MediaPacket, stats: PlayStats) -> None:
            if not stats_box:
                stats_box.append(stats)
                client.stats = stats
            if not packet.data or not stats.rendition:
                return
            client.frames_received += 1
            try:
                frames = decoder.decode(av.Packet(packet.data))
            except av.FFmpegError:
                return
            if frames and client.first_frame_ms is None:
                client.first_frame_ms = (time.monotonic() - client.started) * 1000
            client.frames_decoded += len(frames)

        reporter = asyncio.ensure_future(self._report(client))
        try:
            client.stats = await play(
                viewer, self.cluster_id, content_guuid(client.content), None,
                rendition=client.rendition, on_packet=on_packet, idle_timeout=30.0,
            )  # fmt: skip
        finally:
            reporter.cancel()

    async def _report(self, client: DemoClient) -> None:
        """Post the client's quality report to its server's gateway every QOE_INTERVAL s."""
        if not client.gateway:
            return
        async with aiohttp.ClientSession() as http:
            while True:
                await asyncio.sleep(QOE_INTERVAL)
                s = client.stats
                if s is None or client.first_frame_ms is None:
                    continue
                report: dict[str, Any] = {
                    "content": client.content, "player": client.name, "kind": "cli",
                    "startup_ms": client.first_frame_ms, "stalls": s.stalls,
                    "rendition": s.rendition or client.rendition, "switches": s.switches,
                    "dropped_frames": max(0, client.frames_received - client.frames_decoded - 2),
                }  # fmt: skip
                if s.latency_ms is not None:
                    report["latency_ms"] = max(0.0, s.latency_ms)
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.post(f"{client.gateway}/api/v1/qoe", json=report) as r:
                        await r.read()

    # ------------------------------------------------------------------ reporting and stop

    @property
    def http(self) -> str:
        return self.gateways[str(self.nodes["server-1"].address)]

    def node_summaries(self) -> list[dict[str, Any]]:
        out = []
        for name, node in self.nodes.items():
            if name.startswith(("viewer-", "camera-")):
                continue
            out.append(
                {
                    "name": name,
                    "address": str(node.address),
                    "roles": [r for r in _roles(node.role)],
                    "listen": node.urls,
                    "http": self.gateways.get(str(node.address)),
                    "sessions": len(node.service.sessions),
                    "connections": len(node.stream_node.streams),
                }
            )
        return out

    def report(self) -> dict[str, Any]:
        return {
            "nodes": self.node_summaries(),
            "contents": [
                {"id": c["id"], "type": c["type"], "watch": c["watch"]} for c in self.contents
            ],
            "clients": [c.summary() for c in self.clients],
            "http": self.http,
            "dashboard": self.http + "/",
        }

    async def close(self) -> None:
        for source in self._sources:
            source.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        for closer in self._closers:
            with contextlib.suppress(Exception):
                await closer.close()
        for source in self._sources:
            with contextlib.suppress(Exception):
                source.close()
        for node in reversed(list(self.nodes.values())):
            with contextlib.suppress(Exception):
                await node.close()


def _roles(role: Role) -> list[str]:
    from ..gateway.service import role_names

    return role_names(role)
