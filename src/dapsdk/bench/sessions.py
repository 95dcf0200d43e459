"""``avrs bench sessions``: many concurrent authenticated sessions on one node process.

Three kinds of processes (``python -m dapsdk.bench.sessions --role ...``):

* ``node``: one :class:`StreamNode` listening on loopback with the default stream config (so
  keepalive runs as configured); it prints its URL and ``ready`` and serves until stdin closes.
* ``client``: a worker that opens ``--count`` streams to the node (``--concurrency`` handshakes
  in flight), prints one JSON line with its connect times, holds every stream open (keepalive
  running on both ends) and closes them when stdin closes.
* the orchestrator (:func:`run_sessions_bench`, used by ``avrs bench sessions``): raises the
  open-file limit, starts the node (pinned to CPU 0 when there are two or more) and the client
  workers (pinned to CPU 1), and measures the node from outside through /proc: resident memory
  before and at full load, CPU time while every session is idle, the handshake rate of the
  ramp, then the connect time of new clients while all sessions are held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import IO, Any

#: Handshakes in flight from all client workers together: within the node's admission share
#: for one source address (``AdmissionConfig.per_source``, 32), since every worker connects
#: from 127.0.0.1.
TOTAL_CONCURRENCY = 32
TARGETS = {
    "rss_kb_per_session": ("<=", 20.0),
    "keepalive_cpu_pct": ("<=", 5.0),
    "handshakes_per_s": (">=", 2000.0),
    "connect_p99_ms_at_full": ("<=", 100.0),
}


class SessionsBenchError(Exception):
    pass


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file soft limit towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SessionsBenchError(f"no VmRSS for pid {pid}")


def _proc_open_fds(pid: int) -> int:
    """Open file descriptors of the node: its listening socket, a few for the loop, and one
    per live connection (the live session count, seen from outside)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


# -- the node process ------------------------------------------------------------------------


async def _node_main(max_connections: int) -> None:
    from ..runtime.node import StreamNode

    node = StreamNode(max_connections=max_connections)
    await node.start()
    listener = await node.listen("tcp://127.0.0.1:0")
    print(f"listening {listener.url}", flush=True)
    print("ready", flush=True)
    await _wait_stdin_closed()
    await node.close()


async def _wait_stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    fd = sys.stdin.fileno()

    def on_stdin() -> None:
        if not os.read(fd, 4096):
            loop.remove_reader(fd)
            done.set()

    loop.add_reader(fd, on_stdin)
    await done.wait()


# -- a client worker process -----------------------------------------------------------------


async def _client_main(url: str, count: int, concurrency: int) -> None:
    from ..runtime.node import StreamNode
    from ..runtime.stream import Stream

    node = StreamNode()
    await node.start()
    streams: list[Stream] = []
    latencies: list[float] = []
    failures: list[str] = []
    queue = iter(range(count))

    async def one() -> None:
        for _ in queue:
            for attempt in range(5):
                started = time.perf_counter()
                try:
                    stream = await node.connect(url)
                except Exception as exc:  # reported in the worker's line
                    if attempt == 4:
                        failures.append(repr(exc)[:200])
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                streams.append(stream)
                break

    first = time.time()
    await asyncio.gather(*(one() for _ in range(max(1, concurrency))))
    last = time.time()
    _emit(
        {
            "event": "connected",
            "streams": len(streams),
            "failures": len(failures),
            "failure_samples": failures[:3],
            "first": first,
            "last": last,
            "latencies_ms": [round(x, 3) for x in latencies],
        }
    )
    await _wait_stdin_closed()
    alive = sum(1 for s in streams if s.is_active)
    _emit({"event": "done", "alive": alive})
    for stream in streams:
        stream.abort()


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- the orchestrator ------------------------------------------------------------------------


def _spawn(args: list[str], cpu: int | None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dapsdk.bench.sessions", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    if cpu is not None:
        try:
            os.sched_setaffinity(proc.pid, {cpu})
        except OSError:
            pass
    return proc


def _read_line(stream: IO[str] | None, proc: subprocess.Popen[str], what: str) -> str:
    assert stream is not None
    line = stream.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise SessionsBenchError(f"{what} exited: {err[-2000:]}")
    return line


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_sessions_bench(
    sessions: int = 10_000,
    workers: int = 4,
    idle_seconds: float = 10.0,
    probe: int = 200,
    pin: bool = True,
) -> dict[str, Any]:
    """Run the benchmark; return the JSON-ready summary."""
    if sessions < 1 or workers < 1 or probe < 1:
        raise SessionsBenchError("sessions, workers and probe must be >= 1")
    workers = min(workers, sessions)
    nofile = raise_nofile(sessions + probe + 1024)
    if nofile < sessions + probe + 64:
        raise SessionsBenchError(
            f"open-file limit {nofile} is too low for {sessions} sessions (hard limit reached)"
        )
    cpus = os.cpu_count() or 1
    node_cpu = 0 if pin and cpus >= 2 else None
    client_cpu = 1 if pin and cpus >= 2 else None
    node = _spawn(["--role", "node", "--max-connections", str(sessions + 2 * probe + 16)], node_cpu)
    clients: list[subprocess.Popen[str]] = []
    try:
        url = ""
        while True:
            line = _read_line(node.stdout, node, "node").strip()
            if line.startswith("listening "):
                url = line.split(" ", 1)[1]
            elif line == "ready":
                break
        time.sleep(0.5)  # let the node settle before the baseline (imports, first GC)
        rss_before = _proc_rss_kb(node.pid)
        fds_before = _proc_open_fds(node.pid)
        per_worker = [
            sessions // workers + (1 if i < sessions % workers else 0) for i in range(workers)
        ]
        concurrency = max(1, TOTAL_CONCURRENCY // workers)
        for count in per_worker:
            clients.append(
                _spawn(
                    [
                        "--role",
                        "client",
                        "--url",
                        url,
                        "--count",
                        str(count),
                        "--concurrency",
                        str(concurrency),
                    ],
                    client_cpu,
                )
            )
        reports = [json.loads(_read_line(c.stdout, c, "client worker")) for c in clients]
        connected = sum(r["streams"] for r in reports)
        failures = sum(r["failures"] for r in reports)
        ramp_s = max(r["last"] for r in reports) - min(r["first"] for r in reports)
        ramp_latencies = [x for r in reports for x in r["latencies_ms"]]
        rss_full = _proc_rss_kb(node.pid)
        live_full = _proc_open_fds(node.pid) - fds_before
        # Idle: every session held, nothing but keepalive on the wire.
        cpu_0 = _proc_cpu_s(node.pid)
        wall_0 = time.monotonic()
        time.sleep(idle_seconds)
        cpu_1 = _proc_cpu_s(node.pid)
        wall_1 = time.monotonic()
        rss_idle = _proc_rss_kb(node.pid)
        live_idle = _proc_open_fds(node.pid) - fds_before
        keepalive_cpu_pct = 100.0 * (cpu_1 - cpu_0) / (wall_1 - wall_0)
        # New clients while every session is held (a few at a time, like arriving users).
        prober = _spawn(
            ["--role", "client", "--url", url, "--count", str(probe), "--concurrency", "4"],
            client_cpu,
        )
        try:
            probe_report = json.loads(_read_line(prober.stdout, prober, "probe worker"))
        finally:
            _stop(prober)
        for client in clients:
            if client.stdin is not None:
                client.stdin.close()
        alive = 0
        for client in clients:
            for raw in client.stdout or []:
                event = json.loads(raw)
                if event.get("event") == "done":
                    alive += int(event["alive"])
        summary: dict[str, Any] = {
            "sessions": connected,
            "sessions_requested": sessions,
            "sessions_alive_at_end": alive,
            "connect_failures": failures + probe_report["failures"],
            "failure_samples": [s for r in reports for s in r["failure_samples"]][:3],
            "rss_kb_before": rss_before,
            "rss_kb_at_full": rss_full,
            "rss_kb_after_idle": rss_idle,
            "node_live_sessions_at_full": live_full,
            "node_live_sessions_after_idle": live_idle,
            # per session the node held when the memory was read (its open sockets)
            "rss_kb_per_session": round((rss_full - rss_before) / max(1, live_full), 2),
            "keepalive_cpu_pct": round(keepalive_cpu_pct, 2),
            "keepalive_cpu_sessions": (live_full + live_idle) // 2,
            "idle_seconds": idle_seconds,
            "handshakes_per_s": round(connected / ramp_s, 1) if ramp_s > 0 else 0.0,
            "ramp_seconds": round(ramp_s, 3),
            "ramp_connect_p50_ms": round(percentile(ramp_latencies, 50), 2),
            "ramp_connect_p99_ms": round(percentile(ramp_latencies, 99), 2),
            "connect_p50_ms_at_full": round(percentile(probe_report["latencies_ms"], 50), 2),
            "connect_p99_ms_at_full": round(percentile(probe_report["latencies_ms"], 99), 2),
            "probe_connects": probe_report["streams"],
            "meta": {
                "workers": workers,
                "handshakes_in_flight": concurrency * workers,
                "cpus": cpus,
                "pinned": {"node": node_cpu, "clients": client_cpu},
                "open_file_limit": nofile,
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "note": "the node process is measured from /proc; clients run in separate "
                "processes; on a shared machine other load shows in every figure",
            },
        }
        summary["targets"] = {
            name: {
                "target": f"{op} {value:g}",
                "pass": summary[name] <= value if op == "<=" else summary[name] >= value,
            }
            for name, (op, value) in TARGETS.items()
        }
        return summary
    finally:
        for client in clients:
            _stop(client)
        _stop(node)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=("node", "client"), required=True)
    parser.add_argument("--url", default="")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-connections", type=int, default=20_000)
    args = parser.parse_args(argv)
    raise_nofile(args.count + args.max_connections + 256)
    from ..runtime.loop import run

    if args.role == "node":
        run(_node_main(args.max_connections))
    else:
        run(_client_main(args.url, args.count, args.concurrency))


if __name__ == "__main__":
    main()
