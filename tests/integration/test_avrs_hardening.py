"""Issue 9 on a real ``avrs node`` process: replies to a peer that never reads them are bounded."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from dapsdk.avrs.constants import AvrsChannel, SignalOp
from dapsdk.avrs.packets import RequestHeader, encode_request
from dapsdk.runtime.node import StreamNode
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.constants import PacketType
from dapsdk.stream.errors import ErrorCode, StreamClosedError

from ..servers import ROOT
from .avrs_env import AvrsEnv


def _memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


async def test_anonymous_heartbeat_flood_without_reading_replies_is_closed(
    tmp_path: Path,
) -> None:
    """An anonymous peer sends unsigned HEARTBEATs and never reads the retcode channel. Before,
    every reply was queued with write_nowait (the node grew ~8 MB/s without end); now the
    node refuses to queue more than the channel's high-water mark and closes the peer with
    ENHANCE_YOUR_CALM."""
    env = AvrsEnv(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dapsdk.cli",
            "node",
            "--config",
            str(env.server_config()),
            "--ready",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            if line.startswith("listening ") and not url:
                url = line.split(" ", 1)[1].strip()
            if line.strip() == "ready":
                break
        assert url.startswith("tcp://"), url
        # The smallest windows the protocol allows: the node can send only 1 KiB of replies
        # before they queue on its side.
        config = StreamConfig(
            max_packet_payload=512, initial_channel_window=1024, initial_connection_window=1024
        )
        async with StreamNode(config=config) as client:
            stream = await client.connect(url)
            signal = stream.channel_new(AvrsChannel.SIGNAL)
            baseline = _memory_kb(proc.pid, "VmRSS")
            sent = 0
            deadline = time.monotonic() + 120
            core_stats = stream.driver.core.stats

            async def round_trip() -> None:
                pongs = core_stats.rtt_count
                if stream.is_active:
                    stream.send_keepalive()
                while stream.is_active and core_stats.rtt_count == pongs:
                    assert time.monotonic() < deadline + 30, "no PONG and no ERROR"
                    await asyncio.sleep(0.01)

            while stream.is_active and sent < 100_000 and time.monotonic() < deadline:
                request = encode_request(
                    RequestHeader(SignalOp.HEARTBEAT, AvrsChannel.SIGNAL, sent)
                )
                try:
                    await signal.write(PacketType.DATA, request)
                except StreamClosedError:
                    break
                sent += 1
                if sent % 1000 == 0:
                    await round_trip()  # pace on the node: it has processed all of them
            await round_trip()
            assert stream.terminated is not None, f"{sent} heartbeats, replies still queued"
            assert stream.terminated.code == ErrorCode.ENHANCE_YOUR_CALM, stream.terminated
            assert "does not read" in stream.terminated.reason
            growth_mb = (_memory_kb(proc.pid, "VmHWM") - baseline) / 1024
            assert growth_mb < 64, growth_mb
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
