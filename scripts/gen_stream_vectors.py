"""Regenerate tests/vectors/{header,handshake,sealed,cookie}.json.

Everything is derived from fixed seeds except the responder's ML-KEM encapsulation randomness, which
the `cryptography` API does not let us fix: RESPONSE is therefore recorded, and the vector says so.
Given HELLO's seeds and the recorded RESPONSE, FINISH and every key after it are deterministic.

Run: .venv/bin/python scripts/gen_stream_vectors.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dapsdk.stream.admission import CookieIssuer
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.connection import plaintext_error
from dapsdk.stream.constants import HEADER, ChannelId, HandshakeStep, PacketFlag, PacketType
from dapsdk.stream.crypto import DirectionCipher
from dapsdk.stream.errors import ErrorCode
from dapsdk.stream.handshake import Handshake
from dapsdk.stream.identity import NodeIdentity

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors"


def drbg(label: str):  # type: ignore[no-untyped-def]
    """Deterministic byte source: SHA-256(label || counter) blocks."""
    state = {"counter": 0, "pool": b""}

    def rng(n: int) -> bytes:
        while len(state["pool"]) < n:
            block = hashlib.sha256(f"{label}:{state['counter']}".encode()).digest()
            state["counter"] += 1
            state["pool"] += block
        out, state["pool"] = state["pool"][:n], state["pool"][n:]
        return out

    return rng


def header_vectors() -> list[dict[str, object]]:
    cases = [
        (0, PacketType.DATA, 0, ChannelId.CONTROL, 0),
        (5, PacketType.DATA, 1, ChannelId.FILE, PacketFlag.ENCRYPTED),
        (65536 + 16, PacketType.DATA, 0xFFFFFFFF, 0x20, PacketFlag.ENCRYPTED | PacketFlag.FRAGMENTED),
        (25, PacketType.CONTROL, 7, ChannelId.MEDIA, PacketFlag.ENCRYPTED | PacketFlag.COMPRESSED),
        (25, PacketType.KEEPALIVE, 0x01020304, 0, PacketFlag.ENCRYPTED),
        (21, PacketType.CLOSE, 9, 0xFFFF, PacketFlag.ENCRYPTED),
        (40, PacketType.ERROR, 0, 0, 0),
    ]
    return [
        {
            "size": size,
            "type": int(ptype),
            "seq_id": seq,
            "ch_id": int(ch),
            "flags": int(flags),
            "hex": HEADER.pack(size, ptype, seq, ch, flags).hex(),
        }
        for size, ptype, seq, ch, flags in cases
    ]


def cookie_vectors() -> dict[str, object]:
    """The cookie retry of docs/protocol.md §3.7 with a fixed responder master secret."""
    master = hashlib.sha256(b"dapsdk vector cookie master").digest()
    issuer = CookieIssuer(master, period=120.0)
    cases = []
    for address, now in [
        ("192.0.2.1", 1_000_000.0),
        ("::ffff:192.0.2.1", 1_000_000.0),  # IPv4-mapped: the same 4 address bytes
        ("2001:db8::7", 1_000_119.9),
        ("198.51.100.200", 1_000_120.0),  # next epoch
    ]:
        cookie = issuer.make(address, now)
        cases.append(
            {
                "address": address,
                "responder_clock": now,
                "epoch": issuer.epoch(now),
                "cookie": cookie.hex(),
                "retry_error_packet": plaintext_error(
                    ErrorCode.RETRY_WITH_COOKIE, cookie.hex()
                ).hex(),
                "cookie_echo_packet": (
                    HEADER.pack(len(cookie), PacketType.CONTROL, HandshakeStep.COOKIE, 0, 0)
                    + cookie
                ).hex(),
            }
        )
    return {
        "description": "Cookie retry under load (docs/protocol.md §3.7). secret_epoch = "
        "HMAC-SHA256(master, 'dapstream cookie secret' || epoch u32 LE); cookie = epoch u32 LE || "
        "HMAC-SHA256(secret_epoch, 'dapstream cookie' || address bytes)[0:16]; epoch = "
        "floor(clock / 120). The responder answers HELLO with retry_error_packet (plaintext ERROR "
        "0x16, reason = cookie in hex); the initiator sends cookie_echo_packet before its HELLO.",
        "master": master.hex(),
        "period": 120.0,
        "cases": cases,
    }


def write_cookie_vectors() -> None:
    (OUT / "cookie.json").write_text(json.dumps(cookie_vectors(), indent=2) + "\n")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write_cookie_vectors()
    (OUT / "header.json").write_text(
        json.dumps(
            {
                "description": "dap_stream 12-byte packet header: <IBIHB (size u32, type u8, "
                "seq_id u32, ch_id u16, flags u8), little-endian, packed. docs/protocol.md §2.",
                "cases": header_vectors(),
            },
            indent=2,
        )
        + "\n"
    )
    initiator_seed = hashlib.sha256(b"dapsdk vector initiator identity").digest()
    responder_seed = hashlib.sha256(b"dapsdk vector responder identity").digest()
    initiator = NodeIdentity.from_seed(initiator_seed)
    responder = NodeIdentity.from_seed(responder_seed)
    i_cfg = StreamConfig(rng=drbg("initiator"))
    r_cfg = StreamConfig(rng=drbg("responder"))
    hs_i = Handshake(initiator, i_cfg, initiator=True, expected_peer=responder.address)
    hs_r = Handshake(responder, r_cfg, initiator=False)
    hello = hs_i.start()
    response = hs_r.receive(0, hello)
    assert response is not None
    finish = hs_i.receive(1, response)
    assert finish is not None
    assert hs_r.receive(2, finish) is None
    assert hs_i.result is not None and hs_r.result is not None
    assert hs_i.result.send_secret == hs_r.result.recv_secret
    wrap = lambda step, body: HEADER.pack(len(body), PacketType.CONTROL, step, 0, 0) + body  # noqa: E731
    # The responder's first sealed packet (its establishment PING, stamp 1 s): the initiator
    # reports the stream established only once this authenticates (docs/protocol.md §3.8).
    confirmation = DirectionCipher(hs_r.result.send_secret).seal(
        PacketType.KEEPALIVE, 0, PacketFlag.ENCRYPTED, bytes([0]) + (1_000_000).to_bytes(8, "little")
    )
    handshake = {
        "description": "Handshake with fixed identities and initiator randomness. The initiator's "
        "randomness is SHA-256('initiator:<n>') blocks consumed in order: 32 bytes X25519 "
        "ephemeral, then 64 bytes ML-KEM-768 seed (d||z). RESPONSE is recorded: its ML-KEM "
        "encapsulation randomness cannot be fixed through the library. Given HELLO's randomness "
        "and RESPONSE, FINISH and all secrets are deterministic. confirmation_packet: the "
        "responder's first sealed packet (KEEPALIVE PING, stamp 1000000 us, counter 0 of "
        "traffic_secret_r2i), which confirms FINISH was accepted. docs/protocol.md §3.",
        "initiator_identity_seed": initiator_seed.hex(),
        "responder_identity_seed": responder_seed.hex(),
        "initiator_address": str(initiator.address),
        "responder_address": str(responder.address),
        "initiator_rng_label": "initiator",
        "hello_packet": wrap(0, hello).hex(),
        "response_packet": wrap(1, response).hex(),
        "finish_packet": wrap(2, finish).hex(),
        "confirmation_packet": confirmation.hex(),
        "transcript_hash": hs_i.result.transcript_hash.hex(),
        "traffic_secret_i2r": hs_i.result.send_secret.hex(),
        "traffic_secret_r2i": hs_i.result.recv_secret.hex(),
        "version": hs_i.result.version,
        "features": hs_i.result.features,
    }
    (OUT / "handshake.json").write_text(json.dumps(handshake, indent=2) + "\n")
    send = DirectionCipher(hs_i.result.send_secret)
    packets = []
    for ptype, ch, flags, body in [
        (PacketType.CONTROL, 0x20, PacketFlag.ENCRYPTED, bytes([0x01, 3])),  # OPEN channel 0x20
        (PacketType.DATA, 0x20, PacketFlag.ENCRYPTED, b"Hello, World!"),
        (PacketType.CONTROL, 0x20, PacketFlag.ENCRYPTED, b"\x00ctl"),  # USER control message
        (PacketType.KEEPALIVE, 0, PacketFlag.ENCRYPTED, bytes([0]) + (1234567).to_bytes(8, "little")),
        (PacketType.CLOSE, 0x20, PacketFlag.ENCRYPTED, bytes([0]) + (0).to_bytes(4, "little")),
    ]:
        sealed = send.seal(ptype, ch, flags, body)
        packets.append({"type": int(ptype), "ch_id": ch, "flags": int(flags), "plaintext": body.hex(), "wire": sealed.hex()})
    (OUT / "sealed.json").write_text(
        json.dumps(
            {
                "description": "First packets the initiator seals after the handshake above, with "
                "traffic_secret_i2r: key||iv = HKDF-Expand(secret, 'dapstream key+iv', 44); "
                "nonce = iv XOR counter (12-byte little-endian); AAD = the 12-byte header. "
                "docs/protocol.md §4.",
                "traffic_secret": hs_i.result.send_secret.hex(),
                "packets": packets,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote vectors to {OUT}")


if __name__ == "__main__":
    main()
