"""RTMP ingest server with real ffmpeg publishers on loopback (in-process server, real sockets)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dapsdk.services.media.rtmp import MessageType
from dapsdk.services.media.rtmp_ingest import (
    IngestRefused,
    PublishRequest,
    RtmpIngestServer,
    parse_stream_key,
)
from tests.media.clips import ClipSet
from tests.media.probe import frame_md5s, streams
from tests.media.rtmp_kit import RawClient, RecordingSink, chunk0, ffmpeg_push


class Ingest:
    """A server whose sinks record, and which refuses the token "bad"."""

    def __init__(self) -> None:
        self.sinks: dict[str, RecordingSink] = {}
        self.requests: list[PublishRequest] = []
        self.server = RtmpIngestServer(self.authorize, self.open_sink, handshake_timeout=2.0)

    async def authorize(self, request: PublishRequest) -> None:
        self.requests.append(request)
        if request.token == "bad":
            raise IngestRefused("NOT_AUTHORIZED", "token refused")

    async def open_sink(self, request: PublishRequest) -> RecordingSink:
        sink = self.sinks[request.name] = RecordingSink()
        return sink


@pytest.fixture
async def ingest() -> Ingest:
    ingest = Ingest()
    await ingest.server.start("127.0.0.1", 0)
    yield ingest  # type: ignore[misc]
    await ingest.server.close()


def test_stream_key_carries_name_and_token() -> None:
    assert parse_stream_key("cam?token=abc.def&x=1") == ("cam", {"token": "abc.def", "x": "1"})
    assert parse_stream_key("cam") == ("cam", {})


async def test_ffmpeg_push_arrives_bit_exact(
    ingest: Ingest, clips: ClipSet, tmp_path: Path
) -> None:
    clip = clips.h264_aac
    code, err = await ffmpeg_push(clip.path, f"{ingest.server.url}/cam", realtime=False)
    assert code == 0, err
    sink = ingest.sinks["cam"]
    await asyncio.wait_for(sink.ended.wait(), 10)
    assert sink.error is None
    assert sink.info is not None
    assert [t.codec for t in sink.info.tracks] == ["h264", "aac"]
    out = sink.write(tmp_path / "cam.mkv")
    found = {s.kind: s for s in streams(out)}
    assert found["video"].frames == clip.spec.frames
    assert abs(found["video"].duration - clip.spec.duration) <= 0.05
    assert abs(found["audio"].duration - clip.spec.duration) <= 0.05
    # B-frames survived (pts != dts) and every picture is bit-identical to the source.
    assert any(p.pts != p.dts for p in sink.packets if p.track == 0)
    assert frame_md5s(out) == frame_md5s(clip.path)


async def test_several_publishers_at_once(ingest: Ingest, clips: ClipSet) -> None:
    names = ["one", "two", "three"]
    sources = [clips.h264_aac.path, clips.video_ts.path, clips.audio_only.path]
    results = await asyncio.gather(
        *(
            ffmpeg_push(src, f"{ingest.server.url}/{n}")
            for n, src in zip(names, sources, strict=True)
        )
    )
    assert [code for code, _ in results] == [0, 0, 0], results
    for name in names:
        await asyncio.wait_for(ingest.sinks[name].ended.wait(), 10)
    kinds = {n: [t.kind for t in ingest.sinks[n].info.tracks] for n in names}  # type: ignore[union-attr]
    assert kinds == {"one": ["video", "audio"], "two": ["video"], "three": ["audio"]}
    assert sum(1 for p in ingest.sinks["two"].packets) == clips.video_ts.spec.frames


async def test_refused_token_ends_the_publish(ingest: Ingest, clips: ClipSet) -> None:
    code, err = await ffmpeg_push(clips.h264_aac.path, f"{ingest.server.url}/cam?token=bad")
    assert code != 0
    assert "NOT_AUTHORIZED" in err
    assert "cam" not in ingest.sinks
    assert ingest.requests[0].token == "bad" and ingest.requests[0].name == "cam"


async def test_same_name_twice_is_refused(ingest: Ingest, clips: ClipSet) -> None:
    first = asyncio.create_task(ffmpeg_push(clips.h264_1080p.path, f"{ingest.server.url}/dup"))
    async with asyncio.timeout(20):
        while "dup" not in ingest.server.publishing:
            await asyncio.sleep(0.02)
    code, err = await ffmpeg_push(clips.audio_only.path, f"{ingest.server.url}/dup")
    assert code != 0 and "already published" in err
    assert (await first)[0] == 0


async def test_garbage_closes_only_that_connection(ingest: Ingest, clips: ClipSet) -> None:
    junk = await RawClient.connect(ingest.server.port)
    junk.writer.write(os.urandom(4096).replace(b"\x03", b"\x04"))
    assert await junk.closed_by_peer()
    silent = await RawClient.connect(ingest.server.port)  # says nothing: handshake timeout
    assert await silent.closed_by_peer(timeout=10)
    huge = await RawClient.connect(ingest.server.port)
    await huge.handshake()
    huge.writer.write(chunk0(2, MessageType.SET_CHUNK_SIZE, (0x7FFFFFFF).to_bytes(4, "big")))
    assert await huge.closed_by_peer()
    big = await RawClient.connect(ingest.server.port)
    await big.handshake()
    header = bytes([4]) + bytes(3) + (0xFFFFFF).to_bytes(3, "big") + b"\x09" + bytes(4)
    big.writer.write(header + b"x")  # a 16 MiB message announced: refused from the header
    assert await big.closed_by_peer()
    assert ingest.server.refused >= 4
    code, err = await ffmpeg_push(clips.audio_only.path, f"{ingest.server.url}/after")
    assert code == 0, err  # the server still serves


async def test_media_that_does_not_demux_is_refused(ingest: Ingest) -> None:
    client = await RawClient.connect(ingest.server.port)
    await client.handshake()
    await client.publish("junk")
    for _ in range(200):  # AVC video tags whose bodies are noise
        body = b"\x17\x01\x00\x00\x00" + os.urandom(100)
        client.writer.write(chunk0(6, MessageType.VIDEO, body, 1))
    await client.writer.drain()
    client.writer.write_eof()
    assert await client.closed_by_peer()
    sink = ingest.sinks["junk"]
    await asyncio.wait_for(sink.ended.wait(), 10)
    assert sink.error is not None and "cannot demux" in sink.error
    assert sink.info is None and not sink.packets


async def test_a_sink_that_never_takes_packets_holds_memory_bounded(clips: ClipSet) -> None:
    """The consumer stops taking packets: the demuxer's buffer stays at its bound, the server
    stops reading the socket, and the publisher (pushing as fast as it can) is held back."""
    release = asyncio.Event()

    class StuckSink(RecordingSink):
        async def push(self, packet: object) -> None:
            await release.wait()

    sink = StuckSink()

    async def authorize(request: PublishRequest) -> None:
        return None

    async def open_sink(request: PublishRequest) -> RecordingSink:
        return sink

    limit = 256 * 1024
    server = RtmpIngestServer(authorize, open_sink, demux_buffer=limit)
    await server.start("127.0.0.1", 0)
    try:
        push = asyncio.create_task(
            ffmpeg_push(clips.h264_1080p.path, f"{server.url}/stuck", realtime=False, loops=7)
        )
        async with asyncio.timeout(20):
            while "stuck" not in server.sessions or server.sessions["stuck"].demuxer is None:
                await asyncio.sleep(0.02)
            session = server.sessions["stuck"]
            assert session.demuxer is not None
            while session.demuxer.buffered < limit:  # fills up to the bound ...
                await asyncio.sleep(0.02)
        received = session.conn.bytes_received
        await asyncio.sleep(0.5)
        # ... and stays there (one FLV tag over at most), however long the sink is stuck.
        assert session.demuxer.buffered <= limit + 1024 * 1024
        assert session.conn.bytes_received - received < 4 * 1024 * 1024
        assert not push.done()  # 32 MB cannot be pushed through
        release.set()
        code, err = await push
        assert code == 0, err
    finally:
        release.set()
        await server.close()
