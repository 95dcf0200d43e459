"""Seed example "Работа с каналами": a packet_in handler on the CONTROL channel, then a write.

The server (``avrs stream-server``) echoes the message back, so the handler sees it.
"""

from __future__ import annotations

import sys
import threading

from _common import server_address

from dapsdk.compat import (
    DAP_STREAM_CH_ID_CONTROL,
    DAP_STREAM_PKT_TYPE_CONTROL,
    DAP_STREAM_PKT_TYPE_DATA,
    dap_stream_ch_new,
    dap_stream_ch_packet_write,
    dap_stream_create,
    dap_stream_deinit,
    dap_stream_init,
    dap_stream_node_addr_t,
    dap_stream_session_create,
)

received = threading.Event()


def process_data_packet(data: bytes) -> None:
    print(f"data: {data.decode()}")


def process_control_packet(data: bytes) -> None:
    print(f"control: {data.decode()}")


def packet_handler(ch, type, data, data_size, arg):  # type: ignore[no-untyped-def]
    """Callback for incoming packets (seed signature)."""
    print(f"Received packet type: {type}, size: {data_size}")
    if type == DAP_STREAM_PKT_TYPE_DATA:
        process_data_packet(data)
    elif type == DAP_STREAM_PKT_TYPE_CONTROL:
        process_control_packet(data)
    else:
        print(f"Unknown packet type: {type}", file=sys.stderr)
        return 0
    received.set()
    return data_size  # bytes processed


def main() -> int:
    host, port = server_address()
    dap_stream_init()
    session = dap_stream_session_create(dap_stream_node_addr_t(addr=host, port=port))
    stream = dap_stream_create(session) if session else None
    if stream is None:
        print("Failed to create stream", file=sys.stderr)
        return -1

    channel = dap_stream_ch_new(stream, DAP_STREAM_CH_ID_CONTROL)
    if channel is None:
        print("Failed to create channel", file=sys.stderr)
        return -1
    channel.packet_in = packet_handler

    message = "Hello, World!"
    if dap_stream_ch_packet_write(channel, DAP_STREAM_PKT_TYPE_DATA, message, len(message)) != 0:
        print("Failed to send packet", file=sys.stderr)
        return -1
    if not received.wait(10):
        print("no echo within 10 s", file=sys.stderr)
        return -1
    dap_stream_deinit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
