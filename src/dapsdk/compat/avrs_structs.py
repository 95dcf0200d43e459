"""The AVRS seed's C structures and constants as Python objects (``avrs_ch_t``, ``avrs_session_t``,
``avrs_packet_t``, ``AVRS_ROLE_*``, ``AVRS_ERROR_*``, ``DAP_AVRS_K_CH_*``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from cryptography import x509

from ..avrs.connection import AvrsConnection
from ..avrs.constants import AvrsChannel, MediaFlag, Role
from ..avrs.errors import AvrsError
from ..avrs.packets import ContentPacket
from ..avrs.sessions import AvrsSession, SessionContent
from ..avrs.signing import AvrsSigner
from ..avrs.tsd import Tsd
from ..runtime.channel import Channel
from ..services.avrs_client import AvrsClient
from ..stream.channel_key import ChannelKey

# -- roles (avrs_role_t, a u16 bitmask) ---------------------------------------------------------
avrs_role_t = Role
AVRS_ROLE_CLIENT: Final = int(Role.CLIENT)
AVRS_ROLE_HOST: Final = int(Role.HOST)
AVRS_ROLE_OPERATOR: Final = int(Role.OPERATOR)
AVRS_ROLE_SERVER: Final = int(Role.SERVER)
AVRS_ROLE_BALANCER: Final = int(Role.BALANCER)
AVRS_ROLE_ALL: Final = int(Role.ALL)

# -- channels (seed: DAP_AVRS$K_CH_*; '$' cannot be in a Python name) ---------------------------
DAP_AVRS_K_CH_SIGNAL: Final = int(AvrsChannel.SIGNAL)
DAP_AVRS_K_CH_RETCODE: Final = int(AvrsChannel.RETCODE)
DAP_AVRS_K_CH_CLUSTER: Final = int(AvrsChannel.CLUSTER)
DAP_AVRS_K_CH_CONTENT: Final = int(AvrsChannel.CONTENT)
DAP_AVRS_K_CH_SESSION: Final = int(AvrsChannel.SESSION)

# -- result codes -------------------------------------------------------------------------------
AVRS_SUCCESS: Final = int(AvrsError.SUCCESS)
AVRS_ERROR_ARG_INCORRECT: Final = int(AvrsError.ARG_INCORRECT)
AVRS_ERROR_SIGN_NOT_PRESENT: Final = int(AvrsError.SIGN_NOT_PRESENT)
AVRS_ERROR_SIGN_INCORRECT: Final = int(AvrsError.SIGN_INCORRECT)
AVRS_ERROR_SIGN_ALIEN: Final = int(AvrsError.SIGN_ALIEN)
AVRS_ERROR_CLUSTER_WRONG_REQUEST: Final = int(AvrsError.CLUSTER_WRONG_REQUEST)
AVRS_ERROR_CLUSTER_NOT_FOUND: Final = int(AvrsError.CLUSTER_NOT_FOUND)
AVRS_ERROR_CONTENT_UNAVAILBLE: Final = int(AvrsError.CONTENT_UNAVAILBLE)  # the seed's spelling
AVRS_ERROR_CONTENT_UNAVAILABLE: Final = AVRS_ERROR_CONTENT_UNAVAILBLE
AVRS_ERROR_CONTENT_NOT_FOUND: Final = int(AvrsError.CONTENT_NOT_FOUND)
AVRS_ERROR_CONTENT_INFO_CORRUPTED: Final = int(AvrsError.CONTENT_INFO_CORRUPTED)
AVRS_ERROR_CONTENT_CORRUPTED: Final = int(AvrsError.CONTENT_CORRUPTED)
AVRS_ERROR_CONTENT_FLOW_WRONG_ID: Final = int(AvrsError.CONTENT_FLOW_WRONG_ID)
AVRS_ERROR_MEMBER_NOT_FOUND: Final = int(AvrsError.MEMBER_NOT_FOUND)
AVRS_ERROR_MEMBER_SECURITY_ISSUE: Final = int(AvrsError.MEMBER_SECURITY_ISSUE)
AVRS_ERROR_MEMBER_INFO_PROBLEM: Final = int(AvrsError.MEMBER_INFO_PROBLEM)
AVRS_ERROR_SESSION_WRONG_REQUEST: Final = int(AvrsError.SESSION_WRONG_REQUEST)
AVRS_ERROR_SESSION_NOT_OPENED: Final = int(AvrsError.SESSION_NOT_OPENED)
AVRS_ERROR_SESSION_ALREADY_OPENED: Final = int(AvrsError.SESSION_ALREADY_OPENED)
AVRS_ERROR_SESSION_CONTENT_ID_WRONG: Final = int(AvrsError.SESSION_CONTENT_ID_WRONG)
AVRS_ERROR: Final = int(AvrsError.ERROR)

#: ``dap_tsd_t``: one TSD item (type, data).
dap_tsd_t = Tsd


@dataclass(slots=True)
class avrs_ch_t:
    """``avrs_ch_t``: the AVRS side of one dap_stream connection on the node."""

    ch: Channel | None
    """The dap_stream channel the packet came on (``'c'`` for content callbacks)."""
    session: AvrsSession | None
    """The AVRS session bound to the connection (None before OPEN)."""
    conn: AvrsConnection = field(repr=False)
    """The sans-IO protocol core of the connection (the seed's ``_pvt``)."""


@dataclass(frozen=True, slots=True)
class avrs_session_content_t:
    """``avrs_session_content_t``: a content attached to a session, as callbacks see it."""

    handle: int
    cluster_id: bytes
    content_id: bytes
    flags: int
    metadata: dict[str, Any]
    """``title``, ``flows``, ``codecs``, ``owner`` (hex identity) of the content."""

    @classmethod
    def from_slot(cls, slot: SessionContent) -> avrs_session_content_t:
        content = slot.content
        metadata = {
            "title": content.title,
            "flows": content.flows,
            "codecs": content.codecs,
            "owner": content.owner.hex(),
        }
        return cls(slot.handle, slot.cluster_id, content.content_id, int(slot.flags), metadata)


@dataclass(frozen=True, slots=True)
class avrs_ch_pkt_content_t:
    """``avrs_ch_pkt_content_t``: an incoming content packet (header fields and ``data``)."""

    flow_id: int
    flags: int
    content_id: int
    """The per-session content handle (the C struct's ``u32 content_id``)."""
    seq: int
    pts: int
    dts: int
    data: bytes = field(repr=False)

    @classmethod
    def from_packet(cls, packet: ContentPacket) -> avrs_ch_pkt_content_t:
        return cls(
            packet.flow_id,
            int(packet.flags),
            packet.handle,
            packet.seq,
            packet.pts,
            packet.dts,
            packet.payload,
        )


#: ``int (*)(avrs_ch_t *, avrs_session_content_t *, avrs_ch_pkt_content_t *, size_t)``
avrs_ch_pkt_content_callback_t: TypeAlias = Callable[
    [avrs_ch_t, avrs_session_content_t, avrs_ch_pkt_content_t, int], int
]


@dataclass(frozen=True, slots=True)
class avrs_packet_t:
    """A content packet as ``avrs_session_receive_packet`` returns it.

    When the publisher signed the media (``dapsdk.services.avrs_media``), ``data`` is the signed
    envelope, ``sign``/``tsd_offset``/``header_size``/``args_size`` locate its signature for
    ``avrs_ch_tsd_sign_pkt_verify`` and ``payload`` is the media inside; otherwise ``sign`` is None
    and ``data`` is ``payload``.
    """

    sign: Tsd | None
    tsd_offset: int
    data: bytes = field(repr=False)
    header_size: int
    args_size: int
    data_size: int
    """``len(data)``."""
    payload: bytes = field(repr=False)
    """The media bytes."""
    flow_id: int = 0
    seq: int = 0
    pts: int = 0
    flags: int = 0
    signer: bytes | None = None
    """Identity of the key that signed the media (check it against the content's owner)."""

    @property
    def end_of_flow(self) -> bool:
        return bool(self.flags & MediaFlag.END_OF_FLOW)


@dataclass(frozen=True, slots=True)
class avrs_credentials_t:
    """What ``avrs_session_authenticate`` accepts besides a bare token string or certificate."""

    token: str | None = None
    """A signed JWT access token (``avrs token issue``)."""
    certificate: x509.Certificate | bytes | None = None
    """A certificate of the cluster CA for the session's key (PEM or DER bytes, or parsed)."""


@dataclass(slots=True, eq=False)
class avrs_session_t:
    """``avrs_session_t`` on the client side: what ``avrs_session_create`` returns."""

    client_id: str
    """Display name of the client (sent as the session's DISPLAY_NAME)."""
    content_id: bytes
    """16-byte GUUID of the content to watch."""
    content_name: str
    cluster_id: bytes
    signer: AvrsSigner = field(repr=False)
    server: str | None = None
    """URL of the node to use; None: the plugin's host_address / balancer_address."""
    client: AvrsClient | None = field(default=None, repr=False)
    handle: int | None = None
    """Content handle after ``avrs_session_start_stream``."""
    authenticated: bool = False
    streaming: bool = False
    closed: bool = False
    last_error: int = AVRS_SUCCESS
    last_error_detail: str = ""
    content_key: ChannelKey | None = field(default=None, repr=False)
    flows_seen: set[int] = field(default_factory=set)
    flows_ended: set[int] = field(default_factory=set)

    @property
    def ended(self) -> bool:
        """Every flow that delivered packets has sent END_OF_FLOW."""
        return bool(self.flows_seen) and self.flows_seen <= self.flows_ended


class char_ptr:
    """A ``char *`` the callee may set: the seed's ``char *error_msg = NULL; f(..., &error_msg)``
    becomes ``error_msg = char_ptr(); f(..., error_msg)``; then ``error_msg.value``."""

    __slots__ = ("value",)

    def __init__(self, value: str | None = None) -> None:
        self.value = value

    def __str__(self) -> str:
        return "" if self.value is None else self.value

    def __repr__(self) -> str:
        return f"char_ptr({self.value!r})"
