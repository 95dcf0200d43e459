"""`avrs cert` and `avrs token` through click's CliRunner; the files they write are accepted by
the verifiers (real time here: the commands read the clock, certificates are backdated)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dapsdk.cli.cert import cert
from dapsdk.cli.main import _SUBCOMMANDS
from dapsdk.cli.token import token
from dapsdk.services.auth import (
    AdminAuthenticator,
    AdminAuthError,
    CertificateRevoked,
    CertificateVerifier,
    ClusterCA,
    CrlFile,
    Role,
    TokenVerifier,
    TrustedIssuer,
    describe_certificate,
    load_certificate,
    load_private_key,
    load_totp_secrets,
    make_peer_verifier,
    save_private_key,
    save_public_key,
)
from dapsdk.services.auth.pem import raw_public_key
from dapsdk.stream.config import PeerIdentity
from dapsdk.stream.identity import NodeIdentity


def run(group: object, *args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(group, [str(a) for a in args])  # type: ignore[arg-type]
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    run(cert, "ca", "--cluster-id", "main_cluster", "--out", tmp_path / "ca")
    return tmp_path / "ca"


def peer_of(key_file: Path, cert_file: Path) -> PeerIdentity:
    identity = NodeIdentity(load_private_key(key_file))
    return PeerIdentity(identity.public_key, identity.address, cert_file.read_bytes())


def test_registered_in_main() -> None:
    assert ("dapsdk.cli.cert", "cert") in _SUBCOMMANDS
    assert ("dapsdk.cli.token", "token") in _SUBCOMMANDS


def test_ca_issue_verify_revoke(tmp_path: Path, ca_dir: Path) -> None:
    assert {p.name for p in ca_dir.iterdir()} == {"ca.crt", "ca.key", "crl.pem"}
    assert (ca_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    again = run(cert, "ca", "--cluster-id", "main_cluster", "--out", ca_dir, ok=False)
    assert again.exit_code == 1 and "already exists" in again.output

    out = tmp_path / "nodes"
    result = run(
        cert, "issue", "--ca-dir", ca_dir, "--generate", "--roles", "server,operator",
        "--days", "30", "--out", out, "--name", "server",
    )  # fmt: skip
    assert "roles operator,server" in result.output
    ca = ClusterCA.load(ca_dir)
    crl = CrlFile(ca_dir / "crl.pem")
    verify = make_peer_verifier(ca.certificate, crl)
    server_peer = peer_of(out / "server.key", out / "server.crt")
    verify(server_peer)  # PEM bytes are accepted as well as DER

    ok = run(cert, "verify", "--ca", ca_dir / "ca.crt", "--crl", ca_dir / "crl.pem",
             "--node-key", out / "server.key", out / "server.crt")  # fmt: skip
    assert ok.output.startswith("OK: node ")

    run(cert, "revoke", "--ca-dir", ca_dir, "--reason", "key_compromise", out / "server.crt")
    with pytest.raises(CertificateRevoked, match="keyCompromise"):
        verify(server_peer)
    refused = run(cert, "verify", "--ca", ca_dir / "ca.crt", "--crl", ca_dir / "crl.pem",
                  out / "server.crt", ok=False)  # fmt: skip
    assert refused.exit_code == 1 and "CERT_REVOKED" in refused.output


def test_issue_for_an_existing_public_key(tmp_path: Path, ca_dir: Path) -> None:
    node = NodeIdentity.generate()
    save_public_key(tmp_path / "node.pub", node.private_key.public_key())
    run(cert, "issue", "--ca-dir", ca_dir, "--node-key", tmp_path / "node.pub", "--roles",
        "client", "--out", tmp_path)  # fmt: skip
    info = describe_certificate(load_certificate(tmp_path / "node.crt"))
    assert info.node_address == node.address and info.roles == Role.CLIENT
    assert not (tmp_path / "node.key").exists()
    verifier = CertificateVerifier(load_certificate(ca_dir / "ca.crt"))
    verifier.verify(load_certificate(tmp_path / "node.crt"), now=time.time(),
                    public_key=node.public_key)  # fmt: skip


def test_issue_usage_errors(tmp_path: Path, ca_dir: Path) -> None:
    both = run(cert, "issue", "--ca-dir", ca_dir, "--roles", "server", "--out", tmp_path, ok=False)
    assert both.exit_code == 2 and "exactly one of --node-key" in both.output
    bad = run(cert, "issue", "--ca-dir", ca_dir, "--generate", "--roles", "superuser",
              "--out", tmp_path, ok=False)  # fmt: skip
    assert bad.exit_code == 2 and "unknown role 'superuser'" in bad.output
    missing = run(cert, "issue", "--ca-dir", tmp_path / "nope", "--generate", "--roles", "server",
                  "--out", tmp_path, ok=False)  # fmt: skip
    assert missing.exit_code == 1 and "CA directory does not exist" in missing.output


def test_show(tmp_path: Path, ca_dir: Path) -> None:
    run(cert, "issue", "--ca-dir", ca_dir, "--generate", "--roles", "balancer", "--out", tmp_path)
    shown = json.loads(run(cert, "show", "--json", tmp_path / "node.crt").output)
    assert shown["type"] == "certificate" and shown["cluster_id"] == "main_cluster"
    assert shown["roles"] == "balancer" and shown["roles_mask"] == "0x0200"
    text = run(cert, "show", ca_dir / "ca.crt").output
    assert "is_ca: True" in text
    run(cert, "revoke", "--ca-dir", ca_dir, tmp_path / "node.crt")
    crl = json.loads(run(cert, "show", "--json", ca_dir / "crl.pem").output)
    assert crl["type"] == "crl" and crl["revoked"][0]["serial"] == shown["serial"]
    garbled = tmp_path / "garbled.crt"
    garbled.write_text("hello")
    result = run(cert, "show", garbled, ok=False)
    assert result.exit_code == 1 and "not a valid X.509 certificate" in result.output


def host_files(tmp_path: Path, ca_dir: Path, roles: str, name: str) -> tuple[Path, Path]:
    run(cert, "issue", "--ca-dir", ca_dir, "--generate", "--roles", roles, "--out", tmp_path,
        "--name", name)  # fmt: skip
    return tmp_path / f"{name}.key", tmp_path / f"{name}.crt"


def test_token_issue_and_verify(tmp_path: Path, ca_dir: Path) -> None:
    key, crt = host_files(tmp_path, ca_dir, "host", "host")
    jwt_text = run(
        token, "issue", "--key", key, "--cert", crt, "--subject", "viewer-1", "--subscribe",
        "--content", "lecture-1", "--content", "lecture-2", "--attr", "region=eu",
        "--attr", "tier=2", "--ttl", "600",
    ).output.strip()  # fmt: skip
    info = describe_certificate(load_certificate(crt))
    assert info.public_key is not None
    verifier = TokenVerifier([TrustedIssuer(info.public_key, info.roles)], "main_cluster")
    verified = verifier.verify(jwt_text, now=time.time(), subject="viewer-1")
    assert verified.grants.content_ids == ("lecture-1", "lecture-2")
    assert verified.grants.attributes == {"region": "eu", "tier": 2}
    assert verified.grants.subscribe and not verified.grants.publish

    report = json.loads(
        run(token, "verify", "--issuer-cert", crt, "--ca", ca_dir / "ca.crt", jwt_text).output
    )
    assert report["subject"] == "viewer-1" and report["role"] == "client"
    wrong = run(token, "verify", "--issuer-cert", crt, "--subject", "x", jwt_text, ok=False)
    assert wrong.exit_code == 1 and "TOKEN_WRONG_SUBJECT" in wrong.output


def test_operator_cannot_issue_host_tokens(tmp_path: Path, ca_dir: Path) -> None:
    key, crt = host_files(tmp_path, ca_dir, "operator", "op")
    refused = run(token, "issue", "--key", key, "--cert", crt, "--subject", "x", "--role", "host",
                  ok=False)  # fmt: skip
    assert refused.exit_code == 1 and "may not grant 'host'" in refused.output
    server_key, server_crt = host_files(tmp_path, ca_dir, "server", "srv")
    refused = run(token, "issue", "--key", server_key, "--cert", server_crt, "--subject", "x",
                  ok=False)  # fmt: skip
    assert "only a host or an operator may issue tokens" in refused.output
    mismatch = run(token, "issue", "--key", server_key, "--cert", crt, "--subject", "x", ok=False)
    assert "certificate is for node" in mismatch.output


def test_token_without_certificate(tmp_path: Path) -> None:
    node = NodeIdentity.generate()
    save_private_key(tmp_path / "host.key", node.private_key)
    usage = run(token, "issue", "--key", tmp_path / "host.key", "--subject", "x", ok=False)
    assert usage.exit_code == 2 and "--issuer-roles and --cluster-id" in usage.output
    jwt_text = run(token, "issue", "--key", tmp_path / "host.key", "--issuer-roles", "host",
                   "--cluster-id", "c1", "--subject", "x", "--publish", "--content", "*",
                   ).output.strip()  # fmt: skip
    verified = TokenVerifier([TrustedIssuer(node.public_key, Role.HOST)], "c1").verify(
        jwt_text, now=time.time()
    )
    assert verified.grants.content_ids == "*" and verified.grants.publish


def test_totp_enroll_and_admin(tmp_path: Path, ca_dir: Path) -> None:
    key, crt = host_files(tmp_path, ca_dir, "operator", "op")
    secrets = tmp_path / "totp.secrets"
    result = run(token, "totp-enroll", "--secrets", secrets, "--node-key", crt)
    assert "otpauth://totp/" in result.output
    assert secrets.stat().st_mode & 0o777 == 0o600
    identity = NodeIdentity(load_private_key(key))
    assert identity.address in load_totp_secrets(secrets)

    code = run(token, "totp-code", "--secrets", secrets, "--node", str(identity.address))
    admin = AdminAuthenticator(
        load_totp_secrets(secrets),
        certificate_verifier=CertificateVerifier(load_certificate(ca_dir / "ca.crt")),
    )
    peer = peer_of(key, crt)
    now = time.time()
    admin.authorize(peer, code.output.strip(), now=now, operation="member.approve")
    with pytest.raises(AdminAuthError, match="already used"):
        admin.authorize(peer, code.output.strip(), now=now, operation="member.approve")
    both = run(token, "totp-code", "--secrets", secrets, ok=False)
    assert both.exit_code == 2 and "exactly one of --node" in both.output
    other = NodeIdentity.generate().address
    missing = run(token, "totp-code", "--secrets", secrets, "--node", str(other), ok=False)
    assert "is not enrolled" in missing.output


def test_public_key_helper_matches_identity(tmp_path: Path, ca_dir: Path) -> None:
    key, crt = host_files(tmp_path, ca_dir, "host", "h")
    info = describe_certificate(load_certificate(crt))
    assert info.public_key == raw_public_key(load_private_key(key).public_key())
