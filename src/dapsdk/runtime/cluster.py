"""dap_stream clusters (seed: ``dap_cluster_t``): named sets of member nodes with load balancing.

A member is a node address, an endpoint, or both. With load balancing enabled, sessions that join
the cluster are spread over the members by least connections (fewest joined sessions; ties go
round-robin), and a member that was removed gets no new sessions.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..stream.identity import NodeAddress
from .endpoint import Endpoint

if TYPE_CHECKING:
    from .session import Session

_cluster_ids = itertools.count(1)


@dataclass(slots=True)
class ClusterMember:
    member_id: int
    address: NodeAddress | None
    endpoint: Endpoint | None
    sessions: set[int] = field(default_factory=set)
    """Ids of the sessions the balancer placed on this member."""

    def matches(self, address: NodeAddress | None, endpoint: Endpoint | None) -> bool:
        if address is not None and self.address == address:
            return True
        return (
            endpoint is not None
            and self.endpoint is not None
            and (self.endpoint.host, self.endpoint.port) == (endpoint.host, endpoint.port)
        )


@dataclass(slots=True)
class LoadBalancer:
    """The seed's ``dap_cluster_balancer_t``: least-connections with round-robin tie-break."""

    enabled: bool = False
    _turn: int = 0

    def choose(self, members: list[ClusterMember]) -> ClusterMember:
        if not members:
            raise LookupError("cluster has no members to balance over")
        fewest = min(len(m.sessions) for m in members)
        candidates = [m for m in members if len(m.sessions) == fewest]
        chosen = candidates[self._turn % len(candidates)]
        self._turn += 1
        return chosen


class Cluster:
    def __init__(self, name: str) -> None:
        if not name:
            raise ValueError("cluster name must not be empty")
        self.id = next(_cluster_ids)
        self.guuid = uuid.uuid4()
        self.name = name
        self.balancer = LoadBalancer()
        self._members: list[ClusterMember] = []
        self._member_ids = itertools.count(1)
        # The seed's mutex: compat callers may touch a cluster from several threads.
        self.mutex = threading.Lock()

    @property
    def members(self) -> list[ClusterMember]:
        with self.mutex:
            return list(self._members)

    @property
    def members_count(self) -> int:
        return len(self._members)

    def add_member(
        self, address: NodeAddress | None = None, endpoint: Endpoint | None = None
    ) -> ClusterMember:
        """Add a member; raise ValueError if it is already a member or names nothing."""
        if address is None and endpoint is None:
            raise ValueError("a cluster member needs a node address or an endpoint")
        with self.mutex:
            if any(m.matches(address, endpoint) for m in self._members):
                raise ValueError(
                    f"{address or endpoint} is already a member of cluster {self.name!r}"
                )
            member = ClusterMember(next(self._member_ids), address, endpoint)
            self._members.append(member)
            return member

    def remove_member(
        self, address: NodeAddress | None = None, endpoint: Endpoint | None = None
    ) -> ClusterMember:
        """Remove a member; raise LookupError if it is not one."""
        with self.mutex:
            for member in self._members:
                if member.matches(address, endpoint):
                    self._members.remove(member)
                    return member
        raise LookupError(f"{address or endpoint} is not a member of cluster {self.name!r}")

    def enable_load_balancing(self, enabled: bool = True) -> None:
        self.balancer.enabled = enabled

    def join(self, session: Session) -> ClusterMember | None:
        """Attach a session; with balancing on, choose its member (and endpoint) for it."""
        with self.mutex:
            member: ClusterMember | None = None
            if self.balancer.enabled and self._members:
                reachable = [m for m in self._members if m.endpoint is not None] or self._members
                member = self.balancer.choose(reachable)
                if member.endpoint is not None:
                    session.endpoint = Endpoint(
                        member.endpoint.scheme,
                        member.endpoint.host,
                        member.endpoint.port,
                        member.endpoint.path,
                        member.address or member.endpoint.node,
                        member.endpoint.insecure_no_pin,
                    )
                    session.node_addr = member.address or member.endpoint.node
            else:
                member = next(
                    (m for m in self._members if m.matches(session.node_addr, session.endpoint)),
                    None,
                )
            if member is not None:
                member.sessions.add(session.id)
            session.cluster = self
            session.cluster_member_id = member.member_id if member is not None else 0
            return member

    def leave(self, session: Session) -> None:
        with self.mutex:
            for member in self._members:
                member.sessions.discard(session.id)
        if session.cluster is self:
            session.cluster = None
            session.cluster_member_id = 0

    def __repr__(self) -> str:
        return f"<Cluster {self.id} {self.name!r} members={self.members_count} lb={self.balancer.enabled}>"
