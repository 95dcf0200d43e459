"""Seed example "Управление кластером", run against a cluster that shares a Redis registry.

The node of CONFIG (with ``redis_url``) starts as the plugin; by its role it then:

- HOST: adds MEMBER (a 64-hex-digit identity) as a server. The host signs the membership record
  and every node of the cluster, on every machine, admits the member;
- OPERATOR: prints the cluster's performance (every node's roles and load);
- SERVER: may only run server operations (this example prints that and stops).

usage: avrs_cluster_management.py CONFIG MEMBER
"""

from __future__ import annotations

import sys

from dapsdk.compat import (
    AVRS_ROLE_HOST,
    AVRS_ROLE_OPERATOR,
    AVRS_ROLE_SERVER,
    avrs_cluster_add_member,
    avrs_cluster_get_my_role,
    avrs_cluster_monitor_performance,
    avrs_plugin_deinit,
    avrs_plugin_init,
    char_ptr,
    dap_config_load,
)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        new_member_id = bytes.fromhex(sys.argv[2])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = dap_config_load(sys.argv[1])
    error_msg = char_ptr()
    if avrs_plugin_init(config, error_msg) != 0:
        print(f"AVRS init failed: {error_msg.value}", file=sys.stderr)
        return 1
    try:
        # The role in the cluster
        my_role = avrs_cluster_get_my_role()
        print(f"my role 0x{my_role:04x}")

        # What the role allows
        if my_role & AVRS_ROLE_HOST:
            # every host operation
            result = avrs_cluster_add_member(new_member_id, AVRS_ROLE_SERVER)
            print(f"add member {new_member_id.hex()} as server: code 0x{result:08x}")
            if result != 0:
                return 1
        elif my_role & AVRS_ROLE_OPERATOR:
            # the operator's restricted rights
            performance = avrs_cluster_monitor_performance()
            for address, node in performance["cluster"]["nodes"].items():
                print(f"node {address} roles 0x{node['roles']:04x} load {node['load']}")
        elif my_role & AVRS_ROLE_SERVER:
            print("server operations only")

        cluster = avrs_cluster_monitor_performance()["cluster"]
        print(
            f"cluster {cluster['cluster']!r} on {cluster['registry']}: "
            f"{len(cluster['nodes'])} live node(s), {len(cluster['members'])} member(s)"
        )
    finally:
        avrs_plugin_deinit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
