"""Clients pin the node they connect to: ``?node=``, trust on first use, or an explicit
``insecure_no_pin``; anything else is refused before a byte is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from dapsdk.node.config import parse_node_config
from dapsdk.node.wiring import build_node
from dapsdk.runtime.endpoint import parse_endpoint
from dapsdk.runtime.known_hosts import KnownHosts, PinRequired
from dapsdk.runtime.node import StreamNode
from dapsdk.stream.errors import DapError


async def test_unpinned_url_is_refused_before_connecting() -> None:
    async with StreamNode() as client:
        # Nothing listens on port 9: the refusal comes before any connection attempt.
        with pytest.raises(PinRequired, match=r"tcp://127\.0\.0\.1:9: refusing to connect without"):
            await client.connect("tcp://127.0.0.1:9")


async def test_pinned_tofu_and_insecure(tmp_path: Path) -> None:
    async with StreamNode() as server, StreamNode() as impostor, StreamNode() as client:
        listener = await server.listen("tcp://127.0.0.1:0")
        bare = listener.url.split("?")[0]
        assert (await client.connect(listener.url)).peer.address == server.address
        assert (await client.connect(bare + "?insecure_no_pin")).peer.address == server.address
        assert (await client.connect(bare, insecure_no_pin=True)).peer.address == server.address
        assert parse_endpoint(bare + "?insecure_no_pin").url == bare + "?insecure_no_pin"

        known = KnownHosts(tmp_path / "known_hosts")
        client.known_hosts = known
        assert (await client.connect(bare)).peer.address == server.address
        assert known.lookup(parse_endpoint(bare)) == server.address
        assert f"{bare} {server.address}" in known.path.read_text()
        assert known.path.stat().st_mode & 0o077 == 0
        # Another node answering at a pinned host:port fails the handshake.
        other = await impostor.listen("tcp://127.0.0.1:0")
        other_bare = other.url.split("?")[0]
        with known.path.open("a") as fh:
            fh.write(f"{other_bare} {server.address}\n")
        with pytest.raises(DapError):
            await client.connect(other_bare)
        assert known.lookup(parse_endpoint(other_bare)) == server.address  # never replaced


async def test_avrs_client_of_a_config_needs_a_pinned_host_address(tmp_path: Path) -> None:
    async with StreamNode() as server:
        listener = await server.listen("tcp://127.0.0.1:0")
        bare = listener.url.split("?")[0]
        config = parse_node_config(
            f"[avrs]\nhost_address = {bare}\ndata_dir =\n", base_dir=tmp_path
        )
        node = build_node(config)
        try:
            with pytest.raises(PinRequired, match="refusing to connect without a pinned"):
                await node.connect_client()
        finally:
            await node.close()


def test_known_hosts_file_is_bounded_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    endpoint = parse_endpoint("tcp://127.0.0.1:9")
    path.write_text("# comment\n\ntcp://127.0.0.1:9 not-an-address\n")
    with pytest.raises(ValueError, match=r"known_hosts:3"):
        KnownHosts(path).lookup(endpoint)
    path.write_text("#" * (1024 * 1024 + 1))
    with pytest.raises(ValueError, match="larger than"):
        KnownHosts(path).lookup(endpoint)
