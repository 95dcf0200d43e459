"""The balancer's scaling signal: thresholds with hysteresis, a real command and a real webhook."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from aiohttp import web

from dapsdk.avrs.constants import Role
from dapsdk.node.config import ConfigError, load_node_config
from dapsdk.node.wiring import build_node
from dapsdk.services.autoscale import AutoScaler, decide
from dapsdk.services.cluster_sync import ClusterState
from dapsdk.services.registry import LoadReport, NodeRecord


def _state(*sessions: int) -> ClusterState:
    state = ClusterState()
    for i, count in enumerate(sessions):
        address = f"0000::0000::0000::000{i}"
        state.nodes[address] = NodeRecord(address, "00" * 32, int(Role.SERVER), urls=("u",))
        state.loads[address] = LoadReport(count, 0, 0)
    return state


def test_decision() -> None:
    assert decide(_state(90, 110), up=80, down=10).direction == "up"  # type: ignore[union-attr]
    assert decide(_state(5, 3), up=80, down=10).direction == "down"  # type: ignore[union-attr]
    assert decide(_state(5), up=80, down=10) is None  # the last server stays
    assert decide(_state(), up=80, down=None).direction == "up"  # type: ignore[union-attr]
    assert decide(_state(50, 50), up=80, down=10) is None


async def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


async def test_command_runs_once_per_crossing(tmp_path: Path) -> None:
    out = tmp_path / "signals"
    script = f"import os; open({str(out)!r}, 'a').write(os.environ['AVRS_SCALE'] + ' ' + os.environ['AVRS_SERVERS'] + '\\n')"
    scaler = AutoScaler(up=80, down=10, command=(sys.executable, "-c", script), cooldown=0)
    assert scaler.check(_state(100, 100)) is not None
    await _until(lambda: out.exists() and out.read_text() == "up 2\n")
    assert scaler.check(_state(100, 100)) is None  # same condition: no repeat
    assert scaler.check(_state(50, 50)) is None
    await _until(lambda: scaler._running is None or scaler._running.done())
    assert scaler.check(_state(1, 2)) is not None
    await _until(lambda: out.read_text() == "up 2\ndown 2\n")
    await scaler.close()


async def test_webhook_gets_json() -> None:
    got: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/scale", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        scaler = AutoScaler(up=10, down=None, webhook=f"http://127.0.0.1:{port}/scale")
        scaler.check(_state(30, 40, 50))
        await _until(lambda: bool(got))
        assert got == [{"scale": "up", "servers": 3, "mean_sessions": 40.0}]
        await scaler.close()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("scale_up_sessions = 10\n", "need scale_command or scale_webhook"),
        ("scale_command = true\n", "need scale_up_sessions"),
        ("scale_up_sessions = 10\nscale_command = true\n", "only a node with the balancer"),
    ],
)
def test_scaling_keys_are_checked(tmp_path: Path, extra: str, message: str) -> None:
    cfg = tmp_path / "n.cfg"
    cfg.write_text("[avrs]\nrole = host\ndata_dir =\n" + extra)
    with pytest.raises(ConfigError, match=message):
        build_node(load_node_config(cfg))


def test_a_balancer_config_builds_the_scaler(tmp_path: Path) -> None:
    cfg = tmp_path / "n.cfg"
    cfg.write_text(
        "[avrs]\nrole = balancer\nhost_address = 127.0.0.1:9\ndata_dir =\n"
        "scale_up_sessions = 100\nscale_down_sessions = 5\n"
        "scale_command = /usr/local/bin/scale --cluster 'main one'\n"
    )
    node = build_node(load_node_config(cfg))
    assert node.requests is not None and node.requests.autoscaler is not None
    assert node.requests.autoscaler.command == ("/usr/local/bin/scale", "--cluster", "main one")
