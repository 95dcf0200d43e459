"""Events the AVRS core hands to the application (STYLE.md §2). Never mutated after queuing."""

from __future__ import annotations

from dataclasses import dataclass, field

from .constants import ContentFlag
from .packets import ContentPacket, Reply
from .state import SessionState
from .tsd import TsdList


@dataclass(frozen=True, slots=True, kw_only=True)
class AvrsEvent:
    """Base of every AVRS event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterRequestReceived(AvrsEvent):
    """A verified, authorised, fresh cluster request the service must answer.

    Answer with :meth:`AvrsConnection.reply` (and optionally :meth:`AvrsConnection.respond`)
    before ``AvrsConfig.reply_timeout``, or the core answers REQUEST_TIMEOUT.
    """

    request_id: int
    """Echo this in the answer."""
    op: int
    """ClusterOp value."""
    signer: bytes | None
    """Identity of the verified signer (None only for unsigned LIST_REQ)."""
    cluster_id: bytes | None
    """The ID argument, when the request names a cluster."""
    args: TsdList = field(repr=False)
    """All arguments except SIGN, already validated against the argument table."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalReceived(AvrsEvent):
    """HELLO / HEARTBEAT / QUALITY_REPORT on the signal channel (already answered)."""

    op: int
    """SignalOp value."""
    args: TsdList = field(repr=False)
    """Validated arguments."""
    session_id: bytes | None = None
    """The connection's session, if one is open."""
    content_ids: tuple[bytes, ...] = ()
    """QUALITY_REPORT: the contents the report is about (the node stores it under each)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStateChanged(AvrsEvent):
    old: SessionState
    """State before the request."""
    new: SessionState
    """State after it."""
    session_id: bytes | None
    """The session concerned (None when the connection has none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOpened(AvrsEvent):
    session_id: bytes
    """Identity hash of the OPEN signer."""
    resumed: bool
    """True when a detached (or taken-over) session was re-attached with its contents."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentAttached(AvrsEvent):
    session_id: bytes
    """Session that attached the content."""
    handle: int
    """Per-session handle given to the peer."""
    cluster_id: bytes
    """Cluster of the content."""
    content_id: bytes
    """Content GUUID."""
    flags: ContentFlag
    """STREAMING_OUT (subscribe) and/or STREAMING_IN (publish)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentDetached(AvrsEvent):
    session_id: bytes
    """Session that removed the content."""
    handle: int
    """Handle that is now invalid."""
    content_id: bytes
    """Content GUUID."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamControl(AvrsEvent):
    """START, SYNC, STOP or MONITOR accepted; the media side should act on it."""

    session_id: bytes
    """Session concerned."""
    op: int
    """SessionOp value."""
    args: TsdList = field(repr=False)
    """Validated arguments (START_POSITION, CLOCK, CLUSTER_ID)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatReceived(AvrsEvent):
    session_id: bytes
    """Sender's session id."""
    cluster_id: bytes
    """Cluster the line is for (the sender is a member)."""
    text: str
    """The chat line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractiveRequestReceived(AvrsEvent):
    """A verified, authorised chat, poll or moderation request the service must answer with
    :meth:`AvrsConnection.reply` (like a cluster request; REQUEST_TIMEOUT otherwise)."""

    request_id: int
    """Echo this in the answer."""
    op: int
    """SessionOp value."""
    session_id: bytes
    """The sender's session (its identity)."""
    args: TsdList = field(repr=False)
    """Validated arguments (CLUSTER_ID, CONTENT_UUID, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentReceived(AvrsEvent):
    """A media packet that passed every check and every content callback."""

    session_id: bytes
    """Publishing session."""
    content_id: bytes
    """Content GUUID the packet belongs to (for fan-out)."""
    packet: ContentPacket
    """The decoded packet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyReceived(AvrsEvent):
    """A Retcode ('r') packet answering one of our requests."""

    reply: Reply
    """The decoded retcode."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived(AvrsEvent):
    """A typed response (RESPONSE flag) to one of our requests, e.g. cluster LIST_RESP."""

    channel: int
    """Channel it arrived on."""
    op: int
    """Its op."""
    request_id: int
    """The request it answers."""
    args: TsdList = field(repr=False)
    """Its arguments (SIGN excluded)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRefused(AvrsEvent):
    """Trace: a request or content packet was answered with an error (qlog-style, for tests and
    metrics)."""

    channel: int
    """Channel of the refused packet."""
    op: int
    """Its op (content: flow id)."""
    request_id: int
    """Its request id (content: seq)."""
    code: int
    """The code sent back (an AvrsError, or a callback's own u32 code)."""
    reason: str
    """Why, in words."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketDropped(AvrsEvent):
    """Trace: bytes that are never answered (unreadable retcodes, unknown channels)."""

    channel: int
    """Channel id the bytes arrived on."""
    reason: str
    """Why they were dropped."""
