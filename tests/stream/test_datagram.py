"""Sealed realtime datagrams: AEAD with explicit packet numbers, RFC 6479 window, deadline drop."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dapsdk.stream.datagram import (
    DATAGRAM_HEADER,
    DATAGRAM_OVERHEAD,
    EPOCH_BITS,
    DatagramOpener,
    DatagramSealer,
    DropReason,
    RealtimeQueue,
    ReplayWindow,
    datagram_secrets,
)

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))


def pair(window: int = 2048) -> tuple[DatagramSealer, DatagramOpener]:
    return DatagramSealer(SECRET), DatagramOpener(SECRET, window=window)


# -- replay window against a reference model ------------------------------------------------------


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(st.integers(0, 300), st.integers(0, 20_000)),
        max_size=200,
    ),
    st.sampled_from([64, 128, 2048]),
)
def test_replay_window_matches_model(pns: list[int], size: int) -> None:
    window = ReplayWindow(size)
    seen: set[int] = set()
    highest = -1
    for pn in pns:
        expected_ok = pn not in seen and pn + window.size > highest
        reason = window.check(pn)
        assert (reason is None) == expected_ok, (pn, highest, reason)
        if reason is None:
            window.update(pn)
            seen.add(pn)
            highest = max(highest, pn)
        elif pn in seen and pn + window.size > highest:
            assert reason is DropReason.REPLAY
        else:
            assert reason is DropReason.TOO_OLD


def test_replay_window_rounds_up_to_blocks() -> None:
    assert ReplayWindow(100).size == 128
    with pytest.raises(ValueError):
        ReplayWindow(10)


# -- sealing ------------------------------------------------------------------------------------


@given(st.integers(0, 0xFFFF), st.binary(max_size=2000))
def test_seal_open_roundtrip(channel_id: int, payload: bytes) -> None:
    sealer, opener = pair()
    datagram = sealer.seal(channel_id, payload)
    assert len(datagram) == len(payload) + DATAGRAM_OVERHEAD
    assert payload not in datagram[DATAGRAM_HEADER.size :] or len(payload) < 8
    assert opener.open(datagram) == (channel_id, payload)


@settings(max_examples=200)
@given(st.data())
def test_loss_and_reordering_deliver_each_survivor_exactly_once(data: st.DataObject) -> None:
    sealer, opener = pair()
    count = data.draw(st.integers(1, 120))
    sealed = [sealer.seal(0x04, i.to_bytes(4, "little")) for i in range(count)]
    kept = data.draw(st.lists(st.sampled_from(range(count)), max_size=3 * count))
    # ``kept`` may repeat indices (duplication) and is in any order (reordering); missing
    # indices are losses. Everything is within the 2048-packet window.
    delivered: list[int] = []
    for index in kept:
        result = opener.open(sealed[index])
        if result is not None:
            delivered.append(int.from_bytes(result[1], "little"))
    assert sorted(delivered) == sorted(set(kept))
    assert opener.stats.dropped[DropReason.REPLAY] == len(kept) - len(set(kept))


@given(st.binary(max_size=300), st.data())
def test_any_modification_is_dropped(payload: bytes, data: st.DataObject) -> None:
    sealer, opener = pair()
    datagram = bytearray(sealer.seal(7, payload))
    position = data.draw(st.integers(0, len(datagram) - 1))
    flip = data.draw(st.integers(1, 255))
    datagram[position] ^= flip
    assert opener.open(bytes(datagram)) is None
    assert opener.last_drop in (DropReason.AUTHENTICATION, DropReason.MALFORMED)
    assert opener.window.highest == -1


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(blob: bytes) -> None:
    _, opener = pair()
    assert opener.open(blob) is None
    assert opener.stats.dropped_total == 1


def test_truncated_datagram_is_malformed() -> None:
    sealer, opener = pair()
    datagram = sealer.seal(1, b"hello")
    assert opener.open(datagram[: DATAGRAM_OVERHEAD - 1]) is None
    assert opener.last_drop is DropReason.MALFORMED


def test_wrong_key_is_an_authentication_drop() -> None:
    datagram = DatagramSealer(OTHER).seal(4, b"media")
    opener = DatagramOpener(SECRET)
    assert opener.open(datagram) is None
    assert opener.last_drop is DropReason.AUTHENTICATION


def test_forged_high_packet_number_does_not_move_the_window() -> None:
    sealer, opener = pair(window=64)
    first = sealer.seal(4, b"a")
    forged = bytearray(sealer.seal(4, b"b"))
    DATAGRAM_HEADER.pack_into(forged, 0, 10_000, 4)  # claims a far-ahead number
    assert opener.open(bytes(forged)) is None
    assert opener.window.highest == -1
    assert opener.open(first) == (4, b"a")


def test_too_old_after_window_slides() -> None:
    sealer, opener = pair(window=64)
    sealed = [sealer.seal(4, bytes([i % 256])) for i in range(200)]
    assert opener.open(sealed[199]) is not None
    assert opener.open(sealed[100]) is None
    assert opener.last_drop is DropReason.TOO_OLD
    assert opener.open(sealed[150]) is not None


def test_epoch_change_switches_keys_without_signalling() -> None:
    sealer, opener = pair()
    boundary = 1 << EPOCH_BITS
    sealer.next_packet_number = boundary - 2
    sealed = [sealer.seal(4, bytes([i])) for i in range(4)]
    for i, datagram in reversed(list(enumerate(sealed))):  # reordered across the boundary
        assert opener.open(datagram) == (4, bytes([i]))
    assert opener.stats.accepted == 4
    # Each epoch has its own key: a datagram re-labelled with the other epoch's number fails.
    moved = bytearray(sealed[0])
    DATAGRAM_HEADER.pack_into(moved, 0, boundary + 5, 4)
    assert opener.open(bytes(moved)) is None
    assert opener.last_drop is DropReason.AUTHENTICATION
    # An epoch two ahead of anything seen is refused before any key derivation.
    far = DatagramSealer(SECRET)
    far.next_packet_number = 3 * boundary
    assert opener.open(far.seal(4, b"x")) is None
    assert opener.last_drop is DropReason.MALFORMED


def test_directions_have_separate_secrets() -> None:
    def export(label: bytes, length: int) -> bytes:
        return (label * 4)[:length]

    client_send, client_recv = datagram_secrets(export, is_client=True)
    server_send, server_recv = datagram_secrets(export, is_client=False)
    assert client_send == server_recv and server_send == client_recv
    assert client_send != client_recv
    datagram = DatagramSealer(client_send).seal(4, b"up")
    assert DatagramOpener(client_recv).open(datagram) is None  # own direction's key is wrong
    assert DatagramOpener(server_recv).open(datagram) == (4, b"up")


# -- deadline and drop --------------------------------------------------------------------------


def test_queue_drops_late_datagrams() -> None:
    queue = RealtimeQueue()
    queue.push(4, b"late", deadline=1.0)
    queue.push(4, b"ok", deadline=3.0)
    queue.push(4, b"forever", deadline=None)
    due = queue.pop_due(2.0)
    assert [d.payload for d in due] == [b"ok", b"forever"]
    assert queue.dropped_late == 1
    assert queue.queued_bytes == 0


@given(
    st.lists(st.binary(min_size=1, max_size=50), max_size=100),
    st.integers(1, 20),
    st.integers(50, 500),
)
def test_queue_stays_within_bounds_and_keeps_newest(
    payloads: list[bytes], max_items: int, max_bytes: int
) -> None:
    queue = RealtimeQueue(max_datagrams=max_items, max_bytes=max_bytes)
    for payload in payloads:
        queue.push(4, payload, None)
        assert len(queue) <= max_items
        assert queue.queued_bytes <= max_bytes
    due = queue.pop_due(0.0)
    assert [d.payload for d in due] == payloads[len(payloads) - len(due) :]
    assert queue.dropped_overflow == len(payloads) - len(due)


def test_seeded_lossy_link() -> None:
    rng = random.Random(6479)
    sealer, opener = pair()
    sent = [sealer.seal(4, i.to_bytes(4, "little")) for i in range(5000)]
    link = [d for d in sent if rng.random() > 0.2]
    # local reordering within 32 packets, and 5 % duplicates
    for i in range(0, len(link) - 32, 16):
        chunk = link[i : i + 32]
        rng.shuffle(chunk)
        link[i : i + 32] = chunk
    link += rng.sample(link, len(link) // 20)
    got = [r for r in (opener.open(d) for d in link) if r is not None]
    numbers = [int.from_bytes(p, "little") for _, p in got]
    assert len(numbers) == len(set(numbers))
    assert opener.stats.dropped[DropReason.AUTHENTICATION] == 0
    assert len(numbers) >= 0.75 * 5000
