"""Every dap_stream function the seed names, under its seed name, as a synchronous facade.

Return conventions follow the seed: ``int`` functions return 0 on success and -1 on error;
pointer-returning functions return the object or ``None``; ``bool`` functions return bool. The
reason of a failure is logged on the ``dapsdk.compat`` logger. The async API in
:mod:`dapsdk.runtime` is the Pythonic equivalent (docs/api-mapping.md maps every name).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..runtime.channel import Channel
from ..runtime.cluster import Cluster
from ..runtime.node import StreamNode
from ..runtime.session import Session
from ..runtime.stream import Stream, StreamStats
from ..stream.channel_key import ChannelKey
from ..stream.config import StreamConfig
from ..stream.constants import PacketFlag
from ..stream.errors import DapError, DecryptError
from ..stream.identity import NodeAddress, NodeIdentity
from .loop import LoopThread
from .structs import (
    DAP_ENC_KEY_TYPE_AES,
    DAP_ENC_KEY_TYPE_SIG_ED25519,
    dap_enc_key_t,
    dap_sign_t,
    dap_stream_node_addr_t,
    dap_stream_packet_t,
)

log = logging.getLogger("dapsdk.compat")

dap_stream_t = Stream
dap_stream_session_t = Session
dap_cluster_t = Cluster
dap_stream_stats_t = StreamStats

_lock = threading.Lock()
_loop: LoopThread | None = None
_node: StreamNode | None = None


def _runtime() -> tuple[LoopThread, StreamNode]:
    if _loop is None or _node is None:
        raise RuntimeError("dap_stream_init() has not been called")
    return _loop, _node


def dap_stream_node() -> StreamNode:
    """The node the compat API runs (to listen, register channel handlers, or read its address)."""
    return _runtime()[1]


def dap_stream_loop() -> LoopThread:
    return _runtime()[0]


# -- init / deinit -------------------------------------------------------------------------------


def dap_stream_init(
    identity: NodeIdentity | None = None, config: StreamConfig | None = None
) -> int:
    """Start the stream system: a background event loop and a node with ``identity`` (generated
    when None). Returns 0, or -1 if it is already initialised."""
    global _loop, _node
    with _lock:
        if _loop is not None:
            log.error("dap_stream_init: already initialised")
            return -1
        loop = LoopThread()
        node = StreamNode(identity, config)
        loop.run(node.start())
        _loop, _node = loop, node
    return 0


def dap_stream_deinit() -> None:
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


# -- sessions and streams ------------------------------------------------------------------------


def dap_stream_session_create(
    a_node_addr: dap_stream_node_addr_t | NodeAddress | str,
) -> Session | None:
    """A session for a node: ``dap_stream_node_addr_t(addr, port)``, a URL, or a known NodeAddress."""
    loop, node = _runtime()
    try:
        if isinstance(a_node_addr, dap_stream_node_addr_t):
            return loop.call(node.session_create, a_node_addr.to_endpoint())
        return loop.call(node.session_create, a_node_addr)
    except (ValueError, DapError) as exc:
        log.error("dap_stream_session_create: %s", exc)
        return None


def dap_stream_session_delete(a_session: Session) -> None:
    loop, node = _runtime()
    if a_session.cluster is not None:
        a_session.cluster.leave(a_session)
    loop.call(node.session_delete, a_session)


def dap_stream_create(a_session: Session) -> Stream | None:
    """Connect the session to its node and authenticate it (reusing a pooled stream)."""
    loop, node = _runtime()
    try:
        return loop.run(node.stream_create(a_session))
    except (OSError, ValueError, DapError, TimeoutError) as exc:
        log.error("dap_stream_create: %s", exc)
        return None


def dap_stream_delete(a_stream: Stream) -> None:
    loop, _ = _runtime()
    if loop.in_loop_thread:
        a_stream.driver.core.close()
        a_stream.driver.pump()
        return
    loop.run(a_stream.close())


def dap_stream_get_stats(a_stream: Stream) -> StreamStats:
    loop, _ = _runtime()
    return loop.call(a_stream.get_stats)


def dap_stream_start_async_processing(a_stream: Stream) -> int:
    loop, _ = _runtime()
    if not a_stream.is_active:
        return -1
    loop.call(a_stream.start_async_processing)
    return 0


def dap_stream_send_keepalive(a_stream: Stream) -> None:
    loop, _ = _runtime()
    if a_stream.is_active:
        loop.call(a_stream.send_keepalive)


def dap_stream_process_keepalive(a_stream: Stream) -> None:
    loop, _ = _runtime()
    loop.call(a_stream.process_keepalive)


# -- channels ------------------------------------------------------------------------------------


class dap_stream_ch_t:
    """A channel with the seed's C-style callbacks.

    ``packet_in(ch, type, data, data_size, arg) -> int`` (bytes processed; the rest stays readable),
    ``packet_out(ch, type, data, data_size, arg)``, ``ready_to_read(ch, arg)``,
    ``ready_to_write(ch, arg)``. ``callback_arg`` is passed as ``arg``. Callbacks run on the
    stream's loop thread.
    """

    def __init__(self, channel: Channel) -> None:
        self.ch = channel
        self.callback_arg: Any = None
        self._packet_in: Callable[..., Any] | None = None
        self._packet_out: Callable[..., Any] | None = None
        self._ready_to_read: Callable[..., Any] | None = None
        self._ready_to_write: Callable[..., Any] | None = None

    # seed fields
    @property
    def type(self) -> int:
        return self.ch.type

    @property
    def id(self) -> int:
        return self.ch.id

    @property
    def stream(self) -> Stream:
        return self.ch.stream

    @property
    def session(self) -> Session | None:
        return self.ch.session

    @property
    def is_active(self) -> bool:
        return self.ch.is_active

    @property
    def seq_id(self) -> int:
        return self.ch.seq_id

    @property
    def buf_size(self) -> int:
        return self.ch.buf_size

    @property
    def packet_in(self) -> Callable[..., Any] | None:
        return self._packet_in

    @packet_in.setter
    def packet_in(self, fn: Callable[..., Any] | None) -> None:
        self._packet_in = fn
        if fn is None:
            self.ch.packet_in = None
        else:
            self.ch.packet_in = lambda _ch, t, data, _arg: fn(
                self, t, data, len(data), self.callback_arg
            )

    @property
    def packet_out(self) -> Callable[..., Any] | None:
        return self._packet_out

    @packet_out.setter
    def packet_out(self, fn: Callable[..., Any] | None) -> None:
        self._packet_out = fn
        if fn is None:
            self.ch.packet_out = None
        else:
            self.ch.packet_out = lambda _ch, t, data, _arg: fn(
                self, t, data, len(data), self.callback_arg
            )

    @property
    def ready_to_read(self) -> Callable[..., Any] | None:
        return self._ready_to_read

    @ready_to_read.setter
    def ready_to_read(self, fn: Callable[..., Any] | None) -> None:
        self._ready_to_read = fn
        self.ch.ready_to_read = (
            None if fn is None else (lambda _ch, _arg: fn(self, self.callback_arg))
        )

    @property
    def ready_to_write(self) -> Callable[..., Any] | None:
        return self._ready_to_write

    @ready_to_write.setter
    def ready_to_write(self, fn: Callable[..., Any] | None) -> None:
        self._ready_to_write = fn
        self.ch.ready_to_write = (
            None if fn is None else (lambda _ch, _arg: fn(self, self.callback_arg))
        )

    def __repr__(self) -> str:
        return f"<dap_stream_ch_t id=0x{self.id:02x} active={self.is_active}>"


def dap_stream_ch_new(a_stream: Stream, a_type: int) -> dap_stream_ch_t | None:
    """Open the channel with id ``a_type`` on the stream."""
    loop, _ = _runtime()
    try:
        return dap_stream_ch_t(loop.call(a_stream.channel_new, a_type))
    except (ValueError, DapError) as exc:
        log.error("dap_stream_ch_new(0x%x): %s", a_type, exc)
        return None


def dap_stream_ch_delete(a_ch: dap_stream_ch_t) -> None:
    loop, _ = _runtime()
    loop.call(a_ch.ch.close)


def dap_stream_ch_packet_write(
    a_ch: dap_stream_ch_t,
    a_type: int,
    a_data: bytes | bytearray | memoryview | str,
    a_data_size: int | None = None,
) -> int:
    """Send a packet of type DATA or CONTROL; 0 on success, -1 on error.

    From another thread this waits while the channel is above its high-water mark (backpressure);
    from a callback on the loop thread it queues without waiting.
    """
    loop, _ = _runtime()
    data = a_data.encode() if isinstance(a_data, str) else a_data
    if a_data_size is not None:
        if not 0 <= a_data_size <= len(data):
            log.error(
                "dap_stream_ch_packet_write: a_data_size %d outside 0..%d", a_data_size, len(data)
            )
            return -1
        data = memoryview(data)[:a_data_size]
    try:
        if loop.in_loop_thread:
            a_ch.ch.write_nowait(a_type, data)
        else:
            loop.run(a_ch.ch.write(a_type, bytes(data)))
    except (ValueError, DapError, TimeoutError) as exc:
        log.error("dap_stream_ch_packet_write: %s", exc)
        return -1
    return 0


def dap_stream_ch_packet_read(
    a_ch: dap_stream_ch_t,
    a_type: list[int] | None,
    a_data: bytearray,
    a_data_max_size: int | None = None,
) -> int:
    """Copy the oldest unread message into ``a_data``; return its size (0 when none or on error).

    ``a_type`` emulates the C out-parameter: ``a_type[0]`` receives the packet type. A message
    larger than ``a_data_max_size`` (default ``len(a_data)``) is not taken: it stays queued (no data
    is lost) and 0 is returned.
    """
    loop, _ = _runtime()
    limit = len(a_data) if a_data_max_size is None else min(a_data_max_size, len(a_data))

    def take() -> tuple[int, bytes] | None:
        pending = a_ch.ch._pending
        if not pending:
            return None
        if len(pending[0].data) > limit:
            log.error(
                "dap_stream_ch_packet_read: message of %d bytes exceeds buffer of %d",
                len(pending[0].data),
                limit,
            )
            return None
        return a_ch.ch.read()

    item = loop.call(take)
    if item is None:
        return 0
    packet_type, data = item
    a_data[: len(data)] = data
    if a_type is not None:
        if a_type:
            a_type[0] = packet_type
        else:
            a_type.append(packet_type)
    return len(data)


# -- security ------------------------------------------------------------------------------------


def dap_enc_key_generate(a_type: int, a_size_bits: int = 256) -> dap_enc_key_t:
    """``DAP_ENC_KEY_TYPE_AES`` with 256 bits (AES-256-GCM), or ``DAP_ENC_KEY_TYPE_SIG_ED25519``."""
    if a_type == DAP_ENC_KEY_TYPE_AES:
        if a_size_bits != 256:
            raise ValueError(
                f"dap_enc_key_generate: AES key size {a_size_bits} bits; only 256 is supported"
            )
        return dap_enc_key_t(DAP_ENC_KEY_TYPE_AES, ChannelKey.generate().key_bytes)
    if a_type == DAP_ENC_KEY_TYPE_SIG_ED25519:
        return dap_enc_key_t(DAP_ENC_KEY_TYPE_SIG_ED25519, identity=NodeIdentity.generate())
    raise ValueError(
        f"dap_enc_key_generate: key type 0x{a_type:02x} unsupported "
        "(DAP_ENC_KEY_TYPE_AES=0x01, DAP_ENC_KEY_TYPE_SIG_ED25519=0x20)"
    )


def dap_sign_create(
    a_key: dap_enc_key_t | NodeIdentity, a_data: bytes, a_data_size: int | None = None
) -> dap_sign_t:
    """Sign ``a_data`` with an Ed25519 key (a signing ``dap_enc_key_t`` or a NodeIdentity)."""
    identity = a_key if isinstance(a_key, NodeIdentity) else a_key.identity
    if identity is None:
        raise ValueError("dap_sign_create: the key is not a signing key")
    data = a_data if a_data_size is None else a_data[:a_data_size]
    return dap_sign_t(DAP_ENC_KEY_TYPE_SIG_ED25519, identity.public_key, identity.sign(bytes(data)))


def dap_stream_verify_signature(a_stream: Stream, a_sign: dap_sign_t) -> bool:
    """True when ``a_sign`` is the stream peer's signature over this stream's binding
    (``stream.binding``): proof that the peer holds its key *for this stream* (not replayed)."""
    if not a_stream.is_active:
        return False
    if a_sign.public_key != a_stream.peer.public_key:
        return False
    return a_sign.verify(a_stream.binding)


def dap_stream_authenticate_node(
    a_stream: Stream, a_node_addr: NodeAddress | dap_stream_node_addr_t
) -> bool:
    """True when the stream's handshake proved the peer is node ``a_node_addr``."""
    expected = a_node_addr.node if isinstance(a_node_addr, dap_stream_node_addr_t) else a_node_addr
    return bool(
        a_stream.authorized
        and a_stream.is_active
        and expected is not None
        and a_stream.peer.address == expected
    )


def dap_stream_ch_set_encryption(a_ch: dap_stream_ch_t, a_key: dap_enc_key_t | None) -> int:
    """Seal the channel's payloads end to end with an AES-256 key (None turns it off)."""
    loop, _ = _runtime()
    if a_key is not None and a_key.type != DAP_ENC_KEY_TYPE_AES:
        log.error("dap_stream_ch_set_encryption: key type 0x%02x is not AES", a_key.type)
        return -1
    loop.call(a_ch.ch.set_encryption, None if a_key is None else ChannelKey(a_key.data))
    return 0


def dap_stream_encrypt_packet(a_packet: dap_stream_packet_t, a_key: dap_enc_key_t) -> int:
    """Seal the packet's data with a channel key; sets ENCRYPTED and the new size."""
    if a_key.type != DAP_ENC_KEY_TYPE_AES or a_packet.hdr.flags & PacketFlag.ENCRYPTED:
        return -1
    key = ChannelKey(a_key.data)
    a_packet.data = key.seal(a_packet.hdr.ch_id, a_packet.hdr.type, a_packet.data)
    a_packet.hdr.flags |= PacketFlag.ENCRYPTED
    a_packet.hdr.size = len(a_packet.data)
    return 0


def dap_stream_decrypt_packet(a_packet: dap_stream_packet_t, a_key: dap_enc_key_t) -> int:
    """Open a packet sealed by :func:`dap_stream_encrypt_packet`; -1 if it does not authenticate."""
    if a_key.type != DAP_ENC_KEY_TYPE_AES or not a_packet.hdr.flags & PacketFlag.ENCRYPTED:
        return -1
    try:
        plain = ChannelKey(a_key.data).open(a_packet.hdr.ch_id, a_packet.hdr.type, a_packet.data)
    except DecryptError as exc:
        log.error("dap_stream_decrypt_packet: %s", exc)
        return -1
    a_packet.data = plain
    a_packet.hdr.flags &= ~PacketFlag.ENCRYPTED
    a_packet.hdr.size = len(plain)
    return 0


# -- clusters ------------------------------------------------------------------------------------


def dap_cluster_create(a_name: str) -> Cluster | None:
    try:
        return Cluster(a_name)
    except ValueError as exc:
        log.error("dap_cluster_create: %s", exc)
        return None


def _member_args(addr: dap_stream_node_addr_t | NodeAddress | str) -> dict[str, Any]:
    if isinstance(addr, NodeAddress):
        return {"address": addr}
    if isinstance(addr, str):
        addr = dap_stream_node_addr_t(url=addr)
    return {
        "address": addr.node,
        "endpoint": addr.to_endpoint() if (addr.url or addr.addr) else None,
    }


def dap_cluster_add_member(
    a_cluster: Cluster, a_member_addr: dap_stream_node_addr_t | NodeAddress | str
) -> int:
    try:
        a_cluster.add_member(**_member_args(a_member_addr))
    except ValueError as exc:
        log.error("dap_cluster_add_member: %s", exc)
        return -1
    return 0


def dap_cluster_remove_member(
    a_cluster: Cluster, a_member_addr: dap_stream_node_addr_t | NodeAddress | str
) -> int:
    try:
        a_cluster.remove_member(**_member_args(a_member_addr))
    except (ValueError, LookupError) as exc:
        log.error("dap_cluster_remove_member: %s", exc)
        return -1
    return 0


def dap_cluster_enable_load_balancing(a_cluster: Cluster, a_enable: bool) -> None:
    a_cluster.enable_load_balancing(bool(a_enable))


def dap_stream_session_join_cluster(a_session: Session, a_cluster: Cluster) -> int:
    """Attach the session to the cluster; with balancing on, the cluster picks its member node."""
    if a_session.stream is not None and a_cluster.balancer.enabled:
        log.error(
            "dap_stream_session_join_cluster: join before dap_stream_create so the balancer can place the session"
        )
        return -1
    a_cluster.join(a_session)
    return 0


# -- config --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class dap_config_t:
    """A configuration file as the seed's ``dap_config_load`` gives it: read, not yet judged.
    ``avrs_plugin_init`` validates it (every problem comes back as its error string)."""

    path: str
    text: str


def dap_config_load(a_path: str | os.PathLike[str]) -> dap_config_t | None:
    """Read an INI configuration file, as the seed's C: a config, or None only when the file
    cannot be read (logged). Its values are checked by ``avrs_plugin_init``."""
    try:
        with open(a_path, encoding="utf-8") as fh:
            text = fh.read(MAX_CONFIG_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        log.error("dap_config_load: cannot read %s: %s", a_path, exc)
        return None
    if len(text) > MAX_CONFIG_BYTES:
        log.error("dap_config_load: %s is larger than %d bytes", a_path, MAX_CONFIG_BYTES)
        return None
    return dap_config_t(os.fspath(a_path), text)


#: Largest configuration file ``dap_config_load`` reads.
MAX_CONFIG_BYTES = 1024 * 1024
