"""Pieces shared by the benchmark orchestrator and its worker processes."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Bytes per write in the bulk cases (every contender writes the same chunk size).
BULK_CHUNK = 64 * 1024
#: Payload of one small message.
SMALL_SIZE = 100
#: Payload of one latency probe on the control channel (8-byte send time + padding).
CONTROL_SIZE = 32
#: dapsdk channel carrying bulk or small DATA messages.
DATA_CHANNEL = 0x10
#: dapsdk channel carrying the CONTROL latency probes.
CONTROL_CHANNEL = 0x11
#: Probes sent per second on the control channel during the latency case.
CONTROL_RATE = 500

#: What each case measures; ``kind`` selects the worker code on both sides.
KINDS = (
    "tcp-bulk",
    "tls-bulk",
    "ws-bulk",
    "ws-small",
    "dap-bulk",
    "dap-small",
    "dap-control",
)


LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(choice: str = "auto") -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """The event loop for a worker: ``auto`` is uvloop when installed (the same loop for every
    contender), else asyncio's own."""
    if choice == "asyncio":
        return asyncio.new_event_loop, "asyncio"
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError("uvloop is not installed") from None
        return asyncio.new_event_loop, "asyncio"
    return uvloop.new_event_loop, "uvloop"


def run(main: Callable[[], Coroutine[Any, Any, T]], loop: str = "auto") -> T:
    factory, _ = loop_factory(loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def emit(obj: dict[str, Any]) -> None:
    """One JSON object per line on stdout: how workers talk to the orchestrator."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def now_ns() -> int:
    """CLOCK_MONOTONIC: one clock for every process on the machine (Linux), so one-way delays
    between a sender and a receiver process can be measured."""
    return time.monotonic_ns()


async def wait_bounded(aw: Awaitable[T], timeout: float, what: str) -> T:
    try:
        return await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        raise TimeoutError(f"{what} did not happen within {timeout:.1f} s") from None


def write_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A fresh ECDSA P-256 certificate for ``localhost``/127.0.0.1 and its key, as PEM files."""
    from ..runtime.tls import self_signed_certificate, write_pem_pair

    cert, key = self_signed_certificate(
        "localhost", dns_names=("localhost",), ip_addresses=("127.0.0.1",)
    )
    return write_pem_pair(cert, key, directory, "bench")
