"""``avrs bench flood``: legitimate connects while floods hit a node (issue 9).

Processes: one node (``avrs stream-server`` listening on TCP and QUIC), one attacker process per
flood kind (:mod:`dapsdk.bench.flood_attacker`: idle, partial-HELLO, slowloris and replayed-HELLO
TCP sockets, QUIC Initials), and this process, which connects legitimate clients one after
another once the floods are running and measures each ``connect()`` (including a cookie retry).
The node's peak RSS is its ``VmHWM``. RLIMIT_NOFILE is raised for every process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..runtime.endpoint import parse_endpoint
from ..runtime.node import StreamNode
from .flood_attacker import raise_nofile

ROOT = Path(__file__).resolve().parent
#: How the TCP sockets are shared among the kinds of flood.
TCP_MIX = (("idle", 0.4), ("partial", 0.2), ("slowloris", 0.2), ("hello", 0.2))
TARGETS = {"legit_success_ratio": 1.0, "connect_p99_ms": 500.0}


class FloodError(RuntimeError):
    pass


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _start_node(max_connections: int) -> tuple[subprocess.Popen[str], str, str]:
    # --log-level warning: a "refuse" line per dropped flood connection would fill the pipe.
    args = [sys.executable, "-m", "dapsdk.cli", "stream-server", "--ready"]
    args += ["--log-level", "warning"]
    args += ["--listen", "tcp://127.0.0.1:0", "--listen", "quic://127.0.0.1:0"]
    args += ["--max-connections", str(max_connections)]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    urls: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("listening "):
            urls.append(line.split(" ", 1)[1].strip())
        elif line.strip() == "ready":
            break
    else:
        raise FloodError(f"node exited: {proc.stderr.read() if proc.stderr else ''}")
    tcp = next(u for u in urls if u.startswith("tcp://"))
    quic = next(u for u in urls if u.startswith("quic://"))
    return proc, tcp, quic


def _start_attacker(
    kind: str, port: int, count: int, reconnect_delay: float, rate: float
) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "dapsdk.bench.flood_attacker", "--kind", kind]
    args += ["--port", str(port), "--sockets", str(count)]
    args += ["--reconnect-delay", str(reconnect_delay), "--rate", str(rate), "--drip", "1.0"]
    return subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def _read_event(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline()
                if not line:
                    break
                return dict(json.loads(line))
    raise FloodError(f"attacker gave no report within {timeout:.0f} s")


async def _legitimate(url: str, count: int, timeout: float) -> list[float | None]:
    """Connect ``count`` clients one after another; each result is seconds or None (failed)."""
    loop = asyncio.get_running_loop()
    results: list[float | None] = []
    for _ in range(count):
        async with StreamNode() as client:
            start = loop.time()
            try:
                stream = await asyncio.wait_for(client.connect(url), timeout)
            except Exception:
                results.append(None)
                continue
            results.append(loop.time() - start)
            await stream.close()
    return results


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_flood_bench(
    *,
    sockets: int = 10_000,
    quic_initials: int = 6_000,
    clients: int = 100,
    reconnect_delay: float = 0.0,
    quic_rate: float = 1000.0,
    max_connections: int = 10_000,
) -> dict[str, Any]:
    """Run the flood and return the JSON report."""
    raise_nofile(sockets + quic_initials + 4096)
    node, tcp_url, quic_url = _start_node(max_connections)
    attackers: list[subprocess.Popen[str]] = []
    reports: list[dict[str, Any]] = []
    try:
        # One connect before the floods (not counted): lazy imports and first-use costs of this
        # client process are not the node's admission.
        warmup = asyncio.run(_legitimate(tcp_url, 1, 10.0))
        if warmup[0] is None:
            raise FloodError("the node refused a connect before any flood")
        rss_before = _status_kb(node.pid, "VmRSS")
        tcp_port = parse_endpoint(tcp_url).port
        quic_port = parse_endpoint(quic_url).port
        plan: list[tuple[str, int, int]] = []
        left = sockets
        for index, (kind, share) in enumerate(TCP_MIX):
            count = left if index == len(TCP_MIX) - 1 else int(sockets * share)
            left -= count
            if count > 0:
                plan.append((kind, tcp_port, count))
        if quic_initials > 0:
            plan.append(("quic", quic_port, quic_initials))
        for kind, port, count in plan:
            attackers.append(_start_attacker(kind, port, count, reconnect_delay, quic_rate))
        ready_wait = 60.0 + sockets / 100 + quic_initials / max(quic_rate, 1.0)
        for proc in attackers:
            reports.append(_read_event(proc, ready_wait))
        started = time.monotonic()
        times = asyncio.run(_legitimate(tcp_url, clients, 10.0))
        legit_seconds = time.monotonic() - started
        rss_during = _status_kb(node.pid, "VmRSS")
        finals: list[dict[str, Any]] = []
        for proc in attackers:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in attackers:
            try:
                finals.append(_read_event(proc, 30.0))
            except FloodError:
                finals.append({"event": "no report"})
        peak = _status_kb(node.pid, "VmHWM")
    finally:
        for proc in attackers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        node.terminate()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    ok = [t for t in times if t is not None]
    ratio = len(ok) / len(times) if times else 0.0
    p99_ms = 1000 * _percentile(ok, 0.99)
    return {
        "sockets": sockets,
        "quic_initials": quic_initials,
        "legit_attempts": len(times),
        "legit_success_ratio": round(ratio, 4),
        "connect_p50_ms": round(1000 * _percentile(ok, 0.5), 2),
        "connect_p99_ms": round(p99_ms, 2),
        "connect_max_ms": round(1000 * max(ok), 2) if ok else 0.0,
        "legit_seconds": round(legit_seconds, 2),
        "node_rss_before_kb": rss_before,
        "node_rss_during_kb": rss_during,
        "node_peak_rss_kb": peak,
        "reconnect_delay_s": reconnect_delay,
        "attackers": [
            {k: v for k, v in final.items() if k != "event"} | {"ready": ready}
            for final, ready in zip(
                finals, [r.get("connects", r.get("initials_sent")) for r in reports], strict=True
            )
        ],
        "targets": TARGETS,
        "meets_targets": ratio >= TARGETS["legit_success_ratio"]
        and p99_ms <= TARGETS["connect_p99_ms"],
    }
