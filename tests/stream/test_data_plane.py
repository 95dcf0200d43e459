"""Issue 3 data plane in the sans-IO core: priorities, deadlines, shaping, policing, compression,
window growth. Virtual clock; every bound is checked exactly."""

from __future__ import annotations

import os
import struct

import pytest
import zstandard

from dapsdk.stream.config import StreamConfig
from dapsdk.stream.connection import ConnectionState
from dapsdk.stream.constants import HEADER, ChannelId, ControlOp, PacketFlag, PacketType
from dapsdk.stream.errors import ErrorCode
from dapsdk.stream.events import DataReceived

from .helpers import make_pair


def server_data(pair) -> list[DataReceived]:  # type: ignore[no-untyped-def]
    return pair.events_of("server", DataReceived)


def test_more_urgent_channel_is_sent_first_and_priority_can_change() -> None:
    pair = make_pair()
    pair.client.open_channel(0x10, priority=5)
    pair.client.open_channel(0x11, priority=1)
    pair.transfer()
    for _ in range(3):
        pair.client.send(0x10, PacketType.DATA, b"L" * 1000)
        pair.client.send(0x11, PacketType.DATA, b"H" * 1000)
    pair.transfer()
    order = [e.channel_id for e in server_data(pair)]
    assert order == [0x11] * 3 + [0x10] * 3
    pair.server_events.clear()
    pair.client.set_priority(0x10, 0)  # now the other way round
    for _ in range(2):
        pair.client.send(0x11, PacketType.DATA, b"h")
        pair.client.send(0x10, PacketType.DATA, b"l")
    pair.transfer()
    assert [e.channel_id for e in server_data(pair)] == [0x10, 0x10, 0x11, 0x11]
    assert pair.server.channels[0x10].priority == 0  # the peer learned it


def test_equal_urgency_channels_share_the_link_packet_by_packet() -> None:
    pair = make_pair()
    for ch in (0x10, 0x11, 0x12):
        pair.client.open_channel(ch)
        pair.client.send(ch, PacketType.DATA, bytes(200_000))  # fragmented: many packets each
    pair.transfer()
    assert sorted(len(e.data) for e in server_data(pair)) == [200_000] * 3
    # Look at the interleaving on the wire.
    first_packets: list[int] = []
    pair2 = make_pair()
    for ch in (0x10, 0x11, 0x12):
        pair2.client.open_channel(ch)
        pair2.client.send(ch, PacketType.DATA, bytes(200_000))
    wire = b"".join(pair2.client.data_to_send(limit=6 * 65_000))
    pos = 0
    while pos < len(wire):
        size, ptype, _, ch, _ = HEADER.unpack_from(wire, pos)
        if ptype == PacketType.DATA:
            first_packets.append(ch)
        pos += 12 + size
    assert first_packets[:6] == [0x10, 0x11, 0x12, 0x10, 0x11, 0x12]


def test_late_realtime_message_is_dropped_before_sending() -> None:
    pair = make_pair()
    pair.client.open_channel(ChannelId.MEDIA)  # realtime by default (0.5 s budget)
    pair.transfer()
    pair.client.send(ChannelId.MEDIA, PacketType.DATA, b"frame-1", now=10.0)
    pair.client.send(ChannelId.MEDIA, PacketType.DATA, b"frame-2", now=10.4)
    wire = b"".join(pair.client.data_to_send(now=10.6))  # frame-1 is late, frame-2 is not
    pair.server.receive_data(wire, 10.6)
    got = [e.data for e in iter(pair.server.next_event, None) if isinstance(e, DataReceived)]
    assert got == [b"frame-2"]
    assert pair.client.stats.dropped_late == 1
    assert pair.client.channel_stats(ChannelId.MEDIA)["dropped_late"] == 1
    assert pair.client.queued_bytes(ChannelId.MEDIA) == 0


def test_reliable_channel_never_drops() -> None:
    pair = make_pair()
    pair.client.open_channel(ChannelId.FILE)
    pair.client.send(ChannelId.FILE, PacketType.DATA, b"keep", now=0.0)
    opened = b"".join(pair.client.data_to_send(limit=0, now=100.0))  # only the OPEN goes out
    pair.server.receive_data(opened, 100.0)
    pair.now = 100.0
    pair.transfer()
    assert [e.data for e in server_data(pair)] == [b"keep"]


def test_partially_sent_late_message_is_discarded_at_the_receiver() -> None:
    pair = make_pair()
    pair.client.open_channel(ChannelId.MEDIA)
    pair.transfer()
    pair.client.send(ChannelId.MEDIA, PacketType.DATA, bytes(300_000), now=0.0)
    first = b"".join(pair.client.data_to_send(limit=1, now=0.0))  # first fragment only
    pair.server.receive_data(first, 0.0)
    assert pair.server._reserved == 300_000
    rest = b"".join(pair.client.data_to_send(now=1.0))  # late now: DISCARD, not the rest
    pair.server.receive_data(rest, 1.0)
    assert pair.server._reserved == 0
    assert pair.server.channels[ChannelId.MEDIA].reassembly is None
    assert not [e for e in iter(pair.server.next_event, None) if isinstance(e, DataReceived)]
    pair.client.send(ChannelId.MEDIA, PacketType.DATA, b"next", now=1.0)
    pair.now = 1.0
    pair.transfer()
    assert [e.data for e in server_data(pair)] == [b"next"]


def test_channel_rate_limit_shapes_sending_over_virtual_time() -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.client.set_rate_limit(0x10, 200_000)  # burst = max(rate, 2 packets) = 200 000 bytes
    pair.transfer()
    for _ in range(40):
        pair.client.send(0x10, PacketType.DATA, bytes(20_000), now=0.0)  # 800 KB queued
    sent_by: dict[float, int] = {}
    now = 0.0
    while now <= 2.0:
        pair.server.receive_data(b"".join(pair.client.data_to_send(now=now)), now)
        for e in iter(pair.server.next_event, None):
            if isinstance(e, DataReceived):
                pair.server.release(e)
        pair.client.receive_data(b"".join(pair.server.data_to_send(now=now)), now)
        list(iter(pair.client.next_event, None))
        sent_by[now] = pair.client.channels[0x10].send_offset
        timer = pair.client.get_timer()
        assert timer is not None
        pair.client.handle_timer(now + 0.25)
        now += 0.25
    for t, sent in sent_by.items():
        assert sent <= 200_000 + 200_000 * t + 20_000, (t, sent)
    assert sent_by[2.0] >= 500_000  # and it did keep sending at the rate


def test_open_flood_is_answered_with_enhance_your_calm() -> None:
    pair = make_pair(server_config=StreamConfig(open_close_rate=(10.0, 20.0)))
    for ch in range(0x100, 0x100 + 25):
        pair.client._new_channel(ch)  # bypass the client's own checks: a hostile peer
        pair.client._seal_control(PacketType.CONTROL, ch, bytes((ControlOp.OPEN, 3)))
    pair.server.receive_data(b"".join(pair.client.data_to_send()), 0.0)
    assert pair.server.state == ConnectionState.TERMINATED
    assert pair.server.terminal_event is not None
    assert pair.server.terminal_event.code == ErrorCode.ENHANCE_YOUR_CALM


def test_ping_flood_is_answered_with_enhance_your_calm() -> None:
    pair = make_pair(server_config=StreamConfig(ping_rate=(5.0, 10.0)))
    for i in range(12):
        pair.client.send_keepalive(0.001 * i)
    pair.server.receive_data(b"".join(pair.client.data_to_send()), 0.01)
    assert pair.server.terminal_event is not None
    assert pair.server.terminal_event.code == ErrorCode.ENHANCE_YOUR_CALM


def test_control_flood_within_limits_is_fine_beyond_is_not() -> None:
    pair = make_pair(server_config=StreamConfig(control_rate=(100.0, 200.0)))
    pair.client.open_channel(0x10)
    pair.transfer()
    for _ in range(150):
        pair.client.send(0x10, PacketType.CONTROL, b"c")
    pair.transfer()
    assert pair.server.state == ConnectionState.ESTABLISHED
    for _ in range(150):
        pair.client.send(0x10, PacketType.CONTROL, b"c")
    pair.transfer()
    assert pair.server.terminal_event is not None
    assert pair.server.terminal_event.code == ErrorCode.ENHANCE_YOUR_CALM


@pytest.mark.parametrize("algorithm", ["zstd", "lz4"])
def test_compression_shrinks_text_and_round_trips(algorithm: str) -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.client.set_compression(0x10, algorithm)
    pair.transfer()
    text = b'{"level": "info", "msg": "segment ready", "n": 12345}\n' * 2000  # 110 KB
    before = pair.client.stats.bytes_sent
    pair.client.send(0x10, PacketType.DATA, text)
    pair.transfer()
    assert [e.data for e in server_data(pair)] == [text]
    assert pair.client.stats.bytes_sent - before < len(text) // 4
    assert pair.client.channel_stats(0x10)["compressed_packets"] >= 2


def test_incompressible_data_is_sent_as_is_and_compression_backs_off() -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.client.set_compression(0x10, "zstd")
    pair.transfer()
    media = [os.urandom(1200) for _ in range(40)]
    for frame in media:
        pair.client.send(0x10, PacketType.DATA, frame)
    pair.transfer()
    assert [e.data for e in server_data(pair)] == media
    compressor = pair.client.channels[0x10].compressor
    assert compressor is not None
    assert compressor.compressed == 0
    assert compressor.tried <= 3  # one try, then skipping 16, then 32


def test_compression_policy_refusals() -> None:
    pair = make_pair(StreamConfig(), StreamConfig(features=StreamConfig().features & ~0x01))
    pair.client.open_channel(0x10)
    pair.client.open_channel(ChannelId.SECURITY)
    with pytest.raises(ValueError, match="did not negotiate"):
        pair.client.set_compression(0x10, "zstd")
    pair.client.set_compression(0x10, "lz4")
    with pytest.raises(ValueError, match="SECURITY"):
        pair.client.set_compression(ChannelId.SECURITY, "lz4")


def test_compression_bomb_is_refused_before_expanding() -> None:
    pair = make_pair()
    pair.client.open_channel(0x10)
    pair.transfer()
    bomb = zstandard.ZstdCompressor().compress(bytes(50_000_000))
    body = struct.pack("<BI", 1, 1000) + bomb  # announces 1000 bytes; the frame says 50 MB
    pair.client._append_sealed(
        PacketType.DATA, 0x10, int(PacketFlag.ENCRYPTED | PacketFlag.COMPRESSED), body
    )
    pair.server.receive_data(b"".join(pair.client.data_to_send()), 0.0)
    assert pair.server.terminal_event is not None
    assert pair.server.terminal_event.code == ErrorCode.COMPRESSION_ERROR


WINDOWS = StreamConfig(
    initial_channel_window=256 * 1024,
    max_channel_window=2 * 1024 * 1024,
    initial_connection_window=1024 * 1024,
    connection_memory_budget=8 * 1024 * 1024,
)


def pair_with_rtt(rtt: float):  # type: ignore[no-untyped-def]
    """A pair on a path whose every hop takes ``rtt / 2`` of virtual time (handshake and the
    PINGs sent on establishment included)."""
    pair = make_pair(WINDOWS, WINDOWS, handshake=False)
    now = 0.0
    for _ in range(20):
        moved = False
        for src, dst in ((pair.client, pair.server), (pair.server, pair.client)):
            data = b"".join(src.data_to_send(now=now))
            if data:
                now += rtt / 2
                dst.receive_data(data, now)
                moved = True
        if not moved:
            break
    pair.now = now
    pair.transfer()
    return pair


def test_handshake_and_first_ping_give_rtt_samples() -> None:
    pair = pair_with_rtt(0.05)
    for side in (pair.client, pair.server):
        assert side._srtt == pytest.approx(0.05)
        # the minimum comes from the PING each side sends on establishment, not the handshake
        assert side._min_rtt == pytest.approx(0.05)
        assert side.stats.rtt_count == 2


def test_windows_grow_with_fast_consumption_up_to_the_maximum() -> None:
    pair = pair_with_rtt(0.05)
    pair.client.open_channel(0x10)
    for _ in range(200):
        pair.client.send(0x10, PacketType.DATA, bytes(60_000))
    pair.transfer()  # all at one instant: each window is used up far faster than 2 RTT
    assert pair.server.channels[0x10].recv_window == 2 * 1024 * 1024
    assert pair.server._conn_window <= 8 * 1024 * 1024
    assert sum(len(e.data) for e in server_data(pair)) == 200 * 60_000


def test_windows_do_not_grow_when_consumption_is_slow() -> None:
    pair = pair_with_rtt(0.05)
    pair.client.open_channel(0x10)
    pair.transfer()
    for step in range(30):
        pair.now = 1.0 + step  # a window's worth per second: far slower than 2 RTT
        pair.client.send(0x10, PacketType.DATA, bytes(60_000), now=pair.now)
        pair.client.send(0x10, PacketType.DATA, bytes(60_000), now=pair.now)
        pair.transfer()
    assert pair.server.channels[0x10].recv_window == 256 * 1024


def test_peer_rate_limit_bounds_all_channels_together() -> None:
    pair = make_pair(StreamConfig(peer_rate_limit=300_000))
    for ch in (0x10, 0x11):
        pair.client.open_channel(ch)
    pair.transfer()
    for _ in range(30):
        for ch in (0x10, 0x11):
            pair.client.send(ch, PacketType.DATA, bytes(20_000), now=0.0)  # 1.2 MB queued
    now = 0.0
    while now <= 2.0:
        pair.server.receive_data(b"".join(pair.client.data_to_send(now=now)), now)
        for e in iter(pair.server.next_event, None):
            if isinstance(e, DataReceived):
                pair.server.release(e)
        pair.client.receive_data(b"".join(pair.server.data_to_send(now=now)), now)
        list(iter(pair.client.next_event, None))
        sent = sum(pair.client.channels[ch].send_offset for ch in (0x10, 0x11))
        # burst (max(rate, 2 packets) = 300 000) plus the rate, plus one message of slack
        assert sent <= 300_000 + 300_000 * now + 20_000, (now, sent)
        pair.client.handle_timer(now + 0.25)
        now += 0.25
    assert sent >= 700_000  # it kept sending at the rate
    assert min(pair.client.channels[ch].send_offset for ch in (0x10, 0x11)) >= 300_000  # shared
