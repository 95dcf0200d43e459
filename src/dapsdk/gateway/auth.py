"""REST authorisation: the stream protocol's decision, with the token from
``Authorization: Bearer``.

Every REST operation names the AVRS operation it stands for (channel, op); the decision is
:func:`dapsdk.avrs.permissions.authorize_operation` -- the permission table, then the token's
grants (action, content, expiry) -- the one function the AVRS service applies to signed
requests. A bearer token is verified with the node's token verifier (signature, issuer,
audience, expiry); its role claim gives the member roles and its grants are translated with
:func:`~dapsdk.services.avrs_cluster.core_grants` as for a member that joined with it. A token is
never the cluster owner (the owner signs with the node key on the stream protocol).
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from dataclasses import dataclass

from ..avrs.constants import AvrsChannel, Role
from ..avrs.errors import AvrsError
from ..avrs.permissions import SUBSCRIBE, Principal, authorize_operation
from ..services.auth.errors import AuthError
from ..services.auth.tokens import TokenGrants, TokenVerifier
from ..services.avrs_cluster import content_guuid, core_grants
from ..services.member_sources import Membership, Source


@dataclass(frozen=True, slots=True)
class Caller:
    subject: str | None
    roles: Role | None
    grants: TokenGrants | None
    expires_at: float | None = None

    @property
    def signer(self) -> bytes | None:
        if self.subject is None:
            return None
        return hashlib.sha256(b"bearer:" + self.subject.encode()).digest()


ANONYMOUS = Caller(None, None, None)


class Refused(Exception):
    """A request the gateway refuses: an AVRS code, an HTTP status and a detail."""

    def __init__(self, code: AvrsError, status: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status
        self.detail = detail


def caller_of(
    header: str | None, verifier: TokenVerifier | None, now: float | None = None
) -> Caller:
    """The caller a request's ``Authorization`` header proves; anonymous without one."""
    if not header:
        return ANONYMOUS
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(AvrsError.SIGN_NOT_PRESENT, 401, "Authorization must be 'Bearer <token>'")
    if verifier is None:
        raise Refused(
            AvrsError.MEMBER_SECURITY_ISSUE, 401, "this node has no token_issuers to check tokens"
        )
    try:
        verified = verifier.verify(token.strip(), now=time.time() if now is None else now)
    except (AuthError, ValueError) as exc:
        raise Refused(AvrsError.MEMBER_SECURITY_ISSUE, 401, str(exc)) from None
    return Caller(
        verified.subject, Role(int(verified.grants.role) & 0xFFFF) or Role.CLIENT, verified.grants
    )


def check(
    caller: Caller,
    channel: AvrsChannel,
    op: int,
    *,
    cluster_owner: bytes | None,
    content: str | None = None,
    now: float | None = None,
) -> None:
    """Raise :class:`Refused` unless ``caller`` may perform (channel, op) (on ``content``)."""
    grants = None
    if caller.grants is not None:
        membership = Membership(
            caller.roles or Role.CLIENT, caller.grants, caller.subject,
            Source.TOKEN, expires_at=caller.expires_at,
        )  # fmt: skip
        grants = core_grants(membership)
    principal = Principal(caller.signer, caller.roles, grants, is_owner=False)
    decision = authorize_operation(
        principal,
        (channel, op),
        content_id=content_guuid(content) if content is not None else None,
        content_name=content or "",
        now=time.time() if now is None else now,
    )
    if decision.allowed:
        return
    if caller.subject is None:
        raise Refused(AvrsError.SIGN_NOT_PRESENT, 401, "this operation needs a bearer token")
    status = 401 if decision.code == AvrsError.MEMBER_REVOKED else 403
    raise Refused(AvrsError(decision.code), status, decision.reason)


@dataclass(frozen=True, slots=True)
class PlaybackRule:
    """The node's ``[avrs] loopback_no_credentials`` and ``token_required`` as the gateway's
    playback (HLS, low-latency WebSocket) applies them: a request without a token is let through
    from a loopback address when ``loopback_no_credentials`` is set, and from anywhere when
    ``token_required`` is off; a request with a token is always checked."""

    loopback_no_credentials: bool = True
    token_required: bool = True

    def open_to(self, peer: str | None) -> bool:
        """Whether a request from ``peer`` may play without a token."""
        if not self.token_required:
            return True
        return self.loopback_no_credentials and is_loopback(peer)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def playback_token(header: str | None, query_token: str | None) -> tuple[str | None, bool]:
    """The ``Authorization`` header to check (the query's ``token`` as a bearer header when the
    request has no header) and whether the token came from the query."""
    if header:
        return header, False
    if query_token:
        return f"Bearer {query_token}", True
    return None, False


def check_playback(
    rule: PlaybackRule,
    peer: str | None,
    header: str | None,
    verifier: TokenVerifier | None,
    *,
    content: str,
    now: float | None = None,
) -> None:
    """Raise :class:`Refused` unless the request may receive ``content``: the stream protocol's
    SUBSCRIBE decision for the token's caller, or no token when ``rule`` lets ``peer`` in."""
    if not header and rule.open_to(peer):
        return
    caller = caller_of(header, verifier, now)
    check(caller, *SUBSCRIBE, cluster_owner=None, content=content, now=now)
