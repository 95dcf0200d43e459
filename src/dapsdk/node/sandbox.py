"""An embedded AVRS deployment in a directory: a cluster CA, a host/server identity with its
certificate, INI files for the server and for clients, and access tokens, all generated at the
current time. ``avrs demo`` runs a whole cluster on it in one process; tests build on it too."""

from __future__ import annotations

import time
from pathlib import Path

from ..avrs import AvrsError, ContentFlag
from ..services.auth import (
    ClusterCA,
    Role,
    TokenGrants,
    TokenIssuer,
    save_certificate,
    save_private_key,
)
from ..services.avrs_client import AvrsClient
from ..services.avrs_cluster import cluster_guuid, content_guuid
from ..stream.identity import NodeIdentity
from .config import load_node_config
from .wiring import AvrsNode, build_node

DEFAULT_CLUSTER = "main_cluster"


class SandboxError(RuntimeError):
    """A step of the embedded deployment failed; the message names the step and the code."""


class Sandbox:
    def __init__(self, root: Path, cluster: str = DEFAULT_CLUSTER) -> None:
        self.root = root
        self.cluster = cluster
        self.cluster_id = cluster_guuid(cluster)
        self.now = time.time()
        self.ca = ClusterCA.create(cluster, now=self.now)
        self.ca.save(root / "ca", now=self.now)
        self.server = self.identity("server", Role.HOST | Role.SERVER)
        self.issuer = TokenIssuer(self.server, Role.HOST | Role.SERVER, cluster)

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
            f"[avrs]\nrole = host,server\ncluster_id = {self.cluster}\n"
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
            # role server would otherwise listen on the default tcp://0.0.0.0:8080
            lines += [
                f"certificate_file = {name}.crt",
                f"private_key_file = {name}.key",
                "listen = tcp://127.0.0.1:0",
            ]
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

    async def start_server(self, extra: str = "") -> AvrsNode:
        """The host/server node; ``extra`` lines are appended to its ``[avrs]`` section."""
        node = build_node(load_node_config(self.server_config(extra)))
        await node.start()
        return node

    async def start_client(self, name: str, url: str, *, certificate: bool = False) -> AvrsNode:
        if certificate:
            self.identity(name, Role.SERVER)
        else:
            self.identity(name)
        node = build_node(load_node_config(self.client_config(name, url, certificate=certificate)))
        await node.start()
        await node.wait_joined()
        return node

    async def start_publisher(
        self,
        url: str,
        content: str,
        *,
        name: str = "camera",
        title: str = "Lecture",
        flows: str = "av",
        codecs: tuple[str, ...] = ("h264", "aac"),
    ) -> tuple[AvrsNode, AvrsClient, int]:
        """A publisher node with a SERVER certificate: joins with the certificate, declares
        ``content`` (``flows``, default "av"), attaches it for input and starts. Returns (node,
        client, handle)."""
        node = await self.start_client(name, url, certificate=True)
        client = await node.connect_client()
        await client.open()
        reply = await client.join(
            self.cluster_id, certificate=(self.root / f"{name}.crt").read_bytes()
        )
        if reply.code != AvrsError.SUCCESS:
            raise SandboxError(f"publisher join refused: {reply.token} ({reply.code:#x})")
        content_id = content_guuid(content)
        await client.add_content(
            self.cluster_id, content_id, flows, codecs=codecs, title=title, name=content
        )
        handle = await client.attach(self.cluster_id, content_id, ContentFlag.STREAMING_IN)
        await client.start()
        return node, client, handle
