"""Configuration keys observed on running nodes built from real files: ``wss://`` with the TLS keys,
``heartbeat_interval`` as the keepalive PING interval, ``thread_pool_size`` as the executor, and
``data_dir`` holding a stable identity."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path

import pytest

from dapsdk.node.config import ConfigError, load_node_config
from dapsdk.node.wiring import build_node
from dapsdk.runtime.node import StreamNode
from dapsdk.runtime.tls import self_signed_certificate, write_pem_pair
from dapsdk.runtime.ws import set_tls
from dapsdk.stream.config import StreamConfig

HOST = "[avrs]\nrole = host\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.cfg"
    path.write_text(text)
    return path


def tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = self_signed_certificate("localhost", ip_addresses=("127.0.0.1",))
    return write_pem_pair(cert, key, tmp_path, "tls")


async def test_wss_listener_serves_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = tls_pair(tmp_path)
    config = load_node_config(
        write(
            tmp_path,
            HOST + "listen = wss://127.0.0.1:0/avrs\n"
            f"tls_certificate_file = {cert.name}\ntls_private_key_file = {key.name}\n",
        )
    )
    node = build_node(config)
    await node.start()
    client = StreamNode()
    await client.start()
    try:
        url = node.urls[0]
        assert url.startswith("wss://127.0.0.1:") and f"?node={node.address}" in url
        trust = ssl.create_default_context(cafile=str(cert))
        set_tls(client=trust)
        stream = await client.connect(url)
        assert stream.peer.address == node.address
        # TLS really is in the way: a client that does not trust the certificate fails.
        set_tls(client=ssl.create_default_context())
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            await client.connect(url)
    finally:
        set_tls(client=ssl.create_default_context())
        await client.close()
        await node.close()


def test_wss_needs_matching_tls_keys_at_load(tmp_path: Path) -> None:
    cert, key = tls_pair(tmp_path)
    other_cert, _ = write_pem_pair(*self_signed_certificate("other"), tmp_path, "other")
    with pytest.raises(ConfigError, match=r"\[avrs\] tls_certificate_file is required .*wss://"):
        load_node_config(write(tmp_path, HOST + "listen = wss://127.0.0.1:0/avrs\n"))
    with pytest.raises(
        ConfigError,
        match=r"node\.cfg \[avrs\] tls_certificate_file = 'other-cert\.pem': does not load with "
        r"tls_private_key_file .*tls-key\.pem",
    ):
        load_node_config(
            write(
                tmp_path,
                HOST + "listen = wss://127.0.0.1:0/avrs\n"
                f"tls_certificate_file = {other_cert.name}\ntls_private_key_file = {key.name}\n",
            )
        )
    with pytest.raises(ConfigError, match=r"tls_certificate_file = .*used only by wss://"):
        load_node_config(
            write(
                tmp_path,
                HOST + "listen = tcp://127.0.0.1:0\n"
                f"tls_certificate_file = {cert.name}\ntls_private_key_file = {key.name}\n",
            )
        )
    with pytest.raises(ConfigError, match=r"tls_private_key_file is required with the other"):
        load_node_config(
            write(
                tmp_path,
                HOST + f"listen = tcp://127.0.0.1:0\ntls_certificate_file = {cert.name}\n",
            )
        )


async def test_heartbeat_interval_is_the_keepalive_ping_interval(tmp_path: Path) -> None:
    config = load_node_config(
        write(tmp_path, HOST + "listen = tcp://127.0.0.1:0\nheartbeat_interval = 0.2\n")
    )
    node = build_node(config)
    await node.start()
    # The client itself stays quiet (its own PING interval is 30 s): every PING comes from the node.
    client = StreamNode(config=StreamConfig(keepalive_interval=30.0, keepalive_timeout=90.0))
    await client.start()
    loop = asyncio.get_running_loop()
    try:
        await client.connect(node.urls[0])
        deadline = loop.time() + 10.0
        while not node.stream_node.streams and loop.time() < deadline:
            await asyncio.sleep(0.01)
        served = next(iter(node.stream_node.streams.values()))
        assert served.driver.core.config.keepalive_interval == 0.2
        assert served.driver.core.config.keepalive_timeout == pytest.approx(0.6)
        stats = served.driver.core.stats
        start_count, start = stats.rtt_count, loop.time()
        deadline = start + 10.0
        while stats.rtt_count < start_count + 5 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        elapsed = loop.time() - start
        assert stats.rtt_count >= start_count + 5, "the node sent no keepalive PINGs"
        # Five PONGs at the 1 s default would take at least 5 s; at 0.2 s they take about 1 s.
        assert elapsed < 4.0, f"5 PINGs took {elapsed:.2f} s: heartbeat_interval not applied"
    finally:
        await client.close()
        await node.close()


async def test_thread_pool_size_is_the_executor_of_blocking_work(tmp_path: Path) -> None:
    node = build_node(load_node_config(write(tmp_path, HOST + "listen =\nthread_pool_size = 3\n")))
    await node.start()
    try:
        loop = asyncio.get_running_loop()
        names = await asyncio.gather(
            *(loop.run_in_executor(None, lambda: threading.current_thread().name) for _ in range(8))
        )
        assert all(name.startswith("avrs-worker") for name in names)
        assert len(set(names)) <= 3
    finally:
        await node.close()


def test_data_dir_holds_a_stable_identity(tmp_path: Path) -> None:
    path = write(tmp_path, HOST + "listen =\ndata_dir = state\n")
    first = build_node(load_node_config(path))
    key = tmp_path / "state" / "node.key"
    assert key.is_file() and key.stat().st_mode & 0o077 == 0
    second = build_node(load_node_config(path))
    assert second.address == first.address
    # The default data directory is avrs-data beside the configuration file.
    path.write_text(HOST + "listen =\n")
    third = build_node(load_node_config(path))
    assert (tmp_path / "avrs-data" / "node.key").is_file()
    assert build_node(load_node_config(path)).address == third.address != first.address
    # Only an explicitly empty data_dir gives an ephemeral identity.
    path.write_text(HOST + "listen =\ndata_dir =\n")
    assert build_node(load_node_config(path)).address != build_node(load_node_config(path)).address


@pytest.mark.parametrize(
    ("extra", "key", "value"),
    [
        ("redis_url = redis://127.0.0.1:9/0\n", "redis_url", "redis://127.0.0.1:9/0"),
        ("scale_up_sessions = 10\nscale_command = true\n", "scale_command", "true"),
    ],
)
def test_errors_found_when_building_name_file_section_key_and_value(
    tmp_path: Path, extra: str, key: str, value: str
) -> None:
    path = write(tmp_path, HOST + "listen =\n" + extra)
    with pytest.raises(ConfigError) as err:
        build_node(load_node_config(path))
    assert str(err.value).startswith(f"{path} [avrs] {key} = '{value}': ")
    assert (err.value.path, err.value.section, err.value.key, err.value.value) == (
        str(path),
        "avrs",
        key,
        value,
    )
