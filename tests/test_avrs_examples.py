"""The AVRS seed examples (examples/avrs_*.py) run as scripts against real local nodes: the
callbacks example *is* the server; the sessions example watches content from an `avrs node`
server process while this test publishes signed media into it. Real config files, certificates
and tokens are generated in a temporary directory."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dapsdk.avrs import AvrsError, MediaFlag
from dapsdk.services.avrs_cluster import content_guuid
from dapsdk.services.avrs_media import sign_media

from .integration.avrs_env import AvrsEnv, start_publisher

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
AVRS_EXAMPLES = {
    "avrs_basic_init.py",
    "avrs_sessions.py",
    "avrs_callbacks.py",
    "avrs_cluster_management.py",  # tests/cluster/test_cluster_example.py
    "avrs_live_scenario.py",  # tests/playback/test_scenarios.py
    "avrs_vod_scenario.py",  # tests/playback/test_scenarios.py
}
TIMEOUT = 60.0


def test_every_avrs_example_is_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("avrs_*.py")} == AVRS_EXAMPLES


@pytest.fixture
def env(tmp_path: Path) -> AvrsEnv:
    return AvrsEnv(tmp_path)


def test_basic_init(env: AvrsEnv) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "avrs_basic_init.py"), str(env.server_config())],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=EXAMPLES,
    )
    assert result.returncode == 0, result.stderr
    assert f"AVRS node {env.server.address}, role 0x0102" in result.stdout
    assert "listening tcp://127.0.0.1:" in result.stdout
    assert "AVRS channels: A r C c S" in result.stdout
    assert result.stdout.rstrip().endswith("AVRS deinitialised")


def test_basic_init_reports_bad_config(env: AvrsEnv) -> None:
    bad = env.root / "bad.cfg"
    bad.write_text("[avrs]\nrole = host\nmax_connections = lots\n")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "avrs_basic_init.py"), str(bad)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=EXAMPLES,
    )
    assert result.returncode == 1
    assert "AVRS init failed" in result.stderr and "max_connections" in result.stderr


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )


async def _read_until(proc: asyncio.subprocess.Process, marker: str) -> list[str]:
    """Lines of ``proc``'s stdout up to and including the line ``marker``."""
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        if not raw:
            stderr = await proc.stderr.read() if proc.stderr else b""
            raise AssertionError(f"process ended before {marker!r}: {lines} {stderr.decode()}")
        line = raw.decode().rstrip("\n")
        lines.append(line)
        if line == marker:
            return lines


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def server_url(env: AvrsEnv) -> AsyncIterator[str]:
    """`avrs node --config server.cfg` in its own process."""
    proc = await _spawn("-m", "dapsdk.cli", "node", "--config", str(env.server_config()), "--ready")
    try:
        lines = await _read_until(proc, "ready")
        assert lines[0] == f"node {env.server.address}"
        yield next(line.split(" ", 1)[1] for line in lines if line.startswith("listening "))
    finally:
        await _stop(proc)


async def test_sessions(env: AvrsEnv, server_url: str) -> None:
    pub_node, pub, handle = await start_publisher(env, server_url, "lecture-1")
    viewer = env.identity("viewer")
    config = env.client_config("viewer", server_url)
    token_file = env.root / "viewer.token"
    token_file.write_text(env.token(str(viewer.address), content=("lecture-1",)))
    proc = await _spawn(
        str(EXAMPLES / "avrs_sessions.py"), str(config), "lecture-1", str(token_file)
    )
    try:
        await _read_until(proc, "Stream started")
        media = [f"frame {i}".encode() * (i + 1) for i in range(4)]
        for seq, data in enumerate(media):
            flags = MediaFlag.END_OF_FLOW if seq == len(media) - 1 else MediaFlag.NONE
            envelope = sign_media(
                pub.signer, content_guuid("lecture-1"), 1, seq, data, now=time.time(), flags=flags
            )
            pub.send_content(handle, 1, envelope, flags=flags)
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        await _stop(proc)
        await pub.close()
        await pub_node.close()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    for i, data in enumerate(media, 1):
        assert f"packet {i}: {len(data)} bytes" in text
    assert f"Received {len(media)} packets, {sum(map(len, media))} bytes" in text


async def test_sessions_refuses_forged_token(env: AvrsEnv, server_url: str) -> None:
    viewer = env.identity("viewer")
    token_file = env.root / "viewer.token"
    token_file.write_text(env.forged_token(str(viewer.address)))
    proc = await _spawn(
        str(EXAMPLES / "avrs_sessions.py"),
        str(env.client_config("viewer", server_url)),
        "lecture-1",
        str(token_file),
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 1
    assert "Session authentication failed" in err.decode()
    assert "MEMBER_SECURITY_ISSUE" in err.decode() and "signature" in err.decode()
    assert "Stream started" not in out.decode()


async def test_callbacks(env: AvrsEnv) -> None:
    proc = await _spawn(str(EXAMPLES / "avrs_callbacks.py"), str(env.server_config()), "3")
    try:
        lines = await _read_until(proc, "ready")
        url = next(line.split(" ", 1)[1] for line in lines if line.startswith("listening "))
        pub_node, pub, handle = await start_publisher(env, url, "talk", title="Talk")
        try:
            good = [bytes([i]) * (50 + i) for i in range(3)]
            corrupted = b"broken" + b"\0\0\0\0"
            pub.send_content(handle, 0, corrupted)
            refusal = await pub.next_content_error(TIMEOUT)
            assert refusal.code == AvrsError.CONTENT_CORRUPTED
            for data in good:
                pub.send_content(handle, 0, data + zlib.crc32(data).to_bytes(4, "little"))
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        finally:
            await pub.close()
            await pub_node.close()
    finally:
        await _stop(proc)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "Received content packet, size: 10" in text and "Content corrupted, refused" in text
    for data in good:
        assert f"Received content packet, size: {len(data) + 4}" in text
        assert f"content 'Talk': {len(data)} bytes of media" in text
    assert "Processed 3 packets" in text
