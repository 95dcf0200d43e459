"""The dap_stream handshake: three messages, mutual authentication, hybrid post-quantum key agreement.

Shape (Noise XX / SIGMA-I, built from `cryptography` primitives only):

    HELLO     I -> R  magic, versions, features, e_i (X25519), ek_i (ML-KEM-768)
    RESPONSE  R -> I  version, features, e_r, ct (ML-KEM to ek_i), AEAD{ id_r, sig_r, settings, cert }
    FINISH    I -> R  AEAD{ id_i, sig_i, settings, cert }

Both sides hash every message into a transcript ``h``. The handshake secret is
HKDF-Extract(h0, X25519(e_i, e_r) || ML-KEM shared secret), so breaking either algorithm alone is not
enough. Each identity is sent encrypted (the initiator's only after the responder proved itself), and
each signs ``label || h || own key``: the signature covers the offered and chosen versions and features
(no downgrade) and the ephemeral keys (no replay into another session). Traffic secrets are expanded
from the same secret with the final transcript hash; ephemeral keys give forward secrecy.

The byte layouts are in docs/protocol.md; vectors in tests/vectors/handshake.json.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import PeerIdentity, StreamConfig
from .constants import HANDSHAKE_MAGIC, Feature
from .crypto import KEY_SIZE, hkdf_expand
from .errors import AuthenticationError, ErrorCode, HandshakeError, ProtocolError
from .identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, NodeAddress, NodeIdentity, verify_signature

PROTOCOL_NAME = b"DAPSTREAM_XXhybrid_X25519+MLKEM768_Ed25519_AESGCM_SHA256"
X25519_SIZE = 32
MLKEM_EK_SIZE = 1184
MLKEM_CT_SIZE = 1088
MAX_VERSIONS = 16
#: Largest handshake message body accepted (certificates included).
MAX_HANDSHAKE_BODY = 16 * 1024
_ZERO_NONCE = bytes(12)
_RESPONDER_SIG_LABEL = b"dapstream responder signature\x00"
_INITIATOR_SIG_LABEL = b"dapstream initiator signature\x00"


class Tlv:
    """Identity payload items: u16 type, u32 length, value (little-endian)."""

    IDENTITY_KEY = 0x01
    SIGNATURE = 0x02
    SETTINGS = 0x03
    CERTIFICATE = 0x04


class Setting:
    """Settings items inside the SETTINGS TLV: u16 id, u64 value. Unknown ids are ignored."""

    MAX_PACKET_PAYLOAD = 0x01
    INITIAL_CHANNEL_WINDOW = 0x02
    INITIAL_CONNECTION_WINDOW = 0x03
    MAX_CHANNELS = 0x04
    MAX_MESSAGE_SIZE = 0x05


_TLV_HEADER = struct.Struct("<HI")
_SETTING = struct.Struct("<HQ")


@dataclass(frozen=True, slots=True)
class PeerSettings:
    max_packet_payload: int
    initial_channel_window: int
    initial_connection_window: int
    max_channels: int
    max_message_size: int

    @classmethod
    def from_config(cls, config: StreamConfig) -> PeerSettings:
        return cls(
            config.max_packet_payload,
            config.initial_channel_window,
            config.initial_connection_window,
            config.max_channels,
            config.max_message_size,
        )

    def encode(self) -> bytes:
        return b"".join(
            _SETTING.pack(k, v)
            for k, v in (
                (Setting.MAX_PACKET_PAYLOAD, self.max_packet_payload),
                (Setting.INITIAL_CHANNEL_WINDOW, self.initial_channel_window),
                (Setting.INITIAL_CONNECTION_WINDOW, self.initial_connection_window),
                (Setting.MAX_CHANNELS, self.max_channels),
                (Setting.MAX_MESSAGE_SIZE, self.max_message_size),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> PeerSettings:
        if len(data) % _SETTING.size:
            raise HandshakeError(f"settings length {len(data)} is not a multiple of 10")
        values: dict[int, int] = {}
        for offset in range(0, len(data), _SETTING.size):
            key, value = _SETTING.unpack_from(data, offset)
            values[key] = value
        missing = [
            name
            for name, key in (
                ("MAX_PACKET_PAYLOAD", Setting.MAX_PACKET_PAYLOAD),
                ("INITIAL_CHANNEL_WINDOW", Setting.INITIAL_CHANNEL_WINDOW),
                ("INITIAL_CONNECTION_WINDOW", Setting.INITIAL_CONNECTION_WINDOW),
                ("MAX_CHANNELS", Setting.MAX_CHANNELS),
                ("MAX_MESSAGE_SIZE", Setting.MAX_MESSAGE_SIZE),
            )
            if key not in values
        ]
        if missing:
            raise HandshakeError(f"settings missing {', '.join(missing)}")
        settings = cls(
            values[Setting.MAX_PACKET_PAYLOAD],
            values[Setting.INITIAL_CHANNEL_WINDOW],
            values[Setting.INITIAL_CONNECTION_WINDOW],
            values[Setting.MAX_CHANNELS],
            values[Setting.MAX_MESSAGE_SIZE],
        )
        if not 512 <= settings.max_packet_payload <= 16 * 1024 * 1024:
            raise HandshakeError(f"peer max_packet_payload {settings.max_packet_payload} invalid")
        if not (
            2 * settings.max_packet_payload
            <= settings.initial_channel_window
            <= settings.initial_connection_window
            <= 1 << 40
        ):
            raise HandshakeError(
                "peer windows must satisfy 2*max_packet_payload <= channel <= connection <= 2**40"
            )
        return settings


def encode_tlv(items: list[tuple[int, bytes]]) -> bytes:
    return b"".join(_TLV_HEADER.pack(t, len(v)) + v for t, v in items)


def decode_tlv(data: bytes) -> dict[int, bytes]:
    """Strict TLV parse: every length checked against the bytes left, duplicates refused."""
    items: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if len(data) - offset < _TLV_HEADER.size:
            raise HandshakeError("truncated TLV header")
        tlv_type, length = _TLV_HEADER.unpack_from(data, offset)
        offset += _TLV_HEADER.size
        if length > len(data) - offset:
            raise HandshakeError(f"TLV 0x{tlv_type:04x} length {length} exceeds remaining bytes")
        if tlv_type in items:
            raise HandshakeError(f"duplicate TLV 0x{tlv_type:04x}")
        items[tlv_type] = data[offset : offset + length]
        offset += length
    return items


def _hash(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    peer: PeerIdentity
    peer_settings: PeerSettings
    version: int
    features: int
    send_secret: bytes
    recv_secret: bytes
    transcript_hash: bytes
    exporter_secret: bytes
    """Root for :func:`export_keying_material`; never used for packets directly."""

    def export(self, label: bytes, length: int = 32) -> bytes:
        """Keying material bound to this handshake for another purpose (QUIC datagrams, channel
        keys). Both sides derive the same bytes for the same label."""
        if not label:
            raise ValueError("exporter label must not be empty")
        return hkdf_expand(self.exporter_secret, b"dapstream exporter " + label, length)


class Handshake:
    """Sans-IO handshake state machine for one side. Bodies in, bodies out; no clock, no sockets."""

    def __init__(
        self,
        identity: NodeIdentity,
        config: StreamConfig,
        *,
        initiator: bool,
        expected_peer: NodeAddress | None = None,
    ) -> None:
        self.identity = identity
        self.config = config
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.result: HandshakeResult | None = None
        self._h = _hash(PROTOCOL_NAME)
        self._h0 = self._h
        self._step = 0  # next message index expected or produced
        self._x25519: X25519PrivateKey | None = None
        self._mlkem: MLKEM768PrivateKey | None = None
        self._prk = b""
        self._versions_offered: tuple[int, ...] = ()
        self._features_offered = 0
        self._version = 0
        self._features = 0
        self._peer: PeerIdentity | None = None
        self._peer_settings: PeerSettings | None = None
        self._k_init = b""

    # -- helpers -------------------------------------------------------------------------------

    def _mix(self, data: bytes) -> None:
        self._h = _hash(self._h, data)

    def _identity_payload(self, label: bytes) -> bytes:
        signature = self.identity.sign(label + self._h + self.identity.public_key)
        items = [
            (Tlv.IDENTITY_KEY, self.identity.public_key),
            (Tlv.SIGNATURE, signature),
            (Tlv.SETTINGS, PeerSettings.from_config(self.config).encode()),
        ]
        if self.config.certificate is not None:
            items.append((Tlv.CERTIFICATE, self.config.certificate))
        return encode_tlv(items)

    def _check_peer_payload(self, payload: bytes, label: bytes) -> None:
        items = decode_tlv(payload)
        public_key = items.get(Tlv.IDENTITY_KEY)
        signature = items.get(Tlv.SIGNATURE)
        settings = items.get(Tlv.SETTINGS)
        if public_key is None or signature is None or settings is None:
            raise HandshakeError("identity payload lacks key, signature or settings")
        if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
            raise HandshakeError("identity key or signature has the wrong size")
        if not verify_signature(public_key, signature, label + self._h + public_key):
            raise AuthenticationError("peer signature over the handshake transcript is invalid")
        peer = PeerIdentity(
            public_key=public_key,
            address=NodeAddress.from_public_key(public_key),
            certificate=items.get(Tlv.CERTIFICATE),
        )
        if self.expected_peer is not None and peer.address != self.expected_peer:
            raise AuthenticationError(f"peer is node {peer.address}, expected {self.expected_peer}")
        if self.config.peer_verifier is not None:
            try:
                self.config.peer_verifier(peer)
            except Exception as exc:  # any refusal by the policy hook
                raise AuthenticationError(f"peer {peer.address} refused: {exc}") from None
        self._peer = peer
        self._peer_settings = PeerSettings.decode(settings)

    def _derive_handshake_keys(self, dh: bytes, kem: bytes) -> tuple[bytes, bytes]:
        self._prk = hmac.new(self._h0, dh + kem, hashlib.sha256).digest()
        k_resp = hkdf_expand(self._prk, b"dapstream responder hs" + self._h, KEY_SIZE)
        k_init = hkdf_expand(self._prk, b"dapstream initiator hs" + self._h, KEY_SIZE)
        return k_resp, k_init

    def _finish(self) -> None:
        assert self._peer is not None and self._peer_settings is not None
        i2r = hkdf_expand(self._prk, b"dapstream traffic i2r" + self._h, KEY_SIZE)
        r2i = hkdf_expand(self._prk, b"dapstream traffic r2i" + self._h, KEY_SIZE)
        self.result = HandshakeResult(
            peer=self._peer,
            peer_settings=self._peer_settings,
            version=self._version,
            features=self._features,
            send_secret=i2r if self.initiator else r2i,
            recv_secret=r2i if self.initiator else i2r,
            transcript_hash=self._h,
            exporter_secret=hkdf_expand(self._prk, b"dapstream exporter" + self._h, KEY_SIZE),
        )
        self._x25519 = None
        self._mlkem = None

    # -- initiator ----------------------------------------------------------------------------

    def start(self) -> bytes:
        """Initiator: produce the HELLO body."""
        if not self.initiator or self._step != 0:
            raise ValueError("start() is for a fresh initiator")
        rng = self.config.rng
        self._x25519 = X25519PrivateKey.from_private_bytes(rng(32))
        self._mlkem = MLKEM768PrivateKey.from_seed_bytes(rng(64))
        self._versions_offered = tuple(self.config.versions)[:MAX_VERSIONS]
        self._features_offered = int(self.config.features)
        body = b"".join(
            [
                HANDSHAKE_MAGIC,
                struct.pack("<B", len(self._versions_offered)),
                struct.pack(f"<{len(self._versions_offered)}H", *self._versions_offered),
                struct.pack("<I", self._features_offered),
                _raw(self._x25519.public_key()),
                self._mlkem.public_key().public_bytes_raw(),
            ]
        )
        self._mix(body)
        self._step = 1
        return body

    def _initiator_receive_response(self, body: bytes) -> bytes:
        assert self._x25519 is not None and self._mlkem is not None
        fixed = 2 + 4 + X25519_SIZE + MLKEM_CT_SIZE
        if len(body) < fixed + 16:
            raise HandshakeError(f"RESPONSE of {len(body)} bytes is too short")
        version, features = struct.unpack_from("<HI", body, 0)
        if version not in self._versions_offered:
            raise ProtocolError(
                f"responder chose version {version}, not offered", code=ErrorCode.VERSION_MISMATCH
            )
        if features & ~self._features_offered:
            raise HandshakeError(f"responder chose features 0x{features:x} that were not offered")
        e_r = body[6 : 6 + X25519_SIZE]
        ciphertext = body[6 + X25519_SIZE : fixed]
        try:
            dh = self._x25519.exchange(X25519PublicKey.from_public_bytes(e_r))
            kem = self._mlkem.decapsulate(ciphertext)
        except ValueError as exc:
            raise HandshakeError(f"key agreement failed: {exc}") from None
        self._version, self._features = version, features
        self._mix(body[:fixed])
        k_resp, k_init = self._derive_handshake_keys(dh, kem)
        sealed = body[fixed:]
        try:
            payload = AESGCM(k_resp).decrypt(_ZERO_NONCE, sealed, self._h)
        except InvalidTag:
            raise HandshakeError("RESPONSE payload failed authentication") from None
        self._check_peer_payload(payload, _RESPONDER_SIG_LABEL)
        self._mix(sealed)
        reply = AESGCM(k_init).encrypt(
            _ZERO_NONCE, self._identity_payload(_INITIATOR_SIG_LABEL), self._h
        )
        self._mix(reply)
        self._step = 3
        self._finish()
        return reply

    # -- responder ----------------------------------------------------------------------------

    def _responder_receive_hello(self, body: bytes) -> bytes:
        if len(body) < 5 or body[:4] != HANDSHAKE_MAGIC:
            raise HandshakeError("HELLO does not start with the DAPS magic")
        count = body[4]
        if not 1 <= count <= MAX_VERSIONS:
            raise HandshakeError(f"HELLO offers {count} versions (1..{MAX_VERSIONS} allowed)")
        expected = 5 + 2 * count + 4 + X25519_SIZE + MLKEM_EK_SIZE
        if len(body) != expected:
            raise HandshakeError(f"HELLO is {len(body)} bytes, expected {expected}")
        offered = struct.unpack_from(f"<{count}H", body, 5)
        (features_offered,) = struct.unpack_from("<I", body, 5 + 2 * count)
        common = [v for v in self.config.versions if v in offered]
        if not common:
            raise ProtocolError(
                f"no common protocol version (peer offers {list(offered)}, "
                f"we speak {list(self.config.versions)})",
                code=ErrorCode.VERSION_MISMATCH,
            )
        self._version = max(common)
        self._features = features_offered & int(self.config.features)
        offset = 5 + 2 * count + 4
        e_i = body[offset : offset + X25519_SIZE]
        ek = body[offset + X25519_SIZE :]
        self._mix(body)
        rng = self.config.rng
        ephemeral = X25519PrivateKey.from_private_bytes(rng(32))
        try:
            dh = ephemeral.exchange(X25519PublicKey.from_public_bytes(e_i))
            kem, ciphertext = MLKEM768PublicKey.from_public_bytes(ek).encapsulate()
        except ValueError as exc:
            raise HandshakeError(f"key agreement failed: {exc}") from None
        clear = (
            struct.pack("<HI", self._version, self._features)
            + _raw(ephemeral.public_key())
            + ciphertext
        )
        self._mix(clear)
        k_resp, self._k_init = self._derive_handshake_keys(dh, kem)
        sealed = AESGCM(k_resp).encrypt(
            _ZERO_NONCE, self._identity_payload(_RESPONDER_SIG_LABEL), self._h
        )
        self._mix(sealed)
        self._step = 2
        return clear + sealed

    def _responder_receive_finish(self, body: bytes) -> None:
        try:
            payload = AESGCM(self._k_init).decrypt(_ZERO_NONCE, body, self._h)
        except InvalidTag:
            raise HandshakeError("FINISH payload failed authentication") from None
        self._check_peer_payload(payload, _INITIATOR_SIG_LABEL)
        self._mix(body)
        self._step = 3
        self._finish()

    # -- entry point --------------------------------------------------------------------------

    @property
    def expected_step(self) -> int:
        """Index (HELLO=0, RESPONSE=1, FINISH=2) of the next message this side must receive."""
        if self.initiator:
            return 1 if self._step == 1 else -1
        return {0: 0, 2: 2}.get(self._step, -1)

    def receive(self, step: int, body: bytes) -> bytes | None:
        """Consume handshake message ``step``; return the reply body, if any.

        Raises HandshakeError / AuthenticationError / ProtocolError(VERSION_MISMATCH).
        """
        if step != self.expected_step:
            raise HandshakeError(
                f"handshake message {step} unexpected (waiting for {self.expected_step})"
            )
        if len(body) > MAX_HANDSHAKE_BODY:
            raise HandshakeError(
                f"handshake message of {len(body)} bytes exceeds {MAX_HANDSHAKE_BODY}"
            )
        if self.initiator:
            return self._initiator_receive_response(body)
        if step == 0:
            return self._responder_receive_hello(body)
        self._responder_receive_finish(body)
        return None

    @property
    def complete(self) -> bool:
        return self.result is not None

    @property
    def features(self) -> Feature:
        return Feature(self._features)
