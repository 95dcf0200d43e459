"""Shared fixtures. Every test talks to real sockets on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, redis_server

#: Transports the dap_stream behaviour tests run over (issue 4 extends this list).
STREAM_TRANSPORTS = ["tcp", "ws", "quic"]


@pytest.fixture(params=STREAM_TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Endpoint scheme to listen/connect with; tests build ``f"{transport}://127.0.0.1:0"``."""
    return str(request.param)


def listen_url(scheme: str) -> str:
    """A loopback listen URL for ``scheme`` on a free port."""
    if scheme in ("ws", "wss"):
        return f"{scheme}://127.0.0.1:0/dapstream"
    return f"{scheme}://127.0.0.1:0"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped after the test."""
    with redis_server(tmp_path / "redis") as server:
        yield server
