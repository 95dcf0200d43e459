"""Seed example "Базовая настройка потока": init, session, stream, cleanup.

Run a server first: ``avrs stream-server --listen tcp://127.0.0.1:8080``, then
``python examples/basic_stream.py tcp://127.0.0.1:8080``.
"""

from __future__ import annotations

import sys

from _common import server_address

from dapsdk.compat import (
    dap_stream_create,
    dap_stream_deinit,
    dap_stream_delete,
    dap_stream_init,
    dap_stream_node_addr_t,
    dap_stream_session_create,
    dap_stream_session_delete,
    inet_addr,
)


def main() -> int:
    host, port = server_address()
    # Initialise the stream system
    if dap_stream_init() != 0:
        print("Failed to initialize stream system", file=sys.stderr)
        return -1

    # Create a session
    node_addr = dap_stream_node_addr_t(addr=inet_addr(host), port=port)
    session = dap_stream_session_create(node_addr)
    if session is None:
        print("Failed to create stream session", file=sys.stderr)
        return -1

    # Create the stream (connects and authenticates the node)
    stream = dap_stream_create(session)
    if stream is None:
        print("Failed to create stream", file=sys.stderr)
        return -1

    # Main work with the stream
    print(
        f"stream {stream.id} to node {stream.node}: authorized={stream.authorized} primary={stream.primary}"
    )
    print(f"session {session.id} active={session.is_active}")

    # Cleanup
    dap_stream_delete(stream)
    dap_stream_session_delete(session)
    dap_stream_deinit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
