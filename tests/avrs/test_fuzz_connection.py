"""AvrsConnection fed random bytes and random request sequences: nothing escapes, every request
is answered once, and a mutated signed request is never accepted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dapsdk.avrs.args import ARG_SPECS
from dapsdk.avrs.constants import AvrsChannel, ContentFlag, SessionArg, SessionOp
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.events import PacketDropped, RequestRefused
from dapsdk.avrs.packets import decode_reply
from dapsdk.avrs.permissions import PERMISSIONS
from dapsdk.avrs.state import SessionInput, SessionState, decide
from dapsdk.avrs.tsd import Tsd

from .kit import (
    ALIEN,
    CLIENT,
    CLUSTER_ID,
    CONTENT_ID,
    HOST,
    NOW,
    SERVER,
    Wire,
    cid,
    content_add_args,
    drain,
    make_conn,
    open_session,
)

ALL_CHANNELS = [*map(int, AvrsChannel), 0, 0x10, 0xFFFF]
REQUEST_CHANNELS = {AvrsChannel.SIGNAL, AvrsChannel.CLUSTER, AvrsChannel.SESSION}


@settings(max_examples=300, deadline=None)  # no wall-clock assertions (shared CPUs)
@given(st.lists(st.tuples(st.sampled_from(ALL_CHANNELS), st.binary(max_size=200)), max_size=10))
def test_random_bytes_never_escape(inputs: list[tuple[int, bytes]]) -> None:
    conn = make_conn()
    for channel, data in inputs:
        out = conn.handle(channel, data, NOW)
        retcodes = [decode_reply(d) for ch, d in out if ch == AvrsChannel.RETCODE]
        if channel in REQUEST_CHANNELS:
            # Every request is answered (random bytes are never a valid request needing the app)
            # unless it is flagged as a response, which is never answered.
            is_response = len(data) >= 4 and bool(data[3] & 1)
            assert len(retcodes) == (0 if is_response else 1)
        elif channel == AvrsChannel.CONTENT:
            assert len(retcodes) <= 1
        else:
            assert out == []
    events = drain(conn)
    # A bug surfaces as a PacketDropped "internal ..." or a refusal with the generic ERROR code.
    assert not any(isinstance(e, PacketDropped) and "internal" in e.reason for e in events)
    assert not any(isinstance(e, RequestRefused) and e.code == AvrsError.ERROR for e in events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 10_000))
def test_random_bytes_after_session_is_streaming(noise: bytes, where: int) -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, SERVER)
    for op, args in (
        (SessionOp.CONTENT_ADD, content_add_args(flags=ContentFlag.STREAMING_IN)),
        (SessionOp.START, []),
        (SessionOp.SYNC, [Tsd(SessionArg.CLOCK, bytes(8))]),
    ):
        conn.handle(AvrsChannel.SESSION, wire.request(AvrsChannel.SESSION, op, args), NOW)
    for channel in (AvrsChannel.CONTENT, AvrsChannel.SESSION, AvrsChannel.CLUSTER):
        conn.handle(channel, noise[: where % 41], NOW)
    assert isinstance(conn.state, SessionState)


@settings(max_examples=300, deadline=None)  # no wall-clock assertions (shared CPUs)
@given(st.data())
def test_any_single_byte_change_of_a_signed_open_is_refused(data: st.DataObject) -> None:
    wire = Wire()
    packet = wire.request(AvrsChannel.SESSION, SessionOp.OPEN, signer=CLIENT)
    index = data.draw(st.integers(0, len(packet) - 1))
    flip = data.draw(st.integers(1, 255))
    mutated = bytearray(packet)
    mutated[index] ^= flip
    conn = make_conn()
    out = conn.handle(AvrsChannel.SESSION, bytes(mutated), NOW)
    assert conn.state is SessionState.CREATED and conn.session is None
    if mutated[3] & 1:  # flipped into a RESPONSE: traced, never answered
        assert out == []
        return
    [(_, reply_bytes)] = out
    assert decode_reply(reply_bytes).code != AvrsError.SUCCESS


def test_signed_open_flipped_into_a_response_is_not_answered() -> None:
    packet = bytearray(Wire().request(AvrsChannel.SESSION, SessionOp.OPEN, signer=CLIENT))
    packet[3] = 0x01
    conn = make_conn()
    assert conn.handle(AvrsChannel.SESSION, bytes(packet), NOW) == []
    assert conn.state is SessionState.CREATED


SESSION_STEPS = st.sampled_from(
    [
        (SessionOp.OPEN, SessionInput.OPEN),
        (SessionOp.CLOSE, SessionInput.CLOSE),
        (SessionOp.UPDATE, SessionInput.UPDATE),
        (SessionOp.CONTENT_ADD, SessionInput.CONTENT_ADD),
        (SessionOp.CONTENT_REMOVE, SessionInput.CONTENT_REMOVE),
        (SessionOp.START, SessionInput.START),
        (SessionOp.SYNC, SessionInput.SYNC),
        (SessionOp.STOP, SessionInput.STOP),
        (SessionOp.CLUSTER_ADD, SessionInput.CLUSTER_ADD),
    ]
)


def step_args(op: int, handles: list[int]) -> list[Tsd]:
    if op == SessionOp.CONTENT_ADD:
        return content_add_args()
    if op == SessionOp.CONTENT_REMOVE:
        return [cid(handles[-1] if handles else 99)]
    if op == SessionOp.SYNC:
        return [Tsd(SessionArg.CLOCK, bytes(8))]
    if op == SessionOp.CLUSTER_ADD:
        return [Tsd(SessionArg.CLUSTER_ID, CLUSTER_ID)]
    return []


@settings(max_examples=200, deadline=None)
@given(st.lists(SESSION_STEPS, max_size=25))
def test_session_requests_follow_the_state_table(steps: list[tuple[int, SessionInput]]) -> None:
    """Model check: a request succeeds iff the table allows it (and its arguments are valid), and
    the connection then lands where the table says (content fallback aside)."""
    conn, wire = make_conn(), Wire()
    handles: list[int] = []
    for op, event in steps:
        before = conn.state
        signer = CLIENT if op == SessionOp.OPEN else None
        request = wire.request(AvrsChannel.SESSION, op, step_args(op, handles), signer=signer)
        [(_, reply_bytes)] = conn.handle(AvrsChannel.SESSION, request, NOW)
        reply = decode_reply(reply_bytes)
        expected = decide(before, event)
        if isinstance(expected, AvrsError):
            assert reply.code == expected
            assert conn.state is before
            continue
        if op == SessionOp.CONTENT_REMOVE and not handles:
            assert reply.code == AvrsError.SESSION_CONTENT_ID_WRONG
            continue
        assert reply.code == AvrsError.SUCCESS, (before, op, reply)
        if op == SessionOp.CONTENT_ADD:
            handle_bytes = reply.arg(0x02)
            assert handle_bytes is not None
            handles.append(int.from_bytes(handle_bytes, "little"))
        elif op == SessionOp.CONTENT_REMOVE:
            handles.pop()
        elif op in (SessionOp.CLOSE, SessionOp.OPEN):
            handles.clear()  # CLOSE forgets the session; OPEN after CLOSE starts afresh
        if op == SessionOp.CONTENT_REMOVE and not handles:
            assert conn.state in (SessionState.AUTHENTICATED, expected)
        else:
            assert conn.state is expected


KNOWN_REQUESTS = sorted((channel, op) for channel, op in PERMISSIONS if channel in REQUEST_CHANNELS)
SIGNERS = [None, CLIENT, SERVER, HOST, ALIEN]


@st.composite
def structured_request(draw: st.DrawFn) -> tuple[AvrsChannel, bytes]:
    """A well-formed (often signed) request with plausible arguments, to reach deep code."""
    channel, op = draw(st.sampled_from(KNOWN_REQUESTS))
    specs = ARG_SPECS[channel]
    arg_types = [t for t in specs if t not in (0xFFF0, 0xFFF1)]
    args = []
    for arg_type in draw(st.lists(st.sampled_from(arg_types), max_size=6)):
        spec = specs[arg_type]
        pick = draw(st.sampled_from(["known", "random"]))
        if pick == "known" and spec.size in (16, 32):
            value = draw(st.sampled_from([CLUSTER_ID, CONTENT_ID, CLIENT.identity, b"\x00" * 16]))
        elif spec.kind.value == "fixed":
            value = draw(st.binary(min_size=spec.size, max_size=spec.size))
        else:
            value = draw(st.binary(max_size=8))
        args.append(Tsd(arg_type, value))
    signer = draw(st.sampled_from(SIGNERS))
    return channel, Wire().request(
        channel, op, args, signer=signer, nonce=draw(st.binary(min_size=16, max_size=16))
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(structured_request(), min_size=1, max_size=6))
def test_structured_requests_never_hit_internal_errors(
    requests: list[tuple[AvrsChannel, bytes]],
) -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    for channel, data in requests:
        out = conn.handle(channel, data, NOW)
        assert len([1 for ch, _ in out if ch == AvrsChannel.RETCODE]) <= 1
    events = drain(conn)
    assert not any(isinstance(e, PacketDropped) for e in events)
    assert not any(isinstance(e, RequestRefused) and e.code == AvrsError.ERROR for e in events)
