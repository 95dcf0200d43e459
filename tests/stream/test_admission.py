"""Handshake admission (sans-IO policy) and the cookie exchange of the wire core."""

from __future__ import annotations

import struct

import pytest

from dapsdk.stream.admission import (
    COOKIE_SIZE,
    RANK_COOKIE,
    AdmissionConfig,
    CookieIssuer,
    HandshakeAdmission,
    source_prefix,
)
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.connection import StreamConnection
from dapsdk.stream.constants import HEADER, HandshakeStep, PacketType
from dapsdk.stream.errors import ErrorCode
from dapsdk.stream.events import HandshakeCompleted, StreamTerminated
from dapsdk.stream.identity import NodeIdentity


def test_prefixes_are_slash_24_for_ipv4_and_slash_64_for_ipv6() -> None:
    assert source_prefix("192.0.2.77") == "192.0.2.0/24"
    assert source_prefix("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert source_prefix("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert source_prefix("fe80::1%eth0") == "fe80::/64"
    assert source_prefix("not-an-ip") == "not-an-ip"


def test_full_table_evicts_least_advanced_then_oldest() -> None:
    adm = HandshakeAdmission(
        AdmissionConfig(max_pending=3, per_source=8, per_prefix=8, cookie_threshold=100)
    )
    assert adm.admit("a", "10.0.0.1", 0.0) == []
    assert adm.admit("b", "10.0.1.1", 1.0) == []
    assert adm.hello("a", None, 1.5).proceed  # a delivered its HELLO: more advanced
    assert adm.admit("c", "10.0.2.1", 2.0) == []
    assert adm.admit("d", "10.0.3.1", 3.0) == ["b"]  # oldest that never sent a HELLO
    assert adm.admit("e", "10.0.4.1", 4.0) == ["c"]
    assert adm.admit("f", "10.0.5.1", 5.0) == ["d"]
    assert "a" in adm and len(adm) == 3
    adm.complete("a")
    assert "a" not in adm and adm.stats.completed == 1


def test_one_source_displaces_only_itself() -> None:
    adm = HandshakeAdmission(
        AdmissionConfig(max_pending=100, per_source=4, per_prefix=10, cookie_threshold=100)
    )
    adm.admit("legit", "10.0.0.1", 0.0)
    adm.hello("legit", None, 0.0)
    adm.admit("other", "10.9.9.9", 0.0)
    victims = []
    for i in range(50):
        victims += adm.admit(f"flood{i}", "10.0.0.1", 1.0 + i)
    assert "legit" in adm and "other" in adm
    assert adm.source_count("10.0.0.1") == 4
    assert all(v.startswith("flood") for v in victims)
    assert adm.stats.evicted_per_source == 47


def test_one_prefix_is_capped() -> None:
    adm = HandshakeAdmission(
        AdmissionConfig(max_pending=100, per_source=2, per_prefix=5, cookie_threshold=100)
    )
    for i in range(20):
        adm.admit(i, f"10.0.0.{i}", float(i))
    assert len(adm) == 5
    assert adm.stats.evicted_per_prefix == 15


def test_cookie_is_bound_to_address_and_rotating_secret() -> None:
    issuer = CookieIssuer(b"k" * 32, period=120.0)
    cookie = issuer.make("192.0.2.1", 1000.0)
    assert len(cookie) == COOKIE_SIZE
    assert issuer.check(cookie, "192.0.2.1", 1000.0)
    assert issuer.check(cookie, "::ffff:192.0.2.1", 1000.0)  # same address, mapped
    assert issuer.check(cookie, "192.0.2.1", 1000.0 + 120.0)  # previous epoch still valid
    assert not issuer.check(cookie, "192.0.2.1", 1000.0 + 240.0)  # two rotations later
    assert not issuer.check(cookie, "192.0.2.2", 1000.0)
    assert not issuer.check(cookie[:-1] + bytes([cookie[-1] ^ 1]), "192.0.2.1", 1000.0)
    assert not issuer.check(cookie[:10], "192.0.2.1", 1000.0)
    assert not CookieIssuer(b"x" * 32).check(cookie, "192.0.2.1", 1000.0)


def test_hello_under_load_gets_a_cookie_and_leaves_no_state() -> None:
    adm = HandshakeAdmission(
        AdmissionConfig(max_pending=10, per_source=8, per_prefix=8, cookie_threshold=2)
    )
    adm.admit("x", "10.0.0.1", 0.0)
    adm.admit("y", "10.0.1.1", 0.0)
    verdict = adm.hello("y", None, 0.5)
    assert not verdict.proceed and len(verdict.cookie) == COOKIE_SIZE
    assert "y" not in adm  # stateless: the connection is forgotten
    adm.admit("y2", "10.0.1.1", 0.6)
    forged = adm.hello("y2", b"\0" * COOKIE_SIZE, 0.7)  # an invalid cookie counts as none
    assert not forged.proceed and adm.stats.cookies_invalid == 1
    adm.admit("y3", "10.0.1.1", 0.8)
    assert adm.hello("y3", verdict.cookie, 0.9).proceed
    assert adm.stats.cookies_accepted == 1
    assert adm._entries["y3"].rank == RANK_COOKIE


def test_a_source_using_half_its_share_needs_cookies() -> None:
    adm = HandshakeAdmission(
        AdmissionConfig(max_pending=100, per_source=4, per_prefix=100, cookie_threshold=100)
    )
    for i in range(3):
        adm.admit(i, "10.0.0.1", 0.0)
    assert not adm.hello(2, None, 0.0).proceed  # 3 of 4 from this source: cookie first
    adm.admit("alone", "10.0.5.5", 0.0)
    assert adm.hello("alone", None, 0.0).proceed


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        AdmissionConfig(max_pending=0)
    with pytest.raises(ValueError, match="per_source"):
        AdmissionConfig(per_source=10, per_prefix=5)


# -- the wire core --------------------------------------------------------------------------


def _packets(chunks: list[bytes]) -> list[tuple[int, int, bytes]]:
    data = b"".join(chunks)
    out = []
    while data:
        size, ptype, seq, _ch, _flags = HEADER.unpack_from(data)
        out.append((ptype, seq, data[12 : 12 + size]))
        data = data[12 + size :]
    return out


def test_responder_refuses_with_cookie_before_any_key_agreement() -> None:
    cookie = b"C" * COOKIE_SIZE
    server = StreamConnection(StreamConfig(), NodeIdentity.generate(), is_client=False, now=0.0)
    server.hello_gate = lambda echoed: (ErrorCode.RETRY_WITH_COOKIE, cookie.hex())
    client = StreamConnection(StreamConfig(), NodeIdentity.generate(), is_client=True, now=0.0)
    server.receive_data(b"".join(client.data_to_send()), 0.0)
    [(ptype, seq, body)] = _packets(server.data_to_send())
    assert (ptype, seq) == (PacketType.ERROR, 0)
    assert struct.unpack_from("<I", body)[0] == ErrorCode.RETRY_WITH_COOKIE
    assert bytes.fromhex(body[4:].decode()) == cookie
    assert server.handshake.expected_step == 0  # no RESPONSE was computed
    client.receive_data(b"".join(_p for _p in [HEADER.pack(len(body), 5, 0, 0, 0) + body]), 0.1)
    event = client.next_event()
    assert isinstance(event, StreamTerminated) and event.code == ErrorCode.RETRY_WITH_COOKIE


def test_retried_client_echoes_the_cookie_before_hello_and_completes() -> None:
    cookie = bytes(range(COOKIE_SIZE))
    seen: list[bytes | None] = []
    server = StreamConnection(StreamConfig(), NodeIdentity.generate(), is_client=False, now=0.0)

    def gate(echoed: bytes | None) -> tuple[int, str] | None:
        seen.append(echoed)
        return None

    server.hello_gate = gate
    client = StreamConnection(
        StreamConfig(), NodeIdentity.generate(), is_client=True, now=0.0, cookie=cookie
    )
    first = client.data_to_send()
    packets = _packets(first)
    assert [(p[0], p[1]) for p in packets] == [
        (PacketType.CONTROL, HandshakeStep.COOKIE),
        (PacketType.CONTROL, HandshakeStep.HELLO),
    ]
    assert packets[0][2] == cookie
    server.receive_data(b"".join(first), 0.0)
    client.receive_data(b"".join(server.data_to_send()), 0.0)
    server.receive_data(b"".join(client.data_to_send()), 0.0)
    assert seen == [cookie]
    assert isinstance(server.next_event(), HandshakeCompleted)


def test_cookie_echo_twice_or_of_wrong_size_fails_the_handshake() -> None:
    for body in (b"x" * 19, b"x" * 21):
        server = StreamConnection(StreamConfig(), NodeIdentity.generate(), is_client=False, now=0.0)
        server.receive_data(HEADER.pack(len(body), 2, HandshakeStep.COOKIE, 0, 0) + body, 0.0)
        event = server.next_event()
        assert isinstance(event, StreamTerminated) and event.code == ErrorCode.HANDSHAKE_FAILED
    server = StreamConnection(StreamConfig(), NodeIdentity.generate(), is_client=False, now=0.0)
    echo = HEADER.pack(COOKIE_SIZE, 2, HandshakeStep.COOKIE, 0, 0) + b"c" * COOKIE_SIZE
    server.receive_data(echo + echo, 0.0)
    event = server.next_event()
    assert isinstance(event, StreamTerminated) and event.code == ErrorCode.HANDSHAKE_FAILED


def test_a_burst_does_not_evict_a_client_before_its_hello_is_read() -> None:
    adm = HandshakeAdmission(
        AdmissionConfig(
            max_pending=500, per_source=4, per_prefix=8, cookie_threshold=500, hello_grace=0.5
        )
    )
    for i in range(4):
        adm.admit(f"old{i}", "10.0.0.1", 0.0)
    victims = adm.admit("legit", "10.0.0.1", 10.0)  # evicts one old idle socket
    for i in range(100):  # accepted in the same event-loop turn as legit
        victims += adm.admit(f"burst{i}", "10.0.0.1", 10.0)
    assert "legit" in adm
    assert sorted(victims) == [f"old{i}" for i in range(4)]
    assert adm.source_count("10.0.0.1") == 101  # over its share within the grace period
    adm.hello("legit", adm.cookies.make("10.0.0.1", 10.0), 10.01)  # a retried client
    adm.admit("later", "10.0.0.1", 11.0)  # past the grace: the share is trimmed
    assert adm.source_count("10.0.0.1") == 4
    assert "legit" in adm and "later" in adm
