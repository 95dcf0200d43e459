"""Seed example "Регистрация callback функций": a content callback on an AVRS server node.

The node starts from CONFIG, registers the callback and waits for publishers. Each content packet
carries its media and a CRC-32 of it in the last 4 bytes; the callback checks it and refuses
corrupted packets with AVRS_ERROR_CONTENT_CORRUPTED (the publisher gets that code back).

usage: avrs_callbacks.py CONFIG [PACKETS]   (stop after PACKETS good packets, default 3)
"""

from __future__ import annotations

import sys
import threading
import zlib

from dapsdk.compat import (
    AVRS_ERROR_CONTENT_CORRUPTED,
    AVRS_SUCCESS,
    avrs_ch_deinit,
    avrs_ch_init,
    avrs_ch_pkt_in_content_add_callback,
    avrs_node,
    avrs_plugin_deinit,
    avrs_plugin_init,
    char_ptr,
    dap_config_load,
)

wanted = int(sys.argv[2]) if len(sys.argv) > 2 else 3
processed = []
done = threading.Event()


def verify_content_integrity(data: bytes, size: int) -> bool:
    return size >= 4 and zlib.crc32(data[:-4]).to_bytes(4, "little") == data[-4:]


def process_content_data(data: bytes, size: int, metadata: dict[str, object]) -> None:
    processed.append(size)
    print(f"content {metadata['title']!r}: {size - 4} bytes of media", flush=True)
    if len(processed) >= wanted:
        done.set()


# Callback for incoming content
def content_callback(avrs_ch, content_session, packet, packet_data_size):  # type: ignore[no-untyped-def]
    # Processing of incoming content
    print(f"Received content packet, size: {packet_data_size}", flush=True)

    # Data verification
    if not verify_content_integrity(packet.data, packet_data_size):
        print("Content corrupted, refused", flush=True)
        return AVRS_ERROR_CONTENT_CORRUPTED

    # Content processing
    process_content_data(packet.data, packet_data_size, content_session.metadata)
    return AVRS_SUCCESS


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    error_msg = char_ptr()
    if avrs_plugin_init(dap_config_load(sys.argv[1]), error_msg) != 0:
        print(f"AVRS init failed: {error_msg.value}", file=sys.stderr)
        return 1
    try:
        if avrs_ch_init() != 0:
            print("AVRS channels init failed", file=sys.stderr)
            return 1

        # Callback registration
        if avrs_ch_pkt_in_content_add_callback(content_callback) != 0:
            print("Failed to register content callback", file=sys.stderr)
            return 1

        for url in avrs_node().urls:
            print(f"listening {url}", flush=True)
        print("ready", flush=True)
        if not done.wait(timeout=120):
            print("no content arrived", file=sys.stderr)
            return 1
        print(f"Processed {len(processed)} packets", flush=True)
        return 0
    finally:
        avrs_ch_deinit()
        avrs_plugin_deinit()


if __name__ == "__main__":
    sys.exit(main())
