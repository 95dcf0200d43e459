"""A node on a real Redis: refused start when Redis is unreachable, keeps serving while it is away,
re-registers when it returns; sessions that joined the cluster's notifications hear changes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_sync

from dapsdk.avrs.constants import (
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    Role,
    SessionArg,
    SessionOp,
    SignalArg,
    SignalOp,
)
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.signing import AvrsSigner
from dapsdk.avrs.tsd import Tsd
from dapsdk.node.config import load_node_config
from dapsdk.node.sandbox import Sandbox
from dapsdk.node.wiring import build_node
from dapsdk.services.auth import enroll_totp, set_totp_secret, totp_code
from dapsdk.services.registry import RegistryUnavailable
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]


async def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_unreachable_redis_at_start_is_an_error(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    url = f"redis://127.0.0.1:{free_port()}/0"
    node = build_node(load_node_config(box.server_config(f"redis_url = {url}\n")))
    with pytest.raises(RegistryUnavailable, match="PING"):
        await node.start()
    assert not node.started and not node.listeners
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "dapsdk.cli", "node", "--config", str(tmp_path / "server.cfg")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert "error: cluster registry unavailable" in done.stderr and "PING" in done.stderr


async def test_redis_without_a_ca_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "n.cfg"
    cfg.write_text("[avrs]\nrole = host\nredis_url = redis://127.0.0.1:1/0\ndata_dir =\n")
    with pytest.raises(Exception, match=r"\[avrs\] redis_url = .*: needs ca_certificate_file"):
        build_node(load_node_config(cfg))


@pytest.mark.timeout(300)
async def test_node_serves_through_a_redis_outage_and_reregisters(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", persist=False)
    redis.start()
    box = Sandbox(tmp_path)
    secret = enroll_totp(str(box.server.address)).secret  # the owner's approval needs TOTP
    set_totp_secret(tmp_path / "totp.secrets", box.server.address, secret)
    node = build_node(
        load_node_config(
            box.server_config(
                f"redis_url = {redis.url}\nheartbeat_interval = 0.2\n"
                "totp_secret_file = totp.secrets\n"
            )
        )
    )
    await node.start()
    try:
        assert node.sync is not None
        r = redis_sync.Redis.from_url(redis.url)
        key = f"avrs:{box.cluster}:node:{node.address}"
        assert r.exists(key)
        viewer = await node.connect_client(node.urls[0], signer=AvrsSigner.generate())
        await viewer.open()
        assert (await viewer.join(box.cluster_id, token=box.token("v"))).code == 0
        # notifications: CLUSTER_ADD, then a change of the cluster arrives as an INFO response
        await viewer.call(
            AvrsChannel.SESSION, SessionOp.CLUSTER_ADD, [Tsd(SessionArg.CLUSTER_ID, box.cluster_id)]
        )
        before = len(viewer.responses)
        joiner = await node.connect_client(node.urls[0], signer=AvrsSigner.generate())
        await joiner.join(box.cluster_id)  # pending: the cluster changed
        await _until(lambda: len(viewer.responses) > before)
        note = viewer.responses[-1]
        assert (note.op, note.request_id) == (ClusterOp.INFO, 0)

        # QoE: a signal QUALITY_REPORT lands in the cluster's bounded history
        rtt = Tsd(SignalArg.RTT_US, (1500).to_bytes(4, "little"))
        await viewer.call(AvrsChannel.SIGNAL, SignalOp.QUALITY_REPORT, [rtt])
        await viewer.call(
            AvrsChannel.SIGNAL, SignalOp.QUALITY_REPORT, [rtt]
        )  # within 1 s: kept once
        qoe_key = f"avrs:{box.cluster}:qoe"
        await _until(lambda: r.llen(qoe_key) == 1)
        sample = json.loads(r.lindex(qoe_key, 0))
        assert sample["rtt_us"] == 1500 and sample["node"] == str(node.address)

        redis.stop()
        await _until(lambda: not node.sync.available)  # type: ignore[union-attr]
        # still serving: requests answered from the local replica
        reply = await viewer.request(
            AvrsChannel.CLUSTER, ClusterOp.INFO, [Tsd(ClusterArg.ID, box.cluster_id)], signed=True
        )
        assert reply.code == AvrsError.SUCCESS
        # the host approves while Redis is away; the record reaches Redis once it is back
        reply = await node.connect_client(node.urls[0])
        own = await reply.request(
            AvrsChannel.CLUSTER,
            ClusterOp.MEMBER_REQUEST_APPROVE,
            [
                Tsd(ClusterArg.ID, box.cluster_id),
                Tsd(ClusterArg.MEMBER, joiner.identity),
                Tsd(ClusterArg.ROLE, int(Role.CLIENT).to_bytes(2, "little")),
            ],
            signed=True,
            totp=totp_code(secret, now=time.time()),
        )
        assert own.code == AvrsError.SUCCESS, own
        redis.start()
        r = redis_sync.Redis.from_url(redis.url)
        await _until(lambda: bool(r.exists(key)))
        await _until(lambda: r.hexists(f"avrs:{box.cluster}:members", joiner.identity.hex()))
        await _until(lambda: node.sync.available)  # type: ignore[union-attr]
        for client in (viewer, joiner, reply):
            await client.close()
        r.close()
    finally:
        await node.close()
        redis.stop()
