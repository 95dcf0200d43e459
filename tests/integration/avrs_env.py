"""A real AVRS deployment in a temporary directory: a cluster CA, a host/server node with its
certificate and key, config files for the server and for clients, and access tokens (valid,
expired, forged). Everything is generated fresh at the real current time."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dapsdk.avrs import AvrsError, ContentFlag
from dapsdk.node.config import load_node_config
from dapsdk.node.wiring import AvrsNode, build_node
from dapsdk.services.auth import (
    ClusterCA,
    Role,
    TokenGrants,
    TokenIssuer,
    save_certificate,
    save_private_key,
)
from dapsdk.services.avrs_client import AvrsClient
from dapsdk.services.avrs_cluster import cluster_guuid, content_guuid
from dapsdk.stream.identity import NodeIdentity

CLUSTER = "main_cluster"
CLUSTER_ID = cluster_guuid(CLUSTER)


class AvrsEnv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.now = time.time()
        self.ca = ClusterCA.create(CLUSTER, now=self.now)
        self.ca.save(root / "ca", now=self.now)
        self.server = self.identity("server", Role.HOST | Role.SERVER)
        self.issuer = TokenIssuer(self.server, Role.HOST | Role.SERVER, CLUSTER)

    def identity(self, name: str, roles: Role | None = None) -> NodeIdentity:
        """A key file ``name.key`` and, with ``roles``, a certificate ``name.crt`` from the CA."""
        identity = NodeIdentity.generate()
        save_private_key(self.root / f"{name}.key", identity.private_key)
        if roles is not None:
            cert = self.ca.issue(identity.public_key, roles, now=self.now, days=2)
            save_certificate(self.root / f"{name}.crt", cert)
        return identity

    def server_config(self, extra: str = "") -> Path:
        path = self.root / "server.cfg"
        path.write_text(
            "[avrs]\nrole = host,server\ncluster_id = main_cluster\n"
            "listen = tcp://127.0.0.1:0\n"
            "certificate_file = server.crt\nprivate_key_file = server.key\n"
            "ca_certificate_file = ca/ca.crt\ntoken_issuers = server.crt\n" + extra
        )
        return path

    def client_config(self, name: str, host_url: str, *, certificate: bool = False) -> Path:
        """A client node config; with ``certificate`` it presents ``name.crt``."""
        lines = [
            "[avrs]",
            "role = server" if certificate else "role = client",
            f"host_address = {host_url}",
            "ca_certificate_file = ca/ca.crt",
        ]
        if certificate:
            lines += [f"certificate_file = {name}.crt", f"private_key_file = {name}.key"]
        else:
            lines.append(f"identity_file = {name}.key")
        path = self.root / f"{name}.cfg"
        path.write_text("\n".join(lines) + "\n")
        return path

    def token(
        self,
        subject: str,
        *,
        content: str | tuple[str, ...] = "*",
        publish: bool = False,
        role: Role = Role.CLIENT,
        issued: float | None = None,
        ttl: float = 3600.0,
    ) -> str:
        grants = TokenGrants(
            role=role,
            subscribe=True,
            publish=publish,
            content_ids="*" if content == "*" else tuple(content),
        )
        return self.issuer.issue(
            subject, grants, now=self.now if issued is None else issued, ttl=ttl
        )

    def forged_token(self, subject: str) -> str:
        """A well-formed token naming the trusted issuer, signed by another key."""
        attacker = NodeIdentity.generate()
        claims = {
            "iss": str(self.server.address),
            "sub": subject,
            "aud": CLUSTER,
            "iat": int(self.now),
            "nbf": int(self.now),
            "exp": int(self.now + 3600),
            "jti": "forged",
            "avrs": TokenGrants(role=Role.HOST, subscribe=True, content_ids="*").to_claim(),
        }
        return jwt.encode(
            claims,
            attacker.private_key,
            algorithm="EdDSA",
            headers={"kid": str(self.server.address), "typ": "JWT"},
        )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


async def start_publisher(
    env: AvrsEnv, url: str, content: str, *, name: str = "camera", title: str = "Lecture"
) -> tuple[AvrsNode, AvrsClient, int]:
    """A publisher node with a SERVER certificate: joins with the certificate, declares
    ``content`` (flows "av"), attaches it for input and starts. Returns (node, client, handle)."""
    env.identity(name, Role.SERVER)
    node = build_node(load_node_config(env.client_config(name, url, certificate=True)))
    await node.start()
    client = await node.connect_client()
    await client.open()
    reply = await client.join(CLUSTER_ID, certificate=(env.root / f"{name}.crt").read_bytes())
    assert reply.code == AvrsError.SUCCESS, reply
    content_id = content_guuid(content)
    await client.add_content(CLUSTER_ID, content_id, "av", codecs=("h264", "aac"), title=title)
    handle = await client.attach(CLUSTER_ID, content_id, ContentFlag.STREAMING_IN)
    await client.start()
    return node, client, handle
