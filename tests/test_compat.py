"""dapsdk.compat: every seed name exists and works through the synchronous facade."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

import dapsdk.compat as dap
from dapsdk.runtime.endpoint import parse_endpoint

from .servers import stream_server

SEED_FUNCTIONS = [
    "dap_stream_init",
    "dap_stream_deinit",
    "dap_stream_session_create",
    "dap_stream_session_delete",
    "dap_stream_create",
    "dap_stream_delete",
    "dap_stream_ch_new",
    "dap_stream_ch_delete",
    "dap_stream_ch_packet_write",
    "dap_stream_ch_packet_read",
    "dap_stream_get_stats",
    "dap_stream_start_async_processing",
    "dap_stream_send_keepalive",
    "dap_stream_process_keepalive",
    "dap_stream_verify_signature",
    "dap_stream_authenticate_node",
    "dap_stream_encrypt_packet",
    "dap_stream_decrypt_packet",
    "dap_stream_ch_set_encryption",
    "dap_stream_session_join_cluster",
    "dap_cluster_create",
    "dap_cluster_add_member",
    "dap_cluster_remove_member",
    "dap_cluster_enable_load_balancing",
    "dap_enc_key_generate",
    "dap_sign_create",
    "dap_config_load",
]

SEED_CONSTANTS = {
    "DAP_STREAM_CH_ID_CONTROL": 0x00,
    "DAP_STREAM_CH_ID_FILE": 0x01,
    "DAP_STREAM_CH_ID_SERVICE": 0x02,
    "DAP_STREAM_CH_ID_SECURITY": 0x03,
    "DAP_STREAM_CH_ID_MEDIA": 0x04,
    "DAP_STREAM_CH_ID_CUSTOM": 0x10,
    "DAP_STREAM_PKT_TYPE_DATA": 0x01,
    "DAP_STREAM_PKT_TYPE_CONTROL": 0x02,
    "DAP_STREAM_PKT_TYPE_KEEPALIVE": 0x03,
    "DAP_STREAM_PKT_TYPE_CLOSE": 0x04,
    "DAP_STREAM_PKT_TYPE_ERROR": 0x05,
    "DAP_STREAM_PKT_FLAG_COMPRESSED": 0x01,
    "DAP_STREAM_PKT_FLAG_ENCRYPTED": 0x02,
    "DAP_STREAM_PKT_FLAG_FRAGMENTED": 0x04,
    "STREAM_KEEPALIVE_TIMEOUT": 3,
}


def test_every_seed_function_and_constant_exists() -> None:
    for name in SEED_FUNCTIONS:
        assert callable(getattr(dap, name)), name
    for name, value in SEED_CONSTANTS.items():
        assert getattr(dap, name) == value, name
    for struct_name in (
        "dap_stream_t",
        "dap_stream_session_t",
        "dap_stream_ch_t",
        "dap_stream_stats_t",
        "dap_stream_packet_hdr_t",
        "dap_cluster_t",
        "dap_enc_key_t",
        "dap_sign_t",
        "dap_stream_node_addr_t",
    ):
        assert hasattr(dap, struct_name), struct_name


def test_calls_before_init_raise_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="dap_stream_init"):
        dap.dap_stream_session_create(dap.dap_stream_node_addr_t(addr="127.0.0.1", port=1))


@pytest.fixture
def initialised() -> Iterator[str]:
    with stream_server() as urls:
        assert dap.dap_stream_init() == 0
        try:
            yield urls[0]
        finally:
            dap.dap_stream_deinit()


def test_stream_channel_write_read_and_stats(initialised: str) -> None:
    endpoint = parse_endpoint(initialised)
    assert dap.dap_stream_init() == -1  # already initialised
    session = dap.dap_stream_session_create(
        dap.dap_stream_node_addr_t(addr=dap.inet_addr("127.0.0.1"), port=endpoint.port)
    )
    assert session is not None and session.is_active
    stream = dap.dap_stream_create(session)
    assert stream is not None and stream.authorized
    assert dap.dap_stream_authenticate_node(stream, endpoint.node)
    assert not dap.dap_stream_authenticate_node(stream, dap.dap_stream_node().address)
    ch = dap.dap_stream_ch_new(stream, dap.DAP_STREAM_CH_ID_FILE)
    assert ch is not None and ch.is_active and ch.id == ch.type == 1
    arrived = threading.Event()
    ch.ready_to_read = lambda c, a: arrived.set()
    assert dap.dap_stream_ch_packet_write(ch, dap.DAP_STREAM_PKT_TYPE_DATA, b"0123456789") == 0
    assert arrived.wait(10)
    ptype: list[int] = []
    small = bytearray(4)
    assert dap.dap_stream_ch_packet_read(ch, ptype, small) == 0  # too small: stays queued
    buf = bytearray(64)
    assert dap.dap_stream_ch_packet_read(ch, ptype, buf) == 10
    assert ptype == [dap.DAP_STREAM_PKT_TYPE_DATA] and bytes(buf[:10]) == b"0123456789"
    assert dap.dap_stream_ch_packet_read(ch, ptype, buf) == 0
    assert dap.dap_stream_ch_packet_write(ch, 0x03, b"x") == -1  # KEEPALIVE is not writable
    dap.dap_stream_send_keepalive(stream)
    dap.dap_stream_process_keepalive(stream)
    stats = dap.dap_stream_get_stats(stream)
    assert stats.packets_sent >= 3 and stats.bytes_received > 10 and stats.active_channels == 1
    assert ch.seq_id > 0
    dap.dap_stream_ch_delete(ch)
    dap.dap_stream_delete(stream)
    assert not stream.is_active
    dap.dap_stream_session_delete(session)
    assert not session.is_active


def test_session_create_reports_bad_addresses(initialised: str) -> None:
    assert dap.dap_stream_session_create(dap.dap_stream_node_addr_t(addr="127.0.0.1")) is None
    assert dap.dap_stream_session_create("bogus://x:1") is None


def test_signatures_bind_to_the_stream(initialised: str) -> None:
    stream = dap.dap_stream_create(dap.dap_stream_session_create(initialised))  # type: ignore[arg-type]
    assert stream is not None
    key = dap.dap_enc_key_generate(dap.DAP_ENC_KEY_TYPE_SIG_ED25519)
    sign = dap.dap_sign_create(key, stream.binding)
    assert sign.verify(stream.binding)
    # signed by someone other than the peer: refused
    assert not dap.dap_stream_verify_signature(stream, sign)
    assert dap.dap_sign_t.from_bytes(sign.to_bytes()) == sign
    assert "hidden" in repr(key)


def test_packet_encryption_round_trip_and_tamper() -> None:
    key = dap.dap_enc_key_generate(dap.DAP_ENC_KEY_TYPE_AES, 256)
    packet = dap.dap_stream_packet_t(
        dap.dap_stream_packet_hdr_t(size=5, type=1, ch_id=0x20), b"hello"
    )
    assert dap.dap_stream_encrypt_packet(packet, key) == 0
    assert packet.data != b"hello" and packet.hdr.flags & dap.DAP_STREAM_PKT_FLAG_ENCRYPTED
    assert dap.dap_stream_encrypt_packet(packet, key) == -1  # already encrypted
    other = dap.dap_enc_key_generate(dap.DAP_ENC_KEY_TYPE_AES, 256)
    assert dap.dap_stream_decrypt_packet(packet, other) == -1
    assert dap.dap_stream_decrypt_packet(packet, key) == 0
    assert packet.data == b"hello" and packet.hdr.size == 5
    with pytest.raises(ValueError, match="only 256"):
        dap.dap_enc_key_generate(dap.DAP_ENC_KEY_TYPE_AES, 128)


def test_clusters_balance_sessions_over_members() -> None:
    cluster = dap.dap_cluster_create("c1")
    assert cluster is not None and dap.dap_cluster_create("") is None
    a = dap.dap_stream_node_addr_t(addr="127.0.0.1", port=1001)
    b = dap.dap_stream_node_addr_t(addr="127.0.0.1", port=1002)
    assert dap.dap_cluster_add_member(cluster, a) == 0
    assert dap.dap_cluster_add_member(cluster, a) == -1  # duplicate
    assert dap.dap_cluster_add_member(cluster, b) == 0
    assert cluster.members_count == 2
    dap.dap_cluster_enable_load_balancing(cluster, True)
    from dapsdk.runtime.session import Session

    sessions = [Session(i, None, None) for i in range(1, 7)]
    for s in sessions:
        cluster.join(s)
    ports = [s.endpoint.port for s in sessions if s.endpoint]
    assert sorted(ports) == [1001] * 3 + [1002] * 3
    assert dap.dap_cluster_remove_member(cluster, b) == 0
    assert dap.dap_cluster_remove_member(cluster, b) == -1
    late = Session(99, None, None)
    cluster.join(late)
    assert late.endpoint is not None and late.endpoint.port == 1001


def test_debug_switch_drives_logging() -> None:
    dap.g_dap_stream_debug_more = 1  # type: ignore[attr-defined]
    try:
        assert logging.getLogger("dapsdk.stream").level == logging.DEBUG
        assert dap.g_dap_stream_debug_more == 1  # type: ignore[attr-defined]
    finally:
        dap.g_dap_stream_debug_more = 0  # type: ignore[attr-defined]
    assert logging.getLogger("dapsdk.stream").level == logging.NOTSET
