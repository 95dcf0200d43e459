"""Administrative requests: a proven identity with an admin role AND a valid TOTP code.

The identity comes from the stream handshake (:class:`~dapsdk.stream.config.PeerIdentity`). Its
roles come from its certificate, verified against the cluster CA, or, in a cluster without
certificates, from a role lookup (e.g. the membership registry). Any failure raises
:class:`~.errors.AdminAuthError` whose message names the request, the node and the reason, with the
underlying refusal as ``__cause__`` and its token in :attr:`AdminAuthError.reason`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dapsdk.stream.config import PeerIdentity
from dapsdk.stream.identity import NodeAddress

from .certificates import CertificateVerifier
from .errors import AdminAuthError, AuthError, TotpNotEnrolled
from .roles import ADMIN_ROLES, Role, format_roles
from .totp import (
    LOCKOUT_SECONDS,
    MAX_FAILURES,
    WINDOW,
    TotpEnrolment,
    TotpVerifier,
    enroll_totp,
)


@dataclass(frozen=True, slots=True)
class AdminApproval:
    """An approved administrative request."""

    address: NodeAddress
    roles: Role
    operation: str
    totp_step: int


class AdminAuthenticator:
    """Requires certificate (or known identity) with an admin role, and a fresh TOTP code."""

    __slots__ = (
        "_certificates",
        "_lockout",
        "_max_failures",
        "_role_lookup",
        "_secrets",
        "_verifiers",
        "_window",
    )

    def __init__(
        self,
        totp_secrets: Mapping[NodeAddress, str],
        *,
        certificate_verifier: CertificateVerifier | None = None,
        role_lookup: Callable[[NodeAddress], Role] | None = None,
        totp_window: int = WINDOW,
        max_failures: int = MAX_FAILURES,
        lockout: float = LOCKOUT_SECONDS,
    ) -> None:
        if certificate_verifier is None and role_lookup is None:
            raise ValueError("give a certificate_verifier or a role_lookup to learn admin roles")
        self._certificates = certificate_verifier
        self._role_lookup = role_lookup
        self._window = totp_window
        self._max_failures = max_failures
        self._lockout = lockout
        self._verifiers = {
            address: self._verifier(secret) for address, secret in totp_secrets.items()
        }
        self._secrets = dict(totp_secrets)

    def _verifier(self, secret: str) -> TotpVerifier:
        return TotpVerifier(
            secret, window=self._window, max_failures=self._max_failures, lockout=self._lockout
        )

    def enroll(self, address: NodeAddress, *, issuer: str = "AVRS") -> TotpEnrolment:
        """Make (or replace) the TOTP secret of ``address``; persist ``secret`` yourself."""
        enrolment = enroll_totp(str(address), issuer=issuer)
        self._verifiers[address] = self._verifier(enrolment.secret)
        self._secrets[address] = enrolment.secret
        return enrolment

    def update_secrets(self, totp_secrets: Mapping[NodeAddress, str]) -> None:
        """Take a re-read secret file: new and changed secrets get a fresh verifier, removed ones
        are forgotten, unchanged ones keep their replay state (last accepted step)."""
        current = {}
        for address, secret in totp_secrets.items():
            old = self._verifiers.get(address)
            keep = old is not None and self._secrets.get(address) == secret
            current[address] = old if keep and old is not None else self._verifier(secret)
        self._verifiers = current
        self._secrets = dict(totp_secrets)

    def is_enrolled(self, address: NodeAddress) -> bool:
        return address in self._verifiers

    def authorize(
        self,
        peer: PeerIdentity,
        totp_code: str | None,
        *,
        now: float,
        operation: str = "admin",
        allowed_roles: Role = ADMIN_ROLES,
    ) -> AdminApproval:
        """Approve ``operation`` for ``peer`` at ``now`` (POSIX seconds) or raise
        :class:`AdminAuthError`. ``allowed_roles``: e.g. ``Role.HOST`` for host-only operations."""
        prefix = f"admin request {operation!r} from {peer.address} refused"
        try:
            roles = self._roles_of(peer, now)
        except AuthError as exc:
            raise AdminAuthError(f"{prefix}: {exc}", reason=exc.failure) from exc
        if not roles & allowed_roles:
            raise AdminAuthError(
                f"{prefix}: roles {format_roles(roles)!r} do not include "
                f"{format_roles(allowed_roles)!r}",
                reason="ROLE",
            )
        verifier = self._verifiers.get(peer.address)
        try:
            if verifier is None:
                raise TotpNotEnrolled(f"node {peer.address} has no enrolled second factor")
            step = verifier.verify(totp_code, now=now)
        except AuthError as exc:
            raise AdminAuthError(f"{prefix}: {exc}", reason=exc.failure) from exc
        return AdminApproval(address=peer.address, roles=roles, operation=operation, totp_step=step)

    def verify_code(self, address: NodeAddress, totp_code: str | None, *, now: float) -> int:
        """Check ``address``'s TOTP code at ``now`` (each step accepted once); returns the step or
        raises :class:`TotpNotEnrolled`, :class:`TotpMissing`, :class:`TotpInvalid`,
        :class:`TotpReplay` or :class:`TotpLocked`. For requests whose roles the caller checked."""
        verifier = self._verifiers.get(address)
        if verifier is None:
            raise TotpNotEnrolled(f"node {address} has no enrolled second factor")
        return verifier.verify(totp_code, now=now)

    def _roles_of(self, peer: PeerIdentity, now: float) -> Role:
        if self._certificates is not None:
            return self._certificates.verify_peer(peer, now=now).roles
        if self._role_lookup is not None:
            return self._role_lookup(peer.address)
        return Role.NONE
