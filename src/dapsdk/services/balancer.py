"""The balancer (role BALANCER): which server a client should use.

A pure decision over the registry's view (:class:`~.cluster_sync.ClusterState`): live nodes with
the SERVER role that are not draining and announce a URL. Among them, in this order:

1. region affinity: servers in the client's region (or, without one, the balancer's ``region``)
   when there are any;
2. load: the fewest sessions, counting both what the server last reported and the clients this
   balancer placed there and that are still connected to it (reports lag; placements do not);
   a server that carries the requested content counts :data:`LOCALITY_BONUS` sessions fewer, so
   viewers gather where the stream already flows unless that server is clearly busier;
3. CPU per mille, then the address (deterministic ties).

Placements are remembered per client connection so that when a server dies (its record expires)
or is drained, its clients can be moved (:meth:`Balancer.orphans`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from dapsdk.avrs.constants import Role

from .cluster_sync import ClusterState
from .registry import NodeRecord

#: Sessions a server that already carries the content is credited with (content locality).
LOCALITY_BONUS: Final = 2

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Placement:
    server: str
    """Node address."""
    url: str


class Balancer(Generic[K]):
    """Chooses servers; remembers which client (key ``K``) went where."""

    def __init__(
        self,
        state: Callable[[], ClusterState],
        region: str = "",
        allowed: Callable[[NodeRecord], bool] = lambda node: True,
    ) -> None:
        self._state = state
        self.region = region
        self.allowed = allowed
        """Whether a node record may receive clients (wiring: a verified member with SERVER)."""
        self.placements: dict[K, Placement] = {}

    def servers(self, *, exclude: Iterable[str] = ()) -> list[NodeRecord]:
        excluded = set(exclude)
        return [
            node
            for node in self._state().nodes.values()
            if node.roles & Role.SERVER
            and not node.draining
            and node.urls
            and node.address not in excluded
            and self.allowed(node)
        ]

    def placed(self, server: str) -> int:
        return sum(1 for p in self.placements.values() if p.server == server)

    def choose(
        self, *, content: str | None = None, region: str | None = None, exclude: Iterable[str] = ()
    ) -> NodeRecord | None:
        candidates = self.servers(exclude=exclude)
        if not candidates:
            return None
        wanted = region or self.region
        if wanted:
            local = [n for n in candidates if n.region == wanted]
            candidates = local or candidates
        state = self._state()
        carriers = state.carriers.get(content, set()) if content else set()
        counts: dict[str, int] = {}
        for placement in self.placements.values():
            counts[placement.server] = counts.get(placement.server, 0) + 1

        def key(node: NodeRecord) -> tuple[float, int, str]:
            load = state.loads.get(node.address)
            reported = load.sessions if load is not None else 0
            sessions = max(reported, counts.get(node.address, 0))
            bonus = LOCALITY_BONUS if node.address in carriers else 0
            cpu = load.cpu_permille if load is not None else 0
            return (sessions - bonus, cpu, node.address)

        return min(candidates, key=key)

    def place(self, client: K, node: NodeRecord) -> Placement:
        placement = Placement(node.address, node.urls[0])
        self.placements[client] = placement
        return placement

    def forget(self, client: K) -> None:
        self.placements.pop(client, None)

    def orphans(self) -> list[tuple[K, Placement]]:
        """Clients placed on servers that are gone or draining."""
        alive = {n.address for n in self.servers()}
        return [(c, p) for c, p in self.placements.items() if p.server not in alive]
