"""AVRS result codes (the seed's ``AVRS_ERROR_*``) and the exception raised by the protocol core.

Every code travels as a u32 in a Retcode ('r') packet together with its text token, so a peer can
act on the number and a human (or a log grep) on the token. The seed's values are fixed; codes this
implementation adds live in ranges the seed leaves unused and are marked *(dapsdk)*.
"""

from __future__ import annotations

import enum

from dapsdk.stream.errors import DapError


class AvrsError(enum.IntEnum):
    """``AVRS_SUCCESS`` / ``AVRS_ERROR_*``. The member name is the wire token."""

    SUCCESS = 0x00000000
    ARG_INCORRECT = 0x00000001
    #: (dapsdk) the application did not answer a request within ``AvrsConfig.reply_timeout``.
    REQUEST_TIMEOUT = 0x00000010
    #: (dapsdk) too many requests of this connection await an answer; retry later.
    BUSY = 0x00000011
    #: (dapsdk) the request is valid but this node does not implement its feature (yet); nothing
    #: was done.
    NOT_SUPPORTED = 0x00000012
    SIGN_NOT_PRESENT = 0x000000F0
    SIGN_INCORRECT = 0x000000F1
    SIGN_ALIEN = 0x000000F2
    #: (dapsdk) this (signer, nonce) was already accepted inside the replay window.
    SIGN_REPLAYED = 0x000000F3
    #: (dapsdk) the signed timestamp is further from our clock than the allowed skew.
    SIGN_EXPIRED = 0x000000F4
    CLUSTER_WRONG_REQUEST = 0x00000101
    CLUSTER_NOT_FOUND = 0x00000102
    CONTENT_UNAVAILBLE = 0x00000200
    CONTENT_NOT_FOUND = 0x00000201
    CONTENT_INFO_CORRUPTED = 0x00000202
    CONTENT_CORRUPTED = 0x00000203
    CONTENT_FLOW_WRONG_ID = 0x00000210
    #: (dapsdk) a publisher above the node's max_bitrate.
    CONTENT_BITRATE_EXCEEDED = 0x00000211
    MEMBER_NOT_FOUND = 0x00000300
    MEMBER_SECURITY_ISSUE = 0x00000301
    MEMBER_INFO_PROBLEM = 0x00000302
    #: (dapsdk) an administrative request carries no TOTP code (or the signer has no enrolled
    #: second factor, or the node has none configured).
    MEMBER_TOTP_REQUIRED = 0x00000303
    #: (dapsdk) the TOTP code is wrong (or the second factor is locked after repeated failures).
    MEMBER_TOTP_INVALID = 0x00000304
    #: (dapsdk) the TOTP code (time step) was already used.
    MEMBER_TOTP_REPLAYED = 0x00000305
    #: (dapsdk) the signer tried to grant, approve or act on a role above its own.
    MEMBER_ROLE_EXCEEDED = 0x00000306
    #: (dapsdk) the signer is already a member: a join without new credentials is refused.
    MEMBER_ALREADY_EXISTS = 0x00000307
    #: (dapsdk) unsolicited notice: the membership that allowed this session ended (removed,
    #: certificate revoked or expired, token expired); the session and its contents are closed.
    MEMBER_REVOKED = 0x00000308
    #: (dapsdk) the member's token does not grant this action (publish, subscribe, moderate), this
    #: content, or its attribute rules (``attr``) do not hold on this node.
    MEMBER_GRANT_DENIED = 0x00000309
    SESSION_WRONG_REQUEST = 0x00000400
    SESSION_NOT_OPENED = 0x00000401
    SESSION_ALREADY_OPENED = 0x00000402
    SESSION_CONTENT_ID_WRONG = 0x00000404
    #: (dapsdk) chat, polls or moderation are switched off for this content (allow_chat,
    #: allow_polls, moderation).
    INTERACTIVE_DISABLED = 0x00000600
    #: (dapsdk) the sender is muted in this content's chat.
    CHAT_MUTED = 0x00000601
    #: (dapsdk) the member is banned from this content (no attach, chat or vote).
    MEMBER_BANNED = 0x00000602
    #: (dapsdk) slow mode: the member sent a line too recently.
    CHAT_SLOW_MODE = 0x00000603
    #: (dapsdk) no poll with that id in this content.
    POLL_NOT_FOUND = 0x00000604
    #: (dapsdk) the poll is closed.
    POLL_CLOSED = 0x00000605
    #: (dapsdk) this identity already voted in the poll.
    POLL_ALREADY_VOTED = 0x00000606
    #: (dapsdk) no chat message with that id in the content's history.
    MESSAGE_NOT_FOUND = 0x00000607
    #: (dapsdk) a Signal ('A') request type this node does not know.
    SIGNAL_WRONG_REQUEST = 0x00000501
    ERROR = 0xFFFFFFFF

    # Correctly spelled alias of the seed's CONTENT_UNAVAILBLE (same value, so the token stays the
    # seed's spelling on the wire).
    CONTENT_UNAVAILABLE = 0x00000200

    @property
    def token(self) -> str:
        """Machine-readable text token sent in Retcode packets (the seed's macro without prefix)."""
        return self.name

    @classmethod
    def coerce(cls, value: int) -> AvrsError | int:
        """The enum member for ``value``, or ``value`` itself when a newer peer sent an unknown code."""
        try:
            return cls(value)
        except ValueError:
            return value

    @classmethod
    def from_token(cls, token: str) -> AvrsError | None:
        """Inverse of :attr:`token`; None for an unknown token."""
        member = cls.__members__.get(token)
        return member


def code_token(code: int) -> str:
    """Token of any u32 code: the member name, or ``0x%08x`` for unknown codes."""
    coerced = AvrsError.coerce(code)
    return coerced.token if isinstance(coerced, AvrsError) else f"0x{code & 0xFFFFFFFF:08x}"


class AvrsProtocolError(DapError):
    """A request or packet broke a rule of the AVRS protocol.

    Raised inside the core only; :class:`~dapsdk.avrs.connection.AvrsConnection` catches it at its
    boundary and answers the peer with :attr:`code`. ``reason`` is a short human explanation that
    may also travel as the reply's detail text.
    """

    def __init__(self, code: AvrsError, reason: str) -> None:
        super().__init__(f"{code.token}: {reason}")
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[type[AvrsProtocolError], tuple[AvrsError, str]]:
        return (type(self), (self.code, self.reason))
