"""Shared by the long-running commands."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterable


async def wait_for_stop_signal() -> None:
    """Return on the first SIGINT or SIGTERM (graceful shutdown of a serving command)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def announce_and_serve(
    urls: Iterable[str], ready_line: bool, close: Callable[[], Awaitable[None]]
) -> None:
    """Print ``listening URL`` per listener (and ``ready``), serve until SIGINT/SIGTERM, close.

    Tests and scripts read these lines to find the bound ports and the node's pinned identity."""
    for url in urls:
        print(f"listening {url}", flush=True)
    if ready_line:
        print("ready", flush=True)
    try:
        await wait_for_stop_signal()
    finally:
        await close()
