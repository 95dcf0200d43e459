"""Seed example "Работа с сессиями": create a session, authenticate, start the stream, receive
and verify packets while the session is active, close.

usage: avrs_sessions.py CONFIG CONTENT [TOKEN_FILE]
  CONFIG      a client configuration whose host_address is the AVRS server
  CONTENT     the content to watch (e.g. lecture-1)
  TOKEN_FILE  a file holding the access token (`avrs token issue ...`); default $AVRS_TOKEN
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dapsdk.compat import (
    AVRS_SUCCESS,
    avrs_ch_deinit,
    avrs_ch_init,
    avrs_ch_tsd_sign_pkt_verify,
    avrs_plugin_deinit,
    avrs_plugin_init,
    avrs_session_authenticate,
    avrs_session_close,
    avrs_session_create,
    avrs_session_is_active,
    avrs_session_receive_packet,
    avrs_session_start_stream,
    char_ptr,
    dap_config_load,
)

totals = {"packets": 0, "bytes": 0}


def process_stream_data(data: bytes, data_size: int) -> None:
    totals["packets"] += 1
    totals["bytes"] += data_size
    print(f"packet {totals['packets']}: {data_size} bytes")


def run(content_id: str, credentials: str) -> int:
    avrs_ch = None  # the signature carries its key; the seed passes the channel here

    # Session creation
    session = avrs_session_create("viewer-1", content_id)
    if session is None:
        print("Session creation failed", file=sys.stderr)
        return 1

    # Authentication
    if not avrs_session_authenticate(session, credentials):
        print(f"Session authentication failed: {session.last_error_detail}", file=sys.stderr)
        return 1
    print("Session authenticated", flush=True)

    # Start streaming
    if avrs_session_start_stream(session) != AVRS_SUCCESS:
        print(f"Failed to start stream: {session.last_error_detail}", file=sys.stderr)
        return 1
    print("Stream started", flush=True)

    # Stream processing
    status = 0
    while avrs_session_is_active(session):
        packet = avrs_session_receive_packet(session)
        if packet is None:
            break

        # Packet signature verification
        if not avrs_ch_tsd_sign_pkt_verify(
            avrs_ch, packet.sign, packet.tsd_offset, packet.data,
            packet.header_size, packet.args_size,
        ):  # fmt: skip
            print("Packet signature verification failed", file=sys.stderr)
            status = 1
            break

        # Packet data processing
        process_stream_data(packet.payload, len(packet.payload))

    # Session close
    avrs_session_close(session)
    print(f"Received {totals['packets']} packets, {totals['bytes']} bytes", flush=True)
    return status


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    token = (
        Path(sys.argv[3]).read_text().strip()
        if len(sys.argv) > 3
        else os.environ.get("AVRS_TOKEN", "")
    )
    error_msg = char_ptr()
    if avrs_plugin_init(dap_config_load(sys.argv[1]), error_msg) != 0:
        print(f"AVRS init failed: {error_msg.value}", file=sys.stderr)
        return 1
    avrs_ch_init()
    try:
        return run(sys.argv[2], token)
    finally:
        avrs_ch_deinit()
        avrs_plugin_deinit()


if __name__ == "__main__":
    sys.exit(main())
