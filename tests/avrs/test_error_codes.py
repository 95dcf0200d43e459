"""Every seed error code (and every code dapsdk added), produced by the situation that causes it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dapsdk.avrs.config import AvrsConfig
from dapsdk.avrs.connection import AvrsConnection
from dapsdk.avrs.constants import (
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    CommonArg,
    ContentFlag,
    Role,
    SessionArg,
    SessionOp,
    SignalOp,
)
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.events import ClusterRequestReceived
from dapsdk.avrs.packets import ContentPacket, encode_content
from dapsdk.avrs.permissions import Grants
from dapsdk.avrs.sessions import SessionContent
from dapsdk.avrs.tsd import Tsd, TsdList
from dapsdk.services.avrs_cluster import ClusterDirectory
from dapsdk.services.member_sources import Membership

from .kit import (
    ALIEN,
    CANDIDATE,
    CLIENT,
    CLUSTER_ID,
    CONTENT_ID,
    HOST,
    MISSING_CLUSTER_ID,
    MISSING_CONTENT_ID,
    NOW,
    OFFLINE_CONTENT_ID,
    OPERATOR,
    PQ_CLUSTER_ID,
    SERVER,
    Wire,
    bring_to_synced,
    cid,
    content_add_args,
    drain,
    make_conn,
    make_directory,
    only_reply,
    open_session,
    session_request,
    totp,
)

C = AvrsChannel.CLUSTER
S = AvrsChannel.SESSION


def cluster_call(
    conn: AvrsConnection, wire: Wire, op: int, args: list[Tsd], signer: object = HOST
) -> int:
    data = wire.request(C, op, args, signer=signer)  # type: ignore[arg-type]
    return only_reply(conn.handle(C, data, NOW)).code


def media(handle: int, flow: int = 0, seq: int = 7) -> bytes:
    return encode_content(ContentPacket(handle, flow, seq, b"frame", 0, 0))


def test_success_token_and_value() -> None:
    conn, wire = make_conn(), Wire()
    reply = open_session(conn, wire, CLIENT)
    assert (reply.code, reply.token) == (0, "SUCCESS")


def test_arg_incorrect_truncated_tsd() -> None:
    conn, wire = make_conn(), Wire()
    data = wire.request(S, SessionOp.OPEN, signer=CLIENT)[:-3]  # cut into the SIGN TSD
    reply = only_reply(conn.handle(S, data, NOW))
    assert reply.code == AvrsError.ARG_INCORRECT
    assert reply.token == "ARG_INCORRECT"


def test_arg_incorrect_missing_required_argument() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    args = [Tsd(SessionArg.CLUSTER_ID, CLUSTER_ID)]  # no CONTENT_UUID
    assert session_request(conn, wire, SessionOp.CONTENT_ADD, args).code == AvrsError.ARG_INCORRECT


def test_sign_not_present() -> None:
    conn, wire = make_conn(), Wire()
    assert session_request(conn, wire, SessionOp.OPEN).code == AvrsError.SIGN_NOT_PRESENT
    assert cluster_call(conn, wire, ClusterOp.DESTROY, [Tsd(ClusterArg.ID, CLUSTER_ID)], None) == (
        AvrsError.SIGN_NOT_PRESENT
    )


def test_sign_incorrect_tampered_prefix() -> None:
    conn, wire = make_conn(), Wire()
    data = bytearray(wire.request(S, SessionOp.OPEN, signer=CLIENT))
    data[4] ^= 0x01  # request_id is signed
    reply = only_reply(conn.handle(S, bytes(data), NOW))
    assert reply.code == AvrsError.SIGN_INCORRECT


def test_sign_alien_non_member_and_wrong_role() -> None:
    conn, wire = make_conn(), Wire()
    cluster = [Tsd(ClusterArg.ID, CLUSTER_ID)]
    assert cluster_call(conn, wire, ClusterOp.DESTROY, cluster, ALIEN) == AvrsError.SIGN_ALIEN
    role = [*cluster, Tsd(ClusterArg.MEMBER, CLIENT.identity), Tsd(ClusterArg.ROLE, b"\x04\x00")]
    assert cluster_call(conn, wire, ClusterOp.ROLE_ASSIGN, role, OPERATOR) == AvrsError.SIGN_ALIEN


def test_cluster_wrong_request_unknown_and_response_only() -> None:
    conn, wire = make_conn(), Wire()
    assert cluster_call(conn, wire, 0x99, []) == AvrsError.CLUSTER_WRONG_REQUEST
    assert cluster_call(conn, wire, ClusterOp.LIST_RESP, []) == AvrsError.CLUSTER_WRONG_REQUEST


def test_cluster_not_found() -> None:
    conn, wire = make_conn(), Wire()
    args = [Tsd(ClusterArg.ID, MISSING_CLUSTER_ID)]
    assert cluster_call(conn, wire, ClusterOp.INFO, args) == AvrsError.CLUSTER_NOT_FOUND


def test_content_unavailable_offline_source() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    reply = session_request(conn, wire, SessionOp.CONTENT_ADD, content_add_args(OFFLINE_CONTENT_ID))
    assert reply.code == int(AvrsError.CONTENT_UNAVAILBLE) == int(AvrsError.CONTENT_UNAVAILABLE)
    assert reply.token == "CONTENT_UNAVAILBLE"


def test_content_unavailable_media_into_subscribe_only_handle() -> None:
    conn, wire = make_conn(), Wire()
    handle = bring_to_synced(conn, wire, CLIENT, ContentFlag.STREAMING_OUT)
    reply = only_reply(conn.handle(AvrsChannel.CONTENT, media(handle), NOW))
    assert reply.code == AvrsError.CONTENT_UNAVAILBLE
    assert (reply.channel, reply.request_id) == (AvrsChannel.CONTENT, 7)


def test_content_not_found() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    reply = session_request(conn, wire, SessionOp.CONTENT_ADD, content_add_args(MISSING_CONTENT_ID))
    assert reply.code == AvrsError.CONTENT_NOT_FOUND
    args = [Tsd(ClusterArg.ID, CLUSTER_ID), Tsd(ClusterArg.CONTENT_ID, MISSING_CONTENT_ID)]
    assert cluster_call(conn, wire, ClusterOp.CONTENT_DEL, args) == AvrsError.CONTENT_NOT_FOUND


@pytest.mark.parametrize(
    "extra",
    [
        [Tsd(ClusterArg.CONTENT_FLOWS, b"aa")],  # repeated flow
        [Tsd(ClusterArg.CONTENT_FLOWS, b"a v")],  # not a flow letter
        [Tsd(ClusterArg.CONTENT_FLOWS, b"av"), Tsd(ClusterArg.CONTENT_FLOW_CODEC, b"\x05h264")],
        [Tsd(ClusterArg.CONTENT_FLOWS, b"\xff")],  # not UTF-8
    ],
)
def test_content_info_corrupted(extra: list[Tsd]) -> None:
    conn, wire = make_conn(), Wire()
    args = [Tsd(ClusterArg.ID, CLUSTER_ID), Tsd(ClusterArg.CONTENT_ID, b"\x01" * 16), *extra]
    assert cluster_call(conn, wire, ClusterOp.CONTENT_ADD, args, SERVER) == (
        AvrsError.CONTENT_INFO_CORRUPTED
    )


def test_content_corrupted_short_packet_and_bad_flags() -> None:
    conn, wire = make_conn(), Wire()
    handle = bring_to_synced(conn, wire, SERVER)
    assert only_reply(conn.handle(AvrsChannel.CONTENT, b"\x00" * 5, NOW)).code == (
        AvrsError.CONTENT_CORRUPTED
    )
    bad_flags = bytearray(media(handle))
    bad_flags[1] = 0x80
    assert only_reply(conn.handle(AvrsChannel.CONTENT, bytes(bad_flags), NOW)).code == (
        AvrsError.CONTENT_CORRUPTED
    )


def test_content_corrupted_from_callback() -> None:
    conn, wire = make_conn(), Wire()

    def integrity(_ch: AvrsConnection, _slot: SessionContent, pkt: ContentPacket, size: int) -> int:
        return AvrsError.CONTENT_CORRUPTED if pkt.payload == b"frame" and size == 5 else 0

    conn.content_callbacks.add(integrity)
    handle = bring_to_synced(conn, wire, SERVER)
    assert only_reply(conn.handle(AvrsChannel.CONTENT, media(handle), NOW)).code == (
        AvrsError.CONTENT_CORRUPTED
    )


def test_content_flow_wrong_id() -> None:
    conn, wire = make_conn(), Wire()
    handle = bring_to_synced(conn, wire, SERVER)
    reply = only_reply(conn.handle(AvrsChannel.CONTENT, media(handle, flow=2), NOW))
    assert reply.code == AvrsError.CONTENT_FLOW_WRONG_ID
    assert reply.op == 2  # content replies echo the flow id


def test_member_not_found() -> None:
    conn, wire = make_conn(), Wire()
    cluster = Tsd(ClusterArg.ID, CLUSTER_ID)
    approve = [cluster, Tsd(ClusterArg.MEMBER, ALIEN.identity)]  # never asked to join
    assert cluster_call(conn, wire, ClusterOp.MEMBER_REQUEST_APPROVE, approve) == (
        AvrsError.MEMBER_NOT_FOUND
    )
    remove = [cluster, Tsd(ClusterArg.MEMBER, CANDIDATE.identity)]  # pending, not a member
    assert cluster_call(conn, wire, ClusterOp.MEMBER_REMOVE, remove) == AvrsError.MEMBER_NOT_FOUND


def test_member_security_issue_wrong_algorithm_for_cluster() -> None:
    conn, wire = make_conn(), Wire()
    args = [Tsd(ClusterArg.ID, PQ_CLUSTER_ID)]
    # CLIENT is a member of the ML-DSA-65 cluster but signs with Ed25519.
    assert cluster_call(conn, wire, ClusterOp.INFO, args, CLIENT) == AvrsError.MEMBER_SECURITY_ISSUE
    open_session(conn, wire, CLIENT)
    reply = session_request(
        conn, wire, SessionOp.CLUSTER_ADD, [Tsd(SessionArg.CLUSTER_ID, PQ_CLUSTER_ID)]
    )
    assert reply.code == AvrsError.MEMBER_SECURITY_ISSUE


@pytest.mark.parametrize(
    "profile",
    [
        Tsd(ClusterArg.DISPLAY_NAME, b"x" * 64),  # above 63 bytes
        Tsd(ClusterArg.SURNAME, b"\xc3\x28"),  # invalid UTF-8
        Tsd(ClusterArg.AVATAR, b"\x00" * (100 * 1024 + 1)),
    ],
)
def test_member_info_problem(profile: Tsd) -> None:
    conn, wire = make_conn(), Wire()
    args = [Tsd(ClusterArg.ID, CLUSTER_ID), profile]
    assert cluster_call(conn, wire, ClusterOp.MEMBER_REQUEST_ADD, args, ALIEN) == (
        AvrsError.MEMBER_INFO_PROBLEM
    )


def test_session_wrong_request() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    assert session_request(conn, wire, SessionOp.START).code == AvrsError.SESSION_WRONG_REQUEST
    assert session_request(conn, wire, 0x77).code == AvrsError.SESSION_WRONG_REQUEST


def test_session_not_opened() -> None:
    conn, wire = make_conn(), Wire()
    reply = session_request(conn, wire, SessionOp.CONTENT_ADD, content_add_args())
    assert reply.code == AvrsError.SESSION_NOT_OPENED
    assert only_reply(conn.handle(AvrsChannel.CONTENT, media(1), NOW)).code == (
        AvrsError.SESSION_NOT_OPENED
    )


def test_session_already_opened() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    assert open_session(conn, wire, CLIENT).code == AvrsError.SESSION_ALREADY_OPENED


def test_session_content_id_wrong() -> None:
    conn, wire = make_conn(), Wire()
    handle = bring_to_synced(conn, wire, SERVER)
    reply = session_request(conn, wire, SessionOp.CONTENT_REMOVE, [cid(handle + 41)])
    assert reply.code == AvrsError.SESSION_CONTENT_ID_WRONG
    assert only_reply(conn.handle(AvrsChannel.CONTENT, media(handle + 41), NOW)).code == (
        AvrsError.SESSION_CONTENT_ID_WRONG
    )


def test_error_from_raising_callback() -> None:
    conn, wire = make_conn(), Wire()

    def broken(_ch: AvrsConnection, _slot: SessionContent, _pkt: ContentPacket, _n: int) -> int:
        raise RuntimeError("bug in a plugin")

    conn.content_callbacks.add(broken)
    handle = bring_to_synced(conn, wire, SERVER)
    reply = only_reply(conn.handle(AvrsChannel.CONTENT, media(handle), NOW))
    assert (reply.code, reply.token) == (AvrsError.ERROR, "ERROR")


# ------------------------------------------------------------------ codes dapsdk added


def test_sign_replayed_and_expired() -> None:
    conn, wire = make_conn(), Wire()
    a = AvrsChannel.SIGNAL
    data = wire.request(a, SignalOp.HEARTBEAT, signer=CLIENT)
    assert only_reply(conn.handle(a, data, NOW)).code == AvrsError.SUCCESS
    assert only_reply(conn.handle(a, data, NOW + 1)).code == AvrsError.SIGN_REPLAYED
    stale = wire.request(a, SignalOp.HEARTBEAT, signer=CLIENT, now=NOW - 31)
    assert only_reply(conn.handle(a, stale, NOW)).code == AvrsError.SIGN_EXPIRED
    future = wire.request(a, SignalOp.HEARTBEAT, signer=CLIENT, now=NOW + 31)
    assert only_reply(conn.handle(a, future, NOW)).code == AvrsError.SIGN_EXPIRED


def test_request_timeout_and_busy() -> None:
    conn = make_conn(config=AvrsConfig(max_pending_requests=1, reply_timeout=5.0))
    wire = Wire()
    conn.handle(C, wire.request(C, ClusterOp.LIST_REQ), NOW)  # pending, the app never answers
    assert conn.get_timer() == NOW + 5.0
    busy = only_reply(conn.handle(C, wire.request(C, ClusterOp.LIST_REQ), NOW))
    assert busy.code == AvrsError.BUSY
    conn.handle_timer(NOW + 4.9)
    assert conn.data_to_send() == []
    conn.handle_timer(NOW + 5.0)
    timeout = only_reply(conn.data_to_send())
    assert (timeout.code, timeout.request_id) == (AvrsError.REQUEST_TIMEOUT, 1)
    assert conn.get_timer() is None


def test_signal_wrong_request() -> None:
    conn, wire = make_conn(), Wire()
    data = wire.request(AvrsChannel.SIGNAL, 0x55)
    assert only_reply(conn.handle(AvrsChannel.SIGNAL, data, NOW)).code == (
        AvrsError.SIGNAL_WRONG_REQUEST
    )
    ok = wire.request(AvrsChannel.SIGNAL, SignalOp.HEARTBEAT)
    assert only_reply(conn.handle(AvrsChannel.SIGNAL, ok, NOW)).code == AvrsError.SUCCESS


def test_every_code_is_covered_by_a_test_here() -> None:
    """Guard: adding a code without a situation test here fails."""
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    for code in AvrsError:
        if code is AvrsError.SUCCESS:
            continue
        assert f"AvrsError.{code.name}" in source, code.name
    assert int(Role.ALL) == 0xFFFF  # keep the import honest


def test_content_bitrate_exceeded_from_the_media_hub() -> None:
    """Layer 4 code: a live publisher above max_bitrate (the full path over a real node is in
    tests/playback/test_media_live.py)."""
    from fractions import Fraction

    from dapsdk.services.media.hub import HubConfig, MediaError, MediaHub, SignedInfo
    from dapsdk.services.media.model import MediaInfo, MediaPacket, TrackInfo

    hub = MediaHub(HubConfig(max_bitrate=8_000))
    info = MediaInfo((TrackInfo("audio", "aac", Fraction(1, 48000), sample_rate=48000),))
    hub.start_live(b"c" * 16, SignedInfo(info, b"", b"o" * 32), owner=b"o" * 32)
    with pytest.raises(MediaError) as refused:
        for n in range(100):
            hub.ingest(b"c" * 16, MediaPacket(0, b"x" * 1000, n * 20_000, n * 20_000, 20_000))
    assert refused.value.code == AvrsError.CONTENT_BITRATE_EXCEEDED


# ------------------------------------------------------------------ issue 8: enforcement codes


def test_unimplemented_feature_is_not_supported() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    monitor = [Tsd(SessionArg.CLUSTER_ID, CLUSTER_ID)]
    assert session_request(conn, wire, SessionOp.MONITOR, monitor, signer=None).code == (
        AvrsError.SIGN_ALIEN  # CLIENT is no manager
    )
    op_conn, op_wire = make_conn(), Wire()
    open_session(op_conn, op_wire, OPERATOR)
    assert session_request(op_conn, op_wire, SessionOp.MONITOR, monitor).code == (
        AvrsError.NOT_SUPPORTED
    )
    # Interactive requests on a bare core (no interactive service): NOT_SUPPORTED, nothing done.
    chat = [
        Tsd(SessionArg.CLUSTER_ID, CLUSTER_ID),
        Tsd(SessionArg.CONTENT_UUID, CONTENT_ID),
        Tsd(SessionArg.TEXT, b"hi"),
    ]
    data = wire.request(S, SessionOp.CHAT, chat, signer=CLIENT)
    assert only_reply(conn.handle(S, data, NOW)).code == AvrsError.NOT_SUPPORTED
    # The interactive codes are produced by services.interactive (tests/integration/
    # test_interactive.py on a real node): AvrsError.INTERACTIVE_DISABLED, AvrsError.CHAT_MUTED,
    # AvrsError.MEMBER_BANNED, AvrsError.CHAT_SLOW_MODE, AvrsError.POLL_NOT_FOUND,
    # AvrsError.POLL_CLOSED, AvrsError.POLL_ALREADY_VOTED, AvrsError.MESSAGE_NOT_FOUND.


def test_second_factor_required_invalid_replayed() -> None:
    conn, wire = make_conn(), Wire()
    remove = [Tsd(ClusterArg.ID, CLUSTER_ID), Tsd(ClusterArg.MEMBER, CLIENT.identity)]
    assert cluster_call(conn, wire, ClusterOp.MEMBER_REMOVE, remove, OPERATOR) == (
        AvrsError.MEMBER_TOTP_REQUIRED
    )
    wrong = Tsd(CommonArg.TOTP, b"000000" if totp().data != b"000000" else b"111111")
    assert cluster_call(conn, wire, ClusterOp.MEMBER_REMOVE, [*remove, wrong], OPERATOR) == (
        AvrsError.MEMBER_TOTP_INVALID
    )
    conn.handle(
        C, wire.request(C, ClusterOp.MEMBER_REMOVE, [*remove, totp()], signer=OPERATOR), NOW
    )
    assert any(isinstance(e, ClusterRequestReceived) for e in drain(conn))  # passed to the app
    assert cluster_call(conn, wire, ClusterOp.MEMBER_REMOVE, [*remove, totp()], OPERATOR) == (
        AvrsError.MEMBER_TOTP_REPLAYED
    )
    # Leaving (acting on oneself) is not administrative: no code needed.
    leave = [Tsd(ClusterArg.ID, CLUSTER_ID), Tsd(ClusterArg.MEMBER, CLIENT.identity)]
    conn2, wire2 = make_conn(), Wire()
    conn2.handle(C, wire2.request(C, ClusterOp.MEMBER_REMOVE, leave, signer=CLIENT), NOW)
    assert any(isinstance(e, ClusterRequestReceived) for e in drain(conn2))


def test_token_grants_and_expiry() -> None:
    view = make_directory()
    info = view.cluster(CLUSTER_ID)
    assert info is not None
    grants = {
        CLIENT.identity: Grants(subscribe=True, contents=frozenset({MISSING_CONTENT_ID})),
        SERVER.identity: Grants(publish=True, expires_at=NOW - 1),
    }
    view.put(replace(info, grants=grants))
    conn, wire = make_conn(view), Wire()
    open_session(conn, wire, CLIENT)
    # CLIENT's token covers another content only: subscribing to CONTENT_ID is denied.
    reply = session_request(conn, wire, SessionOp.CONTENT_ADD, content_add_args())
    assert reply.code == AvrsError.MEMBER_GRANT_DENIED
    conn2, wire2 = make_conn(view), Wire()
    open_session(conn2, wire2, SERVER)
    reply = session_request(
        conn2, wire2, SessionOp.CONTENT_ADD, content_add_args(flags=ContentFlag.STREAMING_IN)
    )
    assert reply.code == AvrsError.MEMBER_REVOKED  # the token ended


def test_directory_role_ceiling_and_rejoin() -> None:
    directory = ClusterDirectory("kit", HOST.identity)
    directory.add_member(OPERATOR.identity, Membership(Role.OPERATOR))
    directory.add_pending(CANDIDATE.identity)
    approve = ClusterRequestReceived(
        request_id=1,
        op=ClusterOp.MEMBER_REQUEST_APPROVE,
        signer=OPERATOR.identity,
        cluster_id=directory.cluster_id,
        args=TsdList(
            (
                Tsd(ClusterArg.MEMBER, CANDIDATE.identity),
                Tsd(ClusterArg.ROLE, int(Role.HOST).to_bytes(2, "little")),
            ),
            (0, 0),
        ),
    )
    assert directory.handle_request(approve, NOW)[0] == AvrsError.MEMBER_ROLE_EXCEEDED
    assert directory.info.roles_of(CANDIDATE.identity) is None  # nothing changed
    rejoin = ClusterRequestReceived(
        request_id=2,
        op=ClusterOp.MEMBER_REQUEST_ADD,
        signer=OPERATOR.identity,
        cluster_id=directory.cluster_id,
        args=TsdList((), ()),
    )
    assert directory.handle_request(rejoin, NOW)[0] == AvrsError.MEMBER_ALREADY_EXISTS
    assert OPERATOR.identity not in directory.info.pending
