"""The seed's cluster-management snippet (examples/avrs_cluster_management.py) runs as a host
process against a Redis cluster: the member it adds is admitted by a server in another process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dapsdk.avrs.constants import ClusterOp, Role
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.signing import AvrsSigner
from dapsdk.runtime.node import StreamNode
from dapsdk.services.auth import ClusterCA
from tests.cluster.test_cluster_processes import CLUSTER, Cluster, ask, connect, eventually
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def _example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "avrs_cluster_management.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT / "examples",
    )


@pytest.mark.timeout(300)
async def test_the_seed_snippet_adds_a_member_cluster_wide(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    now = time.time()
    ca = ClusterCA.create(CLUSTER, now=now)
    ca.save(tmp_path / "ca", now=now)
    c = Cluster(tmp_path, redis, ca)
    c.identity("host", Role.HOST)
    c.identity("s1", Role.SERVER)
    c.identity("operator", Role.OPERATOR)
    newcomer = AvrsSigner.generate()
    net = StreamNode()
    await net.start()
    try:
        host_cfg = c.config("host", "host")
        server = c.start("s1", "server", "host_address = 127.0.0.1:9\n")  # the host is a script
        on_s1 = await connect(net, server.url, newcomer)
        assert (await ask(on_s1, ClusterOp.INFO))[0].code == AvrsError.SIGN_ALIEN

        done = await asyncio.to_thread(_example, str(host_cfg), newcomer.identity.hex())
        assert done.returncode == 0, done.stderr
        assert "my role 0x0002" in done.stdout
        assert f"add member {newcomer.identity.hex()} as server: code 0x00000000" in done.stdout
        assert "on redis" in done.stdout

        async def admitted() -> bool:
            return (await ask(on_s1, ClusterOp.INFO))[0].code == AvrsError.SUCCESS

        await eventually(admitted, timeout=10)
        # the new SERVER member may report load to s1 now (a host-signed record gave it the role)
        operator_cfg = c.config("operator", "operator", "host_address = 127.0.0.1:9\n")
        watched = await asyncio.to_thread(_example, str(operator_cfg), newcomer.identity.hex())
        assert watched.returncode == 0, watched.stderr
        assert f"node {server.address} roles 0x0100" in watched.stdout
        await on_s1.close()
    finally:
        await net.close()
        c.stop()
        redis.stop()
