"""Seed example "Асинхронная обработка": ready_to_read / ready_to_write callbacks.

ready_to_write sends three messages once the channel is writable; the echo server sends them
back; ready_to_read reads each with dap_stream_ch_packet_read into a 1024-byte buffer.
"""

from __future__ import annotations

import sys
import threading

from _common import server_address

from dapsdk.compat import (
    DAP_STREAM_CH_ID_FILE,
    DAP_STREAM_PKT_TYPE_DATA,
    dap_stream_ch_new,
    dap_stream_ch_packet_read,
    dap_stream_ch_packet_write,
    dap_stream_create,
    dap_stream_deinit,
    dap_stream_init,
    dap_stream_node_addr_t,
    dap_stream_session_create,
    dap_stream_start_async_processing,
)

MESSAGES = [b"first", b"second", b"third"]
done = threading.Event()
received: list[bytes] = []
sent = False


def process_received_data(data: bytes) -> None:
    received.append(data)
    if len(received) == len(MESSAGES):
        done.set()


def ready_to_read_callback(ch, arg):  # type: ignore[no-untyped-def]
    packet_type = [0]
    buffer = bytearray(1024)
    while (bytes_read := dap_stream_ch_packet_read(ch, packet_type, buffer, len(buffer))) > 0:
        print(f"Read {bytes_read} bytes of type {packet_type[0]}")
        process_received_data(bytes(buffer[:bytes_read]))


def ready_to_write_callback(ch, arg):  # type: ignore[no-untyped-def]
    global sent
    if not sent:
        sent = True
        for message in MESSAGES:
            dap_stream_ch_packet_write(ch, DAP_STREAM_PKT_TYPE_DATA, message)


def main() -> int:
    host, port = server_address()
    dap_stream_init()
    session = dap_stream_session_create(dap_stream_node_addr_t(addr=host, port=port))
    stream = dap_stream_create(session) if session else None
    channel = dap_stream_ch_new(stream, DAP_STREAM_CH_ID_FILE) if stream else None
    if stream is None or channel is None:
        print("Failed to set up the stream", file=sys.stderr)
        return -1

    # Register the callbacks, then start asynchronous processing
    channel.ready_to_read = ready_to_read_callback
    channel.ready_to_write = ready_to_write_callback
    dap_stream_start_async_processing(stream)

    if not done.wait(10):
        print(f"only {len(received)} of {len(MESSAGES)} echoes arrived", file=sys.stderr)
        return -1
    assert received == MESSAGES, received
    dap_stream_deinit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
