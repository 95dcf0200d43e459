"""Helpers of the RTMP tests: an ffmpeg publisher, a minimal RTMP client, a recording sink."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import av

from dapsdk.services.media import amf0
from dapsdk.services.media.model import (
    MediaInfo,
    MediaPacket,
    open_setup,
    template_streams,
    to_av_packet,
)
from dapsdk.services.media.rtmp import HANDSHAKE_SIZE, MessageType


async def ffmpeg_push(
    source: Path, url: str, *, realtime: bool = True, loops: int = 0
) -> tuple[int, str]:
    """Push ``source`` (repeated ``loops`` more times) with ``ffmpeg -c copy -f flv``;
    (exit code, stderr)."""
    args = ["ffmpeg", "-nostdin", "-v", "error"]
    if realtime:
        args.append("-re")
    if loops:
        args += ["-stream_loop", str(loops)]
    args += ["-i", str(source), "-c", "copy", "-f", "flv", url]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return int(process.returncode or 0), err.decode(errors="replace")


class RecordingSink:
    """Keeps what the ingest delivers; ``write`` muxes it like a player (templates from setup)."""

    def __init__(self) -> None:
        self.info: MediaInfo | None = None
        self.packets: list[MediaPacket] = []
        self.ended = asyncio.Event()
        self.error: str | None = None

    async def start(self, info: MediaInfo, streams: list[Any]) -> None:
        self.info = info

    async def push(self, packet: MediaPacket) -> None:
        self.packets.append(packet)

    async def end(self, error: str | None) -> None:
        self.error = error
        self.ended.set()

    def write(self, path: Path) -> Path:
        assert self.info is not None
        setup = open_setup(self.info)
        templates = template_streams(setup, self.info)
        with setup, av.open(str(path), "w") as output:
            streams = [output.add_stream_from_template(t) for t in templates]
            for packet in self.packets:
                stream = streams[packet.track]
                output.mux(to_av_packet(packet, stream, stream.time_base))
        return path


def chunk0(csid: int, type_id: int, body: bytes, stream_id: int = 0) -> bytes:
    """One type-0 chunk carrying a whole message (body must fit the chunk size)."""
    return (
        bytes([csid])
        + bytes(3)
        + len(body).to_bytes(3, "big")
        + bytes([type_id])
        + stream_id.to_bytes(4, "little")
        + body
    )


class RawClient:
    """A hand-driven RTMP client for bad-input tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def handshake(self) -> None:
        self.writer.write(b"\x03" + bytes(HANDSHAKE_SIZE))
        s0s1s2 = await self.reader.readexactly(1 + 2 * HANDSHAKE_SIZE)
        self.writer.write(s0s1s2[1 : 1 + HANDSHAKE_SIZE])
        await self.writer.drain()

    async def publish(self, name: str) -> None:
        for message, stream_id in (
            (amf0.encode_all("connect", 1.0, {"app": "live"}), 0),
            (amf0.encode_all("createStream", 2.0, None), 0),
            (amf0.encode_all("publish", 0.0, None, name, "live"), 1),
        ):
            self.writer.write(chunk0(3, MessageType.COMMAND_AMF0, message, stream_id))
        await self.writer.drain()

    async def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """Read until EOF (True) or ``timeout`` (False)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
