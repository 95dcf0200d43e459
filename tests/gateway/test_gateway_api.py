"""REST API, problem+json refusals, OpenAPI and /metrics on a real node's gateway."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from dapsdk.avrs.errors import AvrsError
from dapsdk.gateway.content import SUBSCRIBER_QUEUE, LiveSubscriber
from dapsdk.gateway.packager import Chunk
from dapsdk.gateway.qoe import HISTORY_BUCKETS, QoeAggregator, QoeReport
from dapsdk.node.config import load_node_config
from dapsdk.node.sandbox import Sandbox
from dapsdk.node.wiring import build_node
from dapsdk.services.auth import Role

from .conftest import GatewayEnv


async def test_contents_lists_live_and_vod_with_type_state_viewers(env: GatewayEnv) -> None:
    async with env.http.get(f"{env.url}/api/v1/contents") as r:
        assert r.status == 200
        body = await r.json()
    by_id = {c["id"]: c for c in body["contents"]}
    assert by_id["live1"]["type"] == "live" and by_id["live1"]["state"] == "live"
    assert by_id["vod1"]["type"] == "vod" and by_id["vod1"]["state"] == "ready"
    assert all(isinstance(c["viewers"], int) for c in body["contents"])
    assert {r["name"] for r in by_id["live1"]["renditions"]} == {"360p", "180p"}


async def test_openapi_document_validates_and_lists_the_api(env: GatewayEnv) -> None:
    async with env.http.get(f"{env.url}/api/openapi.json") as r:
        doc = await r.json()
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    assert doc["openapi"].startswith("3.1")
    for path in ("/api/v1/contents", "/api/v1/nodes", "/api/v1/sessions", "/api/v1/vod"):
        assert path in doc["paths"]


async def _problem(env: GatewayEnv, method: str, path: str, token: str | None = None, **kw):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with env.http.request(method, f"{env.url}{path}", headers=headers, **kw) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.json(content_type=None)


async def test_denied_calls_carry_the_avrs_code(env: GatewayEnv) -> None:
    status, ctype, body = await _problem(env, "GET", "/api/v1/sessions")
    assert status == 401 and ctype.startswith("application/problem+json")
    assert body["token"] == "SIGN_NOT_PRESENT" and body["code"] == AvrsError.SIGN_NOT_PRESENT
    status, _, body = await _problem(env, "GET", "/api/v1/sessions", env.token(Role.CLIENT))
    assert status == 403 and body["code"] == AvrsError.SIGN_ALIEN  # as on the stream protocol
    status, _, body = await _problem(env, "GET", "/api/v1/sessions", "not-a-jwt")
    assert status == 401 and body["token"] == "MEMBER_SECURITY_ISSUE"
    status, _, body = await _problem(env, "GET", "/api/v1/sessions", env.token(Role.OPERATOR))
    assert status == 200 and isinstance(body["sessions"], list)
    # the client token may not import VoD (CONTENT_ADD is host/operator/server)
    status, _, body = await _problem(
        env, "POST", "/api/v1/vod", env.token(Role.CLIENT), json={"id": "x", "path": "clip.mp4"}
    )
    assert status == 403 and body["token"] == "SIGN_ALIEN"


async def test_vod_import_through_rest_and_path_confinement(env: GatewayEnv) -> None:
    token = env.token(Role.OPERATOR)
    status, _, body = await _problem(
        env, "POST", "/api/v1/vod", token, json={"id": "again", "path": "clip.mp4"}
    )
    assert status == 201 and body["samples"] == 90
    status, _, body = await _problem(
        env, "POST", "/api/v1/vod", token, json={"id": "evil", "path": "../../etc/passwd"}
    )
    assert status == 400 and body["token"] == "ARG_INCORRECT"
    status, _, body = await _problem(
        env, "POST", "/api/v1/vod", token, json={"id": "bad", "path": "missing.mp4"}
    )
    assert status == 422 and body["token"] == "CONTENT_CORRUPTED"


async def test_unbuilt_features_are_refused_never_successful(env: GatewayEnv) -> None:
    token = env.token(Role.CLIENT)
    status, _, body = await _problem(
        env, "POST", "/api/v1/contents/live1/polls", token, json={"question": "?"}
    )
    assert status == 501 and body["token"] == "NOT_SUPPORTED"


async def test_metrics_parse_and_have_every_family(env: GatewayEnv) -> None:
    report = {"content": "live1", "player": "p1", "kind": "cli", "startup_ms": 120.0,
              "stalls": 2, "stall_ms": 300.0, "switches": 1, "dropped_frames": 3,
              "latency_ms": 450.0, "rendition": "360p"}  # fmt: skip
    async with env.http.post(f"{env.url}/api/v1/qoe", json=report) as r:
        assert r.status == 202
    await _problem(env, "GET", "/api/v1/sessions")  # one refusal
    async with env.http.get(f"{env.url}/metrics") as r:
        text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "avrs_throughput_bytes", "avrs_stream_latency_seconds", "avrs_packet_loss_ratio",
        "avrs_connections", "avrs_sessions", "process_cpu_seconds", "process_resident_memory_bytes",
        "avrs_cache_hit_ratio", "avrs_content_viewers", "avrs_ingest_bitrate_bps",
        "avrs_transcode_lag_seconds", "avrs_refusals", "avrs_qoe_startup_seconds",
        "avrs_qoe_stalls", "avrs_qoe_latency_seconds", "avrs_qoe_rendition_switches",
        "avrs_qoe_dropped_frames",
    ):  # fmt: skip
        assert name in families, name
    value = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert value[("avrs_qoe_stalls_total", (("content", "live1"),))] == 2
    assert value[("avrs_qoe_latency_seconds", (("content", "live1"),))] == 0.45
    assert value[("avrs_refusals_total", (("code", "SIGN_NOT_PRESENT"),))] >= 1
    assert value[("avrs_ingest_bitrate_bps", (("content", "live1"), ("rendition", "360p")))] > 0
    # the QoE summary and history through REST
    async with env.http.get(f"{env.url}/api/v1/qoe/live1") as r:
        qoe = await r.json()
    assert qoe["stalls"] == 2 and qoe["players"] == 1 and len(qoe["history"]) == 1


async def test_bad_quality_reports_are_refused(env: GatewayEnv) -> None:
    for bad in ({"content": "live1"}, {"content": "live1", "player": "p", "stalls": -1},
                {"content": "live1", "player": "p", "latency_ms": "x"}, [1, 2]):  # fmt: skip
        async with env.http.post(f"{env.url}/api/v1/qoe", json=bad) as r:
            assert r.status == 400, bad
            assert (await r.json(content_type=None))["token"] == "ARG_INCORRECT"


async def test_nodes_and_cluster(env: GatewayEnv) -> None:
    async with env.http.get(f"{env.url}/api/v1/nodes") as r:
        nodes = (await r.json())["nodes"]
    assert nodes[0]["address"] == str(env.node.address)
    assert set(nodes[0]["roles"]) == {"host", "server"}
    status, _, body = await _problem(env, "GET", "/api/v1/cluster", env.token())
    assert status == 200 and body["name"] == env.sandbox.cluster


def test_a_low_latency_viewer_that_never_reads_is_bounded() -> None:
    sub = LiveSubscriber()
    for i in range(SUBSCRIBER_QUEUE * 3):
        sub.offer(Chunk(b"x", i / 30, 1 / 30, i % 30 == 0, 0.0))
    assert sub.queue.qsize() <= SUBSCRIBER_QUEUE
    assert sub.skipped >= 1


async def test_the_dap_stream_websocket_transport_is_mounted_at_ws(env: GatewayEnv) -> None:
    async with env.http.ws_connect(
        f"{env.url.replace('http', 'ws')}/ws", protocols=["dapstream.v1"]
    ) as ws:
        assert ws.protocol == "dapstream.v1"
        await ws.close()


async def test_completed_qoe_minutes_go_to_the_cluster_registry(env: GatewayEnv) -> None:
    sync = env.node.sync
    assert sync is not None
    state = env.gateway.state
    report = QoeReport.parse({"content": "live1", "player": "reg", "latency_ms": 300.0})
    state.qoe.add(report, 6000.0)
    state.qoe.add(report, 6061.0)  # a new minute completes the first one
    deadline = asyncio.get_running_loop().time() + 10
    while not (samples := await sync.registry.qoe()):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert samples[0]["content"] == "live1" and samples[0]["t"] == 6000.0
    assert samples[0]["node"] == str(env.node.address) and samples[0]["latency_ms"] == 300.0


def test_qoe_history_is_bounded_per_content() -> None:
    qoe = QoeAggregator()
    for minute in range(HISTORY_BUCKETS + 50):
        qoe.add(QoeReport.parse({"content": "c", "player": "p"}), minute * 60.0)
    assert len(qoe.history("c")) == HISTORY_BUCKETS


async def test_start_gateway_listens_on_the_configured_http_listen(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    node = build_node(load_node_config(sandbox.server_config("http_listen = 127.0.0.1:0\n")))
    await node.start()
    try:
        gateway = await node.start_gateway()
        assert gateway.port and gateway.url == f"http://127.0.0.1:{gateway.port}"
        async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/metrics") as r:
            assert r.status == 200 and "avrs_sessions" in await r.text()
    finally:
        await node.close()


async def test_avrs_node_process_serves_its_gateway(tmp_path: Path) -> None:
    """`avrs node` (a real process) starts the gateway on http_listen and announces it."""
    sandbox = Sandbox(tmp_path)
    config = sandbox.server_config("http_listen = 127.0.0.1:0\nrtmp_listen =\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dapsdk.cli", "node", "--config", str(config), "--ready",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        http = address = ""
        while (
            line := (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        ) != "ready":
            assert line, "avrs node exited"
            if line.startswith("http "):
                http = line.split()[1]
            elif line.startswith("node "):
                address = line.split()[1]
        assert http.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session, session.get(f"{http}/api/v1/nodes") as r:
            nodes = (await r.json())["nodes"]
        assert [n["address"] for n in nodes] == [address]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
