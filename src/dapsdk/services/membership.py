"""Membership records signed by the cluster host, so a registry need not be trusted.

The host signs, with its node identity (Ed25519, the AVRS signing of :mod:`dapsdk.avrs.signing`),
one record per member (identity, roles, issue time) and one revocation per removed member, and
attaches its own X.509 certificate from the cluster CA. Every node checks, before it believes a
record it read from the registry:

1. the blob parses and the signature verifies over the body;
2. the attached certificate was issued by the cluster CA (``ca_certificate_file``), is valid now,
   names this cluster, carries the HOST role, and binds the key that signed;
3. the record names this cluster.

So someone who can write to Redis, but holds no HOST certificate and key, can neither add a
member nor raise a role: a record written by hand is ignored. A node keeps the newest record per
member it has accepted and never un-revokes a member it saw revoked (an attacker who replays an
older record gains nothing).

Wire form (stored as is in the registry)::

    u32 body_len | body (canonical JSON) | u16 sign_len | SIGN blob (§3) | certificate DER
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from dapsdk.avrs.constants import Role
from dapsdk.avrs.errors import AvrsProtocolError
from dapsdk.avrs.signing import AvrsSigner, decode_sign_blob, identity_of, verify_blob

from .auth import AuthError, CertificateVerifier

#: Largest record accepted (a certificate is about 600 bytes).
MAX_RECORD_SIZE: Final = 32 * 1024
_VERSION: Final = 1


class RecordRefused(Exception):
    """A membership record or revocation failed a check; the message says which."""


@dataclass(frozen=True, slots=True)
class MembershipRecord:
    cluster: str
    member: bytes
    """32-byte identity."""
    roles: Role
    issued: float
    """Wall clock of issue; a newer record replaces an older one."""
    revoked: bool = False
    issuer: bytes = b""
    """Identity of the host that signed (filled in by :func:`verify_record`)."""

    def body(self) -> bytes:
        return json.dumps(
            {
                "v": _VERSION,
                "cluster": self.cluster,
                "member": self.member.hex(),
                "roles": int(self.roles),
                "issued": self.issued,
                "revoked": self.revoked,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()


def sign_record(record: MembershipRecord, signer: AvrsSigner, certificate_der: bytes) -> bytes:
    """The stored form of ``record``, signed by the host ``signer`` whose CA certificate is
    ``certificate_der``."""
    body = record.body()
    blob = signer.sign_blob(body).encode()
    return (
        struct.pack("<I", len(body)) + body + struct.pack("<H", len(blob)) + blob + certificate_der
    )


class RecordVerifier:
    """Checks records for one cluster against the cluster CA (caches verified host
    certificates by fingerprint)."""

    def __init__(self, cluster: str, ca: CertificateVerifier) -> None:
        self.cluster = cluster
        self.ca = ca
        self._hosts: dict[bytes, bytes] = {}
        """sha256(certificate DER) -> identity of the HOST key it binds."""

    def verify(self, data: bytes, now: float) -> MembershipRecord:
        if len(data) > MAX_RECORD_SIZE or len(data) < 4:
            raise RecordRefused("record size out of bounds")
        (body_len,) = struct.unpack_from("<I", data)
        if 4 + body_len + 2 > len(data):
            raise RecordRefused("truncated record")
        body = data[4 : 4 + body_len]
        (sign_len,) = struct.unpack_from("<H", data, 4 + body_len)
        sign_start = 4 + body_len + 2
        if sign_start + sign_len > len(data):
            raise RecordRefused("truncated signature")
        try:
            blob = decode_sign_blob(data[sign_start : sign_start + sign_len])
        except AvrsProtocolError as exc:
            raise RecordRefused(f"bad signature blob: {exc.reason}") from None
        if not verify_blob(blob, body):
            raise RecordRefused("signature does not verify")
        host = self._host_identity(data[sign_start + sign_len :], now)
        if host != blob.identity:
            raise RecordRefused("the attached host certificate does not bind the signing key")
        try:
            obj = json.loads(body)
            record = MembershipRecord(
                cluster=str(obj["cluster"]),
                member=bytes.fromhex(obj["member"]),
                roles=Role(int(obj["roles"]) & 0xFFFF),
                issued=float(obj["issued"]),
                revoked=bool(obj["revoked"]),
                issuer=host,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordRefused(f"malformed record body: {exc}") from None
        if obj.get("v") != _VERSION:
            raise RecordRefused(f"unknown record version {obj.get('v')!r}")
        if record.cluster != self.cluster:
            raise RecordRefused(f"record is for cluster {record.cluster!r}")
        if len(record.member) != 32:
            raise RecordRefused("member identity must be 32 bytes")
        return record

    def _host_identity(self, der: bytes, now: float) -> bytes:
        fingerprint = hashlib.sha256(der).digest()
        cached = self._hosts.get(fingerprint)
        if cached is not None:
            return cached
        try:
            info = self.ca.verify(x509.load_der_x509_certificate(der), now=now)
        except (AuthError, ValueError) as exc:
            raise RecordRefused(f"host certificate refused: {exc}") from None
        if info.cluster_id not in (None, self.cluster):
            raise RecordRefused(f"host certificate is for cluster {info.cluster_id!r}")
        if not info.roles & Role.HOST or info.public_key is None:
            raise RecordRefused("the signer's certificate does not carry the HOST role")
        identity = identity_of(info.public_key)
        if len(self._hosts) < 64:
            self._hosts[fingerprint] = identity
        return identity
