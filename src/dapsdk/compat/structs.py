"""The seed's C structures as Python objects (``dap_stream_node_addr_t``, packets, keys, signs)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from ..runtime.endpoint import Endpoint, parse_endpoint
from ..stream.constants import HEADER, PacketType
from ..stream.identity import NodeAddress, NodeIdentity, verify_signature

#: ``dap_enc_key_type_t`` values this implementation supports.
DAP_ENC_KEY_TYPE_AES = 0x01
"""AES-256-GCM symmetric key (the seed's ``DAP_ENC_KEY_TYPE_AES``)."""
DAP_ENC_KEY_TYPE_SIG_ED25519 = 0x20
"""Ed25519 signing key (node identities; used by ``dap_sign_create``)."""


def inet_addr(text: str) -> int:
    """C ``inet_addr``: dotted IPv4 to a u32 in network byte order (as the seed's examples use)."""
    try:
        packed = socket.inet_aton(text)
    except OSError:
        raise ValueError(f"inet_addr: {text!r} is not an IPv4 address") from None
    return int(struct.unpack("=I", packed)[0])


@dataclass(slots=True)
class dap_stream_node_addr_t:
    """Where a node is: ``addr`` (IPv4 text, or a u32 from :func:`inet_addr`) and ``port``, or a
    ``url``; optionally the ``node`` address its identity must match.

    The seed's ``addr``/``port`` form carries no identity: as in the seed, the caller checks it
    after connecting with ``dap_stream_authenticate_node``, so that form connects with an explicit
    ``insecure_no_pin`` unless ``node`` is set. A ``url`` follows the client rule (``?node=``
    pin, or ``?insecure_no_pin``, else refused)."""

    addr: str | int | None = None
    port: int | None = None
    node: NodeAddress | None = None
    url: str | None = None

    def to_endpoint(self) -> Endpoint:
        if self.url is not None:
            endpoint = parse_endpoint(self.url)
            node = self.node or endpoint.node
            return Endpoint(
                endpoint.scheme, endpoint.host, endpoint.port, endpoint.path, node,
                endpoint.insecure_no_pin,
            )  # fmt: skip
        if self.addr is None or self.port is None:
            raise ValueError("dap_stream_node_addr_t needs addr and port, or url")
        host = (
            socket.inet_ntoa(struct.pack("=I", self.addr))
            if isinstance(self.addr, int)
            else self.addr
        )
        if not 0 < self.port < 65536:
            raise ValueError(f"dap_stream_node_addr_t.port {self.port} is not in 1..65535")
        return Endpoint("tcp", host, self.port, "/", self.node, self.node is None)


@dataclass(slots=True)
class dap_stream_packet_hdr_t:
    """The 12-byte header: size u32, type u8, seq_id u32, ch_id u16, flags u8 (little-endian)."""

    size: int = 0
    type: int = PacketType.DATA
    seq_id: int = 0
    ch_id: int = 0
    flags: int = 0

    def pack(self) -> bytes:
        return HEADER.pack(self.size, self.type, self.seq_id, self.ch_id, self.flags)

    @classmethod
    def unpack(cls, data: bytes) -> dap_stream_packet_hdr_t:
        if len(data) < HEADER.size:
            raise ValueError(f"packet header needs {HEADER.size} bytes, got {len(data)}")
        return cls(*HEADER.unpack_from(data, 0))


@dataclass(slots=True)
class dap_stream_packet_t:
    """A header and its data (what ``dap_stream_encrypt_packet`` works on)."""

    hdr: dap_stream_packet_hdr_t = field(default_factory=dap_stream_packet_hdr_t)
    data: bytes = b""

    def pack(self) -> bytes:
        return self.hdr.pack() + self.data


@dataclass(slots=True, repr=False)
class dap_enc_key_t:
    """A key from ``dap_enc_key_generate``. Key bytes never appear in repr or logs."""

    type: int
    data: bytes = b""
    identity: NodeIdentity | None = None

    def __repr__(self) -> str:
        return f"dap_enc_key_t(type=0x{self.type:02x}, <hidden>)"


@dataclass(frozen=True, slots=True)
class dap_sign_t:
    """A signature with the signer's public key (the C ``dap_sign_t`` header, key and signature)."""

    type: int
    public_key: bytes
    signature: bytes

    @property
    def signer(self) -> NodeAddress:
        return NodeAddress.from_public_key(self.public_key)

    def verify(self, data: bytes) -> bool:
        if self.type != DAP_ENC_KEY_TYPE_SIG_ED25519:
            return False
        return verify_signature(self.public_key, self.signature, data)

    def to_bytes(self) -> bytes:
        """u8 type, u16 key size, u16 signature size, key, signature (little-endian)."""
        return (
            struct.pack("<BHH", self.type, len(self.public_key), len(self.signature))
            + self.public_key
            + self.signature
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> dap_sign_t:
        if len(data) < 5:
            raise ValueError("dap_sign_t: truncated header")
        sign_type, key_size, sig_size = struct.unpack_from("<BHH", data, 0)
        if len(data) != 5 + key_size + sig_size:
            raise ValueError(
                f"dap_sign_t: sizes {key_size}+{sig_size} do not match {len(data) - 5} bytes"
            )
        return cls(sign_type, data[5 : 5 + key_size], data[5 + key_size :])
