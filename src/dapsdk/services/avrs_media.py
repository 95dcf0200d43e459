"""Signed media: an envelope a publisher may put in a content packet's payload so that every
receiver can check, end to end, who produced the media and that nobody on the way (server, relay,
cache) changed, swapped or reordered it. It is what the seed's session example verifies with
``avrs_ch_tsd_sign_pkt_verify`` on each received packet.

Content packets themselves are not signed (docs/avrs-protocol.md §3: per-packet signatures would
cost more than the media, and the node rewrites the per-session handle); this envelope lives in
the opaque payload, so the node forwards it unchanged. Layout (little-endian), shaped like an AVRS
request so the seed's verify function applies as is (version 2; version 1 ends at ``pts`` with a
36-byte header, is still parsed, and has no dts, duration or kind)::

    off size field
    0   4    magic       b"AVSM"
    4   1    version     2
    5   1    flow_id     the content packet's flow (the track index)
    6   1    flags       MediaFlag of the content packet
    7   1    kind        0 media, 1 content info (version 1: reserved 0)
    8   16   content_id  content GUUID
    24  4    seq         per-flow sequence number
    28  8    pts         i64 microseconds
    36  8    dts         i64 microseconds (B-frames: differs from pts)
    44  4    duration    u32 microseconds
    48  ...  TSD args    DATA 0x0001 (the media or the encoded content info), TIMESTAMP 0xFFF0
                         (u64 ms), SIGN 0xFFFF (last)

The signature covers ``envelope[: header + sign_offset]``. Receivers compare ``flow_id``, ``seq``
and ``content_id`` with the outer packet and the signer with the content's owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from dapsdk.avrs.buffer import Reader, Writer
from dapsdk.avrs.constants import NO_TIMESTAMP, CommonArg, MediaFlag
from dapsdk.avrs.errors import AvrsProtocolError
from dapsdk.avrs.signing import AvrsSigner, decode_sign_blob, identity_of, tsd_sign_pkt_verify
from dapsdk.avrs.tsd import Tsd, parse_tsds, push_tsd

MAGIC: Final = b"AVSM"
VERSION: Final = 2
HEADER_SIZE: Final = 48
V1_HEADER_SIZE: Final = 36
#: Envelope kinds (version 2).
KIND_MEDIA: Final = 0
KIND_INFO: Final = 1
#: TSD type of the media bytes inside the envelope.
DATA_ARG: Final = 0x0001


@dataclass(frozen=True, slots=True)
class SignedMedia:
    """A parsed envelope. Its signature is NOT verified yet: call :meth:`verify`."""

    data: bytes = field(repr=False)
    """The whole envelope (what the signature function takes as ``pkt``)."""
    header_size: int
    args_size: int
    sign: Tsd | None
    """The SIGN TSD (None when absent)."""
    tsd_offset: int
    """Offset of SIGN inside the argument area."""
    media: bytes = field(repr=False)
    content_id: bytes
    flow_id: int
    flags: MediaFlag
    seq: int
    pts: int
    timestamp_ms: int | None
    dts: int = NO_TIMESTAMP
    duration: int = 0
    kind: int = KIND_MEDIA
    version: int = VERSION

    @property
    def signer(self) -> bytes | None:
        """Identity of the key in SIGN (whether or not the signature verifies)."""
        if self.sign is None:
            return None
        try:
            return identity_of(decode_sign_blob(self.sign.data).public_key)
        except AvrsProtocolError:
            return None

    def verify(self) -> bool:
        if self.sign is None:
            return False
        return tsd_sign_pkt_verify(
            self.sign, self.tsd_offset, self.data, self.header_size, self.args_size
        )


def sign_media(
    signer: AvrsSigner,
    content_id: bytes,
    flow_id: int,
    seq: int,
    media: bytes,
    *,
    now: float,
    pts: int = NO_TIMESTAMP,
    flags: MediaFlag = MediaFlag.NONE,
    dts: int = NO_TIMESTAMP,
    duration: int = 0,
    kind: int = KIND_MEDIA,
    version: int = 1,
) -> bytes:
    """The signed envelope of ``media`` (put it in the content packet's payload). Version 1 (the
    default, opaque relay) has no dts, duration or kind; the media hub takes version 2."""
    if len(content_id) != 16:
        raise ValueError("content_id must be 16 bytes")
    if version == 1 and (dts != NO_TIMESTAMP or duration or kind != KIND_MEDIA):
        raise ValueError("dts, duration and kind need envelope version 2")
    if version not in (1, 2):
        raise ValueError(f"unknown envelope version {version}")
    writer = Writer(HEADER_SIZE + len(media) + 200)
    writer.push_bytes(MAGIC)
    writer.push_u8(version)
    writer.push_u8(flow_id)
    writer.push_u8(int(flags))
    writer.push_u8(kind if version == 2 else 0)
    writer.push_bytes(content_id)
    writer.push_u32(seq & 0xFFFFFFFF)
    writer.push_i64(pts)
    if version == 2:
        writer.push_i64(dts)
        writer.push_u32(max(0, min(duration, 0xFFFFFFFF)))
    push_tsd(writer, Tsd(DATA_ARG, media))
    push_tsd(writer, Tsd(CommonArg.TIMESTAMP, int(now * 1000).to_bytes(8, "little")))
    prefix = writer.data()
    push_tsd(writer, Tsd(CommonArg.SIGN, signer.sign_blob(prefix).encode()))
    return writer.data()


def is_signed_media(payload: bytes) -> bool:
    return payload[:4] == MAGIC


def parse_signed_media(payload: bytes) -> SignedMedia | None:
    """Parse an envelope; None when ``payload`` is not one or is malformed."""
    if not is_signed_media(payload) or len(payload) < V1_HEADER_SIZE:
        return None
    try:
        reader = Reader(payload)
        reader.pull_bytes(4)
        version = reader.pull_u8()
        flow_id = reader.pull_u8()
        flags = reader.pull_u8()
        kind = reader.pull_u8()
        content_id = reader.pull_bytes(16)
        seq = reader.pull_u32()
        pts = reader.pull_i64()
        dts, duration = NO_TIMESTAMP, 0
        if version == 2:
            dts = reader.pull_i64()
            duration = reader.pull_u32()
            header = HEADER_SIZE
        elif version == 1:
            header, kind = V1_HEADER_SIZE, KIND_MEDIA
        else:
            return None
        if kind not in (KIND_MEDIA, KIND_INFO):
            return None
        args = parse_tsds(memoryview(payload)[header:], max_total=len(payload))
        media = args.get(DATA_ARG)
        timestamp = args.uint(CommonArg.TIMESTAMP, 8, required=False)
        sign: Tsd | None = None
        offset = len(payload) - header
        if args.items and args.items[-1].type == CommonArg.SIGN:
            sign, offset = args.items[-1], args.offsets[-1]
        return SignedMedia(
            data=payload,
            header_size=header,
            args_size=len(payload) - header,
            sign=sign,
            tsd_offset=offset,
            media=media or b"",
            content_id=content_id,
            flow_id=flow_id,
            flags=MediaFlag(flags & 0x07),
            seq=seq,
            pts=pts,
            timestamp_ms=timestamp,
            dts=dts,
            duration=duration,
            kind=kind,
            version=version,
        )
    except (AvrsProtocolError, ValueError):
        return None
