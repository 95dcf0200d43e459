"""Constants as the seed, the TSD codec, and the request / retcode / content packet codecs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dapsdk.avrs.buffer import BufferReadError, Reader, Writer
from dapsdk.avrs.constants import (
    NO_TIMESTAMP,
    AvrsChannel,
    MediaFlag,
    RequestFlag,
    Role,
    SessionOp,
)
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError, code_token
from dapsdk.avrs.packets import (
    ContentPacket,
    Reply,
    RequestHeader,
    decode_content,
    decode_reply,
    decode_request,
    encode_content,
    encode_reply,
    encode_request,
)
from dapsdk.avrs.tsd import Tsd, encode_tsds, parse_tsds, pull_tsd

from .kit import CLIENT

SEED_CODES = {
    "SUCCESS": 0x00000000,
    "ARG_INCORRECT": 0x00000001,
    "SIGN_NOT_PRESENT": 0x000000F0,
    "SIGN_INCORRECT": 0x000000F1,
    "SIGN_ALIEN": 0x000000F2,
    "CLUSTER_WRONG_REQUEST": 0x00000101,
    "CLUSTER_NOT_FOUND": 0x00000102,
    "CONTENT_UNAVAILBLE": 0x00000200,
    "CONTENT_NOT_FOUND": 0x00000201,
    "CONTENT_INFO_CORRUPTED": 0x00000202,
    "CONTENT_CORRUPTED": 0x00000203,
    "CONTENT_FLOW_WRONG_ID": 0x00000210,
    "MEMBER_NOT_FOUND": 0x00000300,
    "MEMBER_SECURITY_ISSUE": 0x00000301,
    "MEMBER_INFO_PROBLEM": 0x00000302,
    "SESSION_WRONG_REQUEST": 0x00000400,
    "SESSION_NOT_OPENED": 0x00000401,
    "SESSION_ALREADY_OPENED": 0x00000402,
    "SESSION_CONTENT_ID_WRONG": 0x00000404,
    "ERROR": 0xFFFFFFFF,
}


@pytest.mark.parametrize(("name", "value"), sorted(SEED_CODES.items()))
def test_seed_error_codes_and_tokens(name: str, value: int) -> None:
    code = AvrsError[name]
    assert code == value
    assert code.token == name
    assert AvrsError.from_token(name) is code
    assert code_token(value) == name


def test_error_alias_and_unknown_codes() -> None:
    assert AvrsError(0x200) is AvrsError.CONTENT_UNAVAILABLE
    assert AvrsError.coerce(0x12345) == 0x12345
    assert code_token(0x12345) == "0x00012345"
    error = AvrsProtocolError(AvrsError.SIGN_ALIEN, "who?")
    assert (error.code, error.reason, str(error)) == (
        AvrsError.SIGN_ALIEN,
        "who?",
        "SIGN_ALIEN: who?",
    )


def test_roles_and_channels_as_seed() -> None:
    assert [
        int(r) for r in (Role.CLIENT, Role.HOST, Role.OPERATOR, Role.SERVER, Role.BALANCER)
    ] == [
        0x0001,
        0x0002,
        0x0004,
        0x0100,
        0x0200,
    ]
    assert int(Role.ALL) == 0xFFFF
    assert Role.HOST | Role.SERVER == 0x0102
    channels = {c.name: int(c) for c in AvrsChannel}
    assert channels == {
        "SIGNAL": 0x41,
        "RETCODE": 0x72,
        "CLUSTER": 0x43,
        "CONTENT": 0x63,
        "SESSION": 0x53,
    }


# ------------------------------------------------------------------ buffer & TSD


def test_reader_failed_read_leaves_cursor() -> None:
    reader = Reader(b"\x01\x02\x03")
    assert reader.pull_u16() == 0x0201
    with pytest.raises(BufferReadError):
        reader.pull_u32()
    assert reader.tell() == 2
    assert reader.pull_u8() == 3


def test_writer_rejects_out_of_range() -> None:
    writer = Writer()
    for push, value in ((writer.push_u8, 256), (writer.push_u16, -1), (writer.push_u32, 1 << 32)):
        with pytest.raises(ValueError):
            push(value)


def test_tsd_layout_is_type_u16_size_u32_le() -> None:
    assert encode_tsds([Tsd(0x1234, b"ab")]) == bytes.fromhex("3412 02000000 6162")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x01\x00\x05", "header truncated"),
        (bytes.fromhex("0100 05000000 6162"), "size beyond the data"),
        (bytes.fromhex("0100 ffffffff"), "huge size"),
        (encode_tsds([Tsd(1, b"")]) + b"\x00", "trailing byte"),
    ],
)
def test_tsd_parser_refuses_malformed(data: bytes, why: str) -> None:
    with pytest.raises(AvrsProtocolError) as info:
        parse_tsds(data)
    assert info.value.code is AvrsError.ARG_INCORRECT, why


def test_tsd_parser_caps_count_and_total() -> None:
    many = encode_tsds([Tsd(1, b"")] * 5)
    assert len(parse_tsds(many, max_items=5)) == 5
    with pytest.raises(AvrsProtocolError):
        parse_tsds(many, max_items=4)
    with pytest.raises(AvrsProtocolError):
        parse_tsds(encode_tsds([Tsd(1, b"x" * 100)]), max_total=100)


def test_pull_tsd_failure_leaves_cursor() -> None:
    reader = Reader(bytes.fromhex("0100 09000000 61"))
    with pytest.raises(AvrsProtocolError):
        pull_tsd(reader)
    assert reader.tell() == 0


def test_typed_accessors_turn_wrong_sizes_into_codes() -> None:
    args = parse_tsds(encode_tsds([Tsd(1, b"abc"), Tsd(2, b"\xff"), Tsd(3, b"x"), Tsd(3, b"y")]))
    with pytest.raises(AvrsProtocolError):
        args.uint(1, 4)
    with pytest.raises(AvrsProtocolError):
        args.text(2, 10)  # not UTF-8
    with pytest.raises(AvrsProtocolError):
        args.get(3)  # repeated
    with pytest.raises(AvrsProtocolError):
        args.require(9)
    assert args.uint(9, 4, required=False) is None
    assert args.text(1, 3) == "abc"


tsd_items = st.builds(Tsd, st.integers(0, 0xFFFF), st.binary(max_size=64))


@given(st.lists(tsd_items, max_size=20))
def test_tsd_roundtrip(items: list[Tsd]) -> None:
    parsed = parse_tsds(encode_tsds(items))
    assert list(parsed.items) == items
    offsets = [sum(i.wire_size for i in items[:n]) for n in range(len(items))]
    assert list(parsed.offsets) == offsets


@given(st.binary(max_size=512))
def test_tsd_parser_fuzz_raises_only_coded_errors(data: bytes) -> None:
    try:
        parsed = parse_tsds(data)
    except AvrsProtocolError as exc:
        assert exc.code is AvrsError.ARG_INCORRECT
    else:
        assert encode_tsds(parsed.items) == data


# ------------------------------------------------------------------ requests

request_headers = st.builds(
    RequestHeader,
    st.integers(0, 255),
    st.sampled_from([AvrsChannel.SIGNAL, AvrsChannel.CLUSTER, AvrsChannel.SESSION]),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from(list(RequestFlag)),
)
arg_items = st.builds(Tsd, st.integers(0, 0xFFEF), st.binary(max_size=40))


@given(request_headers, st.lists(arg_items, max_size=8))
def test_unsigned_request_roundtrip(header: RequestHeader, args: list[Tsd]) -> None:
    request = decode_request(header.channel, encode_request(header, args))
    assert request.header == header
    assert list(request.args) == args
    assert request.sign is None


@given(
    request_headers,
    st.lists(arg_items, max_size=4),
    st.integers(0, 1 << 50),
    st.binary(min_size=16, max_size=16),
)
def test_signed_request_roundtrip(
    header: RequestHeader, args: list[Tsd], timestamp: int, nonce: bytes
) -> None:
    data = encode_request(header, args, signer=CLIENT, timestamp_ms=timestamp, nonce=nonce)
    request = decode_request(header.channel, data)
    assert request.header == header
    assert list(request.args)[: len(args)] == args
    assert request.args.uint(0xFFF0, 8) == timestamp
    assert request.args.get(0xFFF1) == nonce
    assert request.sign is not None
    assert request.signed_message == data[: len(data) - request.sign.wire_size]


def test_request_header_checks_channel_version_and_flags() -> None:
    data = encode_request(RequestHeader(SessionOp.OPEN, AvrsChannel.SESSION, 1))
    with pytest.raises(AvrsProtocolError):
        decode_request(AvrsChannel.CLUSTER, data)  # signed for 'S', arrived on 'C'
    for index, value in ((2, 2), (3, 0x80)):  # version 2, unknown flag
        bad = bytearray(data)
        bad[index] = value
        with pytest.raises(AvrsProtocolError):
            decode_request(AvrsChannel.SESSION, bytes(bad))
    with pytest.raises(AvrsProtocolError):
        decode_request(AvrsChannel.SESSION, data[:7])


def test_encode_request_misuse() -> None:
    header = RequestHeader(1, AvrsChannel.SESSION, 1)
    with pytest.raises(ValueError):
        encode_request(header, [Tsd(0xFFFF, b"")])
    with pytest.raises(ValueError):
        encode_request(header, signer=CLIENT)  # no timestamp / nonce
    with pytest.raises(ValueError):
        encode_request(header, timestamp_ms=1)


@pytest.mark.parametrize("channel", [AvrsChannel.SIGNAL, AvrsChannel.CLUSTER, AvrsChannel.SESSION])
@given(data=st.binary(max_size=300))
def test_request_parser_fuzz(channel: AvrsChannel, data: bytes) -> None:
    try:
        decode_request(channel, data)
    except AvrsProtocolError as exc:
        assert exc.code in (AvrsError.ARG_INCORRECT, AvrsError.SIGN_INCORRECT)


# ------------------------------------------------------------------ retcodes & content

replies = st.builds(
    Reply,
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 255),
    st.integers(0, 255),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=64),
    st.lists(arg_items, max_size=4).map(tuple),
)


@given(replies)
def test_reply_roundtrip(reply: Reply) -> None:
    assert decode_reply(encode_reply(reply)) == reply


def test_reply_layout() -> None:
    reply = Reply(0x401, 7, ord("S"), 0x10, "SESSION_NOT_OPENED")
    assert encode_reply(reply) == (
        bytes.fromhex("01040000 07000000 53 10 1200") + b"SESSION_NOT_OPENED"
    )


@given(st.binary(max_size=200))
def test_reply_parser_fuzz(data: bytes) -> None:
    try:
        decode_reply(data)
    except AvrsProtocolError as exc:
        assert exc.code is AvrsError.ARG_INCORRECT


contents = st.builds(
    ContentPacket,
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 255),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=100),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.sampled_from(
        [MediaFlag.NONE, MediaFlag.KEYFRAME, MediaFlag.KEYFRAME | MediaFlag.END_OF_FLOW]
    ),
)


@given(contents)
def test_content_roundtrip(packet: ContentPacket) -> None:
    assert decode_content(encode_content(packet)) == packet


def test_content_layout_and_limits() -> None:
    packet = ContentPacket(3, 1, 9, b"xy", NO_TIMESTAMP, 5, MediaFlag.KEYFRAME)
    data = encode_content(packet)
    assert data[:12] == bytes.fromhex("01 01 0000 03000000 09000000")
    assert len(data) == 28 + 2
    with pytest.raises(AvrsProtocolError) as info:
        decode_content(data, max_payload=1)
    assert info.value.code is AvrsError.CONTENT_CORRUPTED
    assert "payload=2 bytes" in repr(packet)


@given(st.binary(max_size=100))
def test_content_parser_fuzz(data: bytes) -> None:
    try:
        decode_content(data)
    except AvrsProtocolError as exc:
        assert exc.code is AvrsError.CONTENT_CORRUPTED
