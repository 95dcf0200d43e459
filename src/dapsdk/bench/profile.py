"""Profiles of benchmark workers: py-spy attached from outside, and a summary of its stacks.

py-spy samples a worker without running code inside it (``--nonblocking``: the worker is not even
paused), so the profiled run stays close to an unprofiled one. Idle samples (the loop waiting in
``epoll``) are left out by py-spy, so percentages are of the time the process was busy.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PROFILERS = ("py-spy", "pyinstrument")
SAMPLE_RATE = 250


def find_py_spy() -> str | None:
    """py-spy next to the running interpreter (the venv), else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


async def start_py_spy(pid: int, output: Path) -> asyncio.subprocess.Process:
    exe = find_py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(SAMPLE_RATE),
        "--format",
        "raw",
        "--nolineno",
        "--nonblocking",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
    )


async def stop_py_spy(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """py-spy ends by itself when its target exits; interrupt it (it then writes) if it lingers."""
    if proc.returncode is not None:
        return
    try:
        await asyncio.wait_for(proc.wait(), grace)
        return
    except TimeoutError:
        proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    samples: int
    self_pct: list[tuple[str, float]]
    """Functions by the share of samples in which they were the innermost Python frame."""
    total_pct: list[tuple[str, float]]
    """Functions by the share of samples in which they were anywhere on the stack."""

    def render(self, title: str, top: int = 15) -> str:
        lines = [f"{title}: {self.samples} busy samples"]
        lines.append("  self%  function (innermost Python frame; includes C calls it makes)")
        lines += [f"  {pct:5.1f}  {name}" for name, pct in self.self_pct[:top]]
        lines.append("  total% function (anywhere on the stack)")
        lines += [f"  {pct:5.1f}  {name}" for name, pct in self.total_pct[:top]]
        return "\n".join(lines)


def summarize_collapsed(path: Path) -> ProfileSummary:
    """Self and inclusive shares per function from py-spy's ``raw`` (collapsed stacks) output."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    if samples == 0:
        return ProfileSummary(0, [], [])

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / samples) for name, n in counter.most_common()]

    return ProfileSummary(samples, shares(self_counts), shares(total_counts))
