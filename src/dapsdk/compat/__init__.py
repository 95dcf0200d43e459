"""The seeds' C API under its seed names: a thin synchronous facade over :mod:`dapsdk.runtime`.

``dap_stream_init()`` starts a background event loop; callbacks run on that loop's thread.
docs/api-mapping.md maps every name to its Pythonic equivalent.
"""

from __future__ import annotations

import logging
import sys
import types

from ..stream.constants import STREAM_KEEPALIVE_TIMEOUT, ChannelId, PacketFlag, PacketType
from .avrs import (
    avrs_ch_deinit,
    avrs_ch_init,
    avrs_ch_pkt_in_content_add_callback,
    avrs_ch_tsd_sign_pkt_verify,
    avrs_cluster_add_member,
    avrs_cluster_get_my_role,
    avrs_cluster_monitor_performance,
    avrs_encrypt_stream,
    avrs_loop,
    avrs_node,
    avrs_plugin_deinit,
    avrs_plugin_init,
    avrs_session_authenticate,
    avrs_session_close,
    avrs_session_create,
    avrs_session_is_active,
    avrs_session_receive_packet,
    avrs_session_start_stream,
    avrs_verify_member_credentials,
)
from .avrs_interactive import (
    avrs_broadcast_t,
    avrs_create_interactive_broadcast,
    avrs_interactive_config_t,
)
from .avrs_media import (
    AVRS_QUALITY_AUTO,
    AVRS_QUALITY_FULL_HD,
    AVRS_QUALITY_HD,
    AVRS_QUALITY_LOW,
    AVRS_QUALITY_SD,
    AVRS_STREAM_INTERACTIVE,
    AVRS_STREAM_LIVE,
    AVRS_STREAM_VOD,
    avrs_create_stream,
    avrs_create_vod_session,
    avrs_quality_t,
    avrs_server_start_content_stream,
    avrs_session_start_playback,
    avrs_start_broadcasting,
    avrs_stop_broadcasting,
    avrs_stream_config_t,
    avrs_stream_t,
    avrs_stream_type_t,
    avrs_stream_wait,
    avrs_vod_config_t,
    avrs_vod_session_t,
)
from .avrs_structs import (
    AVRS_ERROR,
    AVRS_ERROR_ARG_INCORRECT,
    AVRS_ERROR_CLUSTER_NOT_FOUND,
    AVRS_ERROR_CLUSTER_WRONG_REQUEST,
    AVRS_ERROR_CONTENT_CORRUPTED,
    AVRS_ERROR_CONTENT_FLOW_WRONG_ID,
    AVRS_ERROR_CONTENT_INFO_CORRUPTED,
    AVRS_ERROR_CONTENT_NOT_FOUND,
    AVRS_ERROR_CONTENT_UNAVAILABLE,
    AVRS_ERROR_CONTENT_UNAVAILBLE,
    AVRS_ERROR_MEMBER_INFO_PROBLEM,
    AVRS_ERROR_MEMBER_NOT_FOUND,
    AVRS_ERROR_MEMBER_SECURITY_ISSUE,
    AVRS_ERROR_SESSION_ALREADY_OPENED,
    AVRS_ERROR_SESSION_CONTENT_ID_WRONG,
    AVRS_ERROR_SESSION_NOT_OPENED,
    AVRS_ERROR_SESSION_WRONG_REQUEST,
    AVRS_ERROR_SIGN_ALIEN,
    AVRS_ERROR_SIGN_INCORRECT,
    AVRS_ERROR_SIGN_NOT_PRESENT,
    AVRS_ROLE_ALL,
    AVRS_ROLE_BALANCER,
    AVRS_ROLE_CLIENT,
    AVRS_ROLE_HOST,
    AVRS_ROLE_OPERATOR,
    AVRS_ROLE_SERVER,
    AVRS_SUCCESS,
    DAP_AVRS_K_CH_CLUSTER,
    DAP_AVRS_K_CH_CONTENT,
    DAP_AVRS_K_CH_RETCODE,
    DAP_AVRS_K_CH_SESSION,
    DAP_AVRS_K_CH_SIGNAL,
    avrs_ch_pkt_content_callback_t,
    avrs_ch_pkt_content_t,
    avrs_ch_t,
    avrs_credentials_t,
    avrs_packet_t,
    avrs_role_t,
    avrs_session_content_t,
    avrs_session_t,
    char_ptr,
    dap_tsd_t,
)
from .stream import (
    dap_cluster_add_member,
    dap_cluster_create,
    dap_cluster_enable_load_balancing,
    dap_cluster_remove_member,
    dap_cluster_t,
    dap_config_load,
    dap_config_t,
    dap_enc_key_generate,
    dap_sign_create,
    dap_stream_authenticate_node,
    dap_stream_ch_delete,
    dap_stream_ch_new,
    dap_stream_ch_packet_read,
    dap_stream_ch_packet_write,
    dap_stream_ch_set_encryption,
    dap_stream_ch_t,
    dap_stream_create,
    dap_stream_decrypt_packet,
    dap_stream_deinit,
    dap_stream_delete,
    dap_stream_encrypt_packet,
    dap_stream_get_stats,
    dap_stream_init,
    dap_stream_loop,
    dap_stream_node,
    dap_stream_process_keepalive,
    dap_stream_send_keepalive,
    dap_stream_session_create,
    dap_stream_session_delete,
    dap_stream_session_join_cluster,
    dap_stream_session_t,
    dap_stream_start_async_processing,
    dap_stream_stats_t,
    dap_stream_t,
    dap_stream_verify_signature,
)
from .structs import (
    DAP_ENC_KEY_TYPE_AES,
    DAP_ENC_KEY_TYPE_SIG_ED25519,
    dap_enc_key_t,
    dap_sign_t,
    dap_stream_node_addr_t,
    dap_stream_packet_hdr_t,
    dap_stream_packet_t,
    inet_addr,
)

# Channel ids (seed: DAP_STREAM_CH_ID_*)
DAP_STREAM_CH_ID_CONTROL = int(ChannelId.CONTROL)
DAP_STREAM_CH_ID_FILE = int(ChannelId.FILE)
DAP_STREAM_CH_ID_SERVICE = int(ChannelId.SERVICE)
DAP_STREAM_CH_ID_SECURITY = int(ChannelId.SECURITY)
DAP_STREAM_CH_ID_MEDIA = int(ChannelId.MEDIA)
DAP_STREAM_CH_ID_CUSTOM = int(ChannelId.CUSTOM)
#: The seed's own example of a custom id ("Кастомные каналы").
DAP_STREAM_CH_ID_CUSTOM_ENCRYPTED = 0x20

# Packet types and flags (seed: DAP_STREAM_PKT_TYPE_*, DAP_STREAM_PKT_FLAG_*)
DAP_STREAM_PKT_TYPE_DATA = int(PacketType.DATA)
DAP_STREAM_PKT_TYPE_CONTROL = int(PacketType.CONTROL)
DAP_STREAM_PKT_TYPE_KEEPALIVE = int(PacketType.KEEPALIVE)
DAP_STREAM_PKT_TYPE_CLOSE = int(PacketType.CLOSE)
DAP_STREAM_PKT_TYPE_ERROR = int(PacketType.ERROR)
DAP_STREAM_PKT_FLAG_COMPRESSED = int(PacketFlag.COMPRESSED)
DAP_STREAM_PKT_FLAG_ENCRYPTED = int(PacketFlag.ENCRYPTED)
DAP_STREAM_PKT_FLAG_FRAGMENTED = int(PacketFlag.FRAGMENTED)

_DEBUG_LOGGERS = ("dapsdk.stream", "dapsdk.runtime", "dapsdk.compat")
_AVRS_DEBUG_LOGGERS = ("dapsdk.avrs",)


def _set_debug(loggers: tuple[str, ...], enabled: int) -> None:
    for name in loggers:
        logging.getLogger(name).setLevel(logging.DEBUG if enabled else logging.NOTSET)


class _CompatModule(types.ModuleType):
    """Lets ``compat.g_dap_stream_debug_more = 1`` switch debug logging, as the C global does."""

    @property
    def g_dap_stream_debug_more(self) -> int:
        return int(logging.getLogger("dapsdk.stream").level == logging.DEBUG)

    @g_dap_stream_debug_more.setter
    def g_dap_stream_debug_more(self, value: int) -> None:
        _set_debug(_DEBUG_LOGGERS, value)

    @property
    def g_avrs_debug_more(self) -> int:
        return int(logging.getLogger("dapsdk.avrs").level == logging.DEBUG)

    @g_avrs_debug_more.setter
    def g_avrs_debug_more(self, value: int) -> None:
        _set_debug(_AVRS_DEBUG_LOGGERS, value)


sys.modules[__name__].__class__ = _CompatModule

__all__ = [
    "AVRS_ERROR",
    "AVRS_ERROR_ARG_INCORRECT",
    "AVRS_ERROR_CLUSTER_NOT_FOUND",
    "AVRS_ERROR_CLUSTER_WRONG_REQUEST",
    "AVRS_ERROR_CONTENT_CORRUPTED",
    "AVRS_ERROR_CONTENT_FLOW_WRONG_ID",
    "AVRS_ERROR_CONTENT_INFO_CORRUPTED",
    "AVRS_ERROR_CONTENT_NOT_FOUND",
    "AVRS_ERROR_CONTENT_UNAVAILABLE",
    "AVRS_ERROR_CONTENT_UNAVAILBLE",
    "AVRS_ERROR_MEMBER_INFO_PROBLEM",
    "AVRS_ERROR_MEMBER_NOT_FOUND",
    "AVRS_ERROR_MEMBER_SECURITY_ISSUE",
    "AVRS_ERROR_SESSION_ALREADY_OPENED",
    "AVRS_ERROR_SESSION_CONTENT_ID_WRONG",
    "AVRS_ERROR_SESSION_NOT_OPENED",
    "AVRS_ERROR_SESSION_WRONG_REQUEST",
    "AVRS_ERROR_SIGN_ALIEN",
    "AVRS_ERROR_SIGN_INCORRECT",
    "AVRS_ERROR_SIGN_NOT_PRESENT",
    "AVRS_QUALITY_AUTO",
    "AVRS_QUALITY_FULL_HD",
    "AVRS_QUALITY_HD",
    "AVRS_QUALITY_LOW",
    "AVRS_QUALITY_SD",
    "AVRS_ROLE_ALL",
    "AVRS_ROLE_BALANCER",
    "AVRS_ROLE_CLIENT",
    "AVRS_ROLE_HOST",
    "AVRS_ROLE_OPERATOR",
    "AVRS_ROLE_SERVER",
    "AVRS_STREAM_INTERACTIVE",
    "AVRS_STREAM_LIVE",
    "AVRS_STREAM_VOD",
    "AVRS_SUCCESS",
    "DAP_AVRS_K_CH_CLUSTER",
    "DAP_AVRS_K_CH_CONTENT",
    "DAP_AVRS_K_CH_RETCODE",
    "DAP_AVRS_K_CH_SESSION",
    "DAP_AVRS_K_CH_SIGNAL",
    "DAP_ENC_KEY_TYPE_AES",
    "DAP_ENC_KEY_TYPE_SIG_ED25519",
    "DAP_STREAM_CH_ID_CONTROL",
    "DAP_STREAM_CH_ID_CUSTOM",
    "DAP_STREAM_CH_ID_CUSTOM_ENCRYPTED",
    "DAP_STREAM_CH_ID_FILE",
    "DAP_STREAM_CH_ID_MEDIA",
    "DAP_STREAM_CH_ID_SECURITY",
    "DAP_STREAM_CH_ID_SERVICE",
    "DAP_STREAM_PKT_FLAG_COMPRESSED",
    "DAP_STREAM_PKT_FLAG_ENCRYPTED",
    "DAP_STREAM_PKT_FLAG_FRAGMENTED",
    "DAP_STREAM_PKT_TYPE_CLOSE",
    "DAP_STREAM_PKT_TYPE_CONTROL",
    "DAP_STREAM_PKT_TYPE_DATA",
    "DAP_STREAM_PKT_TYPE_ERROR",
    "DAP_STREAM_PKT_TYPE_KEEPALIVE",
    "STREAM_KEEPALIVE_TIMEOUT",
    "avrs_broadcast_t",
    "avrs_ch_deinit",
    "avrs_ch_init",
    "avrs_ch_pkt_content_callback_t",
    "avrs_ch_pkt_content_t",
    "avrs_ch_pkt_in_content_add_callback",
    "avrs_ch_t",
    "avrs_ch_tsd_sign_pkt_verify",
    "avrs_cluster_add_member",
    "avrs_cluster_get_my_role",
    "avrs_cluster_monitor_performance",
    "avrs_create_interactive_broadcast",
    "avrs_create_stream",
    "avrs_create_vod_session",
    "avrs_credentials_t",
    "avrs_encrypt_stream",
    "avrs_interactive_config_t",
    "avrs_loop",
    "avrs_node",
    "avrs_packet_t",
    "avrs_plugin_deinit",
    "avrs_plugin_init",
    "avrs_quality_t",
    "avrs_role_t",
    "avrs_server_start_content_stream",
    "avrs_session_authenticate",
    "avrs_session_close",
    "avrs_session_content_t",
    "avrs_session_create",
    "avrs_session_is_active",
    "avrs_session_receive_packet",
    "avrs_session_start_playback",
    "avrs_session_start_stream",
    "avrs_session_t",
    "avrs_start_broadcasting",
    "avrs_stop_broadcasting",
    "avrs_stream_config_t",
    "avrs_stream_t",
    "avrs_stream_type_t",
    "avrs_stream_wait",
    "avrs_verify_member_credentials",
    "avrs_vod_config_t",
    "avrs_vod_session_t",
    "char_ptr",
    "dap_cluster_add_member",
    "dap_cluster_create",
    "dap_cluster_enable_load_balancing",
    "dap_cluster_remove_member",
    "dap_cluster_t",
    "dap_config_load",
    "dap_config_t",
    "dap_enc_key_generate",
    "dap_enc_key_t",
    "dap_sign_create",
    "dap_sign_t",
    "dap_stream_authenticate_node",
    "dap_stream_ch_delete",
    "dap_stream_ch_new",
    "dap_stream_ch_packet_read",
    "dap_stream_ch_packet_write",
    "dap_stream_ch_set_encryption",
    "dap_stream_ch_t",
    "dap_stream_create",
    "dap_stream_decrypt_packet",
    "dap_stream_deinit",
    "dap_stream_delete",
    "dap_stream_encrypt_packet",
    "dap_stream_get_stats",
    "dap_stream_init",
    "dap_stream_loop",
    "dap_stream_node",
    "dap_stream_node_addr_t",
    "dap_stream_packet_hdr_t",
    "dap_stream_packet_t",
    "dap_stream_process_keepalive",
    "dap_stream_send_keepalive",
    "dap_stream_session_create",
    "dap_stream_session_delete",
    "dap_stream_session_join_cluster",
    "dap_stream_session_t",
    "dap_stream_start_async_processing",
    "dap_stream_stats_t",
    "dap_stream_t",
    "dap_stream_verify_signature",
    "dap_tsd_t",
    "inet_addr",
]
