"""Certificates: issue with the cluster CA, verify each refusal, the peer verifier, the files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from authkit import DAY, NOW, der
from cryptography import x509

from dapsdk.services.auth import (
    CertificateExpired,
    CertificateKeyMismatch,
    CertificateMalformed,
    CertificateMissing,
    CertificateNotYetValid,
    CertificateRevoked,
    CertificateRoleError,
    CertificateUntrusted,
    CertificateVerifier,
    ClusterCA,
    CredentialFileError,
    CrlError,
    CrlFile,
    Role,
    describe_certificate,
    load_certificate,
    load_crl,
    load_private_key,
    load_public_key,
    make_peer_verifier,
    save_crl,
)
from dapsdk.stream.config import PeerIdentity, StreamConfig
from dapsdk.stream.identity import NodeIdentity


def test_issued_certificate_carries_cluster_address_roles(ca: ClusterCA) -> None:
    node = NodeIdentity.generate()
    cert = ca.issue(node.public_key, Role.SERVER | Role.OPERATOR, now=NOW, days=10)
    info = describe_certificate(cert)
    assert info.cluster_id == "main_cluster"
    assert info.node_address == node.address
    assert info.roles == Role.SERVER | Role.OPERATOR
    assert info.public_key == node.public_key
    assert not info.is_ca
    assert info.not_after - NOW == 10 * DAY
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    values = uris.get_values_for_type(x509.UniformResourceIdentifier)
    assert values == [f"avrs:node={node.address}", "avrs:roles=0x0104"]
    assert describe_certificate(ca.certificate).is_ca


def test_verify_accepts_and_binds(ca: ClusterCA, server_peer: PeerIdentity) -> None:
    verifier = CertificateVerifier(ca.certificate)
    info = verifier.verify_peer(server_peer, now=NOW + DAY)
    assert info.node_address == server_peer.address
    assert info.roles == Role.SERVER


def test_certificate_of_another_key_refused(ca: ClusterCA, server_peer: PeerIdentity) -> None:
    impostor = NodeIdentity.generate()
    stolen = PeerIdentity(impostor.public_key, impostor.address, server_peer.certificate)
    with pytest.raises(CertificateKeyMismatch, match=f"peer proved node {impostor.address}"):
        CertificateVerifier(ca.certificate).verify_peer(stolen, now=NOW)


def test_revoked_refused(ca: ClusterCA, server: NodeIdentity) -> None:
    cert = ca.issue(server.public_key, Role.SERVER, now=NOW)
    other = ca.issue(NodeIdentity.generate().public_key, Role.CLIENT, now=NOW)
    crl = ca.revoke(cert, now=NOW + 10, reason=x509.ReasonFlags.key_compromise)
    verifier = CertificateVerifier(ca.certificate, crl)
    with pytest.raises(CertificateRevoked, match=r"revoked at .*keyCompromise"):
        verifier.verify(der(cert), now=NOW + 20, public_key=server.public_key)
    verifier.verify(der(other), now=NOW + 20)  # others stay valid
    again = ca.revoke(other, now=NOW + 30, crl=crl)
    assert {entry.serial_number for entry in again} == {cert.serial_number, other.serial_number}
    assert len(list(ca.revoke(other, now=NOW + 40, crl=again))) == 2  # idempotent


def test_expired_and_not_yet_valid_refused(ca: ClusterCA, server: NodeIdentity) -> None:
    cert = ca.issue(server.public_key, Role.SERVER, now=NOW, days=1)
    verifier = CertificateVerifier(ca.certificate)
    verifier.verify(cert, now=NOW + DAY - 1)
    with pytest.raises(CertificateExpired, match="expired at"):
        verifier.verify(cert, now=NOW + DAY + 1)
    with pytest.raises(CertificateNotYetValid, match="not valid before"):
        verifier.verify(cert, now=NOW - 3600)


def test_wrong_ca_refused(ca: ClusterCA, server: NodeIdentity) -> None:
    other_cluster = ClusterCA.create("other_cluster", now=NOW)
    cert = other_cluster.issue(server.public_key, Role.SERVER, now=NOW)
    with pytest.raises(CertificateUntrusted, match="not by the cluster CA"):
        CertificateVerifier(ca.certificate).verify(cert, now=NOW)


def test_ca_of_same_name_refused(ca: ClusterCA, server: NodeIdentity) -> None:
    impostor_ca = ClusterCA.create("main_cluster", now=NOW)  # same subject, another key
    cert = impostor_ca.issue(server.public_key, Role.HOST, now=NOW)
    with pytest.raises(CertificateUntrusted, match="signature does not verify"):
        CertificateVerifier(ca.certificate).verify(cert, now=NOW)


def test_garbage_and_ca_certificates_refused(ca: ClusterCA) -> None:
    verifier = CertificateVerifier(ca.certificate)
    with pytest.raises(CertificateMalformed, match="does not parse"):
        verifier.verify(b"\x30\x03garbage", now=NOW)
    with pytest.raises(CertificateMalformed, match="is a CA certificate"):
        verifier.verify(ca.certificate, now=NOW)


def test_roles_required(ca: ClusterCA, server_peer: PeerIdentity) -> None:
    verifier = CertificateVerifier(ca.certificate, allowed_roles=Role.HOST | Role.OPERATOR)
    with pytest.raises(CertificateRoleError, match="'server'; one of 'host,operator'"):
        verifier.verify_peer(server_peer, now=NOW)


def test_crl_signed_by_another_ca_refused(ca: ClusterCA, server_peer: PeerIdentity) -> None:
    forged = ClusterCA.create("main_cluster", now=NOW).make_crl((), now=NOW)
    with pytest.raises(CrlError, match="not signed by the cluster CA"):
        CertificateVerifier(ca.certificate, forged).verify_peer(server_peer, now=NOW)


def test_peer_verifier_for_stream_config(ca: ClusterCA, server_peer: PeerIdentity) -> None:
    seen: list[Role] = []
    clock_value = [NOW]
    verify = make_peer_verifier(
        ca.certificate,
        clock=lambda: clock_value[0],
        on_verified=lambda peer, info: seen.append(info.roles),
    )
    config = StreamConfig(peer_verifier=verify)
    assert config.peer_verifier is not None
    config.peer_verifier(server_peer)
    assert seen == [Role.SERVER]
    anonymous = PeerIdentity(server_peer.public_key, server_peer.address, None)
    with pytest.raises(CertificateMissing, match="presented no certificate"):
        verify(anonymous)
    clock_value[0] = NOW + 400 * DAY
    with pytest.raises(CertificateExpired):
        verify(server_peer)


def test_crl_file_is_reloaded(tmp_path: Path, ca: ClusterCA, server: NodeIdentity) -> None:
    path = tmp_path / "crl.pem"
    save_crl(path, ca.make_crl((), now=NOW))
    cert = ca.issue(server.public_key, Role.SERVER, now=NOW)
    peer = PeerIdentity(server.public_key, server.address, der(cert))
    verify = make_peer_verifier(ca.certificate, CrlFile(path), clock=lambda: NOW + 60)
    verify(peer)
    save_crl(path, ca.revoke(cert, now=NOW + 10, crl=load_crl(path)))
    os.utime(path, ns=(1, 1))  # a distinct mtime even on coarse file systems
    with pytest.raises(CertificateRevoked):
        verify(peer)
    path.unlink()
    with pytest.raises(CrlError, match="missing"):
        verify(peer)


def test_save_and_load_ca_directory(tmp_path: Path, ca: ClusterCA) -> None:
    paths = ca.save(tmp_path / "ca", now=NOW)
    assert paths.key.stat().st_mode & 0o777 == 0o600
    loaded = ClusterCA.load(tmp_path / "ca")
    assert loaded.cluster_id == "main_cluster"
    assert loaded.certificate == ca.certificate
    assert list(load_crl(paths.crl)) == []
    with pytest.raises(CredentialFileError, match="already exists"):
        ca.save(tmp_path / "ca", now=NOW)


def test_loaders_name_missing_and_garbled_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(CredentialFileError, match=r"nope\.crt: certificate file does not exist"):
        load_certificate(missing)
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    with pytest.raises(CredentialFileError, match=r"garbled\.pem: not a valid X\.509 certificate"):
        load_certificate(garbled)
    with pytest.raises(CredentialFileError, match=r"garbled\.pem: not a valid PEM private key"):
        load_private_key(garbled)
    with pytest.raises(CredentialFileError, match="not a valid certificate revocation list"):
        load_crl(garbled)
    with pytest.raises(CredentialFileError, match="is a directory"):
        load_public_key(tmp_path)
    with pytest.raises(CredentialFileError, match="CA directory does not exist"):
        ClusterCA.load(tmp_path / "no-ca")


def test_loaders_refuse_other_key_types(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CredentialFileError, match="is not an Ed25519 private key"):
        load_private_key(path)


def test_issue_refuses_bad_arguments(ca: ClusterCA) -> None:
    key = NodeIdentity.generate().public_key
    with pytest.raises(ValueError, match="at least 1 day"):
        ca.issue(key, Role.SERVER, now=NOW, days=0)
    with pytest.raises(ValueError, match="non-empty u16"):
        ca.issue(key, Role.NONE, now=NOW)
    with pytest.raises(ValueError, match="32 bytes"):
        ca.issue(b"short", Role.SERVER, now=NOW)
    with pytest.raises(ValueError, match="cluster id"):
        ClusterCA.create("bad cluster!", now=NOW)
    foreign = ClusterCA.create("x", now=NOW).issue(key, Role.SERVER, now=NOW)
    with pytest.raises(ValueError, match="not by this CA"):
        ca.revoke(foreign, now=NOW)


def test_node_certificate_never_outlives_ca(ca: ClusterCA) -> None:
    cert = ca.issue(NodeIdentity.generate().public_key, Role.SERVER, now=NOW, days=100_000)
    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_fingerprint_is_the_usual_one(ca: ClusterCA) -> None:
    import hashlib

    assert (
        describe_certificate(ca.certificate).fingerprint_sha256
        == hashlib.sha256(der(ca.certificate)).hexdigest()
    )
