"""Seed use case "Live Streaming": configure a live stream (HD, encrypted, adaptive), create it and
start broadcasting, from a server node of the cluster.

usage: avrs_live_scenario.py CONFIG [SECONDS]
  CONFIG   a server node configuration (role server, its certificate, host_address)
  SECONDS  how long to broadcast the generated picture and tone (default 10)

The content key that encrypts the media is taken from $AVRS_CONTENT_KEY (64 hex digits) or made
up and printed; viewers need it: `avrs play live_channel --content-key HEX ...`.
"""

from __future__ import annotations

import os
import sys

from dapsdk.compat import (
    AVRS_QUALITY_HD,
    AVRS_STREAM_LIVE,
    AVRS_SUCCESS,
    avrs_ch_deinit,
    avrs_ch_init,
    avrs_create_stream,
    avrs_plugin_deinit,
    avrs_plugin_init,
    avrs_start_broadcasting,
    avrs_stop_broadcasting,
    avrs_stream_config_t,
    avrs_stream_wait,
    char_ptr,
    dap_config_load,
)
from dapsdk.stream.channel_key import ChannelKey


def run(seconds: float) -> int:
    hex_key = os.environ.get("AVRS_CONTENT_KEY")
    key = ChannelKey(bytes.fromhex(hex_key)) if hex_key else ChannelKey.generate()
    print(f"content key {key.key_bytes.hex()}", flush=True)

    # Live stream configuration (the seed's, plus what to broadcast and the shared key)
    config = avrs_stream_config_t(
        type=AVRS_STREAM_LIVE,
        quality=AVRS_QUALITY_HD,
        encryption=True,
        adaptive=True,
        source="testsrc",
        duration=seconds,
        content_key=key,
    )

    stream = avrs_create_stream("live_channel", config)
    if stream is None:
        print("Stream creation failed", file=sys.stderr)
        return 1
    if avrs_start_broadcasting(stream) != AVRS_SUCCESS:
        print(f"Broadcasting failed: {stream.last_error_detail}", file=sys.stderr)
        return 1
    print("broadcasting live_channel", flush=True)

    code = avrs_stream_wait(stream, timeout=seconds + 60)
    avrs_stop_broadcasting(stream)
    if code != AVRS_SUCCESS:
        print(f"Broadcasting stopped: {stream.last_error_detail}", file=sys.stderr)
        return 1
    stats = stream.stats
    assert stats is not None
    print(f"broadcast {stats.packets} packets, {stats.media_us / 1e6:.2f} s of media", flush=True)
    return 0


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    error_msg = char_ptr()
    if avrs_plugin_init(dap_config_load(sys.argv[1]), error_msg) != 0:
        print(f"AVRS init failed: {error_msg.value}", file=sys.stderr)
        return 1
    avrs_ch_init()
    try:
        return run(seconds)
    finally:
        avrs_ch_deinit()
        avrs_plugin_deinit()


if __name__ == "__main__":
    sys.exit(main())
