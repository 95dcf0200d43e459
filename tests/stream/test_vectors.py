"""The published test vectors (tests/vectors/*.json) must hold for this implementation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dapsdk.stream.config import StreamConfig
from dapsdk.stream.connection import StreamConnection
from dapsdk.stream.constants import HEADER
from dapsdk.stream.crypto import DirectionCipher
from dapsdk.stream.events import HandshakeCompleted
from dapsdk.stream.handshake import Handshake
from dapsdk.stream.identity import NodeIdentity

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def load(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((VECTORS / name).read_text())


def drbg(label: str):  # type: ignore[no-untyped-def]
    state = {"counter": 0, "pool": b""}

    def rng(n: int) -> bytes:
        while len(state["pool"]) < n:
            state["pool"] += hashlib.sha256(f"{label}:{state['counter']}".encode()).digest()
            state["counter"] += 1
        out, state["pool"] = state["pool"][:n], state["pool"][n:]
        return out

    return rng


@pytest.mark.parametrize("case", load("header.json")["cases"])
def test_header_vectors_encode_and_decode(case: dict) -> None:  # type: ignore[type-arg]
    raw = bytes.fromhex(case["hex"])
    assert len(raw) == 12
    assert (
        HEADER.pack(case["size"], case["type"], case["seq_id"], case["ch_id"], case["flags"]) == raw
    )
    assert HEADER.unpack(raw) == (
        case["size"],
        case["type"],
        case["seq_id"],
        case["ch_id"],
        case["flags"],
    )


def test_handshake_vector_initiator_side_is_reproduced_exactly() -> None:
    v = load("handshake.json")
    initiator = NodeIdentity.from_seed(bytes.fromhex(v["initiator_identity_seed"]))
    responder = NodeIdentity.from_seed(bytes.fromhex(v["responder_identity_seed"]))
    assert str(initiator.address) == v["initiator_address"]
    assert str(responder.address) == v["responder_address"]
    hs = Handshake(
        initiator,
        StreamConfig(rng=drbg(v["initiator_rng_label"])),
        initiator=True,
        expected_peer=responder.address,
    )
    hello = hs.start()
    assert HEADER.pack(len(hello), 2, 0, 0, 0) + hello == bytes.fromhex(v["hello_packet"])
    response = bytes.fromhex(v["response_packet"])[12:]
    finish = hs.receive(1, response)
    assert finish is not None
    assert HEADER.pack(len(finish), 2, 2, 0, 0) + finish == bytes.fromhex(v["finish_packet"])
    assert hs.result is not None
    assert hs.result.transcript_hash.hex() == v["transcript_hash"]
    assert hs.result.send_secret.hex() == v["traffic_secret_i2r"]
    assert hs.result.recv_secret.hex() == v["traffic_secret_r2i"]
    assert hs.result.peer.address == responder.address


def test_handshake_vector_packets_drive_a_connection() -> None:
    """Feeding the recorded packets through a client core completes its handshake."""
    v = load("handshake.json")
    initiator = NodeIdentity.from_seed(bytes.fromhex(v["initiator_identity_seed"]))
    conn = StreamConnection(StreamConfig(rng=drbg("initiator")), initiator, is_client=True, now=0.0)
    assert b"".join(conn.data_to_send()) == bytes.fromhex(v["hello_packet"])
    conn.receive_data(bytes.fromhex(v["response_packet"]), 0.0)
    assert conn.result is not None
    assert b"".join(conn.data_to_send()).startswith(bytes.fromhex(v["finish_packet"]))
    # FINISH sent, but not yet accepted: no HandshakeCompleted until the responder's first
    # sealed packet (the confirmation) authenticates (docs/protocol.md §3.8).
    assert conn.next_event() is None
    conn.receive_data(bytes.fromhex(v["confirmation_packet"]), 0.1)
    event = conn.next_event()
    assert isinstance(event, HandshakeCompleted), event
    assert conn.next_event() is None  # the PING is answered with a PONG, not an event
    assert conn.data_to_send()


def test_sealed_packet_vectors() -> None:
    v = load("sealed.json")
    send = DirectionCipher(bytes.fromhex(v["traffic_secret"]))
    recv = DirectionCipher(bytes.fromhex(v["traffic_secret"]))
    for packet in v["packets"]:
        wire = bytes.fromhex(packet["wire"])
        plaintext = bytes.fromhex(packet["plaintext"])
        assert send.seal(packet["type"], packet["ch_id"], packet["flags"], plaintext) == wire
        size, ptype, seq, ch, flags = HEADER.unpack_from(wire)
        assert (ptype, ch, flags, size) == (
            packet["type"],
            packet["ch_id"],
            packet["flags"],
            len(wire) - 12,
        )
        assert recv.open(wire[:12], seq, wire[12:]) == plaintext


@pytest.mark.parametrize("case", load("cookie.json")["cases"])
def test_cookie_vectors(case: dict) -> None:  # type: ignore[type-arg]
    from dapsdk.stream.admission import CookieIssuer
    from dapsdk.stream.errors import ErrorCode

    v = load("cookie.json")
    issuer = CookieIssuer(bytes.fromhex(v["master"]), period=v["period"])
    cookie = bytes.fromhex(case["cookie"])
    assert issuer.epoch(case["responder_clock"]) == case["epoch"]
    assert issuer.make(case["address"], case["responder_clock"]) == cookie
    assert issuer.check(cookie, case["address"], case["responder_clock"] + v["period"])
    # The responder's reply and the initiator's echo, byte for byte, from the wire core.
    responder = StreamConnection(StreamConfig(), NodeIdentity.generate(), is_client=False, now=0)
    responder.hello_gate = lambda echoed: (ErrorCode.RETRY_WITH_COOKIE, cookie.hex())
    initiator = StreamConnection(StreamConfig(), NodeIdentity.generate(), is_client=True, now=0)
    responder.receive_data(b"".join(initiator.data_to_send()), 0.0)
    assert b"".join(responder.data_to_send()).hex() == case["retry_error_packet"]
    retried = StreamConnection(
        StreamConfig(), NodeIdentity.generate(), is_client=True, now=0, cookie=cookie
    )
    assert retried.data_to_send()[0].hex() == case["cookie_echo_packet"]
