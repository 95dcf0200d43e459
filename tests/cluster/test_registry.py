"""Both registry backends behave the same (the Redis one against a real redis-server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dapsdk.services.registry import (
    MAX_QOE,
    ClusterEvent,
    ContentRecord,
    LoadReport,
    NodeRecord,
    Registry,
    RegistryUnavailable,
)
from dapsdk.services.registry.memory import MemoryRegistry
from dapsdk.services.registry.redis import RedisRegistry
from tests.redis_server import RedisServer, free_port


@pytest.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Registry]:
    if request.param == "memory":
        reg: Registry = MemoryRegistry()
        await reg.start()
        yield reg
        await reg.close()
        return
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        reg = RedisRegistry(server.url, "test")
        await reg.start()
        yield reg
        await reg.close()
    finally:
        server.stop()


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_node_records_expire_with_their_ttl(registry: Registry) -> None:
    await registry.put_node(NodeRecord("A::B::C::D", "00" * 32, 0x100, "eu"), ttl=0.2)
    await registry.put_node(NodeRecord("1::2::3::4", "11" * 32, 0x100, "us"), ttl=30)
    await registry.put_load("A::B::C::D", LoadReport(3, 1000, 50), ttl=0.2)
    assert {n.address for n in await registry.nodes()} == {"A::B::C::D", "1::2::3::4"}
    assert (await registry.loads())["A::B::C::D"].sessions == 3
    deadline = asyncio.get_running_loop().time() + 5
    while len(await registry.nodes()) != 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert [n.region for n in await registry.nodes()] == ["us"]
    assert "A::B::C::D" not in await registry.loads()


async def test_contents_carriers_members_pending(registry: Registry) -> None:
    await registry.put_content(ContentRecord("aa" * 16, "bb" * 32, "av", ("h264", None), "T", "X"))
    await registry.add_carrier("aa" * 16, "X")
    await registry.add_carrier("aa" * 16, "Y")
    await registry.remove_carrier("aa" * 16, "Y")
    assert (await registry.contents())["aa" * 16].codecs == ("h264", None)
    assert await registry.carriers() == {"aa" * 16: {"X"}}
    await registry.put_member("cc" * 32, b"\x00signed")
    await registry.put_pending("dd" * 32, {"name": "n"})
    assert await registry.members() == {"cc" * 32: b"\x00signed"}
    assert await registry.pending() == {"dd" * 32: {"name": "n"}}
    await registry.put_revocation("cc" * 32, b"revoked")
    assert await registry.members() == {}
    assert await registry.revocations() == {"cc" * 32: b"revoked"}
    await registry.remove_content("aa" * 16)
    assert await registry.contents() == {} and await registry.carriers() == {}


async def test_qoe_history_is_bounded(registry: Registry) -> None:
    for i in range(MAX_QOE + 20):
        await registry.add_qoe({"i": i})
    history = await registry.qoe()
    assert len(history) == MAX_QOE
    assert history[0] == {"i": MAX_QOE + 19}


async def test_events_reach_subscribers(registry: Registry) -> None:
    got: list[ClusterEvent] = []
    registry.subscribe(got.append)
    if isinstance(registry, RedisRegistry):
        await asyncio.wait_for(registry.connected.wait(), 5)
    await registry.publish(ClusterEvent("member", {"x": 1}, "me"))
    await wait_for(lambda: bool(got))
    assert got[0] == ClusterEvent("member", {"x": 1}, "me")


async def test_unreachable_redis_is_a_clear_error() -> None:
    reg = RedisRegistry(f"redis://127.0.0.1:{free_port()}/0", "test")
    with pytest.raises(RegistryUnavailable, match="PING"):
        await reg.start()
    await reg.close()
