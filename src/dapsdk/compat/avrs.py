"""Every AVRS function the seed names, under its seed name, as a synchronous facade over
:mod:`dapsdk.node.wiring` (node side) and :mod:`dapsdk.services.avrs_client` (client side).

``avrs_plugin_init`` builds and starts the node its configuration describes on a background event
loop; ``avrs_ch_init`` registers the AVRS channels ``A r C c S`` on that node's dap_stream. Sessions
created with ``avrs_session_create`` connect (on ``avrs_session_authenticate``) to the configured
``host_address`` (or ``balancer_address``). Return conventions follow the seed: ``int`` functions
return 0 / an AVRS code, ``bool`` functions a bool, pointer functions an object or None; why
something failed is logged on ``dapsdk.compat`` (and kept in ``session.last_error_detail``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..avrs.callbacks import ContentCallbacks
from ..avrs.connection import AvrsConnection
from ..avrs.constants import AvrsChannel, ContentFlag, MediaFlag, Role
from ..avrs.errors import AvrsError
from ..avrs.packets import ContentPacket
from ..avrs.sessions import SessionContent
from ..avrs.signing import AvrsSigner, identity_of, tsd_sign_pkt_verify
from ..avrs.tsd import Tsd
from ..node.config import ConfigError, NodeConfig, load_node_config, parse_node_config
from ..node.wiring import AvrsNode, build_node
from ..runtime.channel import Channel
from ..runtime.stream import Stream
from ..services.auth import AuthError, parse_certificate
from ..services.avrs_client import AvrsRequestError
from ..services.avrs_cluster import content_guuid, node_address_of, role_ceiling
from ..services.avrs_media import parse_signed_media
from ..services.member_sources import Membership, Source
from ..services.registry import RegistryUnavailable
from ..stream.channel_key import ChannelKey
from ..stream.errors import DapError, StreamClosedError
from ..stream.identity import NodeAddress, NodeIdentity
from .avrs_structs import (
    AVRS_ERROR,
    AVRS_ERROR_SESSION_NOT_OPENED,
    AVRS_SUCCESS,
    avrs_ch_pkt_content_callback_t,
    avrs_ch_pkt_content_t,
    avrs_ch_t,
    avrs_credentials_t,
    avrs_packet_t,
    avrs_session_content_t,
    avrs_session_t,
    char_ptr,
)
from .loop import LoopThread
from .stream import dap_config_t
from .structs import dap_enc_key_t

log = logging.getLogger("dapsdk.compat")

#: Seconds ``avrs_session_receive_packet`` waits for a packet by default.
DEFAULT_RECEIVE_TIMEOUT = 10.0

_lock = threading.Lock()
_loop: LoopThread | None = None
_node: AvrsNode | None = None
#: The seed's global content-callback list; the node's service runs it for incoming media.
_callbacks = ContentCallbacks()


def _plugin() -> tuple[LoopThread, AvrsNode]:
    if _loop is None or _node is None:
        raise RuntimeError("avrs_plugin_init() has not been called")
    return _loop, _node


def avrs_node() -> AvrsNode:
    """The node ``avrs_plugin_init`` started (its address, listeners, service, directory)."""
    return _plugin()[1]


def avrs_loop() -> LoopThread:
    return _plugin()[0]


# -- init / deinit -------------------------------------------------------------------------------


def avrs_plugin_init(
    a_plugin_config: dap_config_t | NodeConfig | str | Path | None,
    a_error_str: char_ptr | list[str] | None = None,
) -> int:
    """Validate the configuration, then build and start the node it describes (the seed's
    ``int avrs_plugin_init(dap_config_t *, char **)``).

    ``a_plugin_config`` is what ``dap_config_load`` returned (None when the file could not be
    read), a :class:`NodeConfig`, or a path. Returns 0, or -1 with the reason (for a bad value:
    file, section, key, value and what is allowed) stored in ``a_error_str`` (a
    :class:`char_ptr`, the ``&error_msg`` of the seed; a list gets it appended)."""
    code, error = _plugin_init(a_plugin_config)
    if error is not None:
        log.error("avrs_plugin_init: %s", error)
        if isinstance(a_error_str, char_ptr):
            a_error_str.value = error
        elif isinstance(a_error_str, list):
            a_error_str.append(error)
    return code


def _plugin_init(
    a_plugin_config: dap_config_t | NodeConfig | str | Path | None,
) -> tuple[int, str | None]:
    global _loop, _node
    if a_plugin_config is None:
        return -1, "no configuration (dap_config_load could not read the file)"
    with _lock:
        if _loop is not None:
            return -1, "avrs plugin is already initialised"
        try:
            if isinstance(a_plugin_config, NodeConfig):
                config = a_plugin_config
            elif isinstance(a_plugin_config, dap_config_t):
                config = parse_node_config(
                    a_plugin_config.text,
                    source=a_plugin_config.path,
                    base_dir=Path(a_plugin_config.path).parent,
                )
            else:
                config = load_node_config(a_plugin_config)
            node = build_node(config, content_callbacks=_callbacks, register_channels=False)
        except (ConfigError, ValueError, OSError) as exc:
            return -1, str(exc)
        loop = LoopThread()
        try:
            loop.run(node.start())
        except (OSError, DapError, ValueError, RegistryUnavailable) as exc:
            loop.stop()
            return -1, f"cannot start the node: {exc}"
        _loop, _node = loop, node
    log.info("avrs plugin: node %s, roles 0x%04x", node.address, int(node.role))
    return 0, None


def avrs_plugin_deinit() -> None:
    global _loop, _node
    with _lock:
        loop, node = _loop, _node
        _loop = _node = None
    if loop is None or node is None:
        return
    try:
        loop.run(node.close())
    finally:
        loop.stop()


def avrs_ch_init() -> int:
    """Register the channels ``A r C c S`` on the plugin node's dap_stream (0, or -1)."""
    try:
        loop, node = _plugin()
    except RuntimeError as exc:
        log.error("avrs_ch_init: %s", exc)
        return -1
    loop.call(node.service.register, node.stream_node)
    return 0


def avrs_ch_deinit() -> None:
    if _loop is not None and _node is not None:
        _loop.call(_node.service.unregister)


# -- signatures and callbacks --------------------------------------------------------------------


def avrs_ch_tsd_sign_pkt_verify(
    a_avrs_ch: avrs_ch_t | AvrsConnection | None,
    a_tsd_sign: Tsd | bytes | None,
    a_tsd_offset: int,
    a_pkt: bytes | memoryview,
    a_pkt_hdr_size: int,
    a_pkt_args_size: int,
) -> bool:
    """True if the SIGN TSD at ``a_tsd_offset`` of the arguments signs ``a_pkt[:hdr + offset]``."""
    del a_avrs_ch  # the signature carries its public key; the channel adds nothing to check
    if a_tsd_sign is None:
        return False
    return tsd_sign_pkt_verify(a_tsd_sign, a_tsd_offset, a_pkt, a_pkt_hdr_size, a_pkt_args_size)


def avrs_ch_pkt_in_content_add_callback(a_callback: avrs_ch_pkt_content_callback_t) -> int:
    """Run ``a_callback(avrs_ch, content_session, pkt, data_size)`` for every content packet a
    publisher sends to this process's node; a non-SUCCESS return refuses the packet with that code.
    Returns 0, or -1 when ``a_callback`` is not callable."""
    if not callable(a_callback):
        log.error("avrs_ch_pkt_in_content_add_callback: %r is not callable", a_callback)
        return -1

    def adapter(
        conn: AvrsConnection, slot: SessionContent, packet: ContentPacket, size: int
    ) -> int:
        channel = None
        node = _node
        binding = None if node is None else node.service.binding_of(conn)
        if binding is not None:
            channel = binding.channels.get(AvrsChannel.CONTENT)
        avrs_ch = avrs_ch_t(channel, conn.session, conn)
        result = a_callback(
            avrs_ch,
            avrs_session_content_t.from_slot(slot),
            avrs_ch_pkt_content_t.from_packet(packet),
            size,
        )
        return int(result)

    adapter.__name__ = getattr(a_callback, "__name__", "content_callback")
    return _callbacks.add(adapter)


# -- sessions ------------------------------------------------------------------------------------


def avrs_session_create(
    client_id: str | NodeIdentity | AvrsSigner | None,
    content_id: str | bytes,
    *,
    server: str | None = None,
) -> avrs_session_t | None:
    """A session that will watch ``content_id`` (a name such as ``lecture-1``, 32 hex digits or
    16 bytes) as ``client_id`` (a display name; or a NodeIdentity / AvrsSigner to sign with
    instead of the node's key). Nothing is sent before ``avrs_session_authenticate``."""
    try:
        _loop_unused, node = _plugin()
        guuid = content_guuid(content_id)
    except (RuntimeError, ValueError) as exc:
        log.error("avrs_session_create: %s", exc)
        return None
    if isinstance(client_id, NodeIdentity):
        signer, name = AvrsSigner(client_id.private_key), str(client_id.address)
    elif isinstance(client_id, AvrsSigner):
        signer, name = client_id, str(node_address_of(client_id.identity))
    else:
        signer, name = node.signer, client_id or str(node.address)
    label = content_id if isinstance(content_id, str) else content_id.hex()
    return avrs_session_t(name, guuid, label, node.directory.cluster_id, signer, server)


def _credentials(credentials: object, node: AvrsNode) -> tuple[str | None, bytes | None]:
    if credentials is None:
        return None, node.credentials.certificate_der
    if isinstance(credentials, avrs_credentials_t):
        token, cert = credentials.token, credentials.certificate
    elif isinstance(credentials, str) and credentials.lstrip().startswith("-----BEGIN"):
        token, cert = None, credentials.encode()
    elif isinstance(credentials, str):
        token, cert = credentials, None
    elif isinstance(credentials, x509.Certificate | bytes):
        token, cert = None, credentials
    else:
        raise TypeError(f"credentials of type {type(credentials).__name__}")
    der = None
    if cert is not None:
        der = parse_certificate(cert).public_bytes(Encoding.DER)
    return token, der


def _fail(session: avrs_session_t, code: int, detail: str) -> None:
    session.last_error = code
    session.last_error_detail = detail
    log.error("avrs session %s: %s", session.client_id, detail)


def avrs_session_authenticate(session: avrs_session_t, credentials: object) -> bool:
    """Connect, open the session (signed OPEN) and join the cluster with ``credentials``: a signed
    JWT access token, a certificate (PEM/DER/parsed), ``avrs_credentials_t`` with either or both,
    or None for the certificate in the plugin's configuration. False when refused (expired or
    forged token, untrusted certificate, ...); the code is in ``session.last_error``."""
    try:
        loop, node = _plugin()
        token, cert = _credentials(credentials, node)
    except (RuntimeError, TypeError, AuthError, ValueError) as exc:
        _fail(session, AVRS_ERROR, f"bad credentials: {exc}")
        return False
    if token is None and cert is None:
        _fail(session, AVRS_ERROR, "no credentials: give a token or configure a certificate")
        return False

    async def run() -> bool:
        client = session.client
        if client is None or not client.is_active:
            client = await node.connect_client(session.server, signer=session.signer)
            client.content_key = session.content_key
            session.client = client
            await client.open()
        reply = await client.join(session.cluster_id, token=token, certificate=cert)
        if reply.code != AvrsError.SUCCESS:
            _fail(session, reply.code, f"authentication refused: {AvrsRequestError(reply)}")
            await client.close()
            session.client = None
            return False
        return True

    try:
        session.authenticated = loop.run(run())
    except AvrsRequestError as exc:  # OPEN refused
        _fail(session, exc.code, f"session refused: {exc}")
        session.authenticated = False
    except (DapError, ConnectionError, TimeoutError, OSError) as exc:
        _fail(session, AVRS_ERROR, f"cannot reach the node: {exc}")
        session.authenticated = False
    return session.authenticated


def avrs_session_start_stream(session: avrs_session_t) -> int:
    """Select the content and open the stream (CONTENT_ADD, START, SYNC); an AVRS code."""
    client = session.client
    if not session.authenticated or client is None:
        _fail(session, AVRS_ERROR_SESSION_NOT_OPENED, "start_stream before authenticate")
        return AVRS_ERROR_SESSION_NOT_OPENED

    async def run() -> None:
        session.handle = await client.attach(
            session.cluster_id, session.content_id, ContentFlag.STREAMING_OUT
        )
        await client.start()

    return _run_streaming(session, "start_stream", run)


def _run_streaming(
    session: avrs_session_t, what: str, step: Callable[[], Coroutine[Any, Any, None]]
) -> int:
    """Run ``step`` (attach and start) on the compat loop and mark the session streaming. A
    node's refusal keeps its AVRS code; an unreachable or lost node is ``AVRS_ERROR``."""
    loop, _node_unused = _plugin()
    try:
        loop.run(step())
    except AvrsRequestError as exc:
        _fail(session, exc.code, f"{what} refused: {exc}")
        return exc.code
    except (DapError, ConnectionError, TimeoutError) as exc:
        _fail(session, AVRS_ERROR, f"{what} failed: {exc}")
        return AVRS_ERROR
    session.streaming = True
    return AVRS_SUCCESS


def avrs_session_is_active(session: avrs_session_t) -> bool:
    """Streaming, connected, not closed, and not past the end of every flow."""
    client = session.client
    if session.closed or client is None or not session.streaming or not client.is_active:
        return False
    return not session.ended or client.has_pending_content()


def avrs_session_receive_packet(
    session: avrs_session_t, timeout: float = DEFAULT_RECEIVE_TIMEOUT
) -> avrs_packet_t | None:
    """The next content packet (None after ``timeout`` seconds, or when the stream is gone)."""
    client = session.client
    if client is None or session.closed:
        return None
    loop, _node_unused = _plugin()
    try:
        packet = loop.run(client.receive_content(timeout), timeout=timeout + 5.0)
    except (TimeoutError, StreamClosedError, DapError) as exc:
        log.info("avrs_session_receive_packet: %s", exc or "timed out")
        return None
    session.flows_seen.add(packet.flow_id)
    if packet.flags & MediaFlag.END_OF_FLOW:
        session.flows_ended.add(packet.flow_id)
    signed = parse_signed_media(packet.payload)
    if signed is None:
        return avrs_packet_t(
            None, 0, packet.payload, 0, len(packet.payload), len(packet.payload), packet.payload,
            packet.flow_id, packet.seq, packet.pts, int(packet.flags),
        )  # fmt: skip
    return avrs_packet_t(
        signed.sign, signed.tsd_offset, signed.data, signed.header_size, signed.args_size,
        len(signed.data), signed.media, packet.flow_id, packet.seq, packet.pts,
        int(packet.flags), signed.signer,
    )  # fmt: skip


def avrs_session_close(session: avrs_session_t) -> None:
    """CLOSE the session on the node and close its stream."""
    client, session.client = session.client, None
    session.closed = True
    session.streaming = False
    if client is None or _loop is None:
        return
    try:
        _loop.run(client.close())
    except (DapError, ConnectionError, TimeoutError) as exc:
        log.info("avrs_session_close: %s", exc)


# -- security ------------------------------------------------------------------------------------


def _member_identity(member_id: object) -> tuple[bytes | None, str]:
    """(identity hash if known, the subject a token must name)."""
    if isinstance(member_id, NodeIdentity):
        return identity_of(member_id.public_key), str(member_id.address)
    if isinstance(member_id, AvrsSigner):
        return member_id.identity, str(node_address_of(member_id.identity))
    if isinstance(member_id, bytes) and len(member_id) == 32:
        return member_id, str(node_address_of(member_id))
    if isinstance(member_id, NodeAddress):
        return None, str(member_id)
    if isinstance(member_id, str) and member_id:
        return None, member_id
    raise TypeError(f"member_id of type {type(member_id).__name__}")


def avrs_verify_member_credentials(member_id: object, credentials: object) -> bool:
    """Whether ``credentials`` (token, certificate, or ``avrs_credentials_t``) are valid now for
    the member ``member_id`` (identity hash, NodeIdentity, node address, or a token subject)
    according to this node's CA and token issuers."""
    try:
        _loop_unused, node = _plugin()
        identity, subject = _member_identity(member_id)
        token, cert = _credentials(credentials, node)
    except (RuntimeError, TypeError, AuthError, ValueError) as exc:
        log.error("avrs_verify_member_credentials: %s", exc)
        return False
    if token is None and cert is None:
        return False
    now = time.time()
    creds = node.credentials
    try:
        if token is not None:
            if creds.token_verifier is None:
                raise AuthError("this node has no token_issuers")
            creds.token_verifier.verify(token, now=now, subject=subject)
        if cert is not None:
            if creds.certificate_verifier is None:
                raise AuthError("this node has no ca_certificate_file")
            info = creds.certificate_verifier.verify(cert, now=now)
            bound = info.node_address is not None and str(info.node_address) == subject
            if identity is not None and info.public_key is not None:
                bound = identity_of(info.public_key) == identity
            if not bound:
                raise AuthError(f"certificate is for node {info.node_address}, not {subject}")
    except (AuthError, ValueError) as exc:
        log.info("avrs_verify_member_credentials: %s", exc)
        return False
    return True


def _channel_key(key: object) -> ChannelKey:
    if isinstance(key, ChannelKey):
        return ChannelKey(key.key_bytes)
    if isinstance(key, dap_enc_key_t):
        return ChannelKey(key.data)
    if isinstance(key, bytes | bytearray):
        return ChannelKey(bytes(key))
    raise TypeError(f"encryption key of type {type(key).__name__}")


def avrs_encrypt_stream(original_stream: Any, encryption_key: object) -> Any:
    """Seal content with ``encryption_key`` (a ChannelKey, an AES ``dap_enc_key_t`` or 32 bytes)
    end to end; returns ``original_stream`` (or None on bad arguments).

    For an ``avrs_session_t`` the payload of every content packet is sealed by the publisher and
    opened here: servers and relays route the packets but cannot read the media. For a dap_stream
    ``Stream`` (or ``Channel``) the key is set on its content channel ``'c'``; the other end must set
    the same key."""
    try:
        key = _channel_key(encryption_key)
    except (TypeError, ValueError) as exc:
        log.error("avrs_encrypt_stream: %s", exc)
        return None
    if isinstance(original_stream, avrs_session_t):
        original_stream.content_key = key
        if original_stream.client is not None:
            original_stream.client.content_key = key
        return original_stream
    if isinstance(original_stream, Stream):

        def seal() -> None:
            original_stream.channel_new(AvrsChannel.CONTENT).set_encryption(key)

        if _loop is not None:
            _loop.call(seal)
        else:
            seal()
        return original_stream
    if isinstance(original_stream, Channel):
        original_stream.set_encryption(key)
        return original_stream
    log.error("avrs_encrypt_stream: cannot encrypt a %s", type(original_stream).__name__)
    return None


# -- cluster management (the seed's "Управление кластером") -----------------------------------


def avrs_cluster_get_my_role() -> int:
    """This node's roles (``avrs_role_t`` bitmask) from its configuration; 0 before init."""
    return int(_node.role) if _node is not None else 0


def avrs_cluster_add_member(member_id: object, role: int) -> int:
    """Make ``member_id`` (identity hash, NodeIdentity or AvrsSigner) a member of this node's
    cluster with ``role``. Only hosts and operators may, and never above their own role (an
    operator cannot add a HOST: MEMBER_ROLE_EXCEEDED); returns an AVRS code. The role lives until
    MEMBER_REMOVE. It is the node's own API (in-process), so no TOTP code is asked.

    On a host that shares a registry (``redis_url``) the host signs the membership record and
    every node of the cluster, in every process, admits the member. A node that shares a registry
    but cannot sign (not the host) answers CLUSTER_WRONG_REQUEST: membership is changed at the
    host."""
    try:
        loop, node = _plugin()
        identity, _subject = _member_identity(member_id)
    except (RuntimeError, TypeError) as exc:
        log.error("avrs_cluster_add_member: %s", exc)
        return AVRS_ERROR
    if identity is None:
        return int(AvrsError.ARG_INCORRECT)
    if not node.role & (Role.HOST | Role.OPERATOR):
        return int(AvrsError.SIGN_ALIEN)
    if not 0 < role <= 0xFFFF or role & ~int(role_ceiling(node.role)):
        log.error("avrs_cluster_add_member: role 0x%x is above this node's own", role)
        return int(AvrsError.MEMBER_ROLE_EXCEEDED)
    sync = node.sync
    if sync is not None and sync.replicates_membership and not sync.signs_membership:
        log.error("avrs_cluster_add_member: membership is changed at the cluster host")
        return int(AvrsError.CLUSTER_WRONG_REQUEST)
    loop.call(node.directory.add_member, identity, Membership(Role(role), source=Source.LOCAL))
    return AVRS_SUCCESS


def avrs_cluster_monitor_performance() -> dict[str, Any]:
    """Sessions, connections and stream statistics of this node, and under ``cluster`` what the
    registry says about the whole cluster: every live node with its roles, region and last load
    report, members, contents and their carriers (empty before init)."""
    if _loop is None or _node is None:
        return {}
    node = _node

    def collect() -> dict[str, Any]:
        stats = node.stream_node.get_stats()
        return {
            "sessions": len(node.service.sessions),
            "connections": len(node.service.bindings),
            "members": len(node.directory.info.members),
            "contents": len(node.directory.info.contents),
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            "avg_latency_ms": stats.avg_latency,
            "cluster": node.requests.stats() if node.requests is not None else {},
        }

    return _loop.call(collect)
