"""dapsdk.compat's AVRS names: every seed name exists with the seed's value, and the synchronous
facade works against a real node (started in this process on its own event loop thread, from a
real config file, with real certificates and tokens)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import dapsdk.compat as compat
from dapsdk.avrs import (
    AvrsChannel,
    AvrsSigner,
    ContentInfo,
    ContentPacket,
    MediaFlag,
    SessionOp,
)
from dapsdk.avrs.packets import RequestHeader, decode_request, encode_request
from dapsdk.avrs.signing import identity_of
from dapsdk.compat.loop import LoopThread
from dapsdk.node.config import load_node_config
from dapsdk.node.wiring import AvrsNode, build_node
from dapsdk.services.auth import Role
from dapsdk.services.avrs_cluster import content_guuid
from dapsdk.services.avrs_media import sign_media

from .avrs_env import AvrsEnv

SEED_FUNCTIONS = [
    "avrs_plugin_init", "avrs_plugin_deinit", "avrs_ch_init", "avrs_ch_deinit",
    "avrs_ch_tsd_sign_pkt_verify", "avrs_ch_pkt_in_content_add_callback", "avrs_session_create",
    "avrs_session_authenticate", "avrs_session_start_stream", "avrs_session_is_active",
    "avrs_session_receive_packet", "avrs_session_close", "avrs_verify_member_credentials",
    "avrs_encrypt_stream", "avrs_cluster_get_my_role", "avrs_cluster_add_member",
    "avrs_cluster_monitor_performance", "dap_config_load",
]  # fmt: skip
SEED_STRUCTS = [
    "avrs_ch_t", "avrs_session_t", "avrs_role_t", "avrs_session_content_t",
    "avrs_ch_pkt_content_t", "avrs_ch_pkt_content_callback_t", "avrs_packet_t", "dap_tsd_t",
]  # fmt: skip
SEED_CONSTANTS = {
    "AVRS_ROLE_CLIENT": 0x0001, "AVRS_ROLE_HOST": 0x0002, "AVRS_ROLE_OPERATOR": 0x0004,
    "AVRS_ROLE_SERVER": 0x0100, "AVRS_ROLE_BALANCER": 0x0200, "AVRS_ROLE_ALL": 0xFFFF,
    "DAP_AVRS_K_CH_SIGNAL": ord("A"), "DAP_AVRS_K_CH_RETCODE": ord("r"),
    "DAP_AVRS_K_CH_CLUSTER": ord("C"), "DAP_AVRS_K_CH_CONTENT": ord("c"),
    "DAP_AVRS_K_CH_SESSION": ord("S"),
    "AVRS_SUCCESS": 0x00000000, "AVRS_ERROR_ARG_INCORRECT": 0x00000001,
    "AVRS_ERROR_SIGN_NOT_PRESENT": 0x000000F0, "AVRS_ERROR_SIGN_INCORRECT": 0x000000F1,
    "AVRS_ERROR_SIGN_ALIEN": 0x000000F2, "AVRS_ERROR_CLUSTER_WRONG_REQUEST": 0x00000101,
    "AVRS_ERROR_CLUSTER_NOT_FOUND": 0x00000102, "AVRS_ERROR_CONTENT_UNAVAILBLE": 0x00000200,
    "AVRS_ERROR_CONTENT_NOT_FOUND": 0x00000201, "AVRS_ERROR_CONTENT_INFO_CORRUPTED": 0x00000202,
    "AVRS_ERROR_CONTENT_CORRUPTED": 0x00000203, "AVRS_ERROR_CONTENT_FLOW_WRONG_ID": 0x00000210,
    "AVRS_ERROR_MEMBER_NOT_FOUND": 0x00000300, "AVRS_ERROR_MEMBER_SECURITY_ISSUE": 0x00000301,
    "AVRS_ERROR_MEMBER_INFO_PROBLEM": 0x00000302, "AVRS_ERROR_SESSION_WRONG_REQUEST": 0x00000400,
    "AVRS_ERROR_SESSION_NOT_OPENED": 0x00000401, "AVRS_ERROR_SESSION_ALREADY_OPENED": 0x00000402,
    "AVRS_ERROR_SESSION_CONTENT_ID_WRONG": 0x00000404, "AVRS_ERROR": 0xFFFFFFFF,
}  # fmt: skip


def test_every_seed_name_exists() -> None:
    for name in SEED_FUNCTIONS:
        assert callable(getattr(compat, name)), name
        assert name in compat.__all__, name
    for name in SEED_STRUCTS:
        assert getattr(compat, name) is not None and name in compat.__all__, name
    for name, value in SEED_CONSTANTS.items():
        assert getattr(compat, name) == value, name
        assert name in compat.__all__, name
    compat.g_avrs_debug_more = 1
    assert compat.g_avrs_debug_more == 1
    compat.g_avrs_debug_more = 0
    assert compat.g_avrs_debug_more == 0


def test_sign_pkt_verify_on_a_real_request() -> None:
    signer = AvrsSigner.generate()
    raw = encode_request(
        RequestHeader(SessionOp.OPEN, AvrsChannel.SESSION, 7),
        signer=signer,
        timestamp_ms=int(time.time() * 1000),
        nonce=bytes(16),
    )
    request = decode_request(AvrsChannel.SESSION, raw)
    args = len(raw) - 8
    verify = compat.avrs_ch_tsd_sign_pkt_verify
    assert verify(None, request.sign, request.sign_offset, raw, 8, args)
    tampered = bytes([raw[0] ^ 1]) + raw[1:]
    assert not verify(None, request.sign, request.sign_offset, tampered, 8, args)
    assert not verify(None, None, request.sign_offset, raw, 8, args)
    assert not verify(None, request.sign, request.sign_offset, raw, 8, args - 1)


def test_plugin_init_errors(tmp_path: Path) -> None:
    """The seed's contract: dap_config_load returns None only for a file it cannot read;
    avrs_plugin_init returns an int and puts the reason in its out-parameter."""
    error = compat.char_ptr()
    assert compat.avrs_plugin_init(None, error) == -1
    assert error.value is not None and "could not read" in error.value
    assert compat.dap_config_load(str(tmp_path / "missing.cfg")) is None
    huge = tmp_path / "huge.cfg"
    huge.write_text("[avrs]\n" + "#" * (1024 * 1024))
    assert compat.dap_config_load(str(huge)) is None  # bounded read
    error = compat.char_ptr()
    assert compat.avrs_plugin_init(tmp_path / "missing.cfg", error) == -1
    assert error.value is not None and "does not exist" in error.value
    bad = tmp_path / "bad.cfg"
    bad.write_text("[avrs]\nrole = host\nmax_connections = lots\n")
    config = compat.dap_config_load(str(bad))
    assert isinstance(config, compat.dap_config_t)  # read, not judged: init reports the value
    error = compat.char_ptr()
    assert compat.avrs_plugin_init(config, error) == -1
    assert error.value == (
        f"{bad} [avrs] max_connections = 'lots': must be an integer between 1 and 1000000"
    )
    bad.write_text("[avrs]\nrole = host\nheartbeat_interval = 30\nreconnect_timeout = 10\n")
    errors: list[str] = []
    assert compat.avrs_plugin_init(compat.dap_config_load(str(bad)), errors) == -1
    assert errors == [f"{bad} [avrs] reconnect_timeout = '10': must be >= heartbeat_interval (30)"]
    assert compat.avrs_ch_init() == -1
    assert compat.avrs_session_create("viewer", "lecture-1") is None


@pytest.fixture
def env(tmp_path: Path) -> AvrsEnv:
    return AvrsEnv(tmp_path)


@pytest.fixture
def server(env: AvrsEnv) -> Iterator[tuple[LoopThread, AvrsNode]]:
    """An AVRS node on its own loop thread (another "process" as far as compat knows)."""
    loop = LoopThread()
    node = build_node(load_node_config(env.server_config()))
    loop.run(node.start())
    try:
        yield loop, node
    finally:
        loop.run(node.close())
        loop.stop()


@pytest.fixture
def viewer(env: AvrsEnv, server: tuple[LoopThread, AvrsNode]) -> Iterator[AvrsEnv]:
    """The compat plugin running a viewer node whose host_address is the server."""
    env.identity("viewer")
    config = compat.dap_config_load(str(env.client_config("viewer", server[1].urls[0])))
    error = compat.char_ptr()
    assert compat.avrs_plugin_init(config, error) == 0, error.value
    assert error.value is None
    assert compat.avrs_plugin_init(config, error) == -1  # already initialised
    assert error.value == "avrs plugin is already initialised"
    assert compat.avrs_ch_init() == 0
    try:
        yield env
    finally:
        compat.avrs_ch_deinit()
        compat.avrs_plugin_deinit()


def test_session_through_compat(viewer: AvrsEnv, server: tuple[LoopThread, AvrsNode]) -> None:
    env = viewer
    loop, node = server
    content = content_guuid("lecture-1")
    owner = AvrsSigner(node.identity.private_key)  # the server node publishes itself
    loop.call(node.directory.put_content, ContentInfo(content, owner.identity, "v", (), "L1"))
    me = compat.avrs_node()
    assert compat.avrs_cluster_get_my_role() == compat.AVRS_ROLE_CLIENT
    session = compat.avrs_session_create("viewer-1", "lecture-1")
    assert session is not None and session.content_id == content
    assert compat.avrs_session_start_stream(session) == compat.AVRS_ERROR_SESSION_NOT_OPENED

    expired = env.token(str(me.address), issued=env.now - 7200, ttl=3600)
    assert not compat.avrs_session_authenticate(session, expired)
    assert session.last_error == compat.AVRS_ERROR_MEMBER_SECURITY_ISSUE
    assert "expired" in session.last_error_detail
    assert not compat.avrs_session_authenticate(session, env.forged_token(str(me.address)))
    assert "signature" in session.last_error_detail

    token = env.token(str(me.address), content=("lecture-1",))
    assert compat.avrs_session_authenticate(session, compat.avrs_credentials_t(token=token))
    assert compat.avrs_session_start_stream(session) == compat.AVRS_SUCCESS
    assert compat.avrs_session_is_active(session)

    def publish(seq: int, flags: MediaFlag, signed: bool) -> int:
        payload = f"frame {seq}".encode()
        if signed:
            payload = sign_media(owner, content, 0, seq, payload, now=time.time(), flags=flags)
        return node.service.publish(content, ContentPacket(0, 0, seq, payload, flags=flags))

    assert loop.call(publish, 0, MediaFlag.KEYFRAME, False) == 1
    packet = compat.avrs_session_receive_packet(session)
    assert packet is not None and packet.payload == b"frame 0" and packet.sign is None
    assert not compat.avrs_ch_tsd_sign_pkt_verify(
        None, packet.sign, packet.tsd_offset, packet.data, packet.header_size, packet.args_size
    )
    assert loop.call(publish, 1, MediaFlag.END_OF_FLOW, True) == 1
    packet = compat.avrs_session_receive_packet(session)
    assert packet is not None and packet.payload == b"frame 1"
    assert packet.signer == owner.identity and packet.data_size == len(packet.data)
    assert compat.avrs_ch_tsd_sign_pkt_verify(
        None, packet.sign, packet.tsd_offset, packet.data, packet.header_size, packet.args_size
    )
    assert not compat.avrs_session_is_active(session)  # the only flow ended
    stats = compat.avrs_cluster_monitor_performance()
    assert stats["bytes_received"] > 0
    compat.avrs_session_close(session)
    mine = identity_of(me.identity.public_key)
    assert loop.call(lambda: node.service.sessions.get(mine)) is None
    assert not compat.avrs_session_is_active(session)
    assert compat.avrs_session_receive_packet(session) is None


def test_member_credentials_and_encryption(
    viewer: AvrsEnv, server: tuple[LoopThread, AvrsNode]
) -> None:
    env = viewer
    me = compat.avrs_node()
    token = env.token(str(me.address))
    verify = compat.avrs_verify_member_credentials
    # The viewer's node has no token issuers of its own: it cannot vouch for tokens.
    assert not verify(me.identity, token)
    assert verify(me.identity, None) is False
    camera = env.identity("camera", Role.SERVER)
    cert = (env.root / "camera.crt").read_bytes()
    assert verify(camera, cert)
    assert verify(camera.address, compat.avrs_credentials_t(certificate=cert))
    assert not verify(me.identity, cert)  # someone else's certificate

    session = compat.avrs_session_create("viewer-1", "lecture-1")
    assert session is not None
    key = compat.dap_enc_key_generate(compat.DAP_ENC_KEY_TYPE_AES)
    assert compat.avrs_encrypt_stream(session, key) is session
    assert session.content_key is not None
    assert session.content_key.key_bytes == key.data
    assert compat.avrs_encrypt_stream(session, b"short") is None


def test_server_side_token_verification(env: AvrsEnv) -> None:
    error = compat.char_ptr()
    assert compat.avrs_plugin_init(compat.dap_config_load(str(env.server_config())), error) == 0, (
        error.value
    )
    try:
        viewer = env.identity("viewer")
        good = env.token(str(viewer.address))
        assert compat.avrs_verify_member_credentials(viewer, good)
        assert compat.avrs_verify_member_credentials(viewer.address, good)
        assert not compat.avrs_verify_member_credentials(env.server, good)  # other subject
        assert not compat.avrs_verify_member_credentials(viewer, env.forged_token("x"))
        expired = env.token(str(viewer.address), issued=env.now - 7200, ttl=3600)
        assert not compat.avrs_verify_member_credentials(viewer, expired)
        assert compat.avrs_cluster_get_my_role() == compat.AVRS_ROLE_HOST | compat.AVRS_ROLE_SERVER
        assert compat.avrs_cluster_add_member(viewer, compat.AVRS_ROLE_OPERATOR) == 0
        node = compat.avrs_node()
        roles = compat.avrs_loop().call(
            lambda: node.directory.info.roles_of(identity_of(viewer.public_key))
        )
        assert roles == compat.AVRS_ROLE_OPERATOR
    finally:
        compat.avrs_plugin_deinit()
