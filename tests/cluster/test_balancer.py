"""The balancer's choice: load, region affinity, content locality, draining, trust."""

from __future__ import annotations

from dapsdk.avrs.constants import Role
from dapsdk.services.balancer import LOCALITY_BONUS, Balancer
from dapsdk.services.cluster_sync import ClusterState
from dapsdk.services.registry import LoadReport, NodeRecord


def _node(address: str, region: str = "", *, roles: Role = Role.SERVER, draining: bool = False):  # type: ignore[no-untyped-def]
    return NodeRecord(address, "00" * 32, int(roles), region, (f"tcp://{address}",), 0, draining)


def _state(*nodes: NodeRecord, loads: dict[str, int] | None = None) -> ClusterState:
    state = ClusterState()
    state.nodes = {n.address: n for n in nodes}
    state.loads = {a: LoadReport(s, 0, 0) for a, s in (loads or {}).items()}
    return state


def test_least_loaded_server_counting_own_placements() -> None:
    state = _state(_node("a"), _node("b"), _node("c"), _node("x", roles=Role.BALANCER))
    balancer: Balancer[int] = Balancer(lambda: state)
    for client in range(30):
        node = balancer.choose()
        assert node is not None
        balancer.place(client, node)
    assert sorted(balancer.placed(a) for a in "abc") == [10, 10, 10]
    assert balancer.placed("x") == 0  # not a server
    state.loads = {"a": LoadReport(25, 0, 0)}  # a server reports more sessions than we placed
    assert [balancer.choose().address for _ in range(1)] != ["a"]  # type: ignore[union-attr]


def test_region_affinity_then_fallback() -> None:
    state = _state(_node("a", "eu"), _node("b", "us"), loads={"a": 50, "b": 0})
    balancer: Balancer[int] = Balancer(lambda: state, region="eu")
    assert balancer.choose().address == "a"  # type: ignore[union-attr]
    assert balancer.choose(region="us").address == "b"  # type: ignore[union-attr]
    assert balancer.choose(region="asia").address == "b"  # no server there: least loaded


def test_content_locality_until_the_carrier_is_clearly_busier() -> None:
    state = _state(_node("a"), _node("b"), loads={"a": 1, "b": 0})
    state.carriers = {"c1": {"a"}}
    balancer: Balancer[int] = Balancer(lambda: state)
    assert balancer.choose(content="c1").address == "a"  # type: ignore[union-attr]
    state.loads["a"] = LoadReport(LOCALITY_BONUS + 1, 0, 0)
    assert balancer.choose(content="c1").address == "b"  # type: ignore[union-attr]


def test_draining_dead_and_untrusted_servers_get_no_clients() -> None:
    state = _state(_node("a"), _node("b", draining=True), _node("c"))
    balancer: Balancer[int] = Balancer(lambda: state, allowed=lambda n: n.address != "c")
    assert {balancer.choose().address for _ in range(5)} == {"a"}  # type: ignore[union-attr]
    balancer.place(1, state.nodes["a"])
    balancer.place(2, state.nodes["b"])
    del state.nodes["a"]  # died
    assert sorted(c for c, _ in balancer.orphans()) == [1, 2]
    assert balancer.choose() is None
