"""Real processes for the media tests: an AVRS node from a sandbox config, and `avrs` client
commands (publish, play, vod) run as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def avrs(*args: str, timeout: float = 90, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an ``avrs`` command to completion."""
    proc = subprocess.run(
        [sys.executable, "-m", "dapsdk.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"avrs {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def avrs_binary(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[bytes]:
    """Run an ``avrs`` command whose stdout is binary (``-o -``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dapsdk.cli", *args],
        capture_output=True, timeout=timeout, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"avrs {' '.join(args)} exited {proc.returncode}: {proc.stderr!r}")
    return proc


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise AssertionError(f"no JSON line in {text!r}")


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dapsdk.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip


def wait_line(proc: subprocess.Popen[str], prefix: str, *, stderr: bool = False) -> str:
    """Read stdout (or stderr) lines until one starts with ``prefix`` (printed when ready)."""
    stream = proc.stderr if stderr else proc.stdout
    assert stream is not None
    for line in stream:
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(
        f"process exited without {prefix!r}: {proc.stderr.read() if proc.stderr else ''}"
    )


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def node_process(config: Path) -> Iterator[str]:
    """``avrs node --config`` in its own process; yields its pinned URL."""
    proc = spawn("node", "--config", str(config), "--ready")
    try:
        url = wait_line(proc, "listening ").split(" ", 1)[1]
        wait_line(proc, "ready")
        yield url
    finally:
        stop(proc)
