"""Per-channel end-to-end keys (seed: ``dap_stream_ch_set_encryption``, ``dap_enc_key_generate``).

A channel may carry payloads sealed with a key of its own, separate from the link keys, so the
payload stays sealed while relays forward it; only the ends holding the key open it.

Sealed payload layout: ``nonce (12 random bytes) || AES-256-GCM(key, nonce, payload, aad)`` where
``aad = b"dapch" || channel_id u16 LE || packet_type u8``. A random nonce is used because the same
key may be used from several streams (a relay path), where no single counter exists; at 96 bits
that is safe for 2**32 messages per key (NIST SP 800-38D), which :class:`ChannelKey` enforces.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DecryptError

NONCE_SIZE = 12
OVERHEAD = NONCE_SIZE + 16
#: Messages sealed under one channel key before it must be replaced (random-nonce bound).
MAX_MESSAGES_PER_KEY = 1 << 32
_AAD = struct.Struct("<5sHB")


class ChannelKey:
    """An AES-256-GCM key for one channel's payloads. Its bytes are never printed."""

    __slots__ = ("_aead", "_key", "_rng", "sealed")

    def __init__(self, key: bytes, *, rng: Callable[[int], bytes] = os.urandom) -> None:
        if len(key) != 32:
            raise ValueError(f"channel key must be 32 bytes (AES-256), got {len(key)}")
        self._key = bytes(key)
        self._aead = AESGCM(self._key)
        self._rng = rng
        self.sealed = 0

    @classmethod
    def generate(cls) -> ChannelKey:
        return cls(AESGCM.generate_key(bit_length=256))

    @property
    def key_bytes(self) -> bytes:
        """Raw key, for handing to the other end over a secure path."""
        return self._key

    def seal(self, channel_id: int, packet_type: int, payload: bytes | memoryview) -> bytes:
        if self.sealed >= MAX_MESSAGES_PER_KEY:
            raise ValueError("channel key exhausted (2**32 messages); set a new key")
        self.sealed += 1
        nonce = self._rng(NONCE_SIZE)
        aad = _AAD.pack(b"dapch", channel_id, packet_type)
        return nonce + self._aead.encrypt(nonce, payload, aad)

    def open(self, channel_id: int, packet_type: int, sealed: bytes | memoryview) -> bytes:
        if len(sealed) < OVERHEAD:
            raise DecryptError(f"channel-sealed payload of {len(sealed)} bytes is too short")
        view = memoryview(sealed)
        aad = _AAD.pack(b"dapch", channel_id, packet_type)
        try:
            return self._aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
        except InvalidTag:
            raise DecryptError(
                f"channel {channel_id} payload failed authentication with the channel key"
            ) from None

    def __repr__(self) -> str:
        return "ChannelKey(<hidden>)"
