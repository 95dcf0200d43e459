"""Seed example "Мониторинг и отладка": debug logging, stats, channel states."""

from __future__ import annotations

import logging
import sys

from _common import server_address

import dapsdk.compat as dap
from dapsdk.compat import (
    DAP_STREAM_CH_ID_MEDIA,
    DAP_STREAM_CH_ID_SERVICE,
    DAP_STREAM_PKT_TYPE_DATA,
    dap_stream_ch_new,
    dap_stream_ch_packet_write,
    dap_stream_create,
    dap_stream_deinit,
    dap_stream_get_stats,
    dap_stream_init,
    dap_stream_node_addr_t,
    dap_stream_send_keepalive,
    dap_stream_session_create,
)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    host, port = server_address()
    # Enable debugging
    dap.g_dap_stream_debug_more = 1
    dap_stream_init()
    session = dap_stream_session_create(dap_stream_node_addr_t(addr=host, port=port))
    stream = dap_stream_create(session) if session else None
    if stream is None:
        return -1
    for ch_id in (DAP_STREAM_CH_ID_SERVICE, DAP_STREAM_CH_ID_MEDIA):
        ch = dap_stream_ch_new(stream, ch_id)
        dap_stream_ch_packet_write(ch, DAP_STREAM_PKT_TYPE_DATA, b"x" * 1000)
    dap_stream_send_keepalive(stream)

    stats = dap_stream_get_stats(stream)
    print(f"Packets sent: {stats.packets_sent}")
    print(f"Packets received: {stats.packets_received}")
    print(f"Active channels: {stats.active_channels}")
    print(f"Average latency: {stats.avg_latency:.2f} ms")

    # Channel states
    for ch in stream.channels.values():
        if ch.is_active:
            print(f"Channel {ch.id}: active, seq_id: {ch.seq_id}")
    dap_stream_deinit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
