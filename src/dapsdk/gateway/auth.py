"""REST authorisation: the stream protocol's permission table, with the token from
``Authorization: Bearer``.

Every REST operation names the AVRS operation it stands for (channel, op); the decision is
:func:`dapsdk.avrs.permissions.authorize` on :func:`~dapsdk.avrs.permissions.permission_for`, the
same table and function the AVRS service applies to signed requests. A bearer token is verified
with the node's token verifier (signature, issuer, audience, expiry); its grants give the member
roles. A token is never the cluster owner (owners sign with the node key on the stream protocol).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from ..avrs.constants import AvrsChannel, Role
from ..avrs.errors import AvrsError
from ..avrs.permissions import authorize, permission_for
from ..services.auth.errors import AuthError
from ..services.auth.tokens import TokenGrants, TokenVerifier


@dataclass(frozen=True, slots=True)
class Caller:
    subject: str | None
    roles: Role | None
    grants: TokenGrants | None

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
) -> None:
    """Raise :class:`Refused` unless ``caller`` may perform (channel, op) (on ``content``)."""
    permission = permission_for(channel, op)
    if permission is None:
        raise Refused(AvrsError.CLUSTER_WRONG_REQUEST, 403, "nobody may request this operation")
    allowed = authorize(
        permission, signer=caller.signer, member_roles=caller.roles, cluster_owner=cluster_owner
    )
    if not allowed:
        if caller.subject is None:
            raise Refused(AvrsError.SIGN_NOT_PRESENT, 401, "this operation needs a bearer token")
        raise Refused(
            AvrsError.MEMBER_SECURITY_ISSUE, 403, "the token's roles do not allow this operation"
        )
    if content is not None and caller.grants is not None and not caller.grants.covers(content):
        raise Refused(AvrsError.MEMBER_SECURITY_ISSUE, 403, f"the token does not cover {content!r}")
