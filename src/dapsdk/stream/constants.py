"""Wire constants of dap_stream: the seed's packet types, flags and channel ids, plus our limits."""

from __future__ import annotations

import enum
import struct
from typing import Final

#: The seed's ``dap_stream_packet_hdr_t``: size u32, type u8, seq_id u32, ch_id u16, flags u8;
#: packed, little-endian.
HEADER = struct.Struct("<IBIHB")
HEADER_SIZE: Final = HEADER.size  # 12

#: AES-256-GCM authentication tag appended to every sealed body.
TAG_SIZE: Final = 16

#: Protocol versions this implementation speaks, newest first.
PROTOCOL_VERSIONS: Final = (1,)

#: Magic at the start of the first handshake message ("DAPS").
HANDSHAKE_MAGIC: Final = b"DAPS"

#: The seed's STREAM_KEEPALIVE_TIMEOUT, in seconds: a peer silent this long is dead.
STREAM_KEEPALIVE_TIMEOUT: Final = 3

#: Largest channel id ("custom ids up to 0xFFFF").
MAX_CHANNEL_ID: Final = 0xFFFF


class PacketType(enum.IntEnum):
    """``DAP_STREAM_PKT_TYPE_*``: the header's ``type`` byte."""

    DATA = 0x01
    CONTROL = 0x02
    KEEPALIVE = 0x03
    CLOSE = 0x04
    ERROR = 0x05


class PacketFlag(enum.IntFlag):
    """``DAP_STREAM_PKT_FLAG_*``: the header's ``flags`` byte. Other bits must be zero."""

    NONE = 0
    COMPRESSED = 0x01
    ENCRYPTED = 0x02
    FRAGMENTED = 0x04
    BATCHED = 0x08
    """Our extension (feature BATCHING): the DATA body is ``u16 length | bytes`` records."""


KNOWN_FLAGS: Final = int(
    PacketFlag.COMPRESSED | PacketFlag.ENCRYPTED | PacketFlag.FRAGMENTED | PacketFlag.BATCHED
)
KNOWN_TYPES: Final = frozenset(int(t) for t in PacketType)


class ChannelId(enum.IntEnum):
    """``DAP_STREAM_CH_ID_*``: well-known channel ids. Custom channels use 0x10..0xFFFF."""

    CONTROL = 0x00
    FILE = 0x01
    SERVICE = 0x02
    SECURITY = 0x03
    MEDIA = 0x04
    CUSTOM = 0x10


class ControlOp(enum.IntEnum):
    """First byte of a CONTROL packet body after the handshake."""

    USER = 0x00  #: application CONTROL message written with ``write(CONTROL, ...)``
    OPEN = 0x01  #: open the channel named by the header's ch_id
    WINDOW = 0x02  #: u64 absolute credit; ch_id 0 with scope byte for the connection
    REKEY = 0x03  #: sender switches to the next traffic key after this packet
    DISCARD = 0x04  #: abandon the partially sent fragmented message on this channel
    PRIORITY = 0x05  #: u8 urgency 0..7 for the channel (informational for the peer)


class CloseScope(enum.IntEnum):
    """First byte of a CLOSE body."""

    CHANNEL = 0
    STREAM = 1


class KeepaliveKind(enum.IntEnum):
    PING = 0
    PONG = 1


class HandshakeStep(enum.IntEnum):
    """seq_id of the three handshake packets (type CONTROL, ch_id 0, flags 0)."""

    HELLO = 0
    RESPONSE = 1
    FINISH = 2
    COOKIE = 0x10
    """Initiator's cookie echo, sent right before HELLO on a retried connection (§3.7)."""


class Feature(enum.IntFlag):
    """Feature bits offered in HELLO and selected in RESPONSE; bound into the transcript."""

    NONE = 0
    COMPRESSION_ZSTD = 0x01
    COMPRESSION_LZ4 = 0x02
    FRAGMENTATION = 0x04
    CHANNEL_KEYS = 0x08
    BATCHING = 0x10


SUPPORTED_FEATURES: Final = (
    Feature.COMPRESSION_ZSTD
    | Feature.COMPRESSION_LZ4
    | Feature.FRAGMENTATION
    | Feature.CHANNEL_KEYS
    | Feature.BATCHING
)
