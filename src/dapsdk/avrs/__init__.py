"""AVReStream (AVRS) protocol core: sans-IO, layer 3 (see docs/avrs-protocol.md).

No sockets, no asyncio, no clocks, no global randomness: the runtime feeds channel payloads to an
:class:`AvrsConnection` with ``now`` and sends what it returns.
"""

from __future__ import annotations

from .callbacks import ContentCallback, ContentCallbacks
from .config import AvrsConfig
from .connection import AvrsConnection
from .constants import (
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    CommonArg,
    ContentFlag,
    MediaFlag,
    ReplyArg,
    RequestFlag,
    Role,
    SessionArg,
    SessionOp,
    SignalArg,
    SignalOp,
)
from .directory import ClusterInfo, ClusterView, ContentInfo, MemoryClusterView
from .errors import AvrsError, AvrsProtocolError, code_token
from .packets import (
    ContentPacket,
    Reply,
    Request,
    RequestHeader,
    decode_content,
    decode_reply,
    decode_request,
    encode_content,
    encode_reply,
    encode_request,
)
from .permissions import PERMISSIONS, Permission, authorize
from .replay import ReplayGuard
from .sessions import AvrsSession, SessionContent, SessionRegistry
from .signing import AvrsSigner, SignatureAlgorithm, identity_of, tsd_sign_pkt_verify
from .state import SessionInput, SessionState
from .tsd import Tsd, TsdList, encode_tsds, parse_tsds

__all__ = [
    "PERMISSIONS",
    "AvrsChannel",
    "AvrsConfig",
    "AvrsConnection",
    "AvrsError",
    "AvrsProtocolError",
    "AvrsSession",
    "AvrsSigner",
    "ClusterArg",
    "ClusterInfo",
    "ClusterOp",
    "ClusterView",
    "CommonArg",
    "ContentCallback",
    "ContentCallbacks",
    "ContentFlag",
    "ContentInfo",
    "ContentPacket",
    "MediaFlag",
    "MemoryClusterView",
    "Permission",
    "ReplayGuard",
    "Reply",
    "ReplyArg",
    "Request",
    "RequestFlag",
    "RequestHeader",
    "Role",
    "SessionArg",
    "SessionContent",
    "SessionInput",
    "SessionOp",
    "SessionRegistry",
    "SessionState",
    "SignalArg",
    "SignalOp",
    "SignatureAlgorithm",
    "Tsd",
    "TsdList",
    "authorize",
    "code_token",
    "decode_content",
    "decode_reply",
    "decode_request",
    "encode_content",
    "encode_reply",
    "encode_request",
    "encode_tsds",
    "identity_of",
    "parse_tsds",
    "tsd_sign_pkt_verify",
]
