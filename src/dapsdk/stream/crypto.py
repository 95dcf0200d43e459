"""Packet sealing: AES-256-GCM per direction, counter nonces, header as associated data, rekeying.

Nonce = IV XOR (counter as 12-byte little-endian). The header's seq_id is the counter's low 32 bits;
the high 32 bits are implicit, so the counter is never sent. Over an ordered transport the receiver
accepts exactly the next counter: a replayed, reordered or dropped packet fails.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from .constants import HEADER, TAG_SIZE
from .errors import DecryptError, ErrorCode, ProtocolError

KEY_SIZE = 32
IV_SIZE = 12
#: Hard stop: never let a counter get close to wrapping.
COUNTER_LIMIT = (1 << 64) - 1


def hkdf(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def next_traffic_secret(secret: bytes) -> bytes:
    """One-way key update: the old key cannot be recovered from the new one."""
    return hkdf_expand(secret, b"dapstream rekey", KEY_SIZE)


def split_traffic_secret(secret: bytes) -> tuple[bytes, bytes]:
    """(AES key, IV) from a direction's traffic secret."""
    material = hkdf_expand(secret, b"dapstream key+iv", KEY_SIZE + IV_SIZE)
    return material[:KEY_SIZE], material[KEY_SIZE:]


class DirectionCipher:
    """The sealing state of one direction: key, IV, 64-bit counter, and the packets left on this key.

    ``seal`` and ``open`` are the hot path: one struct pack, one int XOR and one AEAD call each.
    """

    __slots__ = ("_aead", "_iv", "_secret", "counter", "packets_on_key", "rekeys")

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        key, iv = split_traffic_secret(secret)
        self._aead = AESGCM(key)
        self._iv = int.from_bytes(iv, "little")
        self.counter = 0
        self.packets_on_key = 0
        self.rekeys = 0

    def rekey(self) -> None:
        self._secret = next_traffic_secret(self._secret)
        key, iv = split_traffic_secret(self._secret)
        self._aead = AESGCM(key)
        self._iv = int.from_bytes(iv, "little")
        self.packets_on_key = 0
        self.rekeys += 1

    def seal(self, ptype: int, ch_id: int, flags: int, plaintext: bytes | memoryview) -> bytes:
        """Return header + ciphertext + tag for the next counter value."""
        counter = self.counter
        if counter >= COUNTER_LIMIT:
            raise ProtocolError("send counter exhausted", code=ErrorCode.INTERNAL_ERROR)
        header = HEADER.pack(len(plaintext) + TAG_SIZE, ptype, counter & 0xFFFFFFFF, ch_id, flags)
        nonce = (self._iv ^ counter).to_bytes(IV_SIZE, "little")
        self.counter = counter + 1
        self.packets_on_key += 1
        return header + self._aead.encrypt(nonce, plaintext, header)

    def seal_parts(
        self, ptype: int, ch_id: int, flags: int, plaintext: bytes | memoryview
    ) -> tuple[bytes, bytes]:
        """Like :meth:`seal` but returns (header, ciphertext) so large bodies are not copied again."""
        counter = self.counter
        if counter >= COUNTER_LIMIT:
            raise ProtocolError("send counter exhausted", code=ErrorCode.INTERNAL_ERROR)
        header = HEADER.pack(len(plaintext) + TAG_SIZE, ptype, counter & 0xFFFFFFFF, ch_id, flags)
        nonce = (self._iv ^ counter).to_bytes(IV_SIZE, "little")
        self.counter = counter + 1
        self.packets_on_key += 1
        return header, self._aead.encrypt(nonce, plaintext, header)

    def open(self, header: bytes | memoryview, seq_id: int, body: bytes | memoryview) -> bytes:
        """Authenticate and decrypt the next packet. Raises a ProtocolError on any mismatch."""
        counter = self.counter
        if seq_id != counter & 0xFFFFFFFF:
            raise ProtocolError(
                f"seq_id {seq_id} is not the expected {counter & 0xFFFFFFFF}",
                code=ErrorCode.REPLAY,
            )
        nonce = (self._iv ^ counter).to_bytes(IV_SIZE, "little")
        try:
            plaintext = self._aead.decrypt(nonce, body, header)
        except InvalidTag:
            raise DecryptError(f"packet seq_id {seq_id} failed authentication") from None
        self.counter = counter + 1
        self.packets_on_key += 1
        return plaintext
