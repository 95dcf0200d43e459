"""Who may send what: the permission table as data, and a pure :func:`authorize`.

The rule is the original's, made explicit: a request passes if

1. the operation is open to anyone (CREATE, LIST, join requests, session OPEN, signals), or
2. the signer is the cluster's owner and the operation allows the owner override, or
3. the operation allows acting on oneself and the signer *is* the target (the MEMBER argument, or
   the content's owner for content operations), or
4. the signer is a member whose roles intersect the operation's allowed roles.

Role intent (seed + research §3): host = everything; operator = limited management, monitoring and
moderation but no configuration changes (no CHANGE, ROLE_ASSIGN, DESTROY, ROUTE_ADD/DEL); server =
adds and serves content, reports load; balancer = balance requests, load reports, routes;
client = opens sessions, subscribes, chats.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from .constants import AvrsChannel, ClusterOp, Role, SessionOp, SignalOp


class Scope(enum.Enum):
    """What the request needs besides a valid signature."""

    ANYONE = (
        "anyone"  #: no cluster membership (it creates, lists, asks to join, or is connection-level)
    )
    SESSION = "session"  #: acts on the connection's own session; needs no cluster
    MEMBER = "member"  #: names a cluster; the signer must pass :func:`authorize` in it


class SignatureRule(enum.Enum):
    REQUIRED = "required"  #: unsigned -> SIGN_NOT_PRESENT
    OPTIONAL = "optional"  #: verified if present
    SESSION = "session"  #: optional; if present the signer must be the session's identity


class SelfTarget(enum.Enum):
    """What "self" means for ``allow_self``."""

    NONE = "none"
    MEMBER_ARG = "member"  #: the request's MEMBER argument
    CONTENT_OWNER = "content-owner"  #: the owner of the content the request names


@dataclass(frozen=True, slots=True)
class Permission:
    roles: Role
    """Member roles that may send the request (Role.NONE: no role suffices)."""
    scope: Scope = Scope.MEMBER
    signature: SignatureRule = SignatureRule.REQUIRED
    allow_self: bool = False
    """A signer acting on itself passes (see :attr:`self_target`)."""
    self_target: SelfTarget = SelfTarget.NONE
    owner_override: bool = True
    """The cluster owner always passes."""


#: The pseudo-operation "send media into a content" (content channel, op 0): checked when a session
#: attaches a content with STREAMING_IN.
PUBLISH: Final = (AvrsChannel.CONTENT, 0)

_ANY_MEMBER: Final = Role.ALL
_MANAGERS: Final = Role.HOST | Role.OPERATOR

PERMISSIONS: Final[dict[tuple[AvrsChannel, int], Permission]] = {
    # --- cluster 'C'
    (AvrsChannel.CLUSTER, ClusterOp.CREATE): Permission(Role.NONE, Scope.ANYONE),
    (AvrsChannel.CLUSTER, ClusterOp.DESTROY): Permission(Role.NONE),
    (AvrsChannel.CLUSTER, ClusterOp.CHANGE): Permission(Role.HOST),
    (AvrsChannel.CLUSTER, ClusterOp.INFO): Permission(_ANY_MEMBER),
    (AvrsChannel.CLUSTER, ClusterOp.LIST_REQ): Permission(
        Role.NONE, Scope.ANYONE, SignatureRule.OPTIONAL
    ),
    (AvrsChannel.CLUSTER, ClusterOp.MEMBER_REQUEST_ADD): Permission(Role.NONE, Scope.ANYONE),
    (AvrsChannel.CLUSTER, ClusterOp.MEMBER_REQUEST_DEL): Permission(
        _MANAGERS, allow_self=True, self_target=SelfTarget.MEMBER_ARG
    ),
    (AvrsChannel.CLUSTER, ClusterOp.MEMBER_REQUEST_APPROVE): Permission(_MANAGERS),
    (AvrsChannel.CLUSTER, ClusterOp.MEMBER_REMOVE): Permission(
        _MANAGERS, allow_self=True, self_target=SelfTarget.MEMBER_ARG
    ),
    (AvrsChannel.CLUSTER, ClusterOp.ROLE_ASSIGN): Permission(Role.HOST),
    (AvrsChannel.CLUSTER, ClusterOp.CONTENT_ADD): Permission(_MANAGERS | Role.SERVER),
    (AvrsChannel.CLUSTER, ClusterOp.CONTENT_UPDATE): Permission(
        Role.HOST | Role.SERVER, allow_self=True, self_target=SelfTarget.CONTENT_OWNER
    ),
    (AvrsChannel.CLUSTER, ClusterOp.CONTENT_DEL): Permission(
        _MANAGERS, allow_self=True, self_target=SelfTarget.CONTENT_OWNER
    ),
    (AvrsChannel.CLUSTER, ClusterOp.CONTENT_LIST_REQ): Permission(_ANY_MEMBER),
    (AvrsChannel.CLUSTER, ClusterOp.BALANCE_REQ): Permission(_ANY_MEMBER),
    (AvrsChannel.CLUSTER, ClusterOp.LOAD_REPORT): Permission(Role.SERVER | Role.BALANCER),
    (AvrsChannel.CLUSTER, ClusterOp.ROUTE_ADD): Permission(Role.HOST | Role.BALANCER),
    (AvrsChannel.CLUSTER, ClusterOp.ROUTE_DEL): Permission(Role.HOST | Role.BALANCER),
    (AvrsChannel.CLUSTER, ClusterOp.ROUTE_FIND): Permission(_ANY_MEMBER),
    (AvrsChannel.CLUSTER, ClusterOp.ROUTE_CHECK): Permission(_ANY_MEMBER),
    (AvrsChannel.CLUSTER, ClusterOp.STATS_REQ): Permission(_MANAGERS | Role.BALANCER),
    # --- session 'S'
    (AvrsChannel.SESSION, SessionOp.OPEN): Permission(Role.NONE, Scope.ANYONE),
    (AvrsChannel.SESSION, SessionOp.UPDATE): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.CLOSE): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    # Subscribing needs any membership; publishing (STREAMING_IN) is checked against PUBLISH too.
    (AvrsChannel.SESSION, SessionOp.CONTENT_ADD): Permission(
        _ANY_MEMBER, signature=SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.CONTENT_REMOVE): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.CONTENT_UPDATE): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.CLUSTER_ADD): Permission(
        _ANY_MEMBER, signature=SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.CLUSTER_DEL): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.CLUSTER_UPDATE): Permission(
        _ANY_MEMBER, signature=SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.START): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.SYNC): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.STOP): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.MONITOR): Permission(
        _MANAGERS, signature=SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.CHAT): Permission(_ANY_MEMBER, signature=SignatureRule.SESSION),
    # --- signal 'A': connection-level, the dap_stream handshake already authenticated the peer
    (AvrsChannel.SIGNAL, SignalOp.HELLO): Permission(
        Role.NONE, Scope.ANYONE, SignatureRule.OPTIONAL
    ),
    (AvrsChannel.SIGNAL, SignalOp.HEARTBEAT): Permission(
        Role.NONE, Scope.ANYONE, SignatureRule.OPTIONAL
    ),
    (AvrsChannel.SIGNAL, SignalOp.QUALITY_REPORT): Permission(
        Role.NONE, Scope.ANYONE, SignatureRule.OPTIONAL
    ),
    (AvrsChannel.SIGNAL, SignalOp.REDIRECT): Permission(
        Role.NONE, Scope.ANYONE, SignatureRule.OPTIONAL
    ),
    # --- content 'c': publishing media into a content
    PUBLISH: Permission(
        Role.HOST | Role.SERVER, allow_self=True, self_target=SelfTarget.CONTENT_OWNER
    ),
}

#: Operations that are only ever responses (RESPONSE flag); as requests they are WRONG_REQUEST.
RESPONSE_ONLY: Final = frozenset(
    {
        (AvrsChannel.CLUSTER, int(ClusterOp.LIST_RESP)),
        (AvrsChannel.CLUSTER, int(ClusterOp.CONTENT_LIST_RESP)),
        (AvrsChannel.CLUSTER, int(ClusterOp.BALANCE_RESP)),
        (AvrsChannel.CLUSTER, int(ClusterOp.STATS_RESP)),
    }
)


def permission_for(channel: AvrsChannel, op: int) -> Permission | None:
    """The table entry, or None for an operation nobody may request."""
    return PERMISSIONS.get((channel, op))


def authorize(
    permission: Permission,
    *,
    signer: bytes | None,
    member_roles: Role | None,
    cluster_owner: bytes | None,
    target: bytes | None = None,
) -> bool:
    """Pure authorization decision (no I/O, no lookups).

    ``member_roles`` is None when the signer is not a member; ``target`` is the identity "self" is
    compared with (see :class:`SelfTarget`), None when the request names none.
    """
    if permission.scope is not Scope.MEMBER:
        return True
    if signer is None:
        return False
    if permission.owner_override and cluster_owner is not None and signer == cluster_owner:
        return True
    if permission.allow_self and target is not None and signer == target:
        return True
    return member_roles is not None and bool(member_roles & permission.roles)
