"""Shared by the examples: where the server is (argv[1] or $DAP_STREAM_SERVER)."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit


def server_address() -> tuple[str, int]:
    url = (
        sys.argv[1]
        if len(sys.argv) > 1
        else os.environ.get("DAP_STREAM_SERVER", "tcp://127.0.0.1:8080")
    )
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    if parts.hostname is None or parts.port is None:
        raise SystemExit(
            f"usage: {sys.argv[0]} tcp://HOST:PORT (start one with `avrs stream-server`)"
        )
    return parts.hostname, parts.port
