"""Node identities: an Ed25519 key pair, and the node address derived from its public key.

The address is self-certifying, as in the DAP SDK: the first 4 and the last 4 bytes of
SHA3-256(public key), read as a big-endian u64 and printed ``XXXX::XXXX::XXXX::XXXX``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
_ADDR_RE = re.compile(r"^([0-9A-Fa-f]{4})::([0-9A-Fa-f]{4})::([0-9A-Fa-f]{4})::([0-9A-Fa-f]{4})$")


@dataclass(frozen=True, slots=True, order=True)
class NodeAddress:
    """A 64-bit node address (``dap_stream_node_addr_t``)."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << 64:
            raise ValueError(f"node address {self.value!r} is not a u64")

    @classmethod
    def from_public_key(cls, public_key: bytes) -> NodeAddress:
        digest = hashlib.sha3_256(public_key).digest()
        return cls(int.from_bytes(digest[:4] + digest[-4:], "big"))

    @classmethod
    def parse(cls, text: str) -> NodeAddress:
        match = _ADDR_RE.match(text.strip())
        if match is None:
            raise ValueError(f"node address {text!r} is not of the form XXXX::XXXX::XXXX::XXXX")
        return cls(int("".join(match.groups()), 16))

    def __str__(self) -> str:
        h = f"{self.value:016X}"
        return f"{h[0:4]}::{h[4:8]}::{h[8:12]}::{h[12:16]}"

    def __repr__(self) -> str:
        return f"NodeAddress({self})"


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 verification that returns False instead of raising for any bad input."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class NodeIdentity:
    """A node's long-term Ed25519 key. The private key is never printed or logged."""

    __slots__ = ("_private", "address", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.address = NodeAddress.from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        """Deterministic identity from a 32-byte seed (test vectors, reproducible demos)."""
        if len(seed) != 32:
            raise ValueError(f"identity seed must be 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load(cls, path: str | Path) -> NodeIdentity:
        """Load a PEM (PKCS#8) Ed25519 private key."""
        data = Path(path).read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key)

    def save(self, path: str | Path) -> None:
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        target = Path(path)
        target.touch(mode=0o600, exist_ok=True)
        target.write_bytes(pem)

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self._private

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"NodeIdentity(address={self.address})"
