"""Signed, expiring access tokens: JWT with EdDSA (Ed25519), issued by a host or operator node.

Claims: ``iss`` (issuer node address), ``sub`` (subject identity: a node address or a user id),
``aud`` (cluster id), ``iat``, ``nbf``, ``exp`` (POSIX seconds), ``jti`` (unique id), and the AVRS
grants under ``avrs``: ``role`` (u16 bitmask), ``publish``, ``subscribe``, ``moderate`` (booleans),
``content`` (list of content ids, or ``"*"``) and ``attr`` (a flat dict for attribute-based rules).
The header's ``kid`` repeats the issuer address.

Only EdDSA is accepted (no algorithm confusion). The verifier checks, in order: the token's shape,
that the issuer is trusted, the signature, the audience, the time window (with ``now`` passed in),
the revocation list of token ids, the issuer's authority over the grants (a node that is only an
operator cannot grant HOST), and the expected subject. Each refusal is its own exception class.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dapsdk.stream.identity import NodeAddress, NodeIdentity

from .common import format_time
from .errors import (
    TokenBadSignature,
    TokenExpired,
    TokenGrantError,
    TokenMalformed,
    TokenNotYetValid,
    TokenRevoked,
    TokenUntrustedIssuer,
    TokenWrongAudience,
    TokenWrongSubject,
)
from .roles import ADMIN_ROLES, Role, format_roles, roles_from_int

ALGORITHM: Final = "EdDSA"
DEFAULT_TTL: Final = 3600.0
#: Upper bound of a token lifetime the issuer accepts (30 days); short tokens are the point.
MAX_TTL: Final = 30 * 86400.0

AttributeValue = str | int | float | bool
Action = Literal["publish", "subscribe", "moderate"]
ALL_CONTENT: Final = "*"


def grantable_roles(issuer_roles: Role) -> Role:
    """The roles an issuer may put in a token: a host anything, an operator anything but HOST,
    any other node nothing."""
    if issuer_roles & Role.HOST:
        return Role.ALL
    if issuer_roles & Role.OPERATOR:
        return Role(Role.ALL & ~Role.HOST)
    return Role.NONE


@dataclass(frozen=True, slots=True)
class TokenGrants:
    """What a token allows. Everything is off unless granted."""

    role: Role = Role.CLIENT
    publish: bool = False
    subscribe: bool = False
    moderate: bool = False
    content_ids: tuple[str, ...] | Literal["*"] = ()
    """Content the grants apply to, or ``"*"`` for all content of the cluster."""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    """Free attributes for attribute-based rules (region, tier, ...)."""

    def __post_init__(self) -> None:
        if not 0 <= int(self.role) <= 0xFFFF:
            raise ValueError(f"role {int(self.role)!r} is not a u16 bitmask")
        if self.content_ids != ALL_CONTENT and not (
            isinstance(self.content_ids, tuple)
            and all(isinstance(c, str) and c for c in self.content_ids)
        ):
            raise ValueError("content_ids must be '*' or a tuple of non-empty strings")
        for key, value in self.attributes.items():
            if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
                raise ValueError(f"attribute {key!r} must map a string to a string or number")

    def covers(self, content_id: str) -> bool:
        return self.content_ids == ALL_CONTENT or content_id in self.content_ids

    def allows(self, action: Action, content_id: str | None = None) -> bool:
        """Whether ``action`` is granted (for ``content_id`` when given)."""
        granted = {"publish": self.publish, "subscribe": self.subscribe, "moderate": self.moderate}
        if not granted[action]:
            return False
        return content_id is None or self.covers(content_id)

    def to_claim(self) -> dict[str, Any]:
        return {
            "role": int(self.role),
            "publish": self.publish,
            "subscribe": self.subscribe,
            "moderate": self.moderate,
            "content": (ALL_CONTENT if self.content_ids == ALL_CONTENT else list(self.content_ids)),
            "attr": dict(self.attributes),
        }

    @classmethod
    def from_claim(cls, claim: object) -> TokenGrants:
        """Parse the ``avrs`` claim strictly; raises :class:`TokenMalformed`."""
        if not isinstance(claim, dict):
            raise TokenMalformed("claim 'avrs' (the grants) is missing or not an object")
        role = claim.get("role")
        if not isinstance(role, int) or isinstance(role, bool) or not 0 <= role <= 0xFFFF:
            raise TokenMalformed(f"grant 'role' = {role!r} is not a u16 bitmask")
        flags = {}
        for name in ("publish", "subscribe", "moderate"):
            value = claim.get(name, False)
            if not isinstance(value, bool):
                raise TokenMalformed(f"grant {name!r} = {value!r} is not a boolean")
            flags[name] = value
        content = claim.get("content", [])
        content_ids: tuple[str, ...] | Literal["*"]
        if content == ALL_CONTENT:
            content_ids = ALL_CONTENT
        elif isinstance(content, list) and all(isinstance(c, str) and c for c in content):
            content_ids = tuple(content)
        else:
            raise TokenMalformed(f"grant 'content' = {content!r} is not '*' or a list of ids")
        attributes = claim.get("attr", {})
        if not isinstance(attributes, dict) or not all(
            isinstance(v, str | int | float | bool) for v in attributes.values()
        ):
            raise TokenMalformed("grant 'attr' is not an object of strings and numbers")
        return cls(
            role=roles_from_int(role),
            publish=flags["publish"],
            subscribe=flags["subscribe"],
            moderate=flags["moderate"],
            content_ids=content_ids,
            attributes=attributes,
        )


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """A host or operator whose tokens are accepted, with the roles it holds in the cluster."""

    public_key: bytes
    roles: Role

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise ValueError(
                f"issuer key must be a 32-byte Ed25519 key, got {len(self.public_key)}"
            )

    @property
    def address(self) -> NodeAddress:
        return NodeAddress.from_public_key(self.public_key)


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    issuer: NodeAddress
    issuer_roles: Role
    subject: str
    audience: str
    issued_at: float
    not_before: float
    expires_at: float
    token_id: str
    grants: TokenGrants


class TokenIssuer:
    """Issues tokens signed by a host's or operator's identity key."""

    __slots__ = ("_identity", "cluster_id", "default_ttl", "roles")

    def __init__(
        self,
        identity: NodeIdentity,
        roles: Role,
        cluster_id: str,
        *,
        default_ttl: float = DEFAULT_TTL,
    ) -> None:
        if not roles & ADMIN_ROLES:
            raise TokenGrantError(
                f"node {identity.address} has roles {format_roles(roles)!r}; only a host or an "
                f"operator may issue tokens"
            )
        self._identity = identity
        self.roles = roles
        self.cluster_id = cluster_id
        self.default_ttl = default_ttl

    @property
    def address(self) -> NodeAddress:
        return self._identity.address

    def issue(
        self,
        subject: str,
        grants: TokenGrants,
        *,
        now: float,
        ttl: float | None = None,
        not_before: float | None = None,
        token_id: str | None = None,
    ) -> str:
        """A signed JWT for ``subject`` valid from ``not_before`` (default ``now``) for ``ttl``."""
        ttl = self.default_ttl if ttl is None else ttl
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"token lifetime {ttl!r} s must be > 0 and <= {MAX_TTL:.0f} s")
        if not subject:
            raise ValueError("token subject must not be empty")
        forbidden = grants.role & ~grantable_roles(self.roles)
        if forbidden:
            raise TokenGrantError(
                f"issuer {self.address} with roles {format_roles(self.roles)!r} may not grant "
                f"{format_roles(Role(forbidden))!r}"
            )
        start = now if not_before is None else not_before
        claims = {
            "iss": str(self.address),
            "sub": subject,
            "aud": self.cluster_id,
            "iat": int(now),
            "nbf": int(start),
            "exp": int(start + ttl),
            "jti": token_id or secrets.token_hex(16),
            "avrs": grants.to_claim(),
        }
        return jwt.encode(
            claims,
            self._identity.private_key,
            algorithm=ALGORITHM,
            headers={"kid": str(self.address), "typ": "JWT"},
        )


_REQUIRED_CLAIMS: Final = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "avrs")
_JWS: Final = jwt.PyJWS()


class TokenVerifier:
    """Verifies tokens from a set of trusted issuers for one cluster (the audience)."""

    __slots__ = ("_issuers", "audience", "leeway", "revoked_ids")

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        audience: str,
        *,
        leeway: float = 0.0,
        revoked_ids: Container[str] = frozenset(),
    ) -> None:
        self._issuers = {issuer.address: issuer for issuer in issuers}
        self.audience = audience
        self.leeway = leeway
        """Seconds of clock skew tolerated on ``nbf``, ``iat`` and ``exp``."""
        self.revoked_ids = revoked_ids

    @property
    def issuers(self) -> tuple[TrustedIssuer, ...]:
        return tuple(self._issuers.values())

    def verify(self, token: str, *, now: float, subject: str | None = None) -> VerifiedToken:
        """Verify ``token`` at ``now`` (POSIX seconds); when ``subject`` is given the token must
        have been issued to it. Raises a :class:`~.errors.TokenError` subclass."""
        claims = self._unverified_claims(token)
        issuer = self._trusted_issuer(claims.get("iss"))
        self._check_signature(token, issuer)
        self._check_audience(claims["aud"])
        iat, nbf, exp = (self._number(claims, name) for name in ("iat", "nbf", "exp"))
        jti, sub = self._string(claims, "jti"), self._string(claims, "sub")
        if now + self.leeway < nbf:
            raise TokenNotYetValid(
                f"token {jti} is not valid before {format_time(nbf)} (now {format_time(now)})"
            )
        if now + self.leeway < iat:
            raise TokenNotYetValid(f"token {jti} was issued in the future ({format_time(iat)})")
        if now - self.leeway >= exp:
            raise TokenExpired(
                f"token {jti} expired at {format_time(exp)} (now {format_time(now)})"
            )
        if jti in self.revoked_ids:
            raise TokenRevoked(f"token {jti} has been revoked")
        grants = TokenGrants.from_claim(claims["avrs"])
        allowed = grantable_roles(issuer.roles)
        if not allowed:
            raise TokenGrantError(
                f"issuer {issuer.address} has roles {format_roles(issuer.roles)!r} and may not "
                f"issue tokens"
            )
        forbidden = grants.role & ~allowed
        if forbidden:
            raise TokenGrantError(
                f"token {jti} grants {format_roles(Role(forbidden))!r}, which issuer "
                f"{issuer.address} with roles {format_roles(issuer.roles)!r} may not grant"
            )
        if subject is not None and sub != subject:
            raise TokenWrongSubject(f"token {jti} was issued to {sub!r}, not to {subject!r}")
        return VerifiedToken(
            issuer=issuer.address,
            issuer_roles=issuer.roles,
            subject=sub,
            audience=self.audience,
            issued_at=iat,
            not_before=nbf,
            expires_at=exp,
            token_id=jti,
            grants=grants,
        )

    @staticmethod
    def _unverified_claims(token: str) -> dict[str, Any]:
        if not isinstance(token, str) or token.count(".") != 2:
            raise TokenMalformed("token is not a JWT (three base64url parts separated by '.')")
        try:
            header = jwt.get_unverified_header(token)
            payload = _JWS.decode_complete(token, options={"verify_signature": False})["payload"]
            claims = json.loads(payload)
        except (jwt.PyJWTError, ValueError) as exc:
            raise TokenMalformed(f"token does not decode: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise TokenMalformed(f"token algorithm {header.get('alg')!r} refused; only EdDSA")
        if not isinstance(claims, dict):
            raise TokenMalformed("token payload is not a JSON object")
        missing = [name for name in _REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise TokenMalformed(f"token lacks required claims: {', '.join(missing)}")
        return claims

    def _trusted_issuer(self, iss: object) -> TrustedIssuer:
        try:
            address = NodeAddress.parse(iss) if isinstance(iss, str) else None
        except ValueError:
            address = None
        if address is None:
            raise TokenMalformed(f"claim 'iss' = {iss!r} is not a node address")
        issuer = self._issuers.get(address)
        if issuer is None:
            raise TokenUntrustedIssuer(
                f"token issuer {address} is not a trusted issuer of cluster {self.audience!r}"
            )
        return issuer

    @staticmethod
    def _check_signature(token: str, issuer: TrustedIssuer) -> None:
        key = Ed25519PublicKey.from_public_bytes(issuer.public_key)
        try:
            _JWS.decode(token, key, algorithms=[ALGORITHM])
        except jwt.InvalidSignatureError:
            raise TokenBadSignature(
                f"token signature does not verify with the key of issuer {issuer.address} "
                f"(forged or altered)"
            ) from None
        except jwt.PyJWTError as exc:
            raise TokenMalformed(f"token does not decode: {exc}") from None

    def _check_audience(self, aud: object) -> None:
        if aud != self.audience:
            raise TokenWrongAudience(
                f"token is for cluster {aud!r}, this is cluster {self.audience!r}"
            )

    @staticmethod
    def _number(claims: Mapping[str, Any], name: str) -> float:
        value = claims[name]
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TokenMalformed(f"claim {name!r} = {value!r} is not a number of seconds")
        return float(value)

    @staticmethod
    def _string(claims: Mapping[str, Any], name: str) -> str:
        value = claims[name]
        if not isinstance(value, str) or not value:
            raise TokenMalformed(f"claim {name!r} = {value!r} is not a non-empty string")
        return value
