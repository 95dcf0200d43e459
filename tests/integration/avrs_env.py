"""A real AVRS deployment in a temporary directory: a cluster CA, a host/server node with its
certificate and key, config files for the server and for clients, and access tokens (valid,
expired, forged). Everything is generated fresh at the real current time."""

from __future__ import annotations

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dapsdk.node.sandbox import DEFAULT_CLUSTER, Sandbox
from dapsdk.node.wiring import AvrsNode
from dapsdk.services.auth import (
    Role,
    TokenGrants,
)
from dapsdk.services.avrs_client import AvrsClient
from dapsdk.services.avrs_cluster import cluster_guuid
from dapsdk.stream.identity import NodeIdentity

CLUSTER = DEFAULT_CLUSTER
CLUSTER_ID = cluster_guuid(CLUSTER)


class AvrsEnv(Sandbox):
    """The embedded deployment of ``dapsdk.node.sandbox`` plus what only tests need."""

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
    return await env.start_publisher(url, content, name=name, title=title)
