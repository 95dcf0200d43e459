"""Verification of node certificates presented in the stream handshake.

A certificate is accepted when, in this order:

1. it parses as X.509 and is not a CA certificate;
2. it was issued by the cluster CA (issuer name and Ed25519 signature);
3. ``now`` lies in its validity window;
4. its serial is not on the CA-signed revocation list;
5. its subject names the CA's cluster and its ``avrs:node`` URI is the address of its own key;
6. its public key equals the identity key the peer proved in the handshake (so the certificate is
   bound to the peer's node address);
7. it holds one of the required roles, when roles are required.

Each failed check raises its own :class:`~.errors.CertificateError` subclass naming the check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dapsdk.stream.config import PeerIdentity, PeerVerifier
from dapsdk.stream.identity import NodeAddress

from . import names, pem
from .ca import revocation_reason
from .common import Clock, format_time, from_datetime
from .errors import (
    CertificateError,
    CertificateExpired,
    CertificateKeyMismatch,
    CertificateMalformed,
    CertificateMissing,
    CertificateNotYetValid,
    CertificateRevoked,
    CertificateRoleError,
    CertificateUntrusted,
    CredentialFileError,
    CrlError,
)
from .roles import Role, format_roles

#: A CRL, a callable returning the current one (e.g. :class:`CrlFile`), or None for no revocation.
CrlSource = (
    x509.CertificateRevocationList | Callable[[], x509.CertificateRevocationList | None] | None
)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What a certificate says, without any trust decision (see :func:`describe_certificate`)."""

    subject: str
    issuer: str
    cluster_id: str | None
    node_address: NodeAddress | None
    roles: Role
    serial: int
    not_before: float
    """POSIX seconds."""
    not_after: float
    """POSIX seconds."""
    public_key: bytes | None
    """Raw Ed25519 public key, None for other key types."""
    is_ca: bool
    fingerprint_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "cluster_id": self.cluster_id,
            "node_address": str(self.node_address) if self.node_address else None,
            "roles": format_roles(self.roles),
            "roles_mask": f"0x{int(self.roles):04x}",
            "serial": f"{self.serial:x}",
            "not_before": format_time(self.not_before),
            "not_after": format_time(self.not_after),
            "public_key": self.public_key.hex() if self.public_key else None,
            "is_ca": self.is_ca,
            "fingerprint_sha256": self.fingerprint_sha256,
        }


def parse_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """DER or PEM bytes -> certificate, raising :class:`CertificateMalformed`."""
    if isinstance(data, x509.Certificate):
        return data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateMalformed(f"certificate does not parse as X.509: {exc}") from None


def describe_certificate(cert: x509.Certificate) -> CertificateInfo:
    """The AVRS facts of a certificate. Raises :class:`CertificateMalformed` on garbled URIs."""
    try:
        address, roles = names.parse_node_uris(cert)
    except ValueError as exc:
        raise CertificateMalformed(f"certificate serial {cert.serial_number:x}: {exc}") from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    key = cert.public_key()
    raw = pem.raw_public_key(key) if isinstance(key, Ed25519PublicKey) else None
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        cluster_id=names.cluster_of(cert.subject),
        node_address=address,
        roles=roles,
        serial=cert.serial_number,
        not_before=from_datetime(cert.not_valid_before_utc),
        not_after=from_datetime(cert.not_valid_after_utc),
        public_key=raw,
        is_ca=is_ca,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


class CrlFile:
    """A CRL file that is re-read when it changes (``avrs cert revoke`` rewrites it atomically).

    Calling the object returns the current CRL. A file that vanishes or is garbled after it was
    loaded raises :class:`CrlError`: revocation must fail closed.
    """

    __slots__ = ("_crl", "_stamp", "path")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._crl: x509.CertificateRevocationList | None = None
        self()  # fail early on a missing or garbled file

    def __call__(self) -> x509.CertificateRevocationList:
        try:
            stat = self.path.stat()
        except OSError:
            raise CrlError(f"{self.path}: revocation list file is missing") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._crl is None or stamp != self._stamp:
            try:
                self._crl = pem.load_crl(self.path)
            except CredentialFileError as exc:
                raise CrlError(str(exc)) from None
            self._stamp = stamp
        return self._crl


class CertificateVerifier:
    """Verifies node certificates against one cluster CA and its revocation list."""

    __slots__ = ("_ca", "_ca_key", "_checked_crl", "_crl", "allowed_roles", "cluster_id")

    def __init__(
        self,
        ca_certificate: x509.Certificate,
        crl: CrlSource = None,
        *,
        allowed_roles: Role = Role.NONE,
    ) -> None:
        key = ca_certificate.public_key()
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the cluster CA certificate must have an Ed25519 key")
        cluster_id = names.cluster_of(ca_certificate.subject)
        if cluster_id is None:
            raise ValueError("the CA certificate has no cluster id (O=) in its subject")
        self._ca = ca_certificate
        self._ca_key = key
        self._crl = crl
        self._checked_crl: x509.CertificateRevocationList | None = None
        self.cluster_id = cluster_id
        self.allowed_roles = allowed_roles
        """When not NONE, a certificate must hold at least one of these roles."""

    @property
    def ca_certificate(self) -> x509.Certificate:
        return self._ca

    def current_crl(self) -> x509.CertificateRevocationList | None:
        """The revocation list in force, checked to be signed by the CA (raises :class:`CrlError`)."""
        crl = self._crl() if callable(self._crl) else self._crl
        if crl is None or crl is self._checked_crl:
            return crl
        if crl.issuer != self._ca.subject or not crl.is_signature_valid(self._ca_key):
            raise CrlError(
                f"revocation list issued by {crl.issuer.rfc4514_string()!r} is not signed by the "
                f"cluster CA of {self.cluster_id!r}; refusing to trust any certificate"
            )
        self._checked_crl = crl
        return crl

    def verify(
        self,
        certificate: bytes | x509.Certificate,
        *,
        now: float,
        public_key: bytes | None = None,
        allowed_roles: Role | None = None,
    ) -> CertificateInfo:
        """Verify ``certificate`` at ``now`` (POSIX seconds); bind it to ``public_key`` if given.

        Returns what the certificate says (address, roles) or raises a :class:`CertificateError`.
        """
        cert = parse_certificate(certificate)
        info = describe_certificate(cert)
        label = f"certificate {info.subject!r} (serial {info.serial:x})"
        if info.is_ca:
            raise CertificateMalformed(f"{label} is a CA certificate, not a node certificate")
        self._check_issuer(cert, label)
        if now < info.not_before:
            raise CertificateNotYetValid(
                f"{label} is not valid before {format_time(info.not_before)} "
                f"(now {format_time(now)})"
            )
        if now > info.not_after:
            raise CertificateExpired(
                f"{label} expired at {format_time(info.not_after)} (now {format_time(now)})"
            )
        self._check_revocation(cert, label)
        self._check_binding(info, label, public_key)
        required = self.allowed_roles if allowed_roles is None else allowed_roles
        if required and not info.roles & required:
            raise CertificateRoleError(
                f"{label} grants roles {format_roles(info.roles)!r}; "
                f"one of {format_roles(required)!r} is required"
            )
        return info

    def verify_peer(self, peer: PeerIdentity, *, now: float) -> CertificateInfo:
        """Verify the certificate a handshake peer presented, bound to its proven identity key."""
        if peer.certificate is None:
            raise CertificateMissing(
                f"peer {peer.address} presented no certificate; the cluster "
                f"{self.cluster_id!r} requires one issued by its CA"
            )
        return self.verify(peer.certificate, now=now, public_key=peer.public_key)

    def as_peer_verifier(
        self,
        clock: Clock = time.time,
        on_verified: Callable[[PeerIdentity, CertificateInfo], None] | None = None,
    ) -> PeerVerifier:
        """This verifier as a ``StreamConfig.peer_verifier`` (see :func:`make_peer_verifier`)."""

        def verify_peer(peer: PeerIdentity) -> None:
            info = self.verify_peer(peer, now=clock())
            if on_verified is not None:
                on_verified(peer, info)

        return verify_peer

    def _check_issuer(self, cert: x509.Certificate, label: str) -> None:
        try:
            cert.verify_directly_issued_by(self._ca)
        except ValueError:
            raise CertificateUntrusted(
                f"{label} was issued by {cert.issuer.rfc4514_string()!r}, not by the cluster CA "
                f"{self._ca.subject.rfc4514_string()!r}"
            ) from None
        except (InvalidSignature, TypeError):
            raise CertificateUntrusted(
                f"{label} names the cluster CA as issuer but its signature does not verify with "
                f"the CA key (forged, altered, or signed by another CA of the same name)"
            ) from None

    def _check_revocation(self, cert: x509.Certificate, label: str) -> None:
        crl = self.current_crl()
        if crl is None:
            return
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            reason = revocation_reason(entry)
            when = format_time(from_datetime(entry.revocation_date_utc))
            raise CertificateRevoked(
                f"{label} was revoked at {when}" + (f" ({reason})" if reason else "")
            )

    def _check_binding(self, info: CertificateInfo, label: str, public_key: bytes | None) -> None:
        if info.public_key is None:
            raise CertificateMalformed(f"{label} does not hold an Ed25519 key")
        own_address = NodeAddress.from_public_key(info.public_key)
        if info.cluster_id != self.cluster_id:
            raise CertificateUntrusted(
                f"{label} is for cluster {info.cluster_id!r}, not {self.cluster_id!r}"
            )
        if info.node_address is not None and info.node_address != own_address:
            raise CertificateMalformed(
                f"{label} names node {info.node_address} but its key is node {own_address}"
            )
        if public_key is not None and public_key != info.public_key:
            raise CertificateKeyMismatch(
                f"{label} belongs to node {own_address}, but the peer proved node "
                f"{NodeAddress.from_public_key(public_key)} in the handshake"
            )


def make_peer_verifier(
    ca_certificate: x509.Certificate,
    crl: CrlSource = None,
    clock: Clock = time.time,
    *,
    allowed_roles: Role = Role.NONE,
    on_verified: Callable[[PeerIdentity, CertificateInfo], None] | None = None,
) -> PeerVerifier:
    """A ``StreamConfig.peer_verifier`` that requires a certificate from the cluster CA.

    It raises a :class:`~.errors.CertificateError` naming the failed check; ``on_verified`` (if
    given) receives each accepted peer with its certificate facts (roles, address) so the node can
    remember them.
    """
    verifier = CertificateVerifier(ca_certificate, crl, allowed_roles=allowed_roles)
    return verifier.as_peer_verifier(clock, on_verified)


__all__ = [
    "CertificateError",
    "CertificateInfo",
    "CertificateVerifier",
    "CrlFile",
    "CrlSource",
    "describe_certificate",
    "make_peer_verifier",
    "parse_certificate",
]
