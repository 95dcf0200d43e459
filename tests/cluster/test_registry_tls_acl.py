"""The Redis registry over TLS with an ACL user restricted to the cluster's keys and channel, as
docs/operations.md section 7 configures it (a real redis-server, TLS only, default user off)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dapsdk.services.registry import ClusterEvent, NodeRecord, RegistryUnavailable
from dapsdk.services.registry.redis import RedisRegistry
from tests.redis_server import free_port


def _self_signed(directory: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "redis.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "redis.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory / "redis.crt"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed: run scripts/setup.sh"
    ca = _self_signed(tmp_path)
    port = free_port()
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off\n"
        "user avrs on >s3cret ~avrs:tls:* &avrs:tls:* "
        "+@read +@write +@pubsub +@connection +@transaction -@dangerous\n"
    )
    args = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(tmp_path / "redis.crt")]
    args += ["--tls-key-file", str(tmp_path / "redis.key"), "--tls-ca-cert-file", str(ca)]
    args += ["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(tmp_path), "--aclfile", str(acl)]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        assert proc.poll() is None, "redis-server (TLS) exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server (TLS) did not listen"
            time.sleep(0.02)
    try:
        yield port, ca
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_tls_and_acl(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    url = f"rediss://avrs:s3cret@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    registry = RedisRegistry(url, "tls")
    await registry.start()
    try:
        assert "s3cret" not in registry.url_safe
        await registry.put_node(NodeRecord("A::B::C::D", "00" * 32, 0x100), ttl=5)
        assert [n.address for n in await registry.nodes()] == ["A::B::C::D"]
        got: list[ClusterEvent] = []
        registry.subscribe(got.append)
        await asyncio.wait_for(registry.connected.wait(), 5)
        await registry.publish(ClusterEvent("changed", {}, "x"))
        deadline = asyncio.get_running_loop().time() + 5
        while not got:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
    finally:
        await registry.close()

    # the ACL confines the user to its cluster's keys
    other = RedisRegistry(url, "other")
    await other.start()  # PING is allowed
    with pytest.raises(RegistryUnavailable, match=r"NOPERM|permission"):
        await other.put_node(NodeRecord("A::B::C::D", "00" * 32, 0x100), ttl=5)
    await other.close()
    # wrong password, and plaintext against the TLS port
    for bad in (
        f"rediss://avrs:wrong@127.0.0.1:{port}/0?ssl_ca_certs={ca}",
        f"redis://avrs:s3cret@127.0.0.1:{port}/0",
    ):
        registry = RedisRegistry(bad, "tls")
        with pytest.raises(RegistryUnavailable):
            await registry.start()
        await registry.close()
