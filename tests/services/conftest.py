"""Shared fixtures of the authentication tests: a real CA, real node keys, a fixed clock."""

from __future__ import annotations

import pytest
from authkit import NOW, der

from dapsdk.services.auth import ClusterCA, Role
from dapsdk.stream.config import PeerIdentity
from dapsdk.stream.identity import NodeIdentity


@pytest.fixture
def now() -> float:
    return NOW


@pytest.fixture
def ca() -> ClusterCA:
    return ClusterCA.create("main_cluster", now=NOW)


@pytest.fixture
def server() -> NodeIdentity:
    return NodeIdentity.generate()


@pytest.fixture
def server_peer(ca: ClusterCA, server: NodeIdentity) -> PeerIdentity:
    cert = ca.issue(server.public_key, Role.SERVER, now=NOW, days=30)
    return PeerIdentity(server.public_key, server.address, der(cert))
