"""Behaviour of the sans-IO wire core, driven in memory with a virtual clock."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dapsdk.stream.config import StreamConfig
from dapsdk.stream.connection import ConnectionState, StreamConnection
from dapsdk.stream.constants import HEADER, ChannelId, PacketType
from dapsdk.stream.errors import ErrorCode, StreamClosedError
from dapsdk.stream.events import (
    ChannelClosed,
    ChannelOpened,
    ChannelWritable,
    DataReceived,
    HandshakeCompleted,
    PongReceived,
    StreamTerminated,
)
from dapsdk.stream.identity import NodeIdentity

from .helpers import CLIENT_ID, SERVER_ID, make_pair


def terminated(events: list) -> StreamTerminated:  # type: ignore[type-arg]
    found = [e for e in events if isinstance(e, StreamTerminated)]
    assert len(found) == 1, events
    return found[0]


def test_handshake_authenticates_both_sides() -> None:
    pair = make_pair(expected=SERVER_ID.address)
    (c,) = pair.events_of("client", HandshakeCompleted)
    (s,) = pair.events_of("server", HandshakeCompleted)
    assert c.peer.address == SERVER_ID.address
    assert s.peer.address == CLIENT_ID.address
    assert c.version == s.version == 1
    assert pair.client.state == pair.server.state == ConnectionState.ESTABLISHED


def test_peer_with_other_identity_than_expected_is_refused() -> None:
    other = NodeIdentity.generate()
    pair = make_pair(expected=other.address)
    term = terminated(pair.client_events)
    assert term.code == ErrorCode.AUTHENTICATION_FAILED
    assert str(SERVER_ID.address) in term.reason and str(other.address) in term.reason
    assert terminated(pair.server_events).code == ErrorCode.AUTHENTICATION_FAILED
    assert not pair.events_of("client", HandshakeCompleted)


def test_peer_verifier_can_refuse_the_initiator() -> None:
    def refuse(peer) -> None:  # type: ignore[no-untyped-def]
        raise PermissionError("not on the allow list")

    pair = make_pair(server_config=StreamConfig(peer_verifier=refuse))
    assert terminated(pair.server_events).code == ErrorCode.AUTHENTICATION_FAILED
    assert "not on the allow list" in terminated(pair.client_events).reason


def test_no_common_version_is_refused() -> None:
    pair = make_pair(StreamConfig(versions=(7,)))
    assert terminated(pair.client_events).code == ErrorCode.VERSION_MISMATCH


def test_initiator_identity_is_not_in_cleartext() -> None:
    client = StreamConnection(StreamConfig(), CLIENT_ID, is_client=True, now=0.0)
    server = StreamConnection(StreamConfig(), SERVER_ID, is_client=False, now=0.0)
    wire = b""
    for _ in range(3):
        for a, b in ((client, server), (server, client)):
            data = b"".join(a.data_to_send())
            wire += data
            b.receive_data(data, 0.0)
    assert client.state == ConnectionState.ESTABLISHED
    assert CLIENT_ID.public_key not in wire
    assert SERVER_ID.public_key not in wire


def test_channels_carry_data_and_control_both_ways() -> None:
    pair = make_pair()
    pair.client.open_channel(ChannelId.FILE)
    pair.client.send(ChannelId.FILE, PacketType.DATA, b"file bytes")
    pair.client.open_channel(0x20)
    pair.client.send(0x20, PacketType.CONTROL, b"app control")
    pair.transfer()
    opened = {e.channel_id for e in pair.events_of("server", ChannelOpened)}
    assert opened == {ChannelId.FILE, 0x20}
    got = {(e.channel_id, e.packet_type, e.data) for e in pair.events_of("server", DataReceived)}
    assert got == {(1, PacketType.DATA, b"file bytes"), (0x20, PacketType.CONTROL, b"app control")}
    pair.server.send(ChannelId.FILE, PacketType.DATA, b"reply")
    pair.transfer()
    assert [e.data for e in pair.events_of("client", DataReceived)] == [b"reply"]


def test_control_packet_overtakes_queued_bulk_data() -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.client.open_channel(0x11)
    pair.transfer()
    pair.client.send(0x10, PacketType.DATA, b"x" * 60_000)
    pair.client.send(0x10, PacketType.DATA, b"y" * 60_000)
    pair.client.send(0x11, PacketType.CONTROL, b"urgent")
    first = pair.client.data_to_send(limit=1)  # DATA budget of one byte: one packet at most
    pair.server.receive_data(b"".join(first), 0.0)
    events = []
    while (e := pair.server.next_event()) is not None:
        events.append(e)
    assert isinstance(events[0], DataReceived) and events[0].data == b"urgent"


def test_large_message_is_fragmented_and_reassembled_while_others_flow() -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.client.open_channel(0x11)
    big = bytes(range(256)) * 8192  # 2 MiB
    pair.client.send(0x10, PacketType.DATA, big)
    pair.client.send(0x11, PacketType.DATA, b"small")
    pair.transfer(limit=200_000)
    data = pair.events_of("server", DataReceived)
    assert [d.data for d in data if d.channel_id == 0x10] == [big]
    order = [d.channel_id for d in data]
    assert order.index(0x11) < order.index(0x10), "small message waited behind the big one"


def test_slow_reader_holds_back_the_writer_within_the_window() -> None:
    config = StreamConfig(initial_channel_window=256 * 1024, initial_connection_window=1024 * 1024)
    pair = make_pair(config, config)
    pair.auto_release = False
    pair.client.open_channel(0x10)
    for _ in range(40):
        pair.client.send(0x10, PacketType.DATA, b"z" * 32 * 1024)
    pair.transfer()
    received = sum(len(e.data) for e in pair.events_of("server", DataReceived))
    assert received == 256 * 1024  # exactly the window, not more
    assert pair.client.queued_bytes(0x10) == 40 * 32 * 1024 - received
    # the reader consumes: credit returns and more flows
    for event in pair.events_of("server", DataReceived):
        pair.server.release(event)
    pair.transfer()
    assert sum(len(e.data) for e in pair.events_of("server", DataReceived)) > received


def test_writer_above_high_water_gets_writable_event_after_draining() -> None:
    config = StreamConfig(send_high_water=100_000, send_low_water=10_000)
    pair = make_pair(config, config)
    pair.client.open_channel(0x10)
    pair.transfer()
    assert pair.client.send(0x10, PacketType.DATA, b"w" * 150_000) >= 100_000
    pair.transfer()
    assert pair.events_of("client", ChannelWritable) == [ChannelWritable(channel_id=0x10)]


def test_channel_close_is_acknowledged_and_reported_on_both_sides() -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.client.send(0x10, PacketType.DATA, b"last words")
    pair.client.close_channel(0x10)
    pair.transfer()
    assert [e.data for e in pair.events_of("server", DataReceived)] == [b"last words"]
    (s,) = pair.events_of("server", ChannelClosed)
    (c,) = pair.events_of("client", ChannelClosed)
    assert s.by_peer and not c.by_peer
    assert 0x10 not in pair.client.channels and 0x10 not in pair.server.channels
    with pytest.raises(ValueError):
        pair.client.send(0x10, PacketType.DATA, b"after close")


def test_stream_close_flushes_then_terminates_both() -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.client.send(0x10, PacketType.DATA, b"q" * 500_000)
    pair.client.close(ErrorCode.NO_ERROR, "bye")
    pair.transfer()
    assert sum(len(e.data) for e in pair.events_of("server", DataReceived)) == 500_000
    assert terminated(pair.server_events).reason == "bye"
    assert terminated(pair.client_events).code == ErrorCode.NO_ERROR
    with pytest.raises(StreamClosedError):
        pair.client.send(0x10, PacketType.DATA, b"late")


def test_keepalive_measures_rtt_and_silence_kills() -> None:
    pair = make_pair()
    pair.now = 1.0
    pair.client.handle_timer(1.0)  # keepalive_interval reached: ping
    pair.now = 1.25
    pair.transfer()
    pong = pair.events_of("client", PongReceived)[-1]
    assert pong.rtt == pytest.approx(0.25)
    # three samples: the handshake's round trip and the establishment PING (both at virtual
    # time 0), then this keepalive's
    assert pair.client.stats.rtt_count == 3
    assert pair.client.stats.rtt_last == pytest.approx(0.25)
    assert pair.client.stats.avg_latency_ms == pytest.approx(250.0 / 3, abs=0.01)
    # the server hears nothing more: dead after keepalive_timeout of silence
    assert pair.server.get_timer() is not None
    pair.server.handle_timer(1.25 + 3.0)
    term = terminated(pair.server_events + [e for e in iter(pair.server.next_event, None)])
    assert term.code == ErrorCode.TIMEOUT


def test_socket_that_does_not_drain_is_dead_after_timeout() -> None:
    pair = make_pair()
    pair.client.set_write_blocked(True, 0.0)
    pair.client.handle_timer(2.0)
    assert pair.client.state == ConnectionState.ESTABLISHED
    pair.client._last_recv = 2.9  # peer still talks; only the socket is stuck
    pair.client.handle_timer(3.0)
    assert pair.client.state == ConnectionState.TERMINATED
    assert pair.client.terminal_event is not None
    assert "did not drain" in pair.client.terminal_event.reason


def test_handshake_deadline() -> None:
    client = StreamConnection(
        StreamConfig(handshake_timeout=5.0), CLIENT_ID, is_client=True, now=0.0
    )
    assert client.get_timer() == 5.0
    client.handle_timer(4.9)
    assert client.state == ConnectionState.HANDSHAKE
    client.handle_timer(5.0)
    assert client.terminal_event is not None and client.terminal_event.code == ErrorCode.TIMEOUT


def test_rekey_keeps_traffic_flowing() -> None:
    config = StreamConfig(rekey_after_packets=5)
    pair = make_pair(config, config)
    pair.client.open_channel(0x10)
    for i in range(40):
        pair.client.send(0x10, PacketType.DATA, f"m{i}".encode())
        pair.transfer()
    assert [e.data for e in pair.events_of("server", DataReceived)] == [
        f"m{i}".encode() for i in range(40)
    ]
    assert pair.client._send is not None and pair.client._send.rekeys >= 7


# -- bad input -----------------------------------------------------------------------------------


def feed_server(data: bytes, *, established: bool = True) -> tuple[StreamConnection, list[bytes]]:
    pair = make_pair(handshake=established)
    if not established:
        pair.client.data_to_send()  # drop the HELLO
    pair.server.receive_data(data, 1.0)
    return pair.server, pair.server.data_to_send()


def error_code_of(conn: StreamConnection) -> int:
    assert conn.terminal_event is not None
    return conn.terminal_event.code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (HEADER.pack(5, PacketType.DATA, 0, 0x10, 0) + b"hello", ErrorCode.PROTOCOL_ERROR),
        (HEADER.pack(1 << 30, PacketType.CONTROL, 0, 0, 0), ErrorCode.FRAME_TOO_LARGE),
        (HEADER.pack(4, PacketType.CONTROL, 0, 0, 0) + b"NOPE", ErrorCode.HANDSHAKE_FAILED),
        (HEADER.pack(2, PacketType.CONTROL, 2, 0, 0) + b"xx", ErrorCode.HANDSHAKE_FAILED),
    ],
    ids=["data-before-handshake", "oversized", "bad-magic", "finish-first"],
)
def test_bad_input_before_handshake_gets_plaintext_error(data: bytes, code: int) -> None:
    server, out = feed_server(data, established=False)
    assert error_code_of(server) == code
    wire = b"".join(out)
    _, ptype, _, _, flags = HEADER.unpack_from(wire)
    assert ptype == PacketType.ERROR and flags == 0
    assert struct.unpack_from("<I", wire, 12)[0] == code


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (HEADER.pack(70_000, PacketType.DATA, 0, 0x10, 2), ErrorCode.FRAME_TOO_LARGE),
        (HEADER.pack(20, 0x09, 0, 0x10, 2), ErrorCode.UNKNOWN_TYPE),
        (HEADER.pack(20, PacketType.DATA, 0, 0x10, 0x82), ErrorCode.UNKNOWN_FLAGS),
        (HEADER.pack(20, PacketType.DATA, 0, 0x10, 0), ErrorCode.UNENCRYPTED),
        (b"EXPECTED-SEQ", ErrorCode.DECRYPT_FAILED),  # right seq_id, garbage body
        (HEADER.pack(20, PacketType.DATA, 5, 0x10, 2), ErrorCode.REPLAY),
    ],
    ids=["oversized", "unknown-type", "unknown-flag", "unencrypted", "forged", "wrong-seq"],
)
def test_bad_packets_after_handshake_close_with_error(header: bytes, code: int) -> None:
    if header == b"EXPECTED-SEQ":
        pair = make_pair()
        assert pair.server._recv is not None
        expected = pair.server._recv.counter & 0xFFFFFFFF
        pair.server.receive_data(
            HEADER.pack(20, PacketType.DATA, expected, 0x10, 2) + bytes(20), 1.0
        )
        assert error_code_of(pair.server) == code
        return
    server, out = feed_server(header + bytes(20))
    assert error_code_of(server) == code
    assert out, "an ERROR packet is sent"


def test_replayed_reordered_and_truncated_sealed_packets_are_refused() -> None:
    for mutate in ("replay", "reorder", "truncate", "flip"):
        pair = make_pair()
        pair.client.open_channel(0x10)
        pair.transfer()
        pair.client.send(0x10, PacketType.DATA, b"one")
        p1 = b"".join(pair.client.data_to_send())
        pair.client.send(0x10, PacketType.DATA, b"two")
        p2 = b"".join(pair.client.data_to_send())
        if mutate == "replay":
            wire = p1 + p1
        elif mutate == "reorder":
            wire = p2 + p1
        elif mutate == "truncate":
            size = HEADER.unpack_from(p1)[0]
            wire = HEADER.pack(size - 1, *HEADER.unpack_from(p1)[1:]) + p1[12:-1]
        else:
            wire = p1[:-1] + bytes([p1[-1] ^ 1])
        pair.server.receive_data(wire, 0.0)
        assert pair.server.state == ConnectionState.TERMINATED, mutate
        assert error_code_of(pair.server) in (ErrorCode.REPLAY, ErrorCode.DECRYPT_FAILED), mutate


def test_data_for_unopened_channel_is_an_error() -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.client.data_to_send()  # the OPEN never reaches the server
    pair.client.send(0x10, PacketType.DATA, b"orphan")
    data = b"".join(pair.client.data_to_send())
    pair.server._recv.counter += 1  # type: ignore[union-attr]  # skip the dropped OPEN's counter
    pair.server.receive_data(data, 0.0)
    assert error_code_of(pair.server) == ErrorCode.UNKNOWN_CHANNEL


def test_message_above_the_peers_limit_is_refused_locally() -> None:
    pair = make_pair(StreamConfig(), StreamConfig(max_message_size=1_000_000))
    pair.client.open_channel(0x10)
    pair.transfer()
    with pytest.raises(ValueError, match="exceeds the peer's maximum 1000000"):
        pair.client.send(0x10, PacketType.DATA, b"a" * 2_000_000)
    assert pair.client.queued_bytes(0x10) == 0


def test_peer_announcing_a_too_large_message_is_refused() -> None:
    pair = make_pair(StreamConfig(), StreamConfig(max_message_size=1_000_000))
    pair.client.open_channel(0x10)
    pair.transfer()
    # forge a first fragment announcing 10 GB from a client core that ignores the peer's limit
    first = struct.pack("<BQ", 1, 10 * 1024**3) + b"x" * 100
    pair.client._append_sealed(PacketType.DATA, 0x10, 0x02 | 0x04, first)
    pair.server.receive_data(b"".join(pair.client.data_to_send()), 0.0)
    assert error_code_of(pair.server) == ErrorCode.MESSAGE_TOO_LARGE
    assert pair.server._reserved == 0


def test_api_misuse_raises_at_once() -> None:
    pair = make_pair()
    with pytest.raises(ValueError):
        pair.client.send(0x10, PacketType.DATA, b"no channel")
    pair.client.open_channel(0x10)
    with pytest.raises(ValueError):
        pair.client.send(0x10, PacketType.KEEPALIVE, b"")
    with pytest.raises(ValueError):
        pair.client.open_channel(0x1_0000)
    with pytest.raises(ValueError):
        pair.client.send(0x10, PacketType.CONTROL, b"c" * 70_000)


# -- property tests ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.binary(max_size=300), max_size=8), established=st.booleans())
def test_random_bytes_never_raise_and_terminate_at_most_once(
    chunks: list[bytes], established: bool
) -> None:
    pair = make_pair(handshake=established)
    for chunk in chunks:
        pair.server.receive_data(chunk, 0.5)
        pair.server.data_to_send()
    events = list(iter(pair.server.next_event, None))
    assert sum(isinstance(e, StreamTerminated) for e in events) <= 1
    if pair.server.state == ConnectionState.TERMINATED:
        assert len(pair.server._rbuf) == 0


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 2**32 - 1),
    ptype=st.integers(0, 255),
    seq=st.integers(0, 2**32 - 1),
    ch=st.integers(0, 0xFFFF),
    flags=st.integers(0, 255),
)
def test_header_codec_round_trips(size: int, ptype: int, seq: int, ch: int, flags: int) -> None:
    raw = HEADER.pack(size, ptype, seq, ch, flags)
    assert len(raw) == 12
    assert HEADER.unpack(raw) == (size, ptype, seq, ch, flags)


@settings(max_examples=100, deadline=None)
@given(
    messages=st.lists(
        st.tuples(st.sampled_from([0x10, 0x11, 0x12]), st.binary(min_size=1, max_size=200_000)),
        min_size=1,
        max_size=6,
    ),
    limit=st.integers(1, 300_000),
)
def test_any_message_sequence_arrives_intact_in_per_channel_order(
    messages: list[tuple[int, bytes]], limit: int
) -> None:
    pair = make_pair()
    for ch in (0x10, 0x11, 0x12):
        pair.client.open_channel(ch)
    for ch, data in messages:
        pair.client.send(ch, PacketType.DATA, data)
    pair.transfer(limit=limit)
    for ch in (0x10, 0x11, 0x12):
        sent = [d for c, d in messages if c == ch]
        got = [e.data for e in pair.events_of("server", DataReceived) if e.channel_id == ch]
        assert got == sent


def test_keepalive_timer_during_graceful_close_keeps_pinging() -> None:
    config = StreamConfig(initial_channel_window=256 * 1024)
    pair = make_pair(config, config)
    pair.client.open_channel(0x10)
    pair.transfer()
    pair.auto_release = False
    for _ in range(10):  # 400 KB of unfragmented messages: more than the 256 KiB window
        pair.client.send(0x10, PacketType.DATA, b"d" * 40_000)
    pair.client.close()
    pair.transfer()
    assert pair.client.state == ConnectionState.CLOSING
    pair.client.handle_timer(1.0)  # ping due while closing: must not raise
    assert pair.client.state == ConnectionState.CLOSING
    pair.server.receive_data(b"".join(pair.client.data_to_send()), 1.0)
    pongs = b"".join(pair.server.data_to_send())
    assert pongs, "the server answers the ping"


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 5000), max_size=40), whole=st.booleans())
def test_traffic_split_anywhere_gives_the_same_messages(cuts: list[int], whole: bool) -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    messages = [b"a" * 10, b"b" * 70_000, b"c" * 3, b"d" * 65_536]
    for m in messages:
        pair.client.send(0x10, PacketType.DATA, m)
    wire = b"".join(pair.client.data_to_send())
    if whole:
        pieces = [wire]
    elif not cuts:
        pieces = [wire[i : i + 1] for i in range(len(wire))]  # one byte at a time
    else:
        pieces, pos = [], 0
        for cut in cuts * 100:
            if pos >= len(wire):
                break
            pieces.append(wire[pos : pos + cut])
            pos += cut
        pieces.append(wire[pos:])
    for piece in pieces:
        pair.server.receive_data(piece, 0.0)
    got = [e.data for e in iter(pair.server.next_event, None) if isinstance(e, DataReceived)]
    assert got == messages
    assert pair.server.state == ConnectionState.ESTABLISHED


def test_keepalive_pings_only_an_idle_connection() -> None:
    """A connection that keeps receiving sends no PING (any authenticated packet proves the
    peer alive); one idle for keepalive_interval does."""
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.transfer()
    server_before = pair.server.stats.packets_received
    client_before = pair.client.stats.packets_received
    for step in range(1, 41):  # 4 s of traffic every 0.1 s: past keepalive_interval (1 s)
        pair.now = step * 0.1
        pair.client.send(0x10, PacketType.DATA, b"tick")
        pair.transfer()
        pair.server.send(0x10, PacketType.DATA, b"tock")
        pair.transfer()
        pair.client.handle_timer(pair.now)
        pair.server.handle_timer(pair.now)
        pair.transfer()
    rtt_count = pair.client.stats.rtt_count
    # both sides heard from each other every 0.1 s: neither sent a PING in 4 s
    assert pair.client.stats.rtt_count == rtt_count
    assert pair.server.stats.packets_received - server_before == 40  # the 40 DATA, no PING
    assert pair.client.stats.packets_received - client_before == 40
    # idle: the ping comes keepalive_interval after the last packet received
    pair.now += 1.0
    pair.client.handle_timer(pair.now)
    pair.transfer()
    assert pair.client.stats.rtt_count == rtt_count + 1
