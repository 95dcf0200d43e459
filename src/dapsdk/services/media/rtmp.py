"""RTMP server side, sans-IO: handshake, chunk stream, and the publish half of the NetConnection /
NetStream commands (what OBS and ``ffmpeg -f flv rtmp://...`` send).

The caller feeds received bytes to :meth:`RtmpServerConnection.receive_data`, sends what
:meth:`data_to_send` returns, and reads :class:`RtmpEvent` objects from :meth:`next_event`. The
core does no IO and keeps no clock. A peer violation raises :class:`RtmpError` (the caller closes
the connection); after it the connection ignores input.

Bounds (docs/reliability.md): a message may not exceed ``max_message_size`` bytes, at most
``MAX_CHUNK_STREAMS`` chunk streams may be open at once, a SetChunkSize above ``MAX_CHUNK_SIZE`` is
refused, and the bytes held in partial messages never exceed twice ``max_message_size`` in
total. Input is consumed only as far as complete units go, so the unparsed tail is below one
chunk (header + at most ``chunk size`` bytes).

Timestamps follow the chunk-stream rules of the RTMP specification (section 5.3.1): type 0 carries
an absolute timestamp, types 1 and 2 a delta, and a type-3 header that starts a new message
repeats the previous delta (0 after a type-0 header). Extended timestamps (field 0xFFFFFF) are read
for every header type, including type-3 chunks that follow an extended header.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from . import amf0
from .amf0 import AmfError, AmfValue

HANDSHAKE_SIZE: Final = 1536
RTMP_VERSION: Final = 3
DEFAULT_CHUNK_SIZE: Final = 128
#: Our outgoing chunk size (announced with SetChunkSize right after connect).
OUT_CHUNK_SIZE: Final = 4096
#: Largest incoming chunk size a peer may set (FFmpeg and OBS use 4096 to 65536).
MAX_CHUNK_SIZE: Final = 1 << 20
MAX_CHUNK_STREAMS: Final = 64
DEFAULT_MAX_MESSAGE: Final = 8 << 20
WINDOW_ACK_SIZE: Final = 2_500_000


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACK = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class RtmpError(Exception):
    """The peer broke the protocol or a bound; close the connection."""


@dataclass(frozen=True, slots=True)
class RtmpEvent:
    pass


@dataclass(frozen=True, slots=True)
class Connected(RtmpEvent):
    app: str
    tc_url: str


@dataclass(frozen=True, slots=True)
class PublishRequested(RtmpEvent):
    """The peer wants to publish ``name`` (the stream key, query string included). Answer with
    :meth:`RtmpServerConnection.accept_publish` or :meth:`reject_publish`."""

    stream_id: int
    name: str
    kind: str
    """"live", "record" or "append"."""


@dataclass(frozen=True, slots=True)
class PlayRequested(RtmpEvent):
    stream_id: int
    name: str


@dataclass(frozen=True, slots=True)
class MediaMessage(RtmpEvent):
    """An audio, video or data (metadata) message: the body of an FLV tag of ``tag_type``."""

    tag_type: int
    """8 audio, 9 video, 18 script data."""
    timestamp: int
    """Milliseconds, 32 bits (wraps like FLV's extended timestamp)."""
    body: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"MediaMessage(tag_type={self.tag_type}, timestamp={self.timestamp}, body=<{len(self.body)} bytes>)"


@dataclass(frozen=True, slots=True)
class PublishEnded(RtmpEvent):
    """The peer stopped publishing (FCUnpublish, deleteStream or closeStream)."""

    stream_id: int


@dataclass(slots=True)
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    started: bool = False
    partial: bytearray = field(default_factory=bytearray)


class _State(IntEnum):
    WAIT_C0C1 = 0
    WAIT_C2 = 1
    CHUNKS = 2
    FAILED = 3


_SET_DATA_FRAME: Final = amf0.encode("@setDataFrame")


class RtmpServerConnection:
    """One RTMP connection seen from the server."""

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if max_message_size < 1024:
            raise ValueError("max_message_size must be at least 1024")
        self.max_message_size = max_message_size
        self._rng = rng
        self._state = _State.WAIT_C0C1
        self._buffer = bytearray()
        self._out = bytearray()
        self._events: deque[RtmpEvent] = deque()
        self._streams: dict[int, _ChunkStream] = {}
        self._in_chunk_size = DEFAULT_CHUNK_SIZE
        self._partial_total = 0
        self._acked = 0
        self._peer_window = 0
        self._next_stream_id = 1
        self.app = ""
        self.publishing: dict[int, str] = {}
        """stream id -> name of accepted publishes."""
        self.bytes_received = 0

    # -- public surface ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Consume bytes from the peer; may queue output and events. Raises :class:`RtmpError`."""
        if self._state is _State.FAILED:
            return
        self._buffer += data
        self.bytes_received += len(data)
        try:
            self._process()
        except RtmpError:
            self._state = _State.FAILED
            self._buffer.clear()
            self._streams.clear()
            raise
        except (AmfError, ValueError, IndexError) as exc:
            self._state = _State.FAILED
            self._buffer.clear()
            self._streams.clear()
            raise RtmpError(f"malformed RTMP message: {exc}") from None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> RtmpEvent | None:
        return self._events.popleft() if self._events else None

    def accept_publish(self, stream_id: int, name: str) -> None:
        """Tell the peer it may publish (queues StreamBegin and NetStream.Publish.Start)."""
        self.publishing[stream_id] = name
        self._send_message(
            2, MessageType.USER_CONTROL, 0, (0).to_bytes(2, "big") + stream_id.to_bytes(4, "big")
        )
        self._on_status(stream_id, "status", "NetStream.Publish.Start", f"{name} is now published")

    def reject_publish(self, stream_id: int, code: str, description: str) -> None:
        """Refuse a publish with an onStatus error (queued; the caller closes afterwards)."""
        self._on_status(stream_id, "error", code, description)

    def reject_play(self, stream_id: int, description: str) -> None:
        self._on_status(stream_id, "error", "NetStream.Play.Failed", description)

    @property
    def handshake_done(self) -> bool:
        return self._state is _State.CHUNKS

    def buffered_bytes(self) -> int:
        """Bytes held: unparsed input plus partial messages (bounded, see module doc)."""
        return len(self._buffer) + self._partial_total

    # -- parsing ----------------------------------------------------------------------------

    def _process(self) -> None:
        if self._state is _State.WAIT_C0C1:
            if len(self._buffer) < 1 + HANDSHAKE_SIZE:
                if self._buffer and self._buffer[0] != RTMP_VERSION:
                    raise RtmpError(f"not RTMP: first byte 0x{self._buffer[0]:02x}, expected 0x03")
                return
            if self._buffer[0] != RTMP_VERSION:
                raise RtmpError(f"not RTMP: version byte {self._buffer[0]}, expected 3")
            c1 = bytes(self._buffer[1 : 1 + HANDSHAKE_SIZE])
            del self._buffer[: 1 + HANDSHAKE_SIZE]
            random = self._rng(HANDSHAKE_SIZE - 8)
            s1 = bytes(8) + bytes(random)
            self._out += bytes([RTMP_VERSION]) + s1 + c1  # S0, S1, S2 (echo of C1)
            self._state = _State.WAIT_C2
        if self._state is _State.WAIT_C2:
            if len(self._buffer) < HANDSHAKE_SIZE:
                return
            del self._buffer[:HANDSHAKE_SIZE]  # C2: echo of S1, not checked (simple handshake)
            self._state = _State.CHUNKS
        while self._state is _State.CHUNKS and self._read_chunk():
            pass
        self._maybe_ack()

    def _read_chunk(self) -> bool:
        """Parse one chunk from the buffer; False when it is not complete yet."""
        buf = self._buffer
        if not buf:
            return False
        fmt = buf[0] >> 6
        csid = buf[0] & 0x3F
        pos = 1
        if csid == 0:
            if len(buf) < 2:
                return False
            csid = 64 + buf[1]
            pos = 2
        elif csid == 1:
            if len(buf) < 3:
                return False
            csid = 64 + buf[1] + (buf[2] << 8)
            pos = 3
        header_size = (11, 7, 3, 0)[fmt]
        if len(buf) < pos + header_size:
            return False
        stream = self._streams.get(csid)
        if stream is None:
            if fmt != 0:
                raise RtmpError(f"chunk stream {csid} starts with a type-{fmt} header")
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise RtmpError(f"more than {MAX_CHUNK_STREAMS} chunk streams")
            stream = _ChunkStream()
        new_message = not stream.partial
        field_ts = 0
        length, type_id, stream_id = stream.length, stream.type_id, stream.stream_id
        if fmt <= 2:
            field_ts = int.from_bytes(buf[pos : pos + 3], "big")
        if fmt <= 1:
            length = int.from_bytes(buf[pos + 3 : pos + 6], "big")
            type_id = buf[pos + 6]
        if fmt == 0:
            stream_id = int.from_bytes(buf[pos + 7 : pos + 11], "little")
        pos += header_size
        extended = stream.extended if fmt == 3 else field_ts == 0xFFFFFF
        if extended:
            if len(buf) < pos + 4:
                return False
            if fmt != 3:
                field_ts = int.from_bytes(buf[pos : pos + 4], "big")
            pos += 4
        if fmt != 3 and not new_message:
            raise RtmpError(f"chunk stream {csid}: new header inside an unfinished message")
        if length > self.max_message_size:
            raise RtmpError(
                f"message of {length} bytes exceeds the limit of {self.max_message_size}"
            )
        remaining = length - len(stream.partial)
        size = min(self._in_chunk_size, remaining)
        if len(buf) < pos + size:
            return False
        # The whole chunk is here: commit the header to the chunk stream's state.
        if csid not in self._streams:
            self._streams[csid] = stream
        stream.length, stream.type_id, stream.stream_id = length, type_id, stream_id
        stream.extended = extended
        if new_message:
            if fmt == 0:
                stream.timestamp = field_ts
                stream.delta = 0
            elif fmt in (1, 2):
                stream.delta = field_ts
                stream.timestamp = (stream.timestamp + field_ts) & 0xFFFFFFFF
            elif stream.started:
                stream.timestamp = (stream.timestamp + stream.delta) & 0xFFFFFFFF
            stream.started = True
        if size and self._partial_total + size > 2 * self.max_message_size:
            raise RtmpError("partial messages exceed the memory bound")
        stream.partial += buf[pos : pos + size]
        self._partial_total += size
        del buf[: pos + size]
        if len(stream.partial) >= stream.length:
            body = bytes(stream.partial)
            self._partial_total -= len(body)
            stream.partial.clear()
            self._dispatch(stream.type_id, stream.stream_id, stream.timestamp, body)
        return True

    def _maybe_ack(self) -> None:
        if self._peer_window and self.bytes_received - self._acked >= self._peer_window:
            self._acked = self.bytes_received
            self._send_message(
                2, MessageType.ACK, 0, (self.bytes_received & 0xFFFFFFFF).to_bytes(4, "big")
            )

    # -- messages ---------------------------------------------------------------------------

    def _dispatch(self, type_id: int, stream_id: int, timestamp: int, body: bytes) -> None:
        if type_id == MessageType.SET_CHUNK_SIZE:
            if len(body) < 4:
                raise RtmpError("short SetChunkSize")
            size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            if not 1 <= size <= MAX_CHUNK_SIZE:
                raise RtmpError(f"chunk size {size} outside 1..{MAX_CHUNK_SIZE}")
            self._in_chunk_size = size
        elif type_id == MessageType.ABORT:
            if len(body) >= 4:
                aborted = self._streams.get(int.from_bytes(body[:4], "big"))
                if aborted is not None:
                    self._partial_total -= len(aborted.partial)
                    aborted.partial.clear()
        elif type_id == MessageType.WINDOW_ACK_SIZE:
            if len(body) >= 4:
                self._peer_window = int.from_bytes(body[:4], "big")
        elif type_id in (MessageType.AUDIO, MessageType.VIDEO, MessageType.DATA_AMF0):
            if stream_id in self.publishing and body:
                if type_id == MessageType.DATA_AMF0 and body.startswith(_SET_DATA_FRAME):
                    body = body[len(_SET_DATA_FRAME) :]
                self._events.append(MediaMessage(type_id, timestamp, body))
        elif type_id == MessageType.COMMAND_AMF0:
            self._command(stream_id, amf0.decode_all(body))
        elif type_id == MessageType.COMMAND_AMF3:
            # AMF3 command messages start with a format byte 0, then AMF0 values.
            self._command(stream_id, amf0.decode_all(body[1:]))
        # ACK, USER_CONTROL, SET_PEER_BANDWIDTH, shared objects, AMF3 data and aggregates carry
        # nothing a publisher needs from us: ignored.

    def _command(self, stream_id: int, values: list[AmfValue]) -> None:
        if len(values) < 2 or not isinstance(values[0], str):
            raise RtmpError("command message without a name and transaction id")
        name, txn = values[0], values[1]
        txn_id = txn if isinstance(txn, float) else 0.0
        args = values[2:]
        if name == "connect":
            command = args[0] if args and isinstance(args[0], dict) else {}
            app = command.get("app")
            tc_url = command.get("tcUrl")
            self.app = app if isinstance(app, str) else ""
            self._send_message(
                2, MessageType.WINDOW_ACK_SIZE, 0, WINDOW_ACK_SIZE.to_bytes(4, "big")
            )
            self._send_message(
                2, MessageType.SET_PEER_BANDWIDTH, 0, WINDOW_ACK_SIZE.to_bytes(4, "big") + b"\x02"
            )
            self._send_message(2, MessageType.SET_CHUNK_SIZE, 0, OUT_CHUNK_SIZE.to_bytes(4, "big"))
            self._out_chunk = OUT_CHUNK_SIZE
            self._send_command(
                0,
                "_result",
                txn_id,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                {
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": 0.0,
                },
            )
            self._events.append(Connected(self.app, tc_url if isinstance(tc_url, str) else ""))
        elif name == "createStream":
            new_id = self._next_stream_id
            self._next_stream_id += 1
            self._send_command(0, "_result", txn_id, None, float(new_id))
        elif name == "publish":
            key = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            kind = args[2] if len(args) > 2 and isinstance(args[2], str) else "live"
            self._events.append(PublishRequested(stream_id, key, kind))
        elif name == "play":
            key = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            self._events.append(PlayRequested(stream_id, key))
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            ended = stream_id
            if name == "deleteStream" and len(args) > 1 and isinstance(args[1], float):
                ended = int(args[1])
            if ended in self.publishing or (name == "FCUnpublish" and self.publishing):
                if name == "FCUnpublish":
                    ended = next(iter(self.publishing))
                del self.publishing[ended]
                self._events.append(PublishEnded(ended))
        elif name in ("releaseStream", "FCPublish", "getStreamLength", "_checkbw") and txn_id:
            self._send_command(0, "_result", txn_id, None, None)
        # Anything else (onBWDone replies, ...) needs no answer.

    # -- output -----------------------------------------------------------------------------

    _out_chunk: int = DEFAULT_CHUNK_SIZE

    def _on_status(self, stream_id: int, level: str, code: str, description: str) -> None:
        self._send_command(
            stream_id,
            "onStatus",
            0.0,
            None,
            {"level": level, "code": code, "description": description},
        )

    def _send_command(self, stream_id: int, name: str, txn: float, *values: AmfValue) -> None:
        body = amf0.encode_all(name, txn, *values)
        self._send_message(3 if stream_id == 0 else 5, MessageType.COMMAND_AMF0, stream_id, body)

    def _send_message(self, csid: int, type_id: int, stream_id: int, body: bytes) -> None:
        header = (
            bytes([csid])  # fmt 0, csid < 64
            + (0).to_bytes(3, "big")
            + len(body).to_bytes(3, "big")
            + bytes([type_id])
            + stream_id.to_bytes(4, "little")
        )
        out = self._out
        out += header
        chunk = self._out_chunk
        for offset in range(0, len(body), chunk):
            if offset:
                out.append(0xC0 | csid)  # fmt 3 continuation
            out += body[offset : offset + chunk]
