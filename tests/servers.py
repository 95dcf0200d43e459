"""Helpers that start real server processes for tests (no mocks)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def stream_server(*urls: str, extra_args: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """Run ``avrs stream-server`` (an echo node) in its own process; yield its bound URLs."""
    args = [sys.executable, "-m", "dapsdk.cli", "stream-server", "--ready", *extra_args]
    for url in urls or ("tcp://127.0.0.1:0",):
        args += ["--listen", url]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    bound: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("listening "):
                bound.append(line.split(" ", 1)[1])
            elif line == "ready":
                break
        else:
            raise RuntimeError(f"stream-server exited: {proc.stderr.read() if proc.stderr else ''}")
        yield bound
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
