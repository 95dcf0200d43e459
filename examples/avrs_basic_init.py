"""Seed example "Базовая инициализация": load the configuration, start the plugin, register the
AVRS channels, work, then shut down in reverse order.

usage: avrs_basic_init.py [CONFIG]   (default: $AVRS_CONFIG or avrs_config.cfg)
"""

from __future__ import annotations

import os
import sys

from dapsdk.compat import (
    avrs_ch_deinit,
    avrs_ch_init,
    avrs_cluster_get_my_role,
    avrs_node,
    avrs_plugin_deinit,
    avrs_plugin_init,
    char_ptr,
    dap_config_load,
)


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AVRS_CONFIG", "avrs_config.cfg")
    # Plugin initialisation
    config = dap_config_load(path)
    error_msg = char_ptr()

    if avrs_plugin_init(config, error_msg) != 0:
        print(f"AVRS init failed: {error_msg.value}", file=sys.stderr)
        return -1

    # Channel initialisation
    if avrs_ch_init() != 0:
        print("AVRS channels init failed", file=sys.stderr)
        avrs_plugin_deinit()
        return -1

    # Main work of the application
    node = avrs_node()
    registered = node.stream_node.channel_procs
    channels = " ".join(ch for ch in "ArCcS" if ord(ch) in registered)
    print(f"AVRS node {node.address}, role 0x{avrs_cluster_get_my_role():04x}")
    for url in node.urls:
        print(f"listening {url}")
    print(f"AVRS channels: {channels}")

    # Deinitialisation
    avrs_ch_deinit()
    avrs_plugin_deinit()
    print("AVRS deinitialised")
    return 0


if __name__ == "__main__":
    sys.exit(0 if main() == 0 else 1)
