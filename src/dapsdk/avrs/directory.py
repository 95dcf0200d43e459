"""What the protocol core needs to know about clusters: a read-only view the services provide.

The core authorises requests against a :class:`ClusterView` (clusters, owners, members with their
roles, pending join requests, contents). Layer 4 owns the real registry (memory or Redis) and keeps
a local replica that implements this protocol synchronously, so the sans-IO core never awaits.
:class:`MemoryClusterView` is a complete in-memory implementation used by tests and single-node
setups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .constants import GUUID_SIZE, IDENTITY_SIZE, Role
from .errors import AvrsError, AvrsProtocolError
from .permissions import Grants, Principal
from .signing import SignatureAlgorithm

#: Longest flow string (each character one track) and codec name.
MAX_FLOWS = 32
MAX_CODEC_NAME = 63


def validate_flows(flows: str, codecs: tuple[str | None, ...] = ()) -> None:
    """Raise CONTENT_INFO_CORRUPTED unless ``flows`` is 1..32 distinct printable ASCII letters and
    ``codecs`` has at most one short ASCII name per flow."""
    if not 1 <= len(flows) <= MAX_FLOWS or not all(c.isascii() and c.isalnum() for c in flows):
        raise AvrsProtocolError(AvrsError.CONTENT_INFO_CORRUPTED, f"bad flow string {flows!r}")
    if len(set(flows)) != len(flows):
        raise AvrsProtocolError(AvrsError.CONTENT_INFO_CORRUPTED, f"repeated flow in {flows!r}")
    if len(codecs) > len(flows):
        raise AvrsProtocolError(AvrsError.CONTENT_INFO_CORRUPTED, "more codecs than flows")
    for codec in codecs:
        if codec is not None and not (
            0 < len(codec) <= MAX_CODEC_NAME and codec.isascii() and codec.isprintable()
        ):
            raise AvrsProtocolError(AvrsError.CONTENT_INFO_CORRUPTED, f"bad codec {codec!r}")


@dataclass(frozen=True, slots=True)
class ContentInfo:
    """A content of a cluster (live stream, VoD file, interactive feed)."""

    content_id: bytes
    """16-byte GUUID."""
    owner: bytes
    """Identity of the member that added it."""
    flows: str
    """One character per flow (track), e.g. "av"; ``flow_id`` is the index."""
    codecs: tuple[str | None, ...] = ()
    """Codec name per flow; None or missing means autodetect."""
    title: str = ""
    available: bool = True
    """False while the source is offline: attaching it or publishing into it is refused with
    CONTENT_UNAVAILBLE."""
    name: str = ""
    """Readable name whose wire id is ``content_id`` (checked by the node), matched by token
    content patterns; empty when the publisher gave none."""
    interactive: int = 0x07
    """Interactive features: bit 0 chat, bit 1 polls, bit 2 moderation (all on by default)."""

    def __post_init__(self) -> None:
        if len(self.content_id) != GUUID_SIZE or len(self.owner) != IDENTITY_SIZE:
            raise ValueError("content_id must be 16 bytes and owner 32 bytes")
        try:
            validate_flows(self.flows, self.codecs)
        except AvrsProtocolError as exc:
            raise ValueError(exc.reason) from None

    def has_flow(self, flow_id: int) -> bool:
        return 0 <= flow_id < len(self.flows)


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    cluster_id: bytes
    """16-byte GUUID."""
    owner: bytes
    """Identity of the creator: passes every owner-override permission."""
    members: Mapping[bytes, Role] = field(default_factory=dict)
    pending: frozenset[bytes] = frozenset()
    """Identities that asked to join and wait for approval."""
    contents: Mapping[bytes, ContentInfo] = field(default_factory=dict)
    signature_algorithm: SignatureAlgorithm = SignatureAlgorithm.ED25519
    """The algorithm members must sign with; another one is MEMBER_SECURITY_ISSUE."""
    grants: Mapping[bytes, Grants] = field(default_factory=dict)
    """Token grants of members whose roles come only from an access token."""
    banned: Mapping[bytes, frozenset[bytes]] = field(default_factory=dict)
    """Content id -> identities banned from it by moderation."""

    def is_banned(self, content_id: bytes | None, identity: bytes | None) -> bool:
        if content_id is None or identity is None:
            return False
        return identity in self.banned.get(content_id, frozenset())

    def __post_init__(self) -> None:
        if len(self.cluster_id) != GUUID_SIZE or len(self.owner) != IDENTITY_SIZE:
            raise ValueError("cluster_id must be 16 bytes and owner 32 bytes")

    def roles_of(self, identity: bytes) -> Role | None:
        """The member's roles; the owner is always a HOST; None for non-members."""
        roles = self.members.get(identity)
        if identity == self.owner:
            return (roles or Role.NONE) | Role.HOST
        return roles

    def principal(self, identity: bytes | None) -> Principal:
        """What :func:`~.permissions.authorize_operation` needs to know about ``identity``."""
        if identity is None:
            return Principal(None, None)
        return Principal(
            identity,
            self.roles_of(identity),
            self.grants.get(identity),
            is_owner=identity == self.owner,
        )


class ClusterView(Protocol):
    """Synchronous read access to cluster state (a local replica in multi-node setups)."""

    def cluster(self, cluster_id: bytes) -> ClusterInfo | None: ...


class MemoryClusterView:
    """A dict of clusters; replace entries to change them (ClusterInfo is immutable)."""

    def __init__(self, clusters: Mapping[bytes, ClusterInfo] | None = None) -> None:
        self._clusters: dict[bytes, ClusterInfo] = dict(clusters or {})

    def cluster(self, cluster_id: bytes) -> ClusterInfo | None:
        return self._clusters.get(cluster_id)

    def put(self, info: ClusterInfo) -> None:
        self._clusters[info.cluster_id] = info

    def remove(self, cluster_id: bytes) -> None:
        self._clusters.pop(cluster_id, None)
