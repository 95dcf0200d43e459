"""Packet codecs of the AVRS channels: requests ('A', 'C', 'S'), retcodes ('r') and content ('c').

Request (8-byte header, then TSD arguments, then an optional SIGN TSD that must be last)::

    off size field
    0   1    op          request type of the channel (ClusterOp / SessionOp / SignalOp)
    1   1    channel     ASCII id of the channel ('A', 'C', 'S'); must match the dap_stream channel
    2   1    version     PROTOCOL_VERSION (1)
    3   1    flags       RequestFlag (bit 0 RESPONSE); other bits zero
    4   4    request_id  u32 chosen by the sender, echoed in the answer
    8   ...  TSD args    [TIMESTAMP, NONCE required when signed] ... [SIGN last]

The signature covers every byte before the SIGN TSD. Because the channel and version bytes are in
the header, a request signed for one channel can never be accepted on another.

Retcode (12-byte header, token, optional TSD tail)::

    0   4    code        u32 AvrsError
    4   4    request_id  u32 of the answered request (content errors: the packet's seq)
    8   1    channel     ASCII id of the answered request's channel
    9   1    op          op of the answered request (0 for content packets)
    10  2    token_size  u16
    12  ...  token       ASCII, the code's token ("SESSION_NOT_OPENED")
    ...      TSD tail    ReplyArg items (session id, content handle, detail, ...)

Content (28-byte header, then payload)::

    0   1    flow_id     index of the flow (track) in the content's flow string
    1   1    flags       MediaFlag (KEYFRAME, DISCONTINUITY, END_OF_FLOW); other bits zero
    2   2    reserved    zero
    4   4    handle      u32 per-session content handle handed out by session CONTENT_ADD
    8   4    seq         u32 per-flow sequence number (wraps)
    12  8    pts         i64 microseconds, NO_TIMESTAMP if unknown
    20  8    dts         i64 microseconds, NO_TIMESTAMP if unknown
    28  ...  payload
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from .buffer import Reader, Writer
from .constants import (
    KNOWN_MEDIA_FLAGS,
    KNOWN_REQUEST_FLAGS,
    NO_TIMESTAMP,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    REQUEST_CHANNELS,
    AvrsChannel,
    CommonArg,
    MediaFlag,
    RequestFlag,
)
from .errors import AvrsError, AvrsProtocolError
from .signing import AvrsSigner
from .tsd import (
    DEFAULT_MAX_TSD_ITEMS,
    DEFAULT_MAX_TSD_TOTAL,
    Tsd,
    TsdList,
    encode_tsds,
    parse_tsds,
    push_tsd,
)

REQUEST_HEADER_SIZE: Final = 8
RETCODE_HEADER_SIZE: Final = 12
CONTENT_HEADER_SIZE: Final = 28
#: Longest token accepted in a retcode (the longest seed token is 24 characters).
MAX_TOKEN_SIZE: Final = 64


@dataclass(frozen=True, slots=True)
class RequestHeader:
    op: int
    channel: AvrsChannel
    request_id: int
    flags: RequestFlag = RequestFlag.NONE
    version: int = PROTOCOL_VERSION


def push_request_header(writer: Writer, header: RequestHeader) -> None:
    writer.push_u8(header.op)
    writer.push_u8(int(header.channel) & 0xFF)
    writer.push_u8(header.version)
    writer.push_u8(int(header.flags))
    writer.push_u32(header.request_id)


def pull_request_header(reader: Reader, channel: AvrsChannel) -> RequestHeader:
    """Read and validate a request header that arrived on ``channel``."""
    if reader.remaining() < REQUEST_HEADER_SIZE:
        raise AvrsProtocolError(
            AvrsError.ARG_INCORRECT, f"request is {reader.remaining()} bytes, header needs 8"
        )
    op = reader.pull_u8()
    channel_byte = reader.pull_u8()
    version = reader.pull_u8()
    flags = reader.pull_u8()
    request_id = reader.pull_u32()
    if channel_byte != int(channel):
        raise AvrsProtocolError(
            AvrsError.ARG_INCORRECT,
            f"request for channel 0x{channel_byte:02x} arrived on '{chr(channel)}'",
        )
    if version != PROTOCOL_VERSION:
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"unsupported version {version}")
    if flags & ~KNOWN_REQUEST_FLAGS:
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"unknown request flags 0x{flags:02x}")
    return RequestHeader(op, channel, request_id, RequestFlag(flags), version)


@dataclass(frozen=True, slots=True)
class Request:
    """A request whose structure is valid. Its signature, if any, is NOT verified yet."""

    header: RequestHeader
    args: TsdList
    """Arguments before the SIGN TSD (the SIGN TSD itself is in :attr:`sign`)."""
    sign: Tsd | None
    sign_offset: int
    """Offset of the SIGN TSD inside the argument area (= size of the signed arguments)."""
    raw: bytes = field(repr=False)
    """The whole packet as received: the signed message is ``raw[:8 + sign_offset]``."""

    @property
    def args_size(self) -> int:
        return len(self.raw) - REQUEST_HEADER_SIZE

    @property
    def signed_message(self) -> bytes:
        return self.raw[: REQUEST_HEADER_SIZE + self.sign_offset]

    @property
    def is_response(self) -> bool:
        return bool(self.header.flags & RequestFlag.RESPONSE)


def decode_request(
    channel: AvrsChannel,
    data: bytes,
    *,
    max_items: int = DEFAULT_MAX_TSD_ITEMS,
    max_total: int = DEFAULT_MAX_TSD_TOTAL,
) -> Request:
    """Parse a request packet. Raises AvrsProtocolError with ARG_INCORRECT or SIGN_INCORRECT.

    Structure only: the SIGN TSD, if present, must be the last item and appear once.
    """
    if channel not in REQUEST_CHANNELS:
        raise ValueError(f"channel {channel!r} does not carry requests")
    data = bytes(data)
    reader = Reader(data)
    header = pull_request_header(reader, channel)
    tsds = parse_tsds(
        memoryview(data)[REQUEST_HEADER_SIZE:],
        max_items=max_items,
        max_total=max_total,
    )
    sign_positions = [i for i, item in enumerate(tsds.items) if item.type == CommonArg.SIGN]
    args_size = len(data) - REQUEST_HEADER_SIZE
    if not sign_positions:
        return Request(header, tsds, None, args_size, data)
    if len(sign_positions) > 1 or sign_positions[0] != len(tsds.items) - 1:
        raise AvrsProtocolError(
            AvrsError.SIGN_INCORRECT, "SIGN must be the last argument and appear once"
        )
    last = len(tsds.items) - 1
    args = TsdList(tsds.items[:last], tsds.offsets[:last])
    return Request(header, args, tsds.items[last], tsds.offsets[last], data)


def encode_request(
    header: RequestHeader,
    args: Sequence[Tsd] = (),
    *,
    signer: AvrsSigner | None = None,
    timestamp_ms: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Serialise a request. With a signer, TIMESTAMP and NONCE are appended, then SIGN.

    Time and randomness are arguments (sans-IO): the caller supplies ``timestamp_ms`` and ``nonce``.
    """
    for item in args:
        if item.type in (CommonArg.SIGN, CommonArg.TIMESTAMP, CommonArg.NONCE):
            raise ValueError("SIGN, TIMESTAMP and NONCE are added by encode_request itself")
    writer = Writer()
    push_request_header(writer, header)
    for item in args:
        push_tsd(writer, item)
    if signer is None:
        if timestamp_ms is not None or nonce is not None:
            raise ValueError("timestamp and nonce are only sent in signed requests")
        return writer.data()
    if timestamp_ms is None or nonce is None:
        raise ValueError("a signed request needs timestamp_ms and nonce")
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
    push_tsd(writer, Tsd(CommonArg.TIMESTAMP, timestamp_ms.to_bytes(8, "little")))
    push_tsd(writer, Tsd(CommonArg.NONCE, nonce))
    prefix = writer.data()
    push_tsd(writer, Tsd(CommonArg.SIGN, signer.sign_blob(prefix).encode()))
    return writer.data()


# --------------------------------------------------------------------------------------- retcode


@dataclass(frozen=True, slots=True)
class Reply:
    """A Retcode ('r') packet: the answer to one request (or to a bad content packet)."""

    code: int
    """u32 AvrsError (unknown codes from newer peers are kept as ints)."""
    request_id: int
    channel: int
    """ASCII id of the answered request's channel (0 if the request was unreadable)."""
    op: int
    token: str
    args: tuple[Tsd, ...] = ()

    def arg(self, tsd_type: int) -> bytes | None:
        for item in self.args:
            if item.type == tsd_type:
                return item.data
        return None


def encode_reply(reply: Reply) -> bytes:
    token = reply.token.encode("ascii")
    if len(token) > MAX_TOKEN_SIZE:
        raise ValueError(f"token longer than {MAX_TOKEN_SIZE} bytes")
    writer = Writer()
    writer.push_u32(reply.code)
    writer.push_u32(reply.request_id)
    writer.push_u8(reply.channel)
    writer.push_u8(reply.op)
    writer.push_u16(len(token))
    writer.push_bytes(token)
    writer.push_bytes(encode_tsds(reply.args))
    return writer.data()


def decode_reply(
    data: bytes, *, max_items: int = DEFAULT_MAX_TSD_ITEMS, max_total: int = DEFAULT_MAX_TSD_TOTAL
) -> Reply:
    reader = Reader(data)
    if reader.remaining() < RETCODE_HEADER_SIZE:
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "retcode shorter than its header")
    code = reader.pull_u32()
    request_id = reader.pull_u32()
    channel = reader.pull_u8()
    op = reader.pull_u8()
    token_size = reader.pull_u16()
    if token_size > MAX_TOKEN_SIZE:
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"retcode token of {token_size} bytes")
    token_bytes = reader.pull_bytes(token_size)
    if not all(0x21 <= b <= 0x7E for b in token_bytes):
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "retcode token is not printable ASCII")
    tail = parse_tsds(
        reader.pull_view(reader.remaining()), max_items=max_items, max_total=max_total
    )
    return Reply(code, request_id, channel, op, token_bytes.decode("ascii"), tail.items)


# --------------------------------------------------------------------------------------- content


@dataclass(frozen=True, slots=True)
class ContentPacket:
    """One media packet of a content flow."""

    handle: int
    """Per-session content handle (u32) from session CONTENT_ADD."""
    flow_id: int
    """Index of the flow (track) in the content's flow string."""
    seq: int
    """Per-flow u32 sequence number."""
    payload: bytes = field(repr=False)
    pts: int = NO_TIMESTAMP
    """Presentation time in microseconds."""
    dts: int = NO_TIMESTAMP
    """Decoding time in microseconds."""
    flags: MediaFlag = MediaFlag.NONE

    def __repr__(self) -> str:
        return (
            f"ContentPacket(handle={self.handle}, flow={self.flow_id}, seq={self.seq}, "
            f"pts={self.pts}, flags={int(self.flags)}, payload={len(self.payload)} bytes)"
        )

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & MediaFlag.KEYFRAME)


def encode_content(packet: ContentPacket) -> bytes:
    """Serialise once; fan-out sends the same bytes to every subscriber."""
    writer = Writer()
    writer.push_u8(packet.flow_id)
    writer.push_u8(int(packet.flags))
    writer.push_u16(0)
    writer.push_u32(packet.handle)
    writer.push_u32(packet.seq)
    writer.push_i64(packet.pts)
    writer.push_i64(packet.dts)
    writer.push_bytes(packet.payload)
    return writer.data()


def decode_content(data: bytes, *, max_payload: int = 16 * 1024 * 1024) -> ContentPacket:
    """Parse a content packet. Any malformation is CONTENT_CORRUPTED."""
    reader = Reader(data)
    if reader.remaining() < CONTENT_HEADER_SIZE:
        raise AvrsProtocolError(
            AvrsError.CONTENT_CORRUPTED, f"content packet of {len(data)} bytes, header needs 28"
        )
    flow_id = reader.pull_u8()
    flags = reader.pull_u8()
    reserved = reader.pull_u16()
    handle = reader.pull_u32()
    seq = reader.pull_u32()
    pts = reader.pull_i64()
    dts = reader.pull_i64()
    if flags & ~KNOWN_MEDIA_FLAGS or reserved:
        raise AvrsProtocolError(
            AvrsError.CONTENT_CORRUPTED, f"unknown media flags 0x{flags:02x} / reserved {reserved}"
        )
    if reader.remaining() > max_payload:
        raise AvrsProtocolError(
            AvrsError.CONTENT_CORRUPTED, f"payload {reader.remaining()} above {max_payload}"
        )
    return ContentPacket(handle, flow_id, seq, reader.pull_rest(), pts, dts, MediaFlag(flags))
