"""Gateway fixtures: a real node (embedded sandbox cluster) with its gateway on a free port, a
live ``testsrc`` broadcast in two renditions and a VoD item imported from a generated clip."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from dapsdk.avrs.errors import AvrsError
from dapsdk.gateway.app import Gateway
from dapsdk.gateway.testsrc import LadderSource, RenditionSpec, write_test_clip
from dapsdk.gateway.vod import import_vod
from dapsdk.node.sandbox import Sandbox
from dapsdk.node.wiring import AvrsNode
from dapsdk.services.auth import Role, TokenGrants
from dapsdk.services.avrs_client import AvrsClient
from dapsdk.services.media.publisher import publish

LADDER = (RenditionSpec("360p", 640, 360, 600_000), RenditionSpec("180p", 320, 180, 200_000))


@dataclass
class GatewayEnv:
    sandbox: Sandbox
    node: AvrsNode
    gateway: Gateway
    url: str
    http: aiohttp.ClientSession
    camera: AvrsClient

    def token(self, role: Role = Role.CLIENT, subject: str = "user-1") -> str:
        """A bearer token; managers' tokens also grant publish and moderate."""
        staff = role != Role.CLIENT
        grants = TokenGrants(
            role=role, subscribe=True, publish=staff, moderate=staff, content_ids="*"
        )
        return self.sandbox.issuer.issue(subject, grants, now=time.time(), ttl=3600)


async def wait_until(predicate, timeout: float = 15.0, step: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(step)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[GatewayEnv]:
    async with _gateway_env(tmp_path) as gateway_env:
        yield gateway_env


@pytest.fixture
async def strict_env(tmp_path: Path) -> AsyncIterator[GatewayEnv]:
    """As ``env``, with ``loopback_no_credentials = false`` in the node's config file: loopback
    players need a token like everyone else."""
    async with _gateway_env(tmp_path, "loopback_no_credentials = false\n") as gateway_env:
        yield gateway_env


@contextlib.asynccontextmanager
async def _gateway_env(tmp_path: Path, extra: str = "") -> AsyncIterator[GatewayEnv]:
    sandbox = Sandbox(tmp_path)
    node = await sandbox.start_server(extra)
    vod_dir = tmp_path / "vod"
    vod_dir.mkdir()
    gateway = await node.start_gateway(port=0, vod_root=vod_dir)
    catalog = gateway.catalog
    # live1 arrives the real way: a camera node publishes signed H.264 over AVRS (dap_stream on
    # loopback TCP) into the node's media hub, whose gateway packages it
    assert gateway.feed is not None
    guuid = gateway.feed.name("live1")
    camera_node = await sandbox.start_client("camera", node.urls[0], certificate=True)
    camera = await camera_node.connect_client()
    await camera.open()
    joined = await camera.join(
        sandbox.cluster_id, certificate=(tmp_path / "camera.crt").read_bytes()
    )
    assert joined.code == AvrsError.SUCCESS, joined.token
    source = LadderSource(ladder=LADDER, title="Live test pattern")
    publishing = asyncio.ensure_future(publish(camera, sandbox.cluster_id, guuid, source))
    clip = await asyncio.to_thread(write_test_clip, vod_dir / "clip.mp4", seconds=3)
    await import_vod(catalog, "vod1", clip, title="Clip")
    await wait_until(lambda: "live1" in catalog.contents)
    live = catalog.contents["live1"]
    await wait_until(
        lambda: (
            len(live.renditions) == len(LADDER)
            and all(len(r.hls.segments) >= 2 for r in live.renditions.values())
        )
    )
    async with aiohttp.ClientSession() as http:
        yield GatewayEnv(sandbox, node, gateway, gateway.url, http, camera)
    source.stop()
    publishing.cancel()
    with contextlib.suppress(BaseException):
        await publishing
    source.close()
    await camera.close()
    await camera_node.close()
    await node.close()
