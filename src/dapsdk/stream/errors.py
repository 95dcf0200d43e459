"""Error codes and the exception tree of the dap_stream wire core.

Codes travel in ERROR and CLOSE packets as u32. Unknown codes from newer peers are kept as ints
(:meth:`ErrorCode.coerce`).
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ErrorCode(enum.IntEnum):
    NO_ERROR = 0x00
    PROTOCOL_ERROR = 0x01  #: malformed packet or a rule of the protocol broken
    INTERNAL_ERROR = 0x02
    HANDSHAKE_FAILED = 0x03  #: bad handshake message or cryptographic failure
    AUTHENTICATION_FAILED = 0x04  #: peer identity not the expected one, or refused by policy
    VERSION_MISMATCH = 0x05  #: no common protocol version
    DECRYPT_FAILED = 0x06  #: a sealed packet did not authenticate (forged, truncated, reordered)
    REPLAY = 0x07  #: seq_id not the next expected one
    FRAME_TOO_LARGE = 0x08  #: size above the configured maximum
    UNKNOWN_TYPE = 0x09
    UNKNOWN_FLAGS = 0x0A
    UNKNOWN_CHANNEL = 0x0B  #: data for a channel that is not open
    FLOW_CONTROL_ERROR = 0x0C  #: peer sent beyond the credit it was given
    TIMEOUT = 0x0D  #: handshake deadline or keepalive timeout
    ENHANCE_YOUR_CALM = 0x0E  #: rate limit exceeded
    CHANNEL_LIMIT = 0x0F  #: too many open channels
    CHANNEL_REFUSED = 0x10  #: no handler accepts this channel id
    MESSAGE_TOO_LARGE = 0x11  #: fragmented message announced above the maximum
    UNENCRYPTED = 0x12  #: a packet without ENCRYPTED after the handshake
    CANCELLED = 0x13  #: closed by the application
    COMPRESSION_ERROR = 0x14
    SERVER_BUSY = 0x15  #: too many handshakes in progress (or this one was evicted)
    RETRY_WITH_COOKIE = 0x16  #: under load: repeat HELLO with the cookie in the reason (§3.7)
    CONNECTION_LIMIT = 0x17  #: the node has max_connections established streams
    CONNECTION_LOST = 0x18
    """Local only, never sent: the transport ended without a CLOSE or ERROR (the peer died, the
    network failed, or the peer closed its socket without saying why)."""

    @classmethod
    def coerce(cls, value: int) -> ErrorCode | int:
        try:
            return cls(value)
        except ValueError:
            return value


def code_name(code: int) -> str:
    coerced = ErrorCode.coerce(code)
    return coerced.name if isinstance(coerced, ErrorCode) else f"0x{code:08x}"


class DapError(Exception):
    """Base of every dapsdk error."""


class ProtocolError(DapError):
    """A rule of the wire protocol was broken. Closes the stream with :attr:`code`."""

    code: ClassVar[ErrorCode] = ErrorCode.PROTOCOL_ERROR

    def __init__(
        self,
        reason: str,
        *,
        code: ErrorCode | None = None,
        packet_type: int | None = None,
        channel_id: int | None = None,
    ) -> None:
        super().__init__(reason)
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.reason = reason
        self.packet_type = packet_type
        self.channel_id = channel_id

    def __str__(self) -> str:
        return f"{self.code.name}: {self.reason}"


class FrameTooLarge(ProtocolError):
    code = ErrorCode.FRAME_TOO_LARGE


class HandshakeError(ProtocolError):
    code = ErrorCode.HANDSHAKE_FAILED


class AuthenticationError(ProtocolError):
    code = ErrorCode.AUTHENTICATION_FAILED


class DecryptError(ProtocolError):
    code = ErrorCode.DECRYPT_FAILED


class FlowControlError(ProtocolError):
    code = ErrorCode.FLOW_CONTROL_ERROR


class RateLimited(ProtocolError):
    code = ErrorCode.ENHANCE_YOUR_CALM


class RemoteError(DapError):
    """The peer closed the stream with an ERROR packet, or the stream failed locally."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code_name(code)}: {reason}")
        self.code = code
        self.reason = reason


class StreamClosedError(DapError):
    """The stream (or channel) is closed; the operation cannot proceed."""

    def __init__(self, reason: str = "stream is closed", code: int = ErrorCode.NO_ERROR) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
