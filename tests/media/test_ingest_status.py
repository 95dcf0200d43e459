"""The node's ingest status (GET /api/v1/ingest): publishers and live transcoder lag/speed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dapsdk.node.config import load_node_config
from dapsdk.node.sandbox import Sandbox
from dapsdk.node.wiring import build_node
from tests.media.clips import ClipSet
from tests.media.rtmp_kit import ffmpeg_push


async def test_status_shows_publishers_and_transcoders(tmp_path: Path, clips: ClipSet) -> None:
    sandbox = Sandbox(tmp_path)
    config = sandbox.server_config(
        "rtmp_listen = 127.0.0.1:0\nadaptive_streaming = true\nrendition_ladder = 160p:200k\n"
    )
    node = build_node(load_node_config(config))
    await node.start()
    try:
        assert node.ingest is not None
        url = dict(node.announcements)["rtmp"].replace("/NAME", "/cam")
        push = asyncio.ensure_future(ffmpeg_push(clips.h264_aac.path, url))
        async with asyncio.timeout(30):
            while "cam" not in node.ingest.transcoders:
                await asyncio.sleep(0.02)
        status = node.ingest.status()
        assert status["publishing"] == ["cam"]
        assert status["ladder"] == ["160p:200000"] and status["adaptive"] is True
        live = status["transcoders"]["cam"]  # type: ignore[index]
        assert {"backlog", "lag_s", "dropped", "lagging", "speed_x_realtime"} <= set(live)
        code, err = await push
        assert code == 0, err
        async with asyncio.timeout(30):
            while node.ingest.transcoders:
                await asyncio.sleep(0.02)
        status = node.ingest.status()
        assert status["accepted"] == 1 and status["publishing"] == []
        assert str(status["rtmp"]).startswith("rtmp://127.0.0.1:")
    finally:
        await node.close()


async def test_rtmp_publisher_above_max_bitrate_is_disconnected(
    tmp_path: Path, clips: ClipSet, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = Sandbox(tmp_path)
    config = sandbox.server_config("rtmp_listen = 127.0.0.1:0\nmax_bitrate = 20000\n")
    node = build_node(load_node_config(config))
    await node.start()
    try:
        assert node.ingest is not None
        url = dict(node.announcements)["rtmp"].replace("/NAME", "/big")
        await ffmpeg_push(clips.h264_aac.path, url, realtime=False)
        async with asyncio.timeout(10):
            while node.ingest.rtmp.publishing:
                await asyncio.sleep(0.02)
        assert node.ingest.rtmp.refused >= 1
        assert not node.hub.lives
        assert "CONTENT_BITRATE_EXCEEDED" in caplog.text
    finally:
        await node.close()
