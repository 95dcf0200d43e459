"""Seed example "Работа с кластерами": a cluster, members, a session joining it, load balancing.

With balancing on, each session that joins is placed on the least-loaded member, and the stream
is then created to that member.
"""

from __future__ import annotations

import sys

from _common import server_address

from dapsdk.compat import (
    dap_cluster_add_member,
    dap_cluster_create,
    dap_cluster_enable_load_balancing,
    dap_cluster_remove_member,
    dap_stream_create,
    dap_stream_deinit,
    dap_stream_init,
    dap_stream_node_addr_t,
    dap_stream_session_create,
    dap_stream_session_join_cluster,
)


def main() -> int:
    host, port = server_address()
    dap_stream_init()
    cluster = dap_cluster_create("my_cluster")
    if cluster is None:
        print("Failed to create cluster", file=sys.stderr)
        return -1

    member1 = dap_stream_node_addr_t(addr=host, port=port)
    member2 = dap_stream_node_addr_t(addr="127.0.0.2", port=port)  # a second (unused) member
    dap_cluster_add_member(cluster, member1)
    dap_cluster_add_member(cluster, member2)
    dap_cluster_remove_member(cluster, member2)  # it goes away again; only member1 can serve
    dap_cluster_enable_load_balancing(cluster, True)

    session = dap_stream_session_create(member1)
    if session is None or dap_stream_session_join_cluster(session, cluster) != 0:
        print("Failed to join the cluster", file=sys.stderr)
        return -1
    stream = dap_stream_create(session)
    if stream is None:
        print("Failed to create stream", file=sys.stderr)
        return -1
    print(
        f"cluster {cluster.name!r}: {cluster.members_count} member(s); session {session.id} "
        f"placed on member {session.cluster_member_id}, node {stream.node}"
    )
    dap_stream_deinit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
