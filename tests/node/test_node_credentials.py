"""From a config file to working security objects: identity, certificate, verifiers, admin."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dapsdk.node.config import ConfigError, load_node_config
from dapsdk.node.credentials import load_node_credentials
from dapsdk.services.auth import (
    CertificateKeyMismatch,
    ClusterCA,
    Role,
    TokenGrants,
    TokenIssuer,
    enroll_totp,
    save_certificate,
    save_crl,
    save_private_key,
    save_totp_secrets,
    totp_code,
)
from dapsdk.stream.config import PeerIdentity
from dapsdk.stream.identity import NodeIdentity

NOW = 1_750_000_000.0


class Cluster:
    """A CA directory, a host and a server with their files, and a config writer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = ClusterCA.create("main_cluster", now=NOW)
        self.ca.save(root / "ca", now=NOW)
        self.host = self.node("host", Role.HOST)
        self.server = self.node("server", Role.SERVER)

    def node(self, name: str, roles: Role, *, ca: ClusterCA | None = None) -> NodeIdentity:
        identity = NodeIdentity.generate()
        save_private_key(self.root / f"{name}.key", identity.private_key)
        certificate = (ca or self.ca).issue(identity.public_key, roles, now=NOW)
        save_certificate(self.root / f"{name}.crt", certificate)
        return identity

    def config(self, name: str, role: str, extra: str = "") -> Path:
        path = self.root / f"{name}.cfg"
        path.write_text(
            f"[avrs]\nrole = {role}\nhost_address = 127.0.0.1:8080\n"
            f"certificate_file = {name}.crt\nprivate_key_file = {name}.key\n"
            f"ca_certificate_file = ca/ca.crt\ncrl_file = ca/crl.pem\n{extra}"
        )
        return path


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def test_server_credentials_verify_peers(cluster: Cluster) -> None:
    creds = load_node_credentials(load_node_config(cluster.config("server", "server")), now=NOW)
    assert creds.identity.address == cluster.server.address
    assert creds.certificate is not None and creds.certificate_der is not None
    verify = creds.peer_verifier(clock=lambda: NOW)
    assert verify is not None
    host_cert = (cluster.root / "host.crt").read_bytes()
    verify(PeerIdentity(cluster.host.public_key, cluster.host.address, host_cert))
    with pytest.raises(CertificateKeyMismatch):
        verify(PeerIdentity(cluster.server.public_key, cluster.server.address, host_cert))
    overrides = creds.stream_overrides(clock=lambda: NOW)
    config = load_node_config(cluster.config("server", "server")).stream_config(**overrides)
    assert config.certificate == creds.certificate_der
    assert creds.token_verifier is None and creds.admin is None


def test_host_with_tokens_and_totp(cluster: Cluster) -> None:
    secret = enroll_totp("host").secret
    save_totp_secrets(cluster.root / "totp.secrets", {cluster.host.address: secret})
    path = cluster.config(
        "host", "host", "token_issuers = host.crt\ntotp_secret_file = totp.secrets\n"
    )
    creds = load_node_credentials(load_node_config(path), now=NOW)
    assert creds.token_verifier is not None and creds.admin is not None
    jwt_text = TokenIssuer(cluster.host, Role.HOST, "main_cluster").issue(
        "viewer", TokenGrants(subscribe=True, content_ids="*"), now=NOW
    )
    assert creds.token_verifier.verify(jwt_text, now=NOW).grants.subscribe
    peer = PeerIdentity(
        cluster.host.public_key, cluster.host.address, (cluster.root / "host.crt").read_bytes()
    )
    creds.admin.authorize(peer, totp_code(secret, now=NOW), now=NOW)


def test_certificate_problems_name_the_key(cluster: Cluster) -> None:
    # the certificate does not grant the configured role
    with pytest.raises(ConfigError, match=r"certificate_file = .*also asks for 'balancer'"):
        load_node_credentials(load_node_config(cluster.config("server", "server,balancer")),
                              now=NOW)  # fmt: skip
    # the certificate belongs to another key
    (cluster.root / "mixed.crt").write_bytes((cluster.root / "host.crt").read_bytes())
    (cluster.root / "mixed.key").write_bytes((cluster.root / "server.key").read_bytes())
    with pytest.raises(
        ConfigError,
        match=r"mixed\.cfg \[avrs\] certificate_file = '.*mixed\.crt': certificate belongs to node "
        r".*, but the key in private_key_file is node",
    ):
        load_node_credentials(load_node_config(cluster.config("mixed", "host")), now=NOW)
    # expired
    with pytest.raises(ConfigError, match=r"certificate_file = .*expired"):
        load_node_credentials(
            load_node_config(cluster.config("server", "server")), now=NOW + 400 * 86400
        )
    # revoked
    crl = cluster.ca.revoke(
        cluster.ca.issue(cluster.server.public_key, Role.SERVER, now=NOW), now=NOW
    )
    server_cert = cluster.root / "server.crt"
    serial = x509.load_pem_x509_certificate(server_cert.read_bytes()).serial_number
    save_crl(cluster.root / "ca" / "crl.pem", cluster.ca.revoke(serial, now=NOW, crl=crl))
    with pytest.raises(ConfigError, match=r"certificate_file = .*revoked"):
        load_node_credentials(load_node_config(cluster.config("server", "server")), now=NOW)


def test_wrong_ca_and_bad_issuers(cluster: Cluster) -> None:
    other = ClusterCA.create("main_cluster", now=NOW)
    cluster.node("stranger", Role.HOST, ca=other)
    with pytest.raises(ConfigError, match=r"certificate_file = '.*stranger\.crt'.*signature"):
        load_node_credentials(load_node_config(cluster.config("stranger", "host")), now=NOW)
    path = cluster.config("host", "host", "token_issuers = server.crt\n")
    with pytest.raises(ConfigError, match=r"token_issuers = .*only hosts and operators"):
        load_node_credentials(load_node_config(path), now=NOW)
    save_crl(cluster.root / "ca" / "crl.pem", other.make_crl((), now=NOW))
    with pytest.raises(ConfigError, match=r"crl_file = .*not signed by the cluster CA"):
        load_node_credentials(load_node_config(cluster.config("host", "host")), now=NOW)
    (cluster.root / "ca" / "crl.pem").write_text("garbage")
    with pytest.raises(ConfigError, match=r"crl_file = .*not a valid certificate revocation"):
        load_node_credentials(load_node_config(cluster.config("host", "host")), now=NOW)


def test_identity_file_created_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "client.cfg"
    path.write_text("[avrs]\nhost_address = h:1\nidentity_file = client.key\n")
    config = load_node_config(path)
    first = load_node_credentials(config, now=time.time())
    assert (tmp_path / "client.key").stat().st_mode & 0o777 == 0o600
    second = load_node_credentials(config, now=time.time())
    assert first.identity.address == second.identity.address
    assert first.peer_verifier() is None and first.certificate is None
    (tmp_path / "client.key").write_text("garbage")
    with pytest.raises(ConfigError, match=r"identity_file = .*not a valid PEM private key"):
        load_node_credentials(config, now=time.time())


def test_der_of_certificate(cluster: Cluster) -> None:
    creds = load_node_credentials(load_node_config(cluster.config("server", "server")), now=NOW)
    assert creds.certificate is not None
    assert creds.certificate_der == creds.certificate.public_bytes(Encoding.DER)
