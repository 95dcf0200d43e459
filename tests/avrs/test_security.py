"""Forged, missing and alien signatures, and replays, are refused before anything changes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dapsdk.avrs.connection import AvrsConnection
from dapsdk.avrs.constants import (
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    CommonArg,
    ContentFlag,
    SessionArg,
    SessionOp,
)
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.events import ClusterRequestReceived, RequestRefused
from dapsdk.avrs.packets import REQUEST_HEADER_SIZE, decode_request
from dapsdk.avrs.signing import AvrsSigner, SignatureAlgorithm
from dapsdk.avrs.tsd import TSD_HEADER_SIZE, Tsd, encode_tsds

from .kit import (
    ALIEN,
    CLIENT,
    CLUSTER_ID,
    HOST,
    NOW,
    OPERATOR,
    PQ_CLIENT,
    PQ_CLUSTER_ID,
    SERVER,
    Wire,
    content_add_args,
    drain,
    make_conn,
    only_reply,
    open_session,
)

C = AvrsChannel.CLUSTER
S = AvrsChannel.SESSION


def snapshot(conn: AvrsConnection) -> tuple[object, ...]:
    """Everything a refused request must leave untouched."""
    session = conn.session
    return (
        conn.state,
        None if session is None else session.session_id,
        None if session is None else dict(session.contents),
        None if session is None else set(session.clusters),
        len(conn.sessions),
        len(conn.replay_guard),
        conn.get_timer(),
    )


def flip_signature_byte(data: bytes) -> bytes:
    forged = bytearray(data)
    forged[-1] ^= 0x80  # last byte of the signature itself
    return bytes(forged)


def strip_signature(data: bytes) -> bytes:
    request = decode_request(S if data[1] == ord("S") else C, data)
    return data[: REQUEST_HEADER_SIZE + request.sign_offset]


def resign_with(data: bytes, signer: AvrsSigner) -> bytes:
    """Keep header and arguments (including timestamp/nonce), replace the signature."""
    prefix = strip_signature(data)
    return prefix + encode_tsds([Tsd(CommonArg.SIGN, signer.sign_blob(prefix).encode())])


Mutation = Callable[[bytes], bytes]


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (flip_signature_byte, AvrsError.SIGN_INCORRECT),
        (lambda d: resign_with(d, ALIEN), AvrsError.SIGN_ALIEN),
    ],
    ids=["forged", "alien"],
)
def test_session_request_refused_without_state_change(mutate: Mutation, code: AvrsError) -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    drain(conn)
    before = snapshot(conn)
    data = wire.request(S, SessionOp.CONTENT_ADD, content_add_args(), signer=CLIENT)
    assert only_reply(conn.handle(S, mutate(data), NOW)).code == code
    assert snapshot(conn) == before
    assert [type(e) for e in drain(conn)] == [RequestRefused]


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (flip_signature_byte, AvrsError.SIGN_INCORRECT),
        (strip_signature, AvrsError.SIGN_NOT_PRESENT),
    ],
    ids=["forged", "missing"],
)
def test_open_refused_without_state_change(mutate: Mutation, code: AvrsError) -> None:
    conn, wire = make_conn(), Wire()
    before = snapshot(conn)
    data = mutate(wire.request(S, SessionOp.OPEN, signer=CLIENT))
    assert only_reply(conn.handle(S, data, NOW)).code == code
    assert snapshot(conn) == before


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (flip_signature_byte, AvrsError.SIGN_INCORRECT),
        (strip_signature, AvrsError.SIGN_NOT_PRESENT),
        (lambda d: resign_with(d, ALIEN), AvrsError.SIGN_ALIEN),
    ],
    ids=["forged", "missing", "alien"],
)
def test_cluster_request_refused_before_the_application_sees_it(
    mutate: Mutation, code: AvrsError
) -> None:
    conn, wire = make_conn(), Wire()
    before = snapshot(conn)
    data = wire.request(C, ClusterOp.DESTROY, [Tsd(ClusterArg.ID, CLUSTER_ID)], signer=HOST)
    reply = only_reply(conn.handle(C, mutate(data), NOW))
    assert reply.code == code
    assert snapshot(conn) == before
    assert not any(isinstance(e, ClusterRequestReceived) for e in drain(conn))


def test_open_by_alien_key_with_forged_session_id_is_impossible() -> None:
    """Identity comes from the verified key: a re-signed OPEN opens the *signer's* session."""
    conn, wire = make_conn(), Wire()
    data = resign_with(wire.request(S, SessionOp.OPEN, signer=CLIENT), ALIEN)
    reply = only_reply(conn.handle(S, data, NOW))
    assert reply.code == AvrsError.SUCCESS
    assert reply.arg(0x01) == ALIEN.identity != CLIENT.identity


def test_replay_refused_on_same_and_other_connection() -> None:
    first, wire = make_conn(), Wire()
    second = make_conn(directory=first.directory, guard=first.replay_guard)  # type: ignore[arg-type]
    data = wire.request(C, ClusterOp.INFO, [Tsd(ClusterArg.ID, CLUSTER_ID)], signer=HOST)
    first.handle(C, data, NOW)
    assert any(isinstance(e, ClusterRequestReceived) for e in drain(first))
    before = snapshot(first)
    assert only_reply(first.handle(C, data, NOW + 0.5)).code == AvrsError.SIGN_REPLAYED
    assert snapshot(first) == before
    assert only_reply(second.handle(C, data, NOW + 0.5)).code == AvrsError.SIGN_REPLAYED
    assert not any(isinstance(e, ClusterRequestReceived) for e in drain(second))


def test_replayed_open_does_not_reopen_closed_session() -> None:
    conn, wire = make_conn(), Wire()
    data = wire.request(S, SessionOp.OPEN, signer=CLIENT)
    assert only_reply(conn.handle(S, data, NOW)).code == AvrsError.SUCCESS
    assert only_reply(conn.handle(S, wire.request(S, SessionOp.CLOSE), NOW)).code == 0
    before = snapshot(conn)
    assert only_reply(conn.handle(S, data, NOW + 1)).code == AvrsError.SIGN_REPLAYED
    assert snapshot(conn) == before


def test_signed_session_request_by_other_member_is_alien() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    before = snapshot(conn)
    data = wire.request(S, SessionOp.CONTENT_ADD, content_add_args(), signer=OPERATOR)
    assert only_reply(conn.handle(S, data, NOW)).code == AvrsError.SIGN_ALIEN
    assert snapshot(conn) == before


def test_client_may_not_publish_but_content_owner_may() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    before = snapshot(conn)
    publish = content_add_args(flags=ContentFlag.STREAMING_IN)
    reply = only_reply(conn.handle(S, wire.request(S, SessionOp.CONTENT_ADD, publish), NOW))
    assert reply.code == AvrsError.SIGN_ALIEN
    assert snapshot(conn) == before
    owner, owner_wire = make_conn(), Wire()
    open_session(owner, owner_wire, SERVER)
    request = owner_wire.request(S, SessionOp.CONTENT_ADD, publish)
    assert only_reply(owner.handle(S, request, NOW)).code == AvrsError.SUCCESS


def test_ml_dsa_65_cluster_accepts_ml_dsa_member() -> None:
    conn, wire = make_conn(), Wire()
    assert PQ_CLIENT.algorithm is SignatureAlgorithm.ML_DSA_65
    assert open_session(conn, wire, PQ_CLIENT).code == AvrsError.SUCCESS
    join = [Tsd(SessionArg.CLUSTER_ID, PQ_CLUSTER_ID)]
    reply = only_reply(conn.handle(S, wire.request(S, SessionOp.CLUSTER_ADD, join), NOW))
    assert reply.code == AvrsError.SUCCESS
    signed = wire.request(C, ClusterOp.INFO, [Tsd(ClusterArg.ID, PQ_CLUSTER_ID)], signer=PQ_CLIENT)
    conn.handle(C, signed, NOW)
    assert any(isinstance(e, ClusterRequestReceived) for e in drain(conn))
    forged = flip_signature_byte(signed)
    assert only_reply(conn.handle(C, forged, NOW)).code == AvrsError.SIGN_INCORRECT


def test_bytes_after_signature_are_refused() -> None:
    conn, wire = make_conn(), Wire()
    data = wire.request(S, SessionOp.OPEN, signer=CLIENT)
    trailing = data + b"\x01\x00" + (0).to_bytes(4, "little")  # an empty TSD after SIGN
    assert len(trailing) == len(data) + TSD_HEADER_SIZE
    before = snapshot(conn)
    assert only_reply(conn.handle(S, trailing, NOW)).code == AvrsError.SIGN_INCORRECT
    assert snapshot(conn) == before
