"""The cluster certificate authority. The cluster host holds it and signs node certificates.

A CA directory holds ``ca.crt`` (public), ``ca.key`` (secret, mode 0600) and ``crl.pem`` (the
revocation list, re-signed on every revocation).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from dapsdk.stream.identity import NodeAddress

from . import names, pem
from .common import to_datetime, validate_cluster_id
from .errors import CredentialFileError
from .roles import Role

CA_CERT_FILE: Final = "ca.crt"
CA_KEY_FILE: Final = "ca.key"
CRL_FILE: Final = "crl.pem"

DEFAULT_CA_DAYS: Final = 3650
DEFAULT_NODE_DAYS: Final = 365
#: How long a CRL claims to be current (its ``nextUpdate``); it is re-signed on every revocation.
DEFAULT_CRL_DAYS: Final = 365
#: Node certificates start this many seconds before issue, to tolerate clock skew between machines
#: (certificate authorities commonly backdate by minutes to an hour).
BACKDATE_SECONDS: Final = 300
_DAY: Final = 86400


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _as_public_key(key: bytes | Ed25519PublicKey) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    if len(key) != 32:
        raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(key)}")
    return Ed25519PublicKey.from_public_bytes(key)


@dataclass(frozen=True, slots=True)
class CaPaths:
    """Where the files of a CA directory are."""

    directory: Path

    @property
    def certificate(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def key(self) -> Path:
        return self.directory / CA_KEY_FILE

    @property
    def crl(self) -> Path:
        return self.directory / CRL_FILE


class ClusterCA:
    """An Ed25519 CA whose self-signed certificate names the cluster (``O=<cluster_id>``)."""

    __slots__ = ("certificate", "cluster_id", "key")

    def __init__(self, key: Ed25519PrivateKey, certificate: x509.Certificate) -> None:
        if pem.raw_public_key(key.public_key()) != _raw_cert_key(certificate):
            raise ValueError("CA private key does not belong to the CA certificate")
        cluster_id = names.cluster_of(certificate.subject)
        if cluster_id is None:
            raise ValueError("CA certificate has no cluster id (O=) in its subject")
        self.key = key
        self.certificate = certificate
        self.cluster_id = cluster_id

    @classmethod
    def create(
        cls,
        cluster_id: str,
        *,
        now: float,
        days: int = DEFAULT_CA_DAYS,
        key: Ed25519PrivateKey | None = None,
    ) -> ClusterCA:
        """A new CA for ``cluster_id``, valid ``days`` from ``now`` (POSIX seconds)."""
        validate_cluster_id(cluster_id)
        if days < 1:
            raise ValueError(f"CA validity must be at least 1 day, got {days}")
        key = key or Ed25519PrivateKey.generate()
        public = key.public_key()
        subject = names.ca_subject(cluster_id)
        start = to_datetime(now - BACKDATE_SECONDS)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(to_datetime(now + days * _DAY))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        return cls(key, builder.sign(key, None))

    @classmethod
    def load(cls, directory: str | Path) -> ClusterCA:
        """Load ``ca.crt`` and ``ca.key`` from a CA directory."""
        paths = CaPaths(Path(directory))
        if not paths.directory.is_dir():
            raise CredentialFileError(paths.directory, "CA directory does not exist")
        certificate = pem.load_certificate(paths.certificate)
        key = pem.load_private_key(paths.key)
        try:
            return cls(key, certificate)
        except ValueError as exc:
            raise CredentialFileError(paths.directory, str(exc)) from None

    def save(self, directory: str | Path, *, now: float, overwrite: bool = False) -> CaPaths:
        """Write ``ca.crt``, ``ca.key`` (0600) and an empty ``crl.pem``. Refuses to overwrite."""
        paths = CaPaths(Path(directory))
        paths.directory.mkdir(parents=True, exist_ok=True)
        if not overwrite:
            for existing in (paths.certificate, paths.key):
                if existing.exists():
                    raise CredentialFileError(existing, "already exists; not overwriting a CA")
        pem.save_certificate(paths.certificate, self.certificate)
        pem.save_private_key(paths.key, self.key)
        pem.save_crl(paths.crl, self.make_crl((), now=now))
        return paths

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def issue(
        self,
        public_key: bytes | Ed25519PublicKey,
        roles: Role,
        *,
        now: float,
        days: int = DEFAULT_NODE_DAYS,
        serial: int | None = None,
    ) -> x509.Certificate:
        """A node certificate binding ``public_key`` (the node's Ed25519 identity key, hence its
        node address) to ``roles`` in this cluster, valid ``days`` from ``now``."""
        if days < 1:
            raise ValueError(f"certificate validity must be at least 1 day, got {days}")
        if not 0 < int(roles) <= 0xFFFF:
            raise ValueError(f"roles must be a non-empty u16 bitmask, got {int(roles)!r}")
        key = _as_public_key(public_key)
        address = NodeAddress.from_public_key(pem.raw_public_key(key))
        not_after = min(to_datetime(now + days * _DAY), self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(names.node_subject(address, self.cluster_id))
            .issuer_name(self.certificate.subject)
            .public_key(key)
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(to_datetime(now - BACKDATE_SECONDS))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(names.node_uris(address, roles)), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.public_key),
                critical=False,
            )
        )
        return builder.sign(self.key, None)

    def make_crl(
        self,
        revoked: Iterable[x509.RevokedCertificate],
        *,
        now: float,
        number: int = 1,
        days: int = DEFAULT_CRL_DAYS,
    ) -> x509.CertificateRevocationList:
        """A CRL listing ``revoked``, signed by this CA."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(to_datetime(now))
            .next_update(to_datetime(now + days * _DAY))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.public_key),
                critical=False,
            )
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self.key, None)

    def revoke(
        self,
        target: x509.Certificate | int,
        *,
        now: float,
        crl: x509.CertificateRevocationList | None = None,
        reason: x509.ReasonFlags | None = None,
    ) -> x509.CertificateRevocationList:
        """A new CRL: the entries of ``crl`` plus ``target`` (a certificate or a serial number).

        Revoking what is already revoked returns an equivalent re-signed CRL. A certificate that this
        CA did not issue is refused with ``ValueError``.
        """
        if isinstance(target, x509.Certificate):
            if target.issuer != self.certificate.subject:
                raise ValueError(
                    f"certificate was issued by {target.issuer.rfc4514_string()!r}, "
                    f"not by this CA ({self.certificate.subject.rfc4514_string()!r})"
                )
            serial = target.serial_number
        else:
            serial = target
        entries: list[x509.RevokedCertificate] = []
        number = 1
        if crl is not None:
            if not crl.is_signature_valid(self.public_key):
                raise ValueError("the existing CRL is not signed by this CA")
            entries = list(crl)
            number = _crl_number(crl) + 1
        if all(entry.serial_number != serial for entry in entries):
            entry_builder = (
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(to_datetime(now))
            )
            if reason is not None:
                entry_builder = entry_builder.add_extension(x509.CRLReason(reason), critical=False)
            entries.append(entry_builder.build())
        return self.make_crl(entries, now=now, number=number)


def _raw_cert_key(certificate: x509.Certificate) -> bytes | None:
    key = certificate.public_key()
    return pem.raw_public_key(key) if isinstance(key, Ed25519PublicKey) else None


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def revocation_reason(entry: x509.RevokedCertificate) -> str | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except x509.ExtensionNotFound:
        return None


def revocation_time(entry: x509.RevokedCertificate) -> datetime.datetime:
    return entry.revocation_date_utc
