"""Who may send what: the permission table as data, and a pure :func:`authorize`.

The rule is the original's, made explicit: a request passes if

1. the operation is open to anyone (CREATE, LIST, join requests, session OPEN, signals), or
2. the signer is the cluster's owner and the operation allows the owner override, or
3. the operation allows acting on oneself and the signer *is* the target (the MEMBER argument, or
   the content's owner for content operations), or
4. the signer is a member whose roles intersect the operation's allowed roles,

and then, for a member whose roles come from an access token, the token's grants cover the
operation's :class:`Action` for the content it names (:class:`Grants`), and, for an operation
marked ``second_factor`` that passed as an administrator (rules 2 or 4, not acting on oneself), the
request carries a fresh TOTP code. :func:`authorize_operation` is that whole decision as one pure
function returning a code; the stream protocol, compat and the HTTP gateway all call it.

Role intent (seed + research §3): host = everything; operator = limited management, monitoring and
moderation but no configuration changes (no CHANGE, ROLE_ASSIGN, DESTROY, ROUTE_ADD/DEL); server =
adds and serves content, reports load; balancer = balance requests, load reports, routes;
client = opens sessions, subscribes, chats.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from .constants import AvrsChannel, ClusterOp, Role, SessionOp, SignalOp
from .errors import AvrsError


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


class Action(enum.Enum):
    """Which token grant an operation needs (members without a token hold every grant)."""

    NONE = "none"  #: no grant needed (reading cluster facts, housekeeping)
    SUBSCRIBE = "subscribe"  #: receive a content
    PUBLISH = "publish"  #: declare, update or send into a content
    MODERATE = "moderate"  #: act on other members or their content


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
    action: Action = Action.NONE
    """The token grant the operation needs."""
    second_factor: bool = False
    """Administrative: a signer passing by role or as owner (not acting on itself) must carry a
    fresh TOTP code (CommonArg.TOTP)."""


#: The pseudo-operation "send media into a content" (content channel, op 0): checked when a session
#: attaches a content with STREAMING_IN.
PUBLISH: Final = (AvrsChannel.CONTENT, 0)
#: The pseudo-operation "receive a content" (content channel, op 1): checked when a session attaches
#: a content with STREAMING_OUT, and again by the node's fan-out before each delivery.
SUBSCRIBE: Final = (AvrsChannel.CONTENT, 1)

_ANY_MEMBER: Final = Role.ALL
_MANAGERS: Final = Role.HOST | Role.OPERATOR
_MOD: Final = Action.MODERATE
_PUB: Final = Action.PUBLISH
_SUB: Final = Action.SUBSCRIBE

PERMISSIONS: Final[dict[tuple[AvrsChannel, int], Permission]] = {
    # --- cluster 'C'
    (AvrsChannel.CLUSTER, ClusterOp.CREATE): Permission(Role.NONE, Scope.ANYONE),
    (AvrsChannel.CLUSTER, ClusterOp.DESTROY): Permission(
        Role.NONE, action=_MOD, second_factor=True
    ),
    (AvrsChannel.CLUSTER, ClusterOp.CHANGE): Permission(Role.HOST, action=_MOD, second_factor=True),
    (AvrsChannel.CLUSTER, ClusterOp.INFO): Permission(_ANY_MEMBER),
    (AvrsChannel.CLUSTER, ClusterOp.LIST_REQ): Permission(
        Role.NONE, Scope.ANYONE, SignatureRule.OPTIONAL
    ),
    (AvrsChannel.CLUSTER, ClusterOp.MEMBER_REQUEST_ADD): Permission(Role.NONE, Scope.ANYONE),
    (AvrsChannel.CLUSTER, ClusterOp.MEMBER_REQUEST_DEL): Permission(
        _MANAGERS,
        allow_self=True,
        self_target=SelfTarget.MEMBER_ARG,
        action=_MOD,
        second_factor=True,
    ),
    (AvrsChannel.CLUSTER, ClusterOp.MEMBER_REQUEST_APPROVE): Permission(
        _MANAGERS, action=_MOD, second_factor=True
    ),
    (AvrsChannel.CLUSTER, ClusterOp.MEMBER_REMOVE): Permission(
        _MANAGERS,
        allow_self=True,
        self_target=SelfTarget.MEMBER_ARG,
        action=_MOD,
        second_factor=True,
    ),
    (AvrsChannel.CLUSTER, ClusterOp.ROLE_ASSIGN): Permission(
        Role.HOST, action=_MOD, second_factor=True
    ),
    (AvrsChannel.CLUSTER, ClusterOp.CONTENT_ADD): Permission(_MANAGERS | Role.SERVER, action=_PUB),
    (AvrsChannel.CLUSTER, ClusterOp.CONTENT_UPDATE): Permission(
        Role.HOST | Role.SERVER,
        allow_self=True,
        self_target=SelfTarget.CONTENT_OWNER,
        action=_PUB,
        second_factor=True,
    ),
    (AvrsChannel.CLUSTER, ClusterOp.CONTENT_DEL): Permission(
        _MANAGERS,
        allow_self=True,
        self_target=SelfTarget.CONTENT_OWNER,
        action=_MOD,
        second_factor=True,
    ),
    (AvrsChannel.CLUSTER, ClusterOp.CONTENT_LIST_REQ): Permission(_ANY_MEMBER),
    (AvrsChannel.CLUSTER, ClusterOp.BALANCE_REQ): Permission(_ANY_MEMBER, action=_SUB),
    (AvrsChannel.CLUSTER, ClusterOp.LOAD_REPORT): Permission(Role.SERVER | Role.BALANCER),
    (AvrsChannel.CLUSTER, ClusterOp.ROUTE_ADD): Permission(Role.HOST | Role.BALANCER),
    (AvrsChannel.CLUSTER, ClusterOp.ROUTE_DEL): Permission(Role.HOST | Role.BALANCER),
    (AvrsChannel.CLUSTER, ClusterOp.ROUTE_FIND): Permission(_ANY_MEMBER),
    (AvrsChannel.CLUSTER, ClusterOp.ROUTE_CHECK): Permission(_ANY_MEMBER),
    (AvrsChannel.CLUSTER, ClusterOp.STATS_REQ): Permission(_MANAGERS | Role.BALANCER, action=_MOD),
    # --- session 'S'
    (AvrsChannel.SESSION, SessionOp.OPEN): Permission(Role.NONE, Scope.ANYONE),
    (AvrsChannel.SESSION, SessionOp.UPDATE): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    (AvrsChannel.SESSION, SessionOp.CLOSE): Permission(
        Role.NONE, Scope.SESSION, SignatureRule.SESSION
    ),
    # Its content is checked per direction: SUBSCRIBE (STREAMING_OUT) and PUBLISH (STREAMING_IN).
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
        _MANAGERS, signature=SignatureRule.SESSION, action=_MOD
    ),
    # Interactive requests are always signed (by the session's identity) and name a content.
    (AvrsChannel.SESSION, SessionOp.CHAT): Permission(
        _ANY_MEMBER, signature=SignatureRule.REQUIRED, action=_SUB
    ),
    (AvrsChannel.SESSION, SessionOp.POLL_VOTE): Permission(
        _ANY_MEMBER, signature=SignatureRule.REQUIRED, action=_SUB
    ),
    (AvrsChannel.SESSION, SessionOp.POLL_CREATE): Permission(
        _MANAGERS,
        signature=SignatureRule.REQUIRED,
        allow_self=True,
        self_target=SelfTarget.CONTENT_OWNER,
        action=_MOD,
    ),
    (AvrsChannel.SESSION, SessionOp.POLL_CLOSE): Permission(
        _MANAGERS,
        signature=SignatureRule.REQUIRED,
        allow_self=True,
        self_target=SelfTarget.CONTENT_OWNER,
        action=_MOD,
    ),
    (AvrsChannel.SESSION, SessionOp.MODERATE): Permission(
        _MANAGERS,
        signature=SignatureRule.REQUIRED,
        allow_self=True,
        self_target=SelfTarget.CONTENT_OWNER,
        action=_MOD,
        second_factor=True,
    ),
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
        Role.HOST | Role.SERVER,
        allow_self=True,
        self_target=SelfTarget.CONTENT_OWNER,
        action=_PUB,
    ),
    # --- session 'S' STREAMING_OUT: receiving a content (the pseudo-operation SUBSCRIBE)
    SUBSCRIBE: Permission(_ANY_MEMBER, action=_SUB),
}

#: Operations that are only ever responses (RESPONSE flag); as requests they are WRONG_REQUEST.
RESPONSE_ONLY: Final = frozenset(
    {
        (AvrsChannel.CLUSTER, int(ClusterOp.LIST_RESP)),
        (AvrsChannel.CLUSTER, int(ClusterOp.CONTENT_LIST_RESP)),
        (AvrsChannel.CLUSTER, int(ClusterOp.BALANCE_RESP)),
        (AvrsChannel.CLUSTER, int(ClusterOp.STATS_RESP)),
        (AvrsChannel.SESSION, int(SessionOp.CHAT_MESSAGE)),
        (AvrsChannel.SESSION, int(SessionOp.POLL_STATE)),
        (AvrsChannel.SESSION, int(SessionOp.MODERATION)),
    }
)


def permission_for(channel: AvrsChannel, op: int) -> Permission | None:
    """The table entry, or None for an operation nobody may request."""
    return PERMISSIONS.get((channel, op))


class Passed(enum.Enum):
    """How a request passed the role rules (decides whether a second factor is needed)."""

    ANYONE = "anyone"  #: the operation needs no membership
    OWNER = "owner"  #: the cluster owner override
    SELF = "self"  #: the signer acts on itself
    ROLE = "role"  #: the signer's roles


def authorize_how(
    permission: Permission,
    *,
    signer: bytes | None,
    member_roles: Role | None,
    cluster_owner: bytes | None,
    target: bytes | None = None,
) -> Passed | None:
    """Rules 1-4 of the module docstring: how the signer passes, or None when it does not."""
    if permission.scope is not Scope.MEMBER:
        return Passed.ANYONE
    if signer is None:
        return None
    if permission.owner_override and cluster_owner is not None and signer == cluster_owner:
        return Passed.OWNER
    if permission.allow_self and target is not None and signer == target:
        return Passed.SELF
    if member_roles is not None and bool(member_roles & permission.roles):
        return Passed.ROLE
    return None


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
    return (
        authorize_how(
            permission,
            signer=signer,
            member_roles=member_roles,
            cluster_owner=cluster_owner,
            target=target,
        )
        is not None
    )


# ---------------------------------------------------------------------------------------- grants

#: Characters that make a token content entry a glob pattern (``fnmatch``) instead of an exact id.
PATTERN_CHARS: Final = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Grants:
    """What a member's access token allows, in the core's terms (the services translate the
    token's ``avrs`` claim into this). A member without a token has no :class:`Grants` and is
    limited by its roles only."""

    publish: bool = False
    subscribe: bool = False
    moderate: bool = False
    contents: frozenset[bytes] | None = None
    """Content wire ids the token names exactly; None with no ``patterns`` means every content."""
    patterns: tuple[str, ...] = ()
    """Glob patterns (``fnmatch``, case-sensitive) matched against a content's name."""
    expires_at: float | None = None
    """POSIX seconds when the token (and so the membership it grants) ends."""
    attributes: Mapping[str, object] = field(default_factory=dict)
    """The token's ``attr`` claim (already evaluated when the member joined)."""

    def allows(self, action: Action) -> bool:
        if action is Action.NONE:
            return True
        return {
            Action.PUBLISH: self.publish,
            Action.SUBSCRIBE: self.subscribe,
            Action.MODERATE: self.moderate,
        }[action]

    def covers(self, content_id: bytes, name: str = "") -> bool:
        if self.contents is None and not self.patterns:
            return True
        if self.contents is not None and content_id in self.contents:
            return True
        return bool(name) and any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: what every path (stream requests, compat, HTTP) knows about the requester."""

    identity: bytes | None
    """Verified identity hash (None: anonymous)."""
    roles: Role | None
    """Member roles (None: not a member)."""
    grants: Grants | None = None
    """Token grants (None: no token, roles alone decide)."""
    is_owner: bool = False
    """The cluster's owner (the node itself)."""


@dataclass(frozen=True, slots=True)
class Decision:
    code: AvrsError
    """SUCCESS or the refusal code."""
    reason: str = ""
    passed: Passed | None = None
    second_factor: bool = False
    """SUCCESS, provided the request also carries a fresh TOTP code."""

    @property
    def allowed(self) -> bool:
        return self.code is AvrsError.SUCCESS


def authorize_operation(
    principal: Principal,
    operation: tuple[AvrsChannel, int],
    *,
    content_id: bytes | None = None,
    content_name: str = "",
    content_owner: bytes | None = None,
    target: bytes | None = None,
    banned: bool = False,
    now: float,
) -> Decision:
    """The one authorisation decision: the permission table, then the token's grants (action,
    content, expiry), then whether a second factor is required. Pure.

    ``target`` is the MEMBER argument for member operations; ``content_owner`` the owner of the
    named content (both decide "acting on oneself")."""
    permission = PERMISSIONS.get(operation)
    if permission is None:
        return Decision(AvrsError.ERROR, "no such operation")
    self_target = target if permission.self_target is SelfTarget.MEMBER_ARG else None
    if permission.self_target is SelfTarget.CONTENT_OWNER:
        self_target = content_owner
    passed = authorize_how(
        permission,
        signer=principal.identity,
        member_roles=principal.roles,
        cluster_owner=principal.identity if principal.is_owner else None,
        target=self_target,
    )
    if passed is None:
        return Decision(AvrsError.SIGN_ALIEN, "signer may not send this request")
    if banned and passed is not Passed.ANYONE and not principal.is_owner:
        return Decision(AvrsError.MEMBER_BANNED, "banned from this content")
    grants = principal.grants
    if grants is not None and passed is not Passed.ANYONE and not principal.is_owner:
        if grants.expires_at is not None and now >= grants.expires_at:
            return Decision(AvrsError.MEMBER_REVOKED, "the token of this membership expired")
        leaving = passed is Passed.SELF and permission.self_target is SelfTarget.MEMBER_ARG
        if not leaving and not grants.allows(permission.action):
            return Decision(
                AvrsError.MEMBER_GRANT_DENIED, f"token does not grant {permission.action.value}"
            )
        if (
            permission.action in (Action.PUBLISH, Action.SUBSCRIBE)
            and content_id is not None
            and not grants.covers(content_id, content_name)
        ):
            return Decision(AvrsError.MEMBER_GRANT_DENIED, "token does not cover this content")
    needs_totp = permission.second_factor and passed in (Passed.OWNER, Passed.ROLE)
    return Decision(AvrsError.SUCCESS, passed=passed, second_factor=needs_totp)
