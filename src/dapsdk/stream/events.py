"""Events the wire core emits. Small frozen dataclasses; never mutated after they are queued."""

from __future__ import annotations

from dataclasses import dataclass

from .config import PeerIdentity


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEvent:
    """Base of all wire-core events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeCompleted(StreamEvent):
    peer: PeerIdentity
    """The identity the peer proved."""
    version: int
    """Negotiated protocol version."""
    features: int
    """Negotiated feature bits (:class:`~dapsdk.stream.constants.Feature`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelOpened(StreamEvent):
    channel_id: int
    """Channel id (u16)."""
    by_peer: bool
    """True when the peer opened it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived(StreamEvent):
    channel_id: int
    """Channel the message arrived on."""
    packet_type: int
    """DATA or CONTROL (application control message)."""
    data: bytes
    """The whole message (fragments already reassembled)."""
    flow_bytes: int
    """Credit returned to the peer once the application has consumed this message."""
    reserved: int
    """Reassembly memory released once the application has consumed this message."""

    def __repr__(self) -> str:
        return (
            f"DataReceived(channel_id={self.channel_id}, packet_type={self.packet_type}, "
            f"len={len(self.data)})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DataBatchReceived(StreamEvent):
    """Several small DATA messages that arrived in one BATCHED packet, in order."""

    channel_id: int
    """Channel the messages arrived on."""
    messages: list[bytes]
    """The messages, oldest first."""
    flow_bytes: int
    """Credit returned to the peer once every message has been consumed."""
    reserved: int = 0
    """Always 0 (batched messages are never fragmented)."""

    def __repr__(self) -> str:
        return f"DataBatchReceived(channel_id={self.channel_id}, count={len(self.messages)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelWritable(StreamEvent):
    channel_id: int
    """Queued bytes on this channel fell below the low-water mark."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelClosed(StreamEvent):
    channel_id: int
    """The channel that closed."""
    code: int
    """Close code (``ErrorCode``; 0 is a normal close)."""
    reason: str
    """Reason text from the closing side."""
    by_peer: bool
    """True when the peer closed it first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PongReceived(StreamEvent):
    rtt: float
    """Round-trip time of a keepalive, in seconds."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamTerminated(StreamEvent):
    """The one terminal event. Nothing follows it; input after it is ignored."""

    code: int
    """``ErrorCode`` (0 for a normal close)."""
    reason: str
    """Human-readable reason."""
    by_peer: bool
    """True when the peer closed or reported the error."""
