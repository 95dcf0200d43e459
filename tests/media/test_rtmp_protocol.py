"""The sans-IO RTMP server core: handshake, chunk stream timing, commands, bounds."""

from __future__ import annotations

import pytest

from dapsdk.services.media import amf0
from dapsdk.services.media.rtmp import (
    HANDSHAKE_SIZE,
    MAX_CHUNK_STREAMS,
    Connected,
    MediaMessage,
    MessageType,
    PublishEnded,
    PublishRequested,
    RtmpError,
    RtmpServerConnection,
)


def chunk(fmt: int, csid: int, *, ts: int = 0, length: int = 0, type_id: int = 0,
          stream_id: int = 0, body: bytes = b"", extended: bool = False) -> bytes:  # fmt: skip
    """One chunk as a client writes it (csid < 64)."""
    header = bytes([(fmt << 6) | csid])
    field = min(ts, 0xFFFFFF)
    if fmt <= 2:
        header += field.to_bytes(3, "big")
    if fmt <= 1:
        header += length.to_bytes(3, "big") + bytes([type_id])
    if fmt == 0:
        header += stream_id.to_bytes(4, "little")
    if field == 0xFFFFFF or extended:
        header += ts.to_bytes(4, "big")
    return header + body


def command(*values: amf0.AmfValue, stream_id: int = 0) -> bytes:
    body = amf0.encode_all(*values)
    return chunk(0, 3, length=len(body), type_id=MessageType.COMMAND_AMF0, stream_id=stream_id,
                 body=body)  # fmt: skip


def events(conn: RtmpServerConnection) -> list[object]:
    found = []
    while (event := conn.next_event()) is not None:
        found.append(event)
    return found


def handshaken() -> RtmpServerConnection:
    conn = RtmpServerConnection(max_message_size=64 * 1024)
    c1 = bytes(range(256)) * 6
    conn.receive_data(b"\x03" + c1)
    reply = conn.data_to_send()
    assert len(reply) == 1 + 2 * HANDSHAKE_SIZE and reply[0] == 3
    assert reply[1 + HANDSHAKE_SIZE :] == c1  # S2 echoes C1
    conn.receive_data(reply[1 : 1 + HANDSHAKE_SIZE])  # C2 echoes S1
    assert conn.handshake_done
    return conn


def publishing() -> RtmpServerConnection:
    conn = handshaken()
    conn.receive_data(command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"}))
    assert events(conn) == [Connected("live", "rtmp://h/live")]
    conn.receive_data(command("createStream", 2.0, None))
    conn.receive_data(command("publish", 0.0, None, "cam?token=abc", "live", stream_id=1))
    assert events(conn) == [PublishRequested(1, "cam?token=abc", "live")]
    conn.data_to_send()
    conn.accept_publish(1, "cam")
    assert b"NetStream.Publish.Start" in conn.data_to_send()
    return conn


def test_connect_is_answered_with_success() -> None:
    conn = handshaken()
    conn.receive_data(command("connect", 1.0, {"app": "live"}))
    out = conn.data_to_send()
    assert b"NetConnection.Connect.Success" in out and b"_result" in out


def test_media_timestamps_follow_chunk_header_rules() -> None:
    conn = publishing()
    video = MessageType.VIDEO
    data = chunk(0, 6, ts=1000, length=2, type_id=video, stream_id=1, body=b"v0")
    data += chunk(1, 6, ts=33, length=2, type_id=video, body=b"v1")  # delta 33
    data += chunk(3, 6, body=b"v2")  # new message, same delta: 1066 + 33
    data += chunk(2, 6, ts=34, body=b"v3")  # delta 34
    conn.receive_data(data)
    stamps = [(e.timestamp, e.body) for e in events(conn) if isinstance(e, MediaMessage)]
    assert stamps == [(1000, b"v0"), (1033, b"v1"), (1066, b"v2"), (1100, b"v3")]


def test_extended_timestamps_are_read_in_every_header_type() -> None:
    conn = publishing()
    big = 0x01000000 + 5  # above 0xFFFFFF ms (about 4 h 40 min)
    conn.receive_data(command("x", 0.0))  # ignored command
    conn.receive_data(bytes([0x02]) + bytes(3) + (4).to_bytes(3, "big") + b"\x01" + bytes(4)
                      + (8).to_bytes(4, "big"))  # SetChunkSize 8  # fmt: skip
    body = b"0123456789"  # 10 bytes: two chunks of 8 + 2
    data = chunk(0, 6, ts=big, length=10, type_id=MessageType.AUDIO, stream_id=1, body=body[:8])
    data += chunk(3, 6, ts=big, body=body[8:], extended=True)  # continuation repeats it
    conn.receive_data(data)
    (message,) = [e for e in events(conn) if isinstance(e, MediaMessage)]
    assert (message.timestamp, message.body) == (big, body)


def test_messages_split_across_reads_reassemble() -> None:
    conn = publishing()
    body = bytes(range(200))
    data = chunk(0, 6, ts=5, length=200, type_id=MessageType.VIDEO, stream_id=1, body=body[:128])
    data += chunk(3, 6, body=body[128:])
    for index in range(len(data)):
        conn.receive_data(data[index : index + 1])
    (message,) = [e for e in events(conn) if isinstance(e, MediaMessage)]
    assert message.body == body


def test_set_data_frame_is_stripped_from_metadata() -> None:
    conn = publishing()
    body = amf0.encode_all("@setDataFrame", "onMetaData", {"width": 320.0})
    conn.receive_data(chunk(0, 4, length=len(body), type_id=MessageType.DATA_AMF0, stream_id=1,
                            body=body))  # fmt: skip
    (message,) = events(conn)
    assert isinstance(message, MediaMessage)
    assert amf0.decode_all(message.body) == ["onMetaData", {"width": 320.0}]


def test_unpublish_ends_the_stream() -> None:
    conn = publishing()
    conn.receive_data(command("FCUnpublish", 5.0, None, "cam"))
    assert events(conn) == [PublishEnded(1)]


def test_media_before_publish_is_ignored() -> None:
    conn = handshaken()
    conn.receive_data(chunk(0, 6, length=2, type_id=MessageType.VIDEO, stream_id=1, body=b"vv"))
    assert events(conn) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not RTMP"),
        (b"\x06" + bytes(HANDSHAKE_SIZE), "not RTMP"),
    ],
)
def test_garbage_before_the_handshake_is_refused(data: bytes, message: str) -> None:
    conn = RtmpServerConnection()
    with pytest.raises(RtmpError, match=message):
        conn.receive_data(data)
    conn.receive_data(b"more")  # ignored after the failure


def test_huge_chunk_size_is_refused() -> None:
    conn = handshaken()
    body = (0x7FFFFFFF).to_bytes(4, "big")
    with pytest.raises(RtmpError, match="chunk size"):
        conn.receive_data(chunk(0, 2, length=4, type_id=MessageType.SET_CHUNK_SIZE, body=body))


def test_message_above_the_limit_is_refused_before_buffering() -> None:
    conn = handshaken()
    with pytest.raises(RtmpError, match="exceeds the limit"):
        conn.receive_data(chunk(0, 6, length=0xFFFFFF, type_id=MessageType.VIDEO, body=b"x"))
    assert conn.buffered_bytes() == 0


def test_too_many_chunk_streams_are_refused() -> None:
    conn = handshaken()
    data = b"".join(
        chunk(0, 0, length=200, type_id=MessageType.VIDEO, body=b"x" * 128)[:1]
        + bytes([n])  # csid 64 + n, two-byte basic header
        + chunk(0, 0, length=200, type_id=MessageType.VIDEO, body=b"x" * 128)[1:]
        for n in range(MAX_CHUNK_STREAMS + 1)
    )
    with pytest.raises(RtmpError, match="chunk streams"):
        conn.receive_data(data)


def test_partial_messages_stay_within_the_memory_bound() -> None:
    conn = RtmpServerConnection(max_message_size=4096)
    conn.receive_data(b"\x03" + bytes(HANDSHAKE_SIZE))
    conn.receive_data(bytes(HANDSHAKE_SIZE))
    size = (2048).to_bytes(4, "big")
    conn.receive_data(chunk(0, 2, length=4, type_id=MessageType.SET_CHUNK_SIZE, body=size))
    with pytest.raises(RtmpError, match="memory bound"):
        for csid in range(3, 63):  # many half-sent 4 KiB messages
            conn.receive_data(
                chunk(0, csid, length=4096, type_id=MessageType.VIDEO, body=b"x" * 2048)
            )
            assert conn.buffered_bytes() <= 2 * 4096


def test_continuation_header_for_an_unknown_chunk_stream_is_refused() -> None:
    conn = handshaken()
    with pytest.raises(RtmpError, match="starts with a type-3"):
        conn.receive_data(chunk(3, 9, body=b"x"))


def test_malformed_amf_command_is_refused() -> None:
    conn = handshaken()
    body = b"\x02\x00\x07conn"  # string cut short
    with pytest.raises(RtmpError, match="malformed"):
        conn.receive_data(
            chunk(0, 3, length=len(body), type_id=MessageType.COMMAND_AMF0, body=body)
        )
