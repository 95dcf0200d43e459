"""The session lifecycle through AvrsConnection: seed states, resume, takeover, media, callbacks."""

from __future__ import annotations

import pytest

from dapsdk.avrs.config import AvrsConfig
from dapsdk.avrs.connection import AvrsConnection
from dapsdk.avrs.constants import (
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    ContentFlag,
    MediaFlag,
    ReplyArg,
    SessionArg,
    SessionOp,
    SignalArg,
    SignalOp,
)
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError
from dapsdk.avrs.events import (
    ClusterRequestReceived,
    ContentReceived,
    InteractiveRequestReceived,
    ReplyReceived,
    ResponseReceived,
    SessionOpened,
    SessionStateChanged,
    SignalReceived,
)
from dapsdk.avrs.packets import ContentPacket, decode_content, encode_content
from dapsdk.avrs.sessions import SessionContent, SessionRegistry
from dapsdk.avrs.state import SessionState
from dapsdk.avrs.tsd import Tsd

from .kit import (
    CLIENT,
    CLUSTER_ID,
    CONTENT_ID,
    HOST,
    NOW,
    OPERATOR,
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
    replies,
    session_request,
    totp,
)

S = AvrsChannel.SESSION
St = SessionState


def state_of(conn: AvrsConnection) -> SessionState:
    """Read the state through a call, so the type checker does not narrow it across requests."""
    return conn.state


def media(handle: int, flow: int = 0, seq: int = 1, payload: bytes = b"frame") -> bytes:
    return encode_content(ContentPacket(handle, flow, seq, payload, 1000, 1000, MediaFlag.KEYFRAME))


def test_seed_lifecycle_states_in_order() -> None:
    conn, wire = make_conn(), Wire()
    assert conn.state is St.CREATED
    handle = bring_to_synced(conn, wire, SERVER)
    conn.handle(AvrsChannel.CONTENT, media(handle), NOW)
    session_request(conn, wire, SessionOp.STOP)
    session_request(conn, wire, SessionOp.CLOSE)
    changes = [(e.old, e.new) for e in drain(conn) if isinstance(e, SessionStateChanged)]
    assert changes == [
        (St.CREATED, St.AUTHENTICATED),
        (St.AUTHENTICATED, St.CONTENT_SELECTED),
        (St.CONTENT_SELECTED, St.STREAM_OPEN),
        (St.STREAM_OPEN, St.SYNCED),
        (St.SYNCED, St.STREAMING),
        (St.STREAMING, St.CONTENT_SELECTED),
        (St.CONTENT_SELECTED, St.CLOSED),
    ]


def test_open_reply_carries_session_id_equal_to_identity() -> None:
    conn, wire = make_conn(), Wire()
    reply = open_session(conn, wire, CLIENT)
    assert reply.arg(ReplyArg.SESSION_ID) == CLIENT.identity
    assert reply.arg(ReplyArg.RESUMED) == b"\x00"


def test_resume_after_disconnect_keeps_session_and_handles() -> None:
    registry = SessionRegistry()
    directory = make_directory()
    first, wire = make_conn(directory, sessions=registry), Wire()
    handle = bring_to_synced(first, wire, SERVER)
    first.connection_lost(NOW + 1)
    assert first.state is St.CLOSED
    second = make_conn(directory, sessions=registry)
    reply = open_session(second, wire, SERVER, now=NOW + 30)
    assert reply.arg(ReplyArg.RESUMED) == b"\x01"
    assert reply.arg(ReplyArg.SESSION_ID) == SERVER.identity
    assert second.state is St.CONTENT_SELECTED  # contents kept, stream must restart
    assert second.session is not None and handle in second.session.contents
    opened = [e for e in drain(second) if isinstance(e, SessionOpened)]
    assert opened == [SessionOpened(session_id=SERVER.identity, resumed=True)]


def test_resume_window_expires() -> None:
    registry = SessionRegistry(resume_timeout=60)
    first, wire = make_conn(sessions=registry), Wire()
    bring_to_synced(first, wire, SERVER)
    first.connection_lost(NOW)
    second = make_conn(sessions=registry)
    reply = open_session(second, wire, SERVER, now=NOW + 61)
    assert reply.arg(ReplyArg.RESUMED) == b"\x00"
    assert second.state is St.AUTHENTICATED
    assert second.session is not None and not second.session.contents


def test_takeover_by_new_connection_closes_the_old_one() -> None:
    registry = SessionRegistry()
    old, wire = make_conn(sessions=registry), Wire()
    handle = bring_to_synced(old, wire, SERVER)
    new = make_conn(sessions=registry)
    assert open_session(new, wire, SERVER).arg(ReplyArg.RESUMED) == b"\x01"
    assert old.handle(AvrsChannel.CONTENT, media(handle), NOW) != []
    assert old.state is St.CLOSED
    assert session_request(old, wire, SessionOp.START).code == AvrsError.SESSION_NOT_OPENED


def test_close_forgets_the_session() -> None:
    registry = SessionRegistry()
    conn, wire = make_conn(sessions=registry), Wire()
    bring_to_synced(conn, wire, SERVER)
    assert session_request(conn, wire, SessionOp.CLOSE).code == 0
    assert len(registry) == 0
    again = make_conn(sessions=registry)
    assert open_session(again, wire, SERVER).arg(ReplyArg.RESUMED) == b"\x00"


def test_removing_last_content_falls_back_and_handles_are_not_reused() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    first = session_request(conn, wire, SessionOp.CONTENT_ADD, content_add_args())
    assert first.arg(ReplyArg.CONTENT_ID) == (1).to_bytes(4, "little")
    assert session_request(conn, wire, SessionOp.START).code == 0
    assert session_request(conn, wire, SessionOp.CONTENT_REMOVE, [cid(1)]).code == 0
    assert conn.state is St.AUTHENTICATED
    second = session_request(conn, wire, SessionOp.CONTENT_ADD, content_add_args())
    assert second.arg(ReplyArg.CONTENT_ID) == (2).to_bytes(4, "little")


def test_media_in_runs_callbacks_in_order_and_honours_codes() -> None:
    conn, wire = make_conn(), Wire()
    calls: list[tuple[str, int, int]] = []

    def first(ch: AvrsConnection, slot: SessionContent, pkt: ContentPacket, size: int) -> int:
        assert ch is conn
        calls.append(("first", slot.handle, size))
        return 0

    def veto(_ch: AvrsConnection, _slot: SessionContent, pkt: ContentPacket, _n: int) -> int:
        calls.append(("veto", pkt.seq, 0))
        return int(AvrsError.CONTENT_CORRUPTED) if pkt.payload == b"bad" else 0

    def last(_ch: AvrsConnection, _slot: SessionContent, pkt: ContentPacket, _n: int) -> int:
        calls.append(("last", pkt.seq, 0))
        return 0

    for callback in (first, veto, last):
        assert conn.content_callbacks.add(callback) == 0
    handle = bring_to_synced(conn, wire, SERVER)
    drain(conn)
    assert conn.handle(AvrsChannel.CONTENT, media(handle, seq=1), NOW) == []  # success: silent
    received = [e for e in drain(conn) if isinstance(e, ContentReceived)]
    assert received[0].packet.payload == b"frame" and received[0].content_id == b"\xc0" * 16
    assert conn.state is St.STREAMING
    reply = only_reply(conn.handle(AvrsChannel.CONTENT, media(handle, seq=2, payload=b"bad"), NOW))
    assert reply.code == AvrsError.CONTENT_CORRUPTED
    assert calls == [
        ("first", handle, 5),
        ("veto", 1, 0),
        ("last", 1, 0),
        ("first", handle, 3),
        ("veto", 2, 0),
    ]
    assert not any(isinstance(e, ContentReceived) for e in drain(conn))


def test_media_before_sync_is_wrong_request() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, SERVER)
    publish = content_add_args(flags=ContentFlag.STREAMING_IN)
    session_request(conn, wire, SessionOp.CONTENT_ADD, publish)
    reply = only_reply(conn.handle(AvrsChannel.CONTENT, media(1), NOW))
    assert reply.code == AvrsError.SESSION_WRONG_REQUEST


def test_send_content_to_subscriber() -> None:
    conn, wire = make_conn(), Wire()
    handle = bring_to_synced(conn, wire, CLIENT, ContentFlag.STREAMING_OUT)
    packet = ContentPacket(handle, 1, 9, b"audio", 20, 20)
    conn.send_content(packet)
    [(channel, data)] = conn.data_to_send()
    assert channel == AvrsChannel.CONTENT and decode_content(data) == packet
    assert conn.state is St.STREAMING
    with pytest.raises(AvrsProtocolError) as info:
        conn.send_content(ContentPacket(handle, 5, 10, b"x"))
    assert info.value.code is AvrsError.CONTENT_FLOW_WRONG_ID


def test_error_budget_moves_session_to_error_where_only_close_works() -> None:
    conn, wire = make_conn(config=AvrsConfig(max_consecutive_errors=3)), Wire()
    open_session(conn, wire, CLIENT)
    for _ in range(3):
        assert session_request(conn, wire, SessionOp.START).code == AvrsError.SESSION_WRONG_REQUEST
    assert conn.state is St.ERROR
    reply = session_request(conn, wire, SessionOp.CONTENT_ADD, content_add_args())
    assert reply.code == AvrsError.SESSION_WRONG_REQUEST
    assert open_session(conn, wire, CLIENT).code == AvrsError.SESSION_ALREADY_OPENED
    assert session_request(conn, wire, SessionOp.CLOSE).code == AvrsError.SUCCESS
    assert state_of(conn) is St.CLOSED


def test_monitor_is_for_hosts_and_operators() -> None:
    cluster = [Tsd(SessionArg.CLUSTER_ID, CLUSTER_ID)]
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, OPERATOR)
    # Not implemented by this node: refused, and the state does not move.
    assert session_request(conn, wire, SessionOp.MONITOR, cluster).code == AvrsError.NOT_SUPPORTED
    assert conn.state is St.AUTHENTICATED
    conn._machine.unsupported.clear()  # what a service that implements it does
    assert session_request(conn, wire, SessionOp.MONITOR, cluster).code == 0
    assert conn.state is St.MONITORING
    assert session_request(conn, wire, SessionOp.STOP).code == 0
    assert state_of(conn) is St.AUTHENTICATED
    client, client_wire = make_conn(), Wire()
    open_session(client, client_wire, CLIENT)
    assert session_request(client, client_wire, SessionOp.MONITOR, cluster).code == (
        AvrsError.SIGN_ALIEN
    )


def test_chat_is_signed_and_handed_to_the_service() -> None:
    conn, wire = make_conn(), Wire()
    open_session(conn, wire, CLIENT)
    drain(conn)
    args = [
        Tsd(SessionArg.CLUSTER_ID, CLUSTER_ID),
        Tsd(SessionArg.CONTENT_UUID, CONTENT_ID),
        Tsd(SessionArg.TEXT, "привет".encode()),
    ]
    conn._machine.unsupported.clear()  # what a service with interactive support does
    assert session_request(conn, wire, SessionOp.CHAT, args).code == AvrsError.SIGN_NOT_PRESENT
    data = wire.request(S, SessionOp.CHAT, args, signer=CLIENT)
    assert replies(conn.handle(S, data, NOW)) == []  # deferred: the service answers
    (event,) = [e for e in drain(conn) if isinstance(e, InteractiveRequestReceived)]
    assert event.session_id == CLIENT.identity and event.op == SessionOp.CHAT
    assert conn.reply(event.request_id, AvrsError.SUCCESS)
    (reply,) = replies(conn.data_to_send())
    assert reply.channel == S and reply.op == SessionOp.CHAT and reply.code == 0


def test_cluster_request_answered_by_application_between_two_connections() -> None:
    """A client AvrsConnection and a node AvrsConnection linked in memory."""
    node = make_conn()
    client = AvrsConnection(make_directory(), AvrsConfig(rng=lambda n: b"\x42" * n))
    request_id = client.send_request(
        AvrsChannel.CLUSTER,
        ClusterOp.CONTENT_LIST_REQ,
        [Tsd(ClusterArg.ID, CLUSTER_ID)],
        signer=CLIENT,
        now=NOW,
    )
    for channel, data in client.data_to_send():
        node.receive(channel, data, NOW)
    [event] = [e for e in drain(node) if isinstance(e, ClusterRequestReceived)]
    assert (event.request_id, event.signer, event.cluster_id) == (
        request_id,
        CLIENT.identity,
        CLUSTER_ID,
    )
    node.respond(
        AvrsChannel.CLUSTER,
        ClusterOp.CONTENT_LIST_RESP,
        request_id,
        [Tsd(ClusterArg.CONTENT_ID, b"\xc0" * 16)],
    )
    assert node.reply(request_id, AvrsError.SUCCESS) is True
    assert node.reply(request_id, AvrsError.SUCCESS) is False  # answered once only
    for channel, data in node.data_to_send():
        client.receive(channel, data, NOW)
    events = drain(client)
    response = next(e for e in events if isinstance(e, ResponseReceived))
    assert response.request_id == request_id
    assert response.args.get(ClusterArg.CONTENT_ID) == b"\xc0" * 16
    reply = next(e for e in events if isinstance(e, ReplyReceived)).reply
    assert (reply.code, reply.request_id, reply.token) == (0, request_id, "SUCCESS")
    assert client.data_to_send() == []  # responses and retcodes are never answered


def test_signal_hello_and_heartbeat() -> None:
    conn, wire = make_conn(), Wire()
    hello = wire.request(AvrsChannel.SIGNAL, SignalOp.HELLO, [Tsd(SignalArg.SOFTWARE, b"obs/30")])
    assert only_reply(conn.handle(AvrsChannel.SIGNAL, hello, NOW)).code == 0
    assert conn.peer_software == "obs/30"
    beat = wire.request(AvrsChannel.SIGNAL, SignalOp.HEARTBEAT)
    reply = only_reply(conn.handle(AvrsChannel.SIGNAL, beat, NOW))
    assert reply.arg(ReplyArg.CLOCK) == int(NOW * 1000).to_bytes(8, "little")
    assert sum(isinstance(e, SignalReceived) for e in drain(conn)) == 2


def test_owner_passes_owner_only_request() -> None:
    conn, wire = make_conn(), Wire()
    data = wire.request(
        AvrsChannel.CLUSTER,
        ClusterOp.DESTROY,
        [Tsd(ClusterArg.ID, CLUSTER_ID), totp()],  # administrative: needs the second factor
        signer=HOST,
    )
    assert conn.handle(AvrsChannel.CLUSTER, data, NOW) == []  # pending for the application
    assert any(isinstance(e, ClusterRequestReceived) for e in drain(conn))


def test_registry_forgets_detached_sessions_after_the_window() -> None:
    registry = SessionRegistry(resume_timeout=60)
    conn, wire = make_conn(sessions=registry), Wire()
    open_session(conn, wire, CLIENT)
    conn.connection_lost(NOW)
    registry.expire(NOW + 60)
    assert len(registry) == 1
    registry.expire(NOW + 60.5)
    assert len(registry) == 0
