"""Verify first, interpret second: the signature, authorisation and freshness steps of a request.

Each function either returns what the next step needs or raises :class:`AvrsProtocolError` with
the code the peer gets. None of them changes any state except :func:`check_fresh`, which records
the nonce in the replay guard once everything before it passed.
"""

from __future__ import annotations

from typing import Final, Protocol

from .constants import (
    GUUID_SIZE,
    IDENTITY_SIZE,
    NONCE_SIZE,
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    CommonArg,
    SessionArg,
    SessionOp,
)
from .directory import ClusterInfo, ClusterView, ContentInfo
from .errors import AvrsError, AvrsProtocolError
from .packets import Request
from .permissions import (
    PUBLISH,
    Decision,
    Permission,
    Scope,
    SelfTarget,
    SignatureRule,
    authorize_operation,
)
from .replay import ANONYMOUS, AUTHENTICATED, ReplayGuard
from .signing import SignatureAlgorithm, decode_sign_blob, verify_blob
from .tsd import TsdList

#: Session requests that name a content (CONTENT_UUID) and are checked against it.
_INTERACTIVE: Final = frozenset(
    {
        SessionOp.CHAT,
        SessionOp.POLL_CREATE,
        SessionOp.POLL_VOTE,
        SessionOp.POLL_CLOSE,
        SessionOp.MODERATE,
    }
)
_MEMBER_MUST_BE_PENDING: Final = frozenset(
    {ClusterOp.MEMBER_REQUEST_APPROVE, ClusterOp.MEMBER_REQUEST_DEL}
)
_MEMBER_MUST_EXIST: Final = frozenset({ClusterOp.MEMBER_REMOVE, ClusterOp.ROLE_ASSIGN})
_CONTENT_MUST_EXIST: Final = frozenset(
    {ClusterOp.CONTENT_UPDATE, ClusterOp.CONTENT_DEL, ClusterOp.ROUTE_FIND, ClusterOp.BALANCE_REQ}
)


def verify_request_signature(
    request: Request, permission: Permission
) -> tuple[bytes | None, SignatureAlgorithm | None]:
    """Steps 2-3: (signer identity, algorithm), or (None, None) for an allowed unsigned request."""
    if request.sign is None:
        if permission.signature is SignatureRule.REQUIRED:
            raise AvrsProtocolError(AvrsError.SIGN_NOT_PRESENT, "request must be signed")
        return None, None
    blob = decode_sign_blob(request.sign.data)
    if not verify_blob(blob, request.signed_message):
        raise AvrsProtocolError(AvrsError.SIGN_INCORRECT, "signature does not verify")
    return blob.identity, blob.algorithm


def signature_ok(request: Request) -> bool:
    """True if the request carries a SIGN that verifies (used for signed responses)."""
    if request.sign is None:
        return False
    try:
        return verify_blob(decode_sign_blob(request.sign.data), request.signed_message)
    except AvrsProtocolError:
        return False


def check_algorithm(cluster: ClusterInfo, algorithm: SignatureAlgorithm | None) -> None:
    """A cluster that requires ML-DSA-65 refuses Ed25519 signers (and the other way round)."""
    if algorithm is not cluster.signature_algorithm:
        name = "none" if algorithm is None else algorithm.name
        raise AvrsProtocolError(
            AvrsError.MEMBER_SECURITY_ISSUE,
            f"cluster requires {cluster.signature_algorithm.name}, got {name}",
        )


def authorize_request(
    directory: ClusterView,
    channel: AvrsChannel,
    op: int,
    permission: Permission,
    args: TsdList,
    signer: bytes | None,
    algorithm: SignatureAlgorithm | None,
    now: float,
) -> tuple[ClusterInfo | None, Decision | None]:
    """Step 5. Returns the cluster the request names and the decision (None, None for ANYONE and
    SESSION scopes). Refuses with SIGN_ALIEN (roles), MEMBER_GRANT_DENIED (token grants) or
    MEMBER_REVOKED (expired token)."""
    if permission.scope is not Scope.MEMBER:
        return None, None
    id_arg = ClusterArg.ID if channel is AvrsChannel.CLUSTER else SessionArg.CLUSTER_ID
    cluster_id = args.require(id_arg)
    if len(cluster_id) != GUUID_SIZE:
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "cluster id must be 16 bytes")
    cluster = directory.cluster(cluster_id)
    if cluster is None:
        raise AvrsProtocolError(AvrsError.CLUSTER_NOT_FOUND, "no such cluster")
    if signer is None:
        raise AvrsProtocolError(AvrsError.SIGN_NOT_PRESENT, "cluster requests must be signed")
    check_algorithm(cluster, algorithm)
    target: bytes | None = None
    content: ContentInfo | None = None
    content_id: bytes | None = None
    if channel is AvrsChannel.CLUSTER:
        content_id = args.fixed(ClusterArg.CONTENT_ID, GUUID_SIZE, required=False)
        content = None if content_id is None else cluster.contents.get(content_id)
    elif op in _INTERACTIVE:
        content_id = args.fixed(SessionArg.CONTENT_UUID, GUUID_SIZE, required=False)
        content = None if content_id is None else cluster.contents.get(content_id)
        if content_id is not None and content is None:
            raise AvrsProtocolError(AvrsError.CONTENT_NOT_FOUND, "no such content")
    if permission.self_target is SelfTarget.MEMBER_ARG:
        target = args.fixed(ClusterArg.MEMBER, IDENTITY_SIZE, required=False)
    name = content.name if content is not None else ""
    if content is None and channel is AvrsChannel.CLUSTER:
        raw_name = args.get(ClusterArg.CONTENT_NAME)
        name = raw_name.rstrip(b"\0").decode("utf-8", "replace") if raw_name else ""
    decision = authorize_operation(
        cluster.principal(signer),
        (channel, op),
        content_id=content_id,
        content_name=name,
        content_owner=None if content is None else content.owner,
        target=target,
        banned=cluster.is_banned(content_id, signer),
        now=now,
    )
    if not decision.allowed:
        raise AvrsProtocolError(decision.code, decision.reason)
    return cluster, decision


class SecondFactor(Protocol):
    """The node's TOTP check for administrative requests (services implement it)."""

    def verify(self, identity: bytes, code: str | None, now: float) -> AvrsError:
        """SUCCESS, or MEMBER_TOTP_REQUIRED / MEMBER_TOTP_INVALID / MEMBER_TOTP_REPLAYED."""
        ...


def check_second_factor(
    hook: SecondFactor | None, args: TsdList, signer: bytes, now: float
) -> None:
    """An administrative request carries a fresh TOTP code of its signer (CommonArg.TOTP)."""
    raw = args.get(CommonArg.TOTP)
    code = None if raw is None else raw.decode("ascii", "replace")
    if code is None:
        raise AvrsProtocolError(
            AvrsError.MEMBER_TOTP_REQUIRED, "administrative request needs a TOTP code (0xFFF3)"
        )
    if hook is None:
        raise AvrsProtocolError(
            AvrsError.MEMBER_TOTP_REQUIRED, "this node has no second factor configured"
        )
    result = hook.verify(signer, code, now)
    if result is not AvrsError.SUCCESS:
        raise AvrsProtocolError(result, f"TOTP refused: {result.token}")


class ContentCheck:
    """May the session's signer publish into (PUBLISH) or receive (SUBSCRIBE) this content? The
    pseudo-operations of the permission table, with the member's token grants."""

    __slots__ = ("_algorithm", "_now", "_signer")

    def __init__(
        self, signer: bytes | None, algorithm: SignatureAlgorithm | None, now: float
    ) -> None:
        self._signer = signer
        self._algorithm = algorithm
        self._now = now

    def __call__(
        self,
        cluster: ClusterInfo,
        content: ContentInfo,
        operation: tuple[AvrsChannel, int] = PUBLISH,
    ) -> None:
        check_algorithm(cluster, self._algorithm)
        if self._signer is None:
            raise AvrsProtocolError(AvrsError.SIGN_ALIEN, "no signer")
        decision = content_decision(cluster, self._signer, content, operation, self._now)
        if not decision.allowed:
            raise AvrsProtocolError(decision.code, decision.reason)


#: The old name (publish only); ContentCheck also checks SUBSCRIBE.
PublishCheck = ContentCheck


def content_decision(
    cluster: ClusterInfo,
    identity: bytes,
    content: ContentInfo,
    operation: tuple[AvrsChannel, int],
    now: float,
) -> Decision:
    """authorize_operation for PUBLISH / SUBSCRIBE of ``content`` by ``identity``."""
    return authorize_operation(
        cluster.principal(identity),
        operation,
        content_id=content.content_id,
        content_name=content.name,
        content_owner=content.owner,
        banned=cluster.is_banned(content.content_id, identity),
        now=now,
    )


def replay_pool(permission: Permission, signer: bytes, cluster: ClusterInfo | None) -> str:
    """The replay pool of a verified signed request: ``authenticated`` when the permission
    requires the signature and the signer is the cluster's owner or member, else ``anonymous``."""
    if (
        permission.signature is SignatureRule.REQUIRED
        and cluster is not None
        and (signer == cluster.owner or cluster.roles_of(signer) is not None)
    ):
        return AUTHENTICATED
    return ANONYMOUS


def check_fresh(
    guard: ReplayGuard,
    args: TsdList,
    signer: bytes,
    now: float,
    *,
    pool: str = AUTHENTICATED,
    peer: bytes | None = None,
) -> None:
    """Step 6: a signed request needs TIMESTAMP and NONCE, within the skew and never seen
    (remembered in ``pool``, counted against the signer's and, when anonymous, the peer's quota)."""
    timestamp = args.uint(CommonArg.TIMESTAMP, 8)
    nonce = args.fixed(CommonArg.NONCE, NONCE_SIZE)
    if timestamp is None or nonce is None:  # unreachable: required=True raises first
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "timestamp and nonce required")
    verdict = guard.check(signer, nonce, timestamp, now, pool=pool, peer=peer)
    if not verdict.accepted:
        raise AvrsProtocolError(verdict.code, verdict.reason)


def check_cluster_targets(op: int, args: TsdList, cluster: ClusterInfo) -> None:
    """Directory checks of what a cluster request names: MEMBER_NOT_FOUND, CONTENT_NOT_FOUND."""
    member = args.get(ClusterArg.MEMBER)
    if op in _MEMBER_MUST_BE_PENDING and member not in cluster.pending:
        raise AvrsProtocolError(AvrsError.MEMBER_NOT_FOUND, "no such join request")
    if op in _MEMBER_MUST_EXIST and member is not None and cluster.roles_of(member) is None:
        raise AvrsProtocolError(AvrsError.MEMBER_NOT_FOUND, "no such member")
    content_id = args.get(ClusterArg.CONTENT_ID)
    if op in _CONTENT_MUST_EXIST and content_id is not None and content_id not in cluster.contents:
        raise AvrsProtocolError(AvrsError.CONTENT_NOT_FOUND, "no such content")
