"""Seed use case "Video on Demand": a VoD session on a content from a start position, playback,
every packet's signature verified.

usage: avrs_vod_scenario.py CONFIG CONTENT [START_SECONDS] [TOKEN_FILE]
  CONFIG         a client configuration whose host_address is the AVRS server
  CONTENT        the VoD content (imported with `avrs vod add FILE --content NAME`)
  START_SECONDS  where to start (default 0; playback begins at the keyframe at or before it)
  TOKEN_FILE     a file holding the access token; default $AVRS_TOKEN
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dapsdk.compat import (
    AVRS_QUALITY_AUTO,
    AVRS_SUCCESS,
    avrs_ch_deinit,
    avrs_ch_init,
    avrs_ch_tsd_sign_pkt_verify,
    avrs_create_vod_session,
    avrs_plugin_deinit,
    avrs_plugin_init,
    avrs_session_close,
    avrs_session_is_active,
    avrs_session_receive_packet,
    avrs_session_start_playback,
    avrs_vod_config_t,
    char_ptr,
    dap_config_load,
)


def run(content_id: str, start: float, token: str) -> int:
    # VoD service (the seed's configuration)
    vod_config = avrs_vod_config_t(
        content_id=content_id,
        start_position=start,
        quality_preference=AVRS_QUALITY_AUTO,
    )
    vod_session = avrs_create_vod_session(vod_config)
    if vod_session is None:
        print("VoD session creation failed", file=sys.stderr)
        return 1
    if avrs_session_start_playback(vod_session, token or None) != AVRS_SUCCESS:
        print(f"Playback failed: {vod_session.last_error_detail}", file=sys.stderr)
        return 1
    print("playback started", flush=True)

    packets = media = 0
    first_pts: int | None = None
    while avrs_session_is_active(vod_session):
        packet = avrs_session_receive_packet(vod_session)
        if packet is None:
            break
        if packet.sign is None:  # the node's end-of-flow markers carry no media
            continue
        if not avrs_ch_tsd_sign_pkt_verify(
            None, packet.sign, packet.tsd_offset, packet.data,
            packet.header_size, packet.args_size,
        ):  # fmt: skip
            print("Packet signature verification failed", file=sys.stderr)
            return 1
        packets += 1
        if packet.pts >= 0 and packet.payload:
            media += 1
            first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
    avrs_session_close(vod_session)
    print(f"verified {packets} packets ({media} media), first pts {first_pts} us", flush=True)
    return 0 if media else 1


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    start = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    token = (
        Path(sys.argv[4]).read_text().strip()
        if len(sys.argv) > 4
        else os.environ.get("AVRS_TOKEN", "")
    )
    error_msg = char_ptr()
    if avrs_plugin_init(dap_config_load(sys.argv[1]), error_msg) != 0:
        print(f"AVRS init failed: {error_msg.value}", file=sys.stderr)
        return 1
    avrs_ch_init()
    try:
        return run(sys.argv[2], start, token)
    finally:
        avrs_ch_deinit()
        avrs_plugin_deinit()


if __name__ == "__main__":
    sys.exit(main())
