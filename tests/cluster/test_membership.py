"""Host-signed membership records: only a CA-certified HOST can make them."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from dapsdk.avrs.constants import Role
from dapsdk.avrs.signing import AvrsSigner
from dapsdk.services.auth import CertificateVerifier, ClusterCA
from dapsdk.services.membership import (
    MembershipRecord,
    RecordRefused,
    RecordVerifier,
    sign_record,
)

NOW = time.time()


def _cert(ca: ClusterCA, signer: AvrsSigner, roles: Role) -> bytes:
    return ca.issue(signer.public_key, roles, now=NOW).public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def ca() -> ClusterCA:
    return ClusterCA.create("c1", now=NOW)


def test_host_signed_record_verifies(ca: ClusterCA) -> None:
    host = AvrsSigner.generate()
    member = AvrsSigner.generate().identity
    blob = sign_record(
        MembershipRecord("c1", member, Role.SERVER, NOW), host, _cert(ca, host, Role.HOST)
    )
    record = RecordVerifier("c1", CertificateVerifier(ca.certificate)).verify(blob, NOW)
    assert (record.member, record.roles, record.issuer) == (member, Role.SERVER, host.identity)


def test_records_without_the_hosts_signature_are_refused(ca: ClusterCA) -> None:
    verifier = RecordVerifier("c1", CertificateVerifier(ca.certificate))
    host = AvrsSigner.generate()
    member = AvrsSigner.generate()
    record = MembershipRecord("c1", member.identity, Role.HOST, NOW)
    # a member with a valid SERVER certificate signs its own promotion
    with pytest.raises(RecordRefused, match="HOST role"):
        verifier.verify(sign_record(record, member, _cert(ca, member, Role.SERVER)), NOW)
    # a key signs with someone else's HOST certificate
    with pytest.raises(RecordRefused, match="does not bind"):
        verifier.verify(sign_record(record, member, _cert(ca, host, Role.HOST)), NOW)
    # a HOST certificate from another CA
    other = ClusterCA.create("c1", now=NOW)
    with pytest.raises(RecordRefused, match="host certificate refused"):
        verifier.verify(sign_record(record, host, _cert(other, host, Role.HOST)), NOW)
    # a tampered body
    good = bytearray(sign_record(record, host, _cert(ca, host, Role.HOST)))
    good[10] ^= 1
    with pytest.raises(RecordRefused):
        verifier.verify(bytes(good), NOW)
    # garbage
    for junk in (b"", b"\xff" * 8, b"{}"):
        with pytest.raises(RecordRefused):
            verifier.verify(junk, NOW)
    # another cluster's record
    with pytest.raises(RecordRefused, match="cluster"):
        verifier.verify(
            sign_record(
                MembershipRecord("c2", member.identity, Role.CLIENT, NOW),
                host,
                _cert(ca, host, Role.HOST),
            ),
            NOW,
        )
