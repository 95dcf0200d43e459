"""Wire constants of AVRS: roles, channel ids, request types and argument (TSD) types.

Values marked *(original)* are those of the C draft (cellframe-sdk ``avrs-integrated``, see
``docs/avrs-protocol.md``); values marked *(dapsdk)* are new and live in ranges the original left
unused. Everything is little-endian on the wire.
"""

from __future__ import annotations

import enum
from typing import Final


class Role(enum.IntFlag):
    """``avrs_role_t``: a u16 bitmask, so one member may hold several roles.

    The low byte holds human roles, the high byte infrastructure roles (seed).
    """

    NONE = 0x0000
    CLIENT = 0x0001
    HOST = 0x0002
    OPERATOR = 0x0004
    SERVER = 0x0100
    BALANCER = 0x0200
    ALL = 0xFFFF


KNOWN_ROLES: Final = Role.CLIENT | Role.HOST | Role.OPERATOR | Role.SERVER | Role.BALANCER


class AvrsChannel(enum.IntEnum):
    """``DAP_AVRS$K_CH_*``: dap_stream channel ids (u16 on the wire, value = the ASCII code)."""

    SIGNAL = ord("A")  # 0x41
    RETCODE = ord("r")  # 0x72
    CLUSTER = ord("C")  # 0x43
    CONTENT = ord("c")  # 0x63
    SESSION = ord("S")  # 0x53


#: Channels whose packets are requests with the common 8-byte request header.
REQUEST_CHANNELS: Final = frozenset({AvrsChannel.SIGNAL, AvrsChannel.CLUSTER, AvrsChannel.SESSION})

#: Version byte of the request header. A packet with another version is ARG_INCORRECT.
PROTOCOL_VERSION: Final = 1


class RequestFlag(enum.IntFlag):
    """The request header's ``flags`` byte. Unknown bits must be zero."""

    NONE = 0x00
    #: The packet answers a request (same request_id); it is never answered itself.
    RESPONSE = 0x01


KNOWN_REQUEST_FLAGS: Final = int(RequestFlag.RESPONSE)


class ClusterOp(enum.IntEnum):
    """Cluster ('C') request types."""

    CREATE = 0x01  #: (original)
    DESTROY = 0x02  #: (original)
    CHANGE = 0x03  #: (original) change cluster options (title, setup, encryption, algorithm)
    INFO = 0x04  #: (original) ask for (or, as a response, carry) the cluster's options
    LIST_REQ = 0x05  #: (original)
    LIST_RESP = 0x06  #: (original) response only
    MEMBER_REQUEST_ADD = 0x10  #: (original) ask to join; lands in the pending table
    MEMBER_REQUEST_DEL = 0x11  #: (original) withdraw (self) or deny (host/operator) a join request
    MEMBER_REQUEST_APPROVE = 0x12  #: (original) move a pending candidate into the members
    MEMBER_REMOVE = 0x13  #: (original) kick a member (moderation) or leave (self)
    ROLE_ASSIGN = 0x14  #: (original) change a member's roles (configuration: host only)
    CONTENT_ADD = 0x20  #: (original)
    CONTENT_UPDATE = 0x21  #: (original)
    CONTENT_DEL = 0x22  #: (original)
    CONTENT_LIST_REQ = 0x23  #: (original)
    CONTENT_LIST_RESP = 0x24  #: (original) response only
    BALANCE_REQ = 0x30  #: (original) "which server should I use for this content?"
    BALANCE_RESP = 0x31  #: (original) response only
    LOAD_REPORT = 0x32  #: (dapsdk) a server's load (sessions, bitrate, CPU) for the balancers
    ROUTE_ADD = 0x40  #: (original)
    ROUTE_DEL = 0x41  #: (original)
    ROUTE_FIND = 0x42  #: (original)
    ROUTE_CHECK = 0x43  #: (original)
    STATS_REQ = 0x50  #: (dapsdk) monitoring: ask for cluster statistics
    STATS_RESP = 0x51  #: (dapsdk) response only


class SessionOp(enum.IntEnum):
    """Session ('S') request types."""

    OPEN = 0x01  #: (original) signed; the signer's identity hash becomes the session id
    UPDATE = 0x02  #: (original) update session metadata (display name, ...)
    CLOSE = 0x03  #: (original)
    CONTENT_ADD = 0x10  #: (original) attach a content; the reply carries the content handle
    CONTENT_REMOVE = 0x11  #: (original)
    CONTENT_UPDATE = 0x12  #: (original) change the flags of an attached content
    CLUSTER_ADD = 0x20  #: (original) join a cluster's session-level notifications
    CLUSTER_DEL = 0x21  #: (original)
    CLUSTER_UPDATE = 0x22  #: (original)
    START = 0x30  #: (dapsdk) open the media stream of the attached contents
    SYNC = 0x31  #: (dapsdk) exchange clock references; media may flow afterwards
    STOP = 0x32  #: (dapsdk) stop the media stream; contents stay attached
    MONITOR = 0x33  #: (dapsdk) watch a cluster's metrics without media (host/operator)
    CHAT = 0x40  #: (dapsdk) a chat line to the members of a content
    POLL_CREATE = 0x41  #: (dapsdk) open a poll in a content (host, operator, content owner)
    POLL_VOTE = 0x42  #: (dapsdk) vote in a poll (one vote per identity)
    POLL_CLOSE = 0x43  #: (dapsdk) close a poll; its results are pushed
    MODERATE = 0x44  #: (dapsdk) delete a message, mute, ban, slow mode (host, operator, owner)
    CHAT_MESSAGE = 0x48  #: (dapsdk) push node -> members (RESPONSE flag, request id 0)
    POLL_STATE = 0x49  #: (dapsdk) push: a poll's question, options, counts, open/closed
    MODERATION = 0x4A  #: (dapsdk) push: a moderation action that concerns the members


class SignalOp(enum.IntEnum):
    """Signal ('A') request types (the original defined none)."""

    HELLO = 0x01  #: connection metadata: software name/version, capabilities
    HEARTBEAT = 0x02  #: liveness; answered with a SUCCESS retcode carrying our clock
    QUALITY_REPORT = 0x03  #: rtt, loss, jitter, bitrate as seen by the sender
    REDIRECT = 0x04  #: node -> client: reconnect to TARGET (balancer placement, failover, drain)


class ContentFlag(enum.IntFlag):
    """Flags of an attached content (session CONTENT_FLAGS argument, u32)."""

    NONE = 0
    STREAMING_OUT = 0x1  #: (original) the node streams this content out to the session
    STREAMING_IN = 0x2  #: (original) the session streams this content in to the node
    #: (dapsdk) with STREAMING_OUT: attach even if the content is not declared yet or its source
    #: is offline; media flows once a publisher starts (a viewer that joins before the publisher)
    WAIT = 0x4


KNOWN_CONTENT_FLAGS: Final = int(
    ContentFlag.STREAMING_OUT | ContentFlag.STREAMING_IN | ContentFlag.WAIT
)


class MediaFlag(enum.IntFlag):
    """The content packet's ``flags`` byte. Unknown bits must be zero."""

    NONE = 0x00
    KEYFRAME = 0x01  #: the payload starts a decodable unit (IDR frame, audio frame)
    DISCONTINUITY = 0x02  #: timestamps jump; receivers reset their jitter buffer
    END_OF_FLOW = 0x04  #: the last packet of this flow


KNOWN_MEDIA_FLAGS: Final = int(MediaFlag.KEYFRAME | MediaFlag.DISCONTINUITY | MediaFlag.END_OF_FLOW)

#: pts/dts value meaning "no timestamp" (FFmpeg's AV_NOPTS_VALUE).
NO_TIMESTAMP: Final = -(1 << 63)


class CommonArg(enum.IntEnum):
    """TSD types shared by every request channel; they sit at the top of the u16 space."""

    TIMESTAMP = 0xFFF0  #: u64 milliseconds since the Unix epoch, signed requests only
    NONCE = 0xFFF1  #: 16 random bytes, signed requests only
    DETAIL = 0xFFF2  #: UTF-8 human-readable detail (retcodes)
    #: (dapsdk) 6 ASCII digits: the signer's current TOTP code, required by administrative
    #: requests (membership, roles, configuration, moderation of others); signed with the request.
    TOTP = 0xFFF3
    SIGN = 0xFFFF  #: the signature blob; must be the LAST TSD of the packet


class ClusterArg(enum.IntEnum):
    """Cluster ('C') argument TSD types (original numbering)."""

    ID = 0x01  #: 16-byte cluster GUUID
    TITLE = 0x02  #: UTF-8, at most 63 bytes
    SETUP = 0x03  #: u8 ClusterSetup
    ENCRYPTED = 0x04  #: u8 bool
    SIGN_ALGORITHM = 0x05  #: (dapsdk) u16 SignatureAlgorithm the cluster requires of members
    MEMBERS_COUNT = 0x10  #: u32
    MEMBERS_MAX = 0x11  #: u32
    MEMBER = 0x13  #: 32-byte identity hash (target of member operations)
    ROLE = 0x14  #: u16 Role bitmask
    ADDR = 0x15  #: net_id u64 + node_addr u64
    DISPLAY_NAME = 0x16
    NAME = 0x17
    SECOND_NAME = 0x18
    SURNAME = 0x19
    PATRONIM = 0x1A
    AVATAR = 0x1B  #: bytes, at most 100 KiB
    STATUS = 0x1C
    MEMBER_TITLE = 0x1D  #: the original's second TITLE (0x1D), renamed to avoid the clash
    SIGNAL = 0x1E
    CONTENT_ID = 0x30  #: 16-byte content GUUID
    CONTENT_TITLE = 0x31  #: the original spelled it CONTENT_TITEL
    CONTENT_FLOWS = 0x33  #: ASCII, one character per flow ("av")
    CONTENT_FLOW_CODEC = 0x34  #: u8 flow index + ASCII codec name (repeatable)
    #: (dapsdk) UTF-8 readable content name; the node checks that CONTENT_ID is its wire id, so
    #: token content patterns (``lecture-*``) can match it.
    CONTENT_NAME = 0x35
    #: (dapsdk) u8 interactive features of the content: bit 0 chat, bit 1 polls, bit 2
    #: moderation (the seed's allow_chat, allow_polls, moderation); absent: all on.
    CONTENT_INTERACTIVE = 0x36
    LOAD = 0x38  #: (dapsdk) LOAD_REPORT body: u32 sessions, u64 bits/s, u16 cpu permille
    ROUTE = 0x40  #: (dapsdk) 16-byte content GUUID + u64 node address


class SessionArg(enum.IntEnum):
    """Session ('S') argument TSD types (original numbering, except SIGN which is now 0xFFFF)."""

    CLUSTER_ID = 0x11  #: 16-byte cluster GUUID (the original also had CLUSTER_UUID 0x10)
    CONTENT_UUID = 0x20  #: 16-byte content GUUID
    CONTENT_ID = 0x21  #: u32 per-session content handle
    CONTENT_FLAGS = 0x22  #: u32 ContentFlag
    DISPLAY_NAME = 0x30  #: (dapsdk) UTF-8
    CLOCK = 0x31  #: (dapsdk) i64 microseconds: the sender's media clock reference (SYNC)
    START_POSITION = 0x32  #: (dapsdk) i64 microseconds into the content (VoD seek)
    TEXT = 0x33  #: (dapsdk) UTF-8 chat line
    MESSAGE_ID = 0x40  #: (dapsdk) u64 chat message id (per content)
    POLL_ID = 0x41  #: (dapsdk) u32 poll id (per content)
    POLL_OPTION = 0x42  #: (dapsdk) UTF-8 poll option, repeatable, in order
    POLL_CHOICE = 0x43  #: (dapsdk) u8 index of the chosen option
    POLL_COUNTS = 0x44  #: (dapsdk) u32 votes per option, in order
    POLL_OPEN = 0x45  #: (dapsdk) u8 1 open, 0 closed
    MOD_ACTION = 0x46  #: (dapsdk) u8 ModAction
    MEMBER = 0x47  #: (dapsdk) 32-byte identity a moderation targets, or a message's sender
    DURATION = 0x48  #: (dapsdk) u32 seconds (mute, slow mode; 0 = until undone / off)
    TIME = 0x49  #: (dapsdk) u64 milliseconds since the epoch (when a message was sent)
    HISTORY = 0x4A  #: (dapsdk) u8 1: the pushed message is recent history sent on attach
    RENDITION = 0x34  #: (dapsdk) ASCII rendition name to play (START), e.g. "720p"


class SignalArg(enum.IntEnum):
    """Signal ('A') argument TSD types (dapsdk)."""

    SOFTWARE = 0x01  #: UTF-8 "name/version"
    CAPABILITIES = 0x02  #: u32 bitmask, reserved
    RTT_US = 0x10  #: u32 microseconds
    LOSS_PERMILLE = 0x11  #: u16
    JITTER_US = 0x12  #: u32 microseconds
    BITRATE = 0x13  #: u64 bits per second
    CLOCK = 0x14  #: u64 milliseconds since the epoch (HEARTBEAT)
    TARGET = 0x20  #: UTF-8 URL of the node to reconnect to (REDIRECT)
    REASON = 0x21  #: UTF-8 why (REDIRECT): "balance", "failover", "drain"
    #: 16-byte content GUUID a QUALITY_REPORT is about (default: every content the session has
    #: attached)
    CONTENT_UUID = 0x22
    # A player's quality of experience (QUALITY_REPORT), all optional:
    STARTUP_MS = 0x30  #: u32 play request to first media packet
    STALLS = 0x31  #: u32 gaps of more than a second in a live content
    SWITCHES = 0x32  #: u32 rendition switches
    DROPPED = 0x33  #: u32 packets missing (sequence gaps) or dropped as forged
    LATENCY_MS = 0x34  #: u32 behind live: publisher signing to player receiving


class ReplyArg(enum.IntEnum):
    """Argument TSD types of a Retcode ('r') packet's optional tail (dapsdk)."""

    SESSION_ID = 0x01  #: 32-byte session id (OPEN)
    CONTENT_ID = 0x02  #: u32 content handle (session CONTENT_ADD)
    RESUMED = 0x03  #: u8 1 when OPEN resumed a detached session
    CLOCK = 0x04  #: u64 milliseconds since the epoch (HEARTBEAT, SYNC)
    DETAIL = 0xFFF2  #: UTF-8 detail text


class ClusterSetup(enum.IntEnum):
    """Cluster setup kinds (original)."""

    ROUND_TABLE = 1
    LECTURE = 2
    PANEL_DISCUSSION = 3
    MEETING = 4


#: Sizes of fixed identifiers.
GUUID_SIZE: Final = 16
IDENTITY_SIZE: Final = 32
NONCE_SIZE: Final = 16
#: Member profile strings (original: 63 bytes plus NUL).
MAX_PROFILE_STRING: Final = 63
#: Largest avatar image (original: 100 KiB).
MAX_AVATAR: Final = 100 * 1024
