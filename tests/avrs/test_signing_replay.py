"""Signature blobs, identities, the seed-compatible prefix verifier, and the replay guard."""

from __future__ import annotations

import hashlib

import pytest

from dapsdk.avrs.constants import AvrsChannel, SessionOp
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError
from dapsdk.avrs.packets import REQUEST_HEADER_SIZE, RequestHeader, decode_request, encode_request
from dapsdk.avrs.replay import ReplayGuard
from dapsdk.avrs.signing import (
    AvrsSigner,
    SignatureAlgorithm,
    SignBlob,
    decode_sign_blob,
    tsd_sign_pkt_verify,
    verify_blob,
)
from dapsdk.avrs.tsd import TSD_HEADER_SIZE, Tsd, encode_tsds
from dapsdk.stream.identity import NodeIdentity

from .kit import CLIENT, PQ_CLIENT, seed

NOW = 1_767_225_600.0


def signed_open(signer: AvrsSigner = CLIENT) -> bytes:
    header = RequestHeader(SessionOp.OPEN, AvrsChannel.SESSION, 5)
    return encode_request(
        header, [Tsd(0x30, b"me")], signer=signer, timestamp_ms=1, nonce=b"\x00" * 16
    )


def seed_args(data: bytes) -> tuple[Tsd, int, bytes, int, int]:
    """The seed function's arguments for a signed request."""
    request = decode_request(AvrsChannel.SESSION, data)
    assert request.sign is not None
    return request.sign, request.sign_offset, data, REQUEST_HEADER_SIZE, request.args_size


def test_identity_is_sha3_256_and_matches_node_address() -> None:
    signer = AvrsSigner.from_seed(seed(9))
    assert signer.identity == hashlib.sha3_256(signer.public_key).digest()
    node = NodeIdentity.from_seed(seed(9))
    assert node.public_key == signer.public_key
    digest = signer.identity
    assert node.address.value == int.from_bytes(digest[:4] + digest[-4:], "big")


@pytest.mark.parametrize("signer", [CLIENT, PQ_CLIENT], ids=["ed25519", "ml-dsa-65"])
def test_blob_roundtrip_and_verification(signer: AvrsSigner) -> None:
    blob = signer.sign_blob(b"message")
    decoded = decode_sign_blob(blob.encode())
    assert decoded == blob
    assert decoded.identity == signer.identity
    assert verify_blob(decoded, b"message")
    assert not verify_blob(decoded, b"messagE")


def test_ed25519_from_seed_is_deterministic() -> None:
    assert CLIENT.sign_blob(b"x") == AvrsSigner.from_seed(seed(5)).sign_blob(b"x")
    assert PQ_CLIENT.algorithm is SignatureAlgorithm.ML_DSA_65
    assert len(PQ_CLIENT.public_key) == 1952


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        bytes.fromhex("0300 2000 4000") + b"\x00" * 96,  # unknown algorithm
        bytes.fromhex("0100 2100 4000") + b"\x00" * 97,  # wrong key size for Ed25519
        bytes.fromhex("0100 2000 4000") + b"\x00" * 95,  # body one byte short
        bytes.fromhex("0100 2000 4000") + b"\x00" * 97,  # one byte extra
    ],
)
def test_malformed_blobs_are_sign_incorrect(blob: bytes) -> None:
    with pytest.raises(AvrsProtocolError) as info:
        decode_sign_blob(blob)
    assert info.value.code is AvrsError.SIGN_INCORRECT


def test_invalid_public_key_does_not_verify() -> None:
    blob = SignBlob(SignatureAlgorithm.ED25519, b"\xff" * 32, b"\x00" * 64)
    assert verify_blob(blob, b"m") is False


def test_tsd_sign_pkt_verify_seed_semantics() -> None:
    data = signed_open()
    sign, offset, pkt, hdr, args_size = seed_args(data)
    assert tsd_sign_pkt_verify(sign, offset, pkt, hdr, args_size)
    raw_tsd = encode_tsds([sign])
    assert tsd_sign_pkt_verify(raw_tsd, offset, pkt, hdr, args_size)
    # The signature covers pkt[: hdr + offset]: a bit flip there fails, the same blob over another
    # prefix fails, and a SIGN TSD that does not fit in args_size - offset fails.
    tampered = bytearray(pkt)
    tampered[REQUEST_HEADER_SIZE + TSD_HEADER_SIZE] ^= 1
    assert not tsd_sign_pkt_verify(sign, offset, bytes(tampered), hdr, args_size)
    assert not tsd_sign_pkt_verify(sign, offset - 1, pkt, hdr, args_size)
    assert not tsd_sign_pkt_verify(sign, offset, pkt, hdr, args_size - 1)
    assert not tsd_sign_pkt_verify(raw_tsd[:-1], offset, pkt, hdr, args_size)
    assert not tsd_sign_pkt_verify(raw_tsd[:3], offset, pkt, hdr, args_size)
    assert not tsd_sign_pkt_verify(sign, -1, pkt, hdr, args_size)
    assert not tsd_sign_pkt_verify(sign, offset, pkt[:-1], hdr, args_size)


def test_tsd_sign_pkt_verify_ml_dsa() -> None:
    assert tsd_sign_pkt_verify(*seed_args(signed_open(PQ_CLIENT)))


# ------------------------------------------------------------------ replay guard


def test_replay_guard_accepts_once_within_skew() -> None:
    guard = ReplayGuard(max_skew=30)
    ts = int(NOW * 1000)
    assert guard.check(b"a", b"n1", ts, NOW).accepted
    verdict = guard.check(b"a", b"n1", ts, NOW + 1)
    assert (verdict.accepted, verdict.code) == (False, AvrsError.SIGN_REPLAYED)
    assert guard.check(b"b", b"n1", ts, NOW).accepted  # nonces are per signer
    assert guard.check(b"a", b"n2", ts - 30_000, NOW).accepted  # exactly at the skew edge
    assert guard.check(b"a", b"n3", ts - 30_001, NOW).code is AvrsError.SIGN_EXPIRED
    assert guard.check(b"a", b"n4", ts + 30_001, NOW).code is AvrsError.SIGN_EXPIRED


def test_replay_guard_forgets_only_what_can_no_longer_pass() -> None:
    guard = ReplayGuard(max_skew=30)
    ts = int(NOW * 1000)
    guard.check(b"a", b"n", ts, NOW)
    guard.expire(NOW + 29.9)
    assert len(guard) == 1
    guard.expire(NOW + 30)
    assert len(guard) == 0
    # The forgotten request cannot come back: its timestamp is now outside the window.
    assert guard.check(b"a", b"n", ts, NOW + 30.1).code is AvrsError.SIGN_EXPIRED


def test_replay_guard_is_bounded() -> None:
    guard = ReplayGuard(max_skew=30, max_entries=2)
    ts = int(NOW * 1000)
    assert guard.check(b"a", b"1", ts, NOW).accepted
    assert guard.check(b"a", b"2", ts, NOW).accepted
    assert guard.check(b"a", b"3", ts, NOW).code is AvrsError.BUSY
    assert guard.check(b"a", b"3", ts + 31_000, NOW + 31).accepted  # old entries expired
    with pytest.raises(ValueError):
        ReplayGuard(max_skew=0)
