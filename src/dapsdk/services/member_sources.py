"""Where a member's roles come from and how long they live.

Every role a member holds comes from one or more *sources*, and lives exactly as long as its source:

=============  ==============================================  ===================================
source         created by                                      ends when
=============  ==============================================  ===================================
APPROVAL       MEMBER_REQUEST_APPROVE / ROLE_ASSIGN by an       MEMBER_REMOVE
               administrator
LOCAL          the node's own API (compat                       MEMBER_REMOVE
               ``avrs_cluster_add_member``)
TOKEN          a join carrying an access token                  the token expires or its id is
                                                                revoked; MEMBER_REMOVE
CERTIFICATE    a join carrying a certificate (a membership      the certificate expires or is
               record: servers join the host this way)          revoked (CRL); MEMBER_REMOVE
HANDSHAKE      the certificate presented in the dap_stream      the certificate expires or is
               handshake                                        revoked; no open stream of the
                                                                identity presents it any more
=============  ==============================================  ===================================

The member's roles are the union of its sources' roles. Its token grants restrict it only when
the token is its only source.

**The token ``attr`` claim** is a flat JSON object, evaluated when the member joins (a token whose
rules do not hold here is refused, and so is one with a rule this node does not know, so a
restriction is never silently dropped):

- ``"region": "eu-west,eu-central"``: valid only on a node whose ``[avrs] region`` is one of the
  comma-separated names (a node without a region refuses the token);
- ``"x-<anything>": value``: informational, ignored by the node (dashboards, billing);
- any other key: the token is refused (MEMBER_GRANT_DENIED at join).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from dapsdk.avrs.constants import Role
from dapsdk.services.auth import TokenGrants

#: Removed identities remembered (so their credentials cannot re-join them) until an administrator
#: approves them again; the oldest is forgotten beyond this bound.
MAX_REMOVED: Final = 4096


class Source(enum.Enum):
    APPROVAL = "approval"
    LOCAL = "local"
    TOKEN = "token"
    CERTIFICATE = "certificate"
    HANDSHAKE = "handshake"


@dataclass(frozen=True, slots=True)
class Membership:
    """One source of a member's roles."""

    roles: Role
    grants: TokenGrants | None = None
    """The token's grants (TOKEN source only)."""
    subject: str | None = None
    """The token's subject (a node address or a user id)."""
    source: Source = Source.APPROVAL
    expires_at: float | None = None
    """POSIX seconds when the credential ends (token ``exp``, certificate ``notAfter``)."""
    certificate: x509.Certificate | None = None
    """The certificate to re-check against the CRL (CERTIFICATE, HANDSHAKE)."""
    token_id: str | None = None
    """The token's ``jti`` (checked against the revoked ids)."""


class AttributeRefused(Exception):
    """A token's ``attr`` rule does not hold on this node."""


def check_attributes(attributes: Mapping[str, object], *, region: str | None) -> None:
    """Evaluate the ``attr`` claim (grammar in the module docstring); raise AttributeRefused."""
    for key, value in attributes.items():
        if key.startswith("x-"):
            continue
        if key == "region":
            if not isinstance(value, str):
                raise AttributeRefused("attr region must be a comma-separated string")
            allowed = {part.strip() for part in value.split(",") if part.strip()}
            if region is None:
                raise AttributeRefused(
                    f"token is limited to regions {sorted(allowed)}; this node has no [avrs] region"
                )
            if region not in allowed:
                raise AttributeRefused(
                    f"token is limited to regions {sorted(allowed)}, this node is in {region!r}"
                )
            continue
        raise AttributeRefused(f"token attribute rule {key!r} is not known to this node")
