"""Seed example "Кастомные каналы": a custom channel whose payloads carry their own AES-256 key.

The echo server does not hold the key: it sends the sealed payload back untouched (as a relay
would), and only this client, which holds the key, can open it.
"""

from __future__ import annotations

import sys
import threading

from _common import server_address

from dapsdk.compat import (
    DAP_ENC_KEY_TYPE_AES,
    DAP_STREAM_CH_ID_CUSTOM_ENCRYPTED,
    DAP_STREAM_PKT_TYPE_DATA,
    dap_enc_key_generate,
    dap_stream_ch_new,
    dap_stream_ch_packet_write,
    dap_stream_ch_set_encryption,
    dap_stream_create,
    dap_stream_deinit,
    dap_stream_init,
    dap_stream_node_addr_t,
    dap_stream_session_create,
)

echo = threading.Event()
opened: list[bytes] = []


def on_packet(ch, type, data, data_size, arg):  # type: ignore[no-untyped-def]
    opened.append(bytes(data))
    echo.set()
    return data_size


def main() -> int:
    host, port = server_address()
    dap_stream_init()
    session = dap_stream_session_create(dap_stream_node_addr_t(addr=host, port=port))
    stream = dap_stream_create(session) if session else None
    if stream is None:
        return -1
    encrypted_channel = dap_stream_ch_new(stream, DAP_STREAM_CH_ID_CUSTOM_ENCRYPTED)
    channel_key = dap_enc_key_generate(DAP_ENC_KEY_TYPE_AES, 256)
    dap_stream_ch_set_encryption(encrypted_channel, channel_key)
    encrypted_channel.packet_in = on_packet

    sensitive_data = b"card 4111-1111-1111-1111"
    dap_stream_ch_packet_write(
        encrypted_channel, DAP_STREAM_PKT_TYPE_DATA, sensitive_data, len(sensitive_data)
    )
    if not echo.wait(10):
        return -1
    print(f"relayed back sealed, opened here: {opened[0]!r}")
    dap_stream_deinit()
    return 0 if opened == [sensitive_data] else -1


if __name__ == "__main__":
    sys.exit(main())
