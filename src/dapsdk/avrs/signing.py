"""Request signatures: the SIGN TSD's blob, signer identities, and prefix verification.

A SIGN blob mirrors the DAP SDK's ``dap_sign_t`` (header, public key, signature)::

    u16 algorithm   (SignatureAlgorithm)
    u16 public_key_size
    u16 signature_size
    public_key[public_key_size]
    signature[signature_size]

Ed25519 is the default; ML-DSA-65 (FIPS 204) is the post-quantum option a cluster may require.
Sizes must equal the algorithm's fixed sizes, so a blob cannot smuggle extra bytes.

**Identity** = SHA3-256(raw public key), 32 bytes. SHA3-256 because dap_stream's node address is
derived from the same digest (``NodeAddress`` = its first and last 4 bytes), so an AVRS identity and
the node address of the same Ed25519 key agree. The identity is the member id, the cluster owner id
and the session id.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from .buffer import Reader, Writer
from .errors import AvrsError, AvrsProtocolError
from .tsd import TSD_HEADER, TSD_HEADER_SIZE, Tsd

SIGN_BLOB_HEADER: Final = struct.Struct("<HHH")
SIGN_BLOB_HEADER_SIZE: Final = SIGN_BLOB_HEADER.size  # 6


class SignatureAlgorithm(enum.IntEnum):
    """The blob's ``algorithm`` field."""

    ED25519 = 0x0001
    ML_DSA_65 = 0x0002


#: (public key size, signature size) of each algorithm.
ALGORITHM_SIZES: Final[dict[SignatureAlgorithm, tuple[int, int]]] = {
    SignatureAlgorithm.ED25519: (32, 64),
    SignatureAlgorithm.ML_DSA_65: (1952, 3309),
}


def identity_of(public_key: bytes) -> bytes:
    """The 32-byte identity hash of a raw public key."""
    return hashlib.sha3_256(public_key).digest()


@dataclass(frozen=True, slots=True)
class SignBlob:
    """A decoded SIGN TSD payload."""

    algorithm: SignatureAlgorithm
    public_key: bytes
    signature: bytes

    @property
    def identity(self) -> bytes:
        return identity_of(self.public_key)

    def encode(self) -> bytes:
        writer = Writer()
        writer.push_u16(self.algorithm)
        writer.push_u16(len(self.public_key))
        writer.push_u16(len(self.signature))
        writer.push_bytes(self.public_key)
        writer.push_bytes(self.signature)
        return writer.data()

    def __repr__(self) -> str:
        return f"SignBlob({self.algorithm.name}, identity={self.identity.hex()[:16]}...)"


def decode_sign_blob(data: bytes | memoryview) -> SignBlob:
    """Strictly decode a blob: known algorithm, exact sizes, nothing after the signature.

    Raises AvrsProtocolError(SIGN_INCORRECT) on any malformation.
    """
    reader = Reader(data)
    if reader.remaining() < SIGN_BLOB_HEADER_SIZE:
        raise AvrsProtocolError(AvrsError.SIGN_INCORRECT, "signature blob shorter than its header")
    algorithm_value = reader.pull_u16()
    key_size = reader.pull_u16()
    sig_size = reader.pull_u16()
    try:
        algorithm = SignatureAlgorithm(algorithm_value)
    except ValueError:
        raise AvrsProtocolError(
            AvrsError.SIGN_INCORRECT, f"unknown signature algorithm 0x{algorithm_value:04x}"
        ) from None
    if (key_size, sig_size) != ALGORITHM_SIZES[algorithm]:
        raise AvrsProtocolError(
            AvrsError.SIGN_INCORRECT, f"{algorithm.name} blob with sizes {key_size}/{sig_size}"
        )
    if reader.remaining() != key_size + sig_size:
        raise AvrsProtocolError(
            AvrsError.SIGN_INCORRECT,
            f"signature blob body is {reader.remaining()} bytes, expected {key_size + sig_size}",
        )
    return SignBlob(algorithm, reader.pull_bytes(key_size), reader.pull_bytes(sig_size))


def verify_blob(blob: SignBlob, message: bytes | memoryview) -> bool:
    """True if ``blob.signature`` is valid for ``message`` under ``blob.public_key``."""
    try:
        if blob.algorithm is SignatureAlgorithm.ED25519:
            Ed25519PublicKey.from_public_bytes(blob.public_key).verify(
                blob.signature, bytes(message)
            )
        else:
            MLDSA65PublicKey.from_public_bytes(blob.public_key).verify(
                blob.signature, bytes(message)
            )
    except (InvalidSignature, ValueError):
        return False
    return True


class AvrsSigner:
    """A private key that signs AVRS requests. The private key is never printed."""

    __slots__ = ("_sign", "algorithm", "identity", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey | MLDSA65PrivateKey) -> None:
        self.public_key: bytes
        self.algorithm: SignatureAlgorithm
        self._sign: Callable[[bytes], bytes]
        if isinstance(private_key, Ed25519PrivateKey):
            self.algorithm = SignatureAlgorithm.ED25519
            self.public_key = private_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        else:
            self.algorithm = SignatureAlgorithm.ML_DSA_65
            self.public_key = private_key.public_key().public_bytes_raw()
        self._sign = private_key.sign
        self.identity: bytes = identity_of(self.public_key)

    @classmethod
    def from_seed(
        cls, seed: bytes, algorithm: SignatureAlgorithm = SignatureAlgorithm.ED25519
    ) -> AvrsSigner:
        """Deterministic key from a 32-byte seed (test vectors, reproducible demos).

        Ed25519 signatures are then deterministic too; ML-DSA-65 signatures are hedged
        (randomised) by the library, so only their verification is reproducible.
        """
        if len(seed) != 32:
            raise ValueError(f"signer seed must be 32 bytes, got {len(seed)}")
        if algorithm is SignatureAlgorithm.ED25519:
            return cls(Ed25519PrivateKey.from_private_bytes(seed))
        return cls(MLDSA65PrivateKey.from_seed_bytes(seed))

    @classmethod
    def generate(cls, algorithm: SignatureAlgorithm = SignatureAlgorithm.ED25519) -> AvrsSigner:
        if algorithm is SignatureAlgorithm.ED25519:
            return cls(Ed25519PrivateKey.generate())
        return cls(MLDSA65PrivateKey.generate())

    def sign_blob(self, message: bytes) -> SignBlob:
        return SignBlob(self.algorithm, self.public_key, self._sign(message))

    def __repr__(self) -> str:
        return f"AvrsSigner({self.algorithm.name}, identity={self.identity.hex()[:16]}...)"


def tsd_sign_pkt_verify(
    sign_tsd: Tsd | bytes,
    tsd_offset: int,
    pkt: bytes | memoryview,
    pkt_hdr_size: int,
    pkt_args_size: int,
) -> bool:
    """``avrs_ch_tsd_sign_pkt_verify`` without the channel argument, with the seed's meaning.

    ``sign_tsd`` is the SIGN TSD (a :class:`Tsd`, or its raw wire bytes: 6-byte header + data);
    ``tsd_offset`` is its offset inside the argument area; ``pkt`` is the whole packet, whose first
    ``pkt_hdr_size`` bytes are the header and the next ``pkt_args_size`` bytes the arguments. The
    signed message is ``pkt[: pkt_hdr_size + tsd_offset]``: the header and every TSD before SIGN.

    Returns False (never raises) when the sizes do not fit, the blob is malformed or the signature
    is wrong, as the C function did.
    """
    try:
        if isinstance(sign_tsd, Tsd):
            sign_data = sign_tsd.data
        else:
            if len(sign_tsd) < TSD_HEADER_SIZE:
                return False
            _type, size = TSD_HEADER.unpack_from(sign_tsd)
            sign_data = bytes(sign_tsd[TSD_HEADER_SIZE:])
            if size != len(sign_data):
                return False
        if min(tsd_offset, pkt_hdr_size, pkt_args_size) < 0:
            return False
        # The C check: the SIGN TSD must fit in what is left of the arguments after its offset.
        if TSD_HEADER_SIZE + len(sign_data) > pkt_args_size - tsd_offset:
            return False
        if pkt_hdr_size + pkt_args_size > len(pkt):
            return False
        blob = decode_sign_blob(sign_data)
        return verify_blob(blob, memoryview(pkt)[: pkt_hdr_size + tsd_offset])
    except (AvrsProtocolError, ValueError, TypeError):
        return False
