"""RTMP ingest on a real node process (`avrs node`): ffmpeg (or PyAV's FFmpeg, for the codecs only
Enhanced RTMP carries) publishes, a viewer on the dap_stream side plays it back, ffprobe checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dapsdk.avrs import AvrsError
from dapsdk.node.sandbox import Sandbox
from dapsdk.services.avrs_client import AvrsClient
from dapsdk.services.avrs_cluster import content_guuid
from dapsdk.services.media.player import FileSink, PlayStats, play
from tests.media.clips import ClipSet
from tests.media.probe import frame_md5s, streams
from tests.media.rtmp_kit import RawClient, ffmpeg_push

TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parents[2]
PYAV_PUSH = """
import sys, time, av
source, url = sys.argv[1], sys.argv[2]
started = time.monotonic()
with av.open(source) as inp, av.open(url, "w", format="flv") as out:
    streams = {s.index: out.add_stream_from_template(s) for s in inp.streams
               if s.type in ("video", "audio")}
    for packet in inp.demux(list(inp.streams)):
        if packet.size and packet.stream.index in streams:
            if packet.dts is not None:  # in real time, like ffmpeg -re
                time.sleep(max(0.0, started + float(packet.dts * packet.time_base)
                               - time.monotonic()))
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
"""


@dataclass
class NodeProcess:
    sandbox: Sandbox
    process: asyncio.subprocess.Process
    url: str
    rtmp: str
    """``rtmp://127.0.0.1:PORT/live`` (append ``/NAME``)."""


async def start_node(sandbox: Sandbox, extra: str = "") -> NodeProcess:
    config = sandbox.server_config("rtmp_listen = 127.0.0.1:0\n" + extra)
    stderr = open(sandbox.root / "node.log", "ab")  # noqa: SIM115 (kept for the process' life)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dapsdk.cli", "node", "--config", str(config), "--ready",
        stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=ROOT,
    )  # fmt: skip
    stderr.close()
    lines: list[str] = []
    assert process.stdout is not None
    while not lines or lines[-1] != "ready":
        raw = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        if not raw:
            log = (sandbox.root / "node.log").read_text(errors="replace")
            raise AssertionError(f"node ended before 'ready': {lines} {log}")
        lines.append(raw.decode().rstrip("\n"))
    url = next(line.split(" ", 1)[1] for line in lines if line.startswith("listening "))
    rtmp = next(line.split(" ", 1)[1] for line in lines if line.startswith("rtmp "))
    assert rtmp.endswith("/NAME")
    return NodeProcess(sandbox, process, url, rtmp.removesuffix("/NAME"))


async def stop_node(node: NodeProcess) -> None:
    if node.process.returncode is None:
        node.process.terminate()
        try:
            await asyncio.wait_for(node.process.wait(), 10)
        except TimeoutError:
            node.process.kill()
            await node.process.wait()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeProcess]:
    running = await start_node(Sandbox(tmp_path))
    try:
        yield running
    finally:
        await stop_node(running)


@contextlib.asynccontextmanager
async def viewer(node: NodeProcess, name: str = "viewer") -> AsyncIterator[AvrsClient]:
    client_node = await node.sandbox.start_client(name, node.url)
    client = await client_node.connect_client()
    try:
        await client.open()
        reply = await client.join(
            node.sandbox.cluster_id, token=node.sandbox.token(str(client_node.address))
        )
        assert reply.code == AvrsError.SUCCESS
        yield client
    finally:
        await client.close()
        await client_node.close()


async def push_and_play(
    node: NodeProcess, content: str, push: asyncio.Future[tuple[int, str]] | None, out: Path,
    *, rendition: str | None = None,
) -> PlayStats:  # fmt: skip
    """Start a viewer (it waits for the content), then the push; play until the content ends."""
    async with viewer(node) as client:
        playing = asyncio.ensure_future(
            play(
                client,
                node.sandbox.cluster_id,
                content_guuid(content),
                FileSink(str(out)),
                rendition=rendition,
                wait=TIMEOUT,
            )
        )
        if push is not None:
            code, err = await push
            assert code == 0, err
        return await asyncio.wait_for(playing, TIMEOUT)


async def pyav_push(source: Path, url: str) -> tuple[int, str]:
    """Publish with PyAV's FFmpeg 8 (Enhanced RTMP: HEVC, VP9, Opus in FLV)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PYAV_PUSH, str(source), url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    return int(process.returncode or 0), err.decode(errors="replace")


async def test_ffmpeg_push_plays_back_identical(
    node: NodeProcess, clips: ClipSet, tmp_path: Path
) -> None:
    clip = clips.h264_aac
    out = tmp_path / "cam.mp4"
    push = asyncio.ensure_future(ffmpeg_push(clip.path, f"{node.rtmp}/cam"))
    stats = await push_and_play(node, "cam", push, out)
    assert stats.forged == 0 and stats.first_video_keyframe is True
    found = {s.kind: s for s in streams(out)}
    assert (found["video"].codec, found["audio"].codec) == ("h264", "aac")
    assert abs(found["video"].frames - clip.spec.frames) <= 1
    assert abs(found["video"].duration - clip.spec.duration) <= 0.05
    assert abs(found["audio"].duration - clip.spec.duration) <= 0.05
    # Nothing was transcoded: every picture (B-frames included) is bit-identical to the source.
    assert frame_md5s(out) == frame_md5s(clip.path)


@pytest.mark.parametrize("name", ["hevc_aac", "vp9_opus"])
async def test_hevc_and_vp9_sources_play_as_h264(tmp_path: Path, clips: ClipSet, name: str) -> None:
    """supported_formats = mp4 (H.264 + AAC): an Enhanced-RTMP HEVC or VP9/Opus publish is
    converted on ingest."""
    running = await start_node(Sandbox(tmp_path), "supported_formats = mp4\n")
    try:
        clip = clips[name]
        out = tmp_path / "converted.mp4"
        push = asyncio.ensure_future(pyav_push(clip.path, f"{running.rtmp}/conv"))
        await push_and_play(running, "conv", push, out)
    finally:
        await stop_node(running)
    found = {s.kind: s for s in streams(out)}
    assert (found["video"].codec, found["audio"].codec) == ("h264", "aac")
    assert abs(found["video"].frames - clip.spec.frames) <= 1
    assert abs(found["video"].duration - clip.spec.duration) <= 0.05
    assert abs(len(frame_md5s(out)) - clip.spec.frames) <= 1  # the pictures decode


async def test_live_ladder_renditions(tmp_path: Path, clips: ClipSet) -> None:
    """adaptive_streaming with a two-rung ladder below the 1080p source: each rendition is its
    own set of tracks with the right size; the source rendition is untouched."""
    running = await start_node(
        Sandbox(tmp_path),
        "adaptive_streaming = true\nrendition_ladder = 360p:600k,240p:300k\n"
        "max_bitrate = 40000000\n",  # the 1080p clip is about 16 Mbit/s
    )
    clip = clips.h264_1080p
    try:
        push = asyncio.ensure_future(ffmpeg_push(clip.path, f"{running.rtmp}/abr"))
        sizes = {}
        outs = {name: tmp_path / f"{name}.ts" for name in ("360p", "240p", "source")}
        async with (
            viewer(running, "v360") as v1,
            viewer(running, "v240") as v2,
            viewer(running, "vsrc") as v3,
        ):
            plays = [
                asyncio.ensure_future(
                    play(
                        client,
                        running.sandbox.cluster_id,
                        content_guuid("abr"),
                        FileSink(str(outs[name])),
                        rendition=name,
                        wait=TIMEOUT,
                    )
                )
                for client, name in ((v1, "360p"), (v2, "240p"), (v3, "source"))
            ]
            code, err = await push
            assert code == 0, err
            results = await asyncio.wait_for(asyncio.gather(*plays), TIMEOUT)
        for stats in results:
            assert stats.forged == 0 and stats.first_video_keyframe is True
        for name, path in outs.items():
            video = {s.kind: s for s in streams(path)}["video"]
            sizes[name] = (video.width, video.height)
            assert video.codec == "h264"
            assert abs(video.frames - clip.spec.frames) <= 1
    finally:
        await stop_node(running)
    assert sizes == {"360p": (640, 360), "240p": (426, 240), "source": (1920, 1080)}


async def test_bad_token_is_refused_and_garbage_does_not_hurt(
    node: NodeProcess, clips: ClipSet, tmp_path: Path
) -> None:
    # A token that does not verify is refused even from loopback (which needs none).
    code, err = await ffmpeg_push(clips.audio_only.path, f"{node.rtmp}/cam?token=not.a.jwt")
    assert code != 0 and "NOT_AUTHORIZED" in err
    # A token for another content does not grant this one.
    token = node.sandbox.token("camera", content=("other",), publish=True)
    code, err = await ffmpeg_push(clips.audio_only.path, f"{node.rtmp}/cam?token={token}")
    assert code != 0 and "does not grant publish" in err
    # Garbage, a silent connection and a huge message announcement on the RTMP port ...
    port = int(node.rtmp.split(":")[2].split("/")[0])
    junk = await RawClient.connect(port)
    junk.writer.write(os.urandom(8192).replace(b"\x03", b"\x07"))
    assert await junk.closed_by_peer()
    big = await RawClient.connect(port)
    await big.handshake()
    big.writer.write(bytes([4]) + bytes(3) + (0xFFFFFF).to_bytes(3, "big") + b"\x09" + bytes(5))
    assert await big.closed_by_peer()
    # ... leave the node serving: a granted token publishes, and a viewer plays it.
    token = node.sandbox.token("camera", content=("cam",), publish=True)
    out = tmp_path / "after.mp4"
    push = asyncio.ensure_future(ffmpeg_push(clips.h264_aac.path, f"{node.rtmp}/cam?token={token}"))
    started = time.monotonic()
    stats = await push_and_play(node, "cam", push, out)
    assert stats.packets > 0 and time.monotonic() - started < TIMEOUT
    assert node.process.returncode is None
