"""Issue 3's transport benchmark: dapsdk against plain TCP, TLS 1.3 and websockets, side by side.

Each case runs a receiver and a sender worker process (:mod:`dapsdk.bench.worker`) on loopback,
one case after the other, so every contender gets the same two cores. The orchestrator only
starts processes, reads their one-line JSON reports and computes rates and ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import BULK_CHUNK, CONTROL_RATE, CONTROL_SIZE, SMALL_SIZE, write_self_signed_cert
from .profile import start_py_spy, stop_py_spy, summarize_collapsed
from .worker import START_TIMEOUT, configure_dap_tls, listen_url

MB = 1_000_000

#: (kind, label) in the order they run.
CASES: tuple[tuple[str, str], ...] = (
    ("tcp-bulk", "bulk 64 KiB · plain TCP"),
    ("tls-bulk", "bulk 64 KiB · TLS 1.3"),
    ("ws-bulk", "bulk 64 KiB · websockets"),
    ("dap-bulk", "bulk 64 KiB · dapsdk"),
    ("ws-small", "100 B messages · websockets"),
    ("dap-small", "100 B messages · dapsdk"),
    ("dap-control", "control p99 under bulk · dapsdk"),
)

#: name -> (comparison, threshold) from issue 3.
TARGETS: dict[str, tuple[str, float]] = {
    "vs_tls": (">=", 3.0),
    "vs_plain_tcp": (">=", 0.6),
    "small_pps_dapsdk": (">=", 500_000.0),
    "small_vs_websockets": (">=", 5.0),
    "control_p99_ms": ("<=", 2.0),
}

DEFAULT_DURATION = 1.5
#: Rounds of all cases; each rate reported is the median round (loopback throughput here is
#: bimodal from run to run, see research/pkg_baselines.md).
DEFAULT_REPEAT = 3


class BenchError(RuntimeError):
    """A worker failed or did not answer in time."""


@dataclass(slots=True)
class CaseResult:
    kind: str
    bytes: int
    msgs: int
    seconds: float
    recv_cpu_s: float
    send_cpu_s: float
    sender: dict[str, Any] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def mb_s(self) -> float:
        return self.bytes / self.seconds / MB

    @property
    def msgs_s(self) -> float:
        return self.msgs / self.seconds


def warmup_for(duration: float) -> float:
    return min(0.5, duration / 4)


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        raise BenchError("no samples")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 1))))
    return float(sorted_values[rank - 1])


# ------------------------------------------------------------------------------ processes


def _worker_cmd(role: str, kind: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "dapsdk.bench.worker", role, kind, *args]


async def _read_json(proc: asyncio.subprocess.Process, key: str, timeout: float, who: str) -> Any:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"{who}: no {key!r} report within {timeout:.0f} s")
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), remaining)
        except TimeoutError:
            raise BenchError(f"{who}: no {key!r} report within {timeout:.0f} s") from None
        if not line:
            raise BenchError(f"{who}: exited without a {key!r} report")
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict) and key in obj:
                return obj[key]


async def _stop(proc: asyncio.subprocess.Process | None, grace: float) -> None:
    if proc is None or proc.returncode is not None:
        return
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


async def run_case(
    kind: str,
    *,
    duration: float,
    scheme: str,
    loop: str,
    workdir: Path,
    cert: Path,
    key: Path,
    profile_dir: Path | None = None,
    profiler: str = "py-spy",
    pin: bool = False,
    tag: str = "",
) -> CaseResult:
    warmup = warmup_for(duration)
    common = ["--loop", loop]
    recv_args = [
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--scheme",
        scheme,
        "--cert",
        str(cert),
        "--key",
        str(key),
        *common,
    ]
    send_args = ["--cafile", str(cert), *common]
    if pin:
        recv_args += ["--cpu", "1"]
        send_args += ["--cpu", "0"]
    spying = profile_dir is not None and profiler == "py-spy"
    if profile_dir is not None and profiler == "pyinstrument":
        recv_args += ["--profile", str(profile_dir / f"{kind}{tag}-receiver.pyinstrument.txt")]
        send_args += ["--profile", str(profile_dir / f"{kind}{tag}-sender.pyinstrument.txt")]
    spies: list[asyncio.subprocess.Process] = []
    recv_log = workdir / f"{kind}{tag}-receiver.log"
    send_log = workdir / f"{kind}{tag}-sender.log"
    # The sender stops on its own at the latest this long after connecting.
    hard_stop = warmup + duration + START_TIMEOUT
    receiver: asyncio.subprocess.Process | None = None
    sender: asyncio.subprocess.Process | None = None
    try:
        with recv_log.open("wb") as rlog, send_log.open("wb") as slog:
            receiver = await asyncio.create_subprocess_exec(
                *_worker_cmd("recv", kind, *recv_args),
                stdout=asyncio.subprocess.PIPE,
                stderr=rlog,
                stdin=asyncio.subprocess.DEVNULL,
            )
            url = await _read_json(receiver, "ready", START_TIMEOUT, f"{kind} receiver")
            sender = await asyncio.create_subprocess_exec(
                *_worker_cmd(
                    "send", kind, "--url", str(url), "--seconds", str(hard_stop), *send_args
                ),
                stdout=asyncio.subprocess.PIPE,
                stderr=slog,
                stdin=asyncio.subprocess.DEVNULL,
            )
            if spying:
                assert profile_dir is not None
                for role, target in (("receiver", receiver), ("sender", sender)):
                    spies.append(
                        await start_py_spy(
                            target.pid, profile_dir / f"{kind}{tag}-{role}.collapsed"
                        )
                    )
            result = await _read_json(
                receiver, "result", START_TIMEOUT + warmup + duration + 10, f"{kind} receiver"
            )
            try:
                sent = await _read_json(sender, "sent", 10.0, f"{kind} sender")
            except BenchError:
                sent = {}  # the measurement is the receiver's; the sender's CPU is extra
            await _stop(sender, 5.0)
            await _stop(receiver, 5.0)
    except BenchError as exc:
        details = "\n".join(
            f"--- {name} stderr:\n{tail}"
            for name, tail in (("receiver", _tail(recv_log)), ("sender", _tail(send_log)))
            if tail
        )
        raise BenchError(f"{exc}\n{details}" if details else str(exc)) from None
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        for spy in spies:
            await stop_py_spy(spy)
    if result["bytes"] <= 0 or result["msgs"] <= 0:
        raise BenchError(f"{kind}: the receiver counted nothing in {duration} s")
    return CaseResult(
        kind=kind,
        bytes=int(result["bytes"]),
        msgs=int(result["msgs"]),
        seconds=float(result["seconds"]),
        recv_cpu_s=float(result["cpu_s"]),
        send_cpu_s=float(sent.get("cpu_s", 0.0)),
        sender={k: v for k, v in sent.items() if k != "cpu_s"},
        latencies_ns=sorted(int(x) for x in result.get("latencies_ns", [])),
    )


def median_run(runs: list[CaseResult]) -> CaseResult:
    """The run with the median rate; for latency cases, with every run's samples pooled."""
    ordered = sorted(runs, key=lambda r: r.bytes / r.seconds)
    middle = ordered[(len(ordered) - 1) // 2]
    if len(runs) == 1 or not any(r.latencies_ns for r in runs):
        return middle
    pooled = sorted(x for r in runs for x in r.latencies_ns)
    return dataclasses.replace(middle, latencies_ns=pooled)


# ------------------------------------------------------------------------------- loop choice


def choose_loop(requested: str, scheme: str, cert: Path, key: Path) -> tuple[str, str | None]:
    """The loop every worker uses, and a note when ``auto`` could not use uvloop.

    ``auto`` means uvloop when installed, but only if dapsdk completes a handshake on it:
    all contenders must run on the same loop, so if dapsdk cannot use uvloop nobody does.
    """
    if requested != "auto":
        return requested, None
    try:
        import uvloop
    except ImportError:
        return "asyncio", "uvloop is not installed"
    configure_dap_tls(scheme, cert=str(cert), key=str(key), cafile=str(cert))
    error = _probe_dapsdk(uvloop.new_event_loop, scheme)
    if error is None:
        return "uvloop", None
    return "asyncio", f"dapsdk does not run on uvloop ({error}); every contender uses asyncio"


def _probe_dapsdk(factory: Callable[[], asyncio.AbstractEventLoop], scheme: str) -> str | None:
    from ..runtime.node import StreamNode

    errors: list[str] = []

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        errors.append(repr(exc) if exc is not None else str(context.get("message")))

    async def probe() -> None:
        asyncio.get_running_loop().set_exception_handler(on_error)
        async with StreamNode() as server, StreamNode() as client:
            listener = await server.listen(listen_url(scheme))
            stream = await asyncio.wait_for(client.connect(listener.url), 5.0)
            stream.abort()

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(probe())
    except Exception as exc:
        return errors[0] if errors else repr(exc)
    return None


# ---------------------------------------------------------------------------------- summary


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b > 0 else 0.0


def summarize(
    all_runs: dict[str, list[CaseResult]],
    *,
    duration: float,
    scheme: str,
    loop: str,
    loop_note: str | None,
    elapsed: float,
    pin: bool = False,
) -> dict[str, Any]:
    results = {kind: median_run(runs) for kind, runs in all_runs.items()}
    bulk = {
        "dapsdk": results["dap-bulk"].mb_s,
        "plain_tcp": results["tcp-bulk"].mb_s,
        "tls": results["tls-bulk"].mb_s,
        "websockets": results["ws-bulk"].mb_s,
    }
    small = {"dapsdk": results["dap-small"].msgs_s, "websockets": results["ws-small"].msgs_s}
    control = results["dap-control"]
    lat = control.latencies_ns
    p99_ms = percentile(lat, 0.99) / 1e6
    values = {
        "vs_tls": _ratio(bulk["dapsdk"], bulk["tls"]),
        "vs_plain_tcp": _ratio(bulk["dapsdk"], bulk["plain_tcp"]),
        "small_pps_dapsdk": small["dapsdk"],
        "small_vs_websockets": _ratio(small["dapsdk"], small["websockets"]),
        "control_p99_ms": p99_ms,
    }
    targets: dict[str, Any] = {}
    for name, (op, threshold) in TARGETS.items():
        value = values[name]
        ok = value >= threshold if op == ">=" else value <= threshold
        targets[name] = {
            "value": round(value, 3),
            "target": f"{op} {threshold:g}",
            "pass": ok,
            "of_target": round(value / threshold if op == ">=" else threshold / value, 3)
            if value > 0
            else 0.0,
        }
    cpu = {
        kind: {
            "receiver": round(100 * r.recv_cpu_s / r.seconds, 1),
            "sender": round(100 * r.send_cpu_s / r.sender["seconds"], 1)
            if r.sender.get("seconds")
            else None,
        }
        for kind, r in results.items()
    }
    meta: dict[str, Any] = {
        "transport": scheme,
        "duration_s": duration,
        "warmup_s": warmup_for(duration),
        "loop": loop,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "bulk_chunk_bytes": BULK_CHUNK,
        "small_bytes": SMALL_SIZE,
        "control_probe_bytes": CONTROL_SIZE,
        "control_probes_per_s": CONTROL_RATE,
        "mb": MB,
        "repeat": len(all_runs["dap-bulk"]),
        "reported": "median run of each case; control latencies pooled over runs",
        "elapsed_s": round(elapsed, 2),
        "pinned": "sender cpu 0, receiver cpu 1" if pin else False,
    }
    if loop_note:
        meta["loop_note"] = loop_note
    tls_info = {
        k: v for k, v in results["tls-bulk"].sender.items() if k in ("tls_version", "cipher")
    }
    if tls_info:
        meta["tls"] = tls_info
    return {
        "bulk_mb_s": {k: round(v, 1) for k, v in bulk.items()},
        "vs_plain_tcp": values["vs_plain_tcp"],
        "vs_tls": values["vs_tls"],
        "vs_websockets": _ratio(bulk["dapsdk"], bulk["websockets"]),
        "small_pps": {k: round(v) for k, v in small.items()},
        "small_vs_websockets": values["small_vs_websockets"],
        "control_p99_ms": round(p99_ms, 3),
        "control": {
            "p50_ms": round(percentile(lat, 0.50) / 1e6, 3),
            "p99_ms": round(p99_ms, 3),
            "max_ms": round(lat[-1] / 1e6, 3),
            "samples": len(lat),
            "bulk_mb_s": round(control.mb_s, 1),
        },
        "targets": targets,
        "all_targets_met": all(t["pass"] for t in targets.values()),
        "runs": {
            kind: [
                round(r.mb_s, 1) if kind.endswith(("-bulk", "-control")) else round(r.msgs_s)
                for r in runs
            ]
            for kind, runs in all_runs.items()
        },
        "cpu_percent": cpu,
        "meta": meta,
    }


# ---------------------------------------------------------------------------------- driver


def write_profile_report(profile_dir: Path, top: int = 20) -> Path:
    """``summary.txt``: the top functions (self and inclusive %) of every collapsed profile."""
    parts = []
    for path in sorted(profile_dir.glob("*.collapsed")):
        parts.append(summarize_collapsed(path).render(path.stem, top))
    report = profile_dir / "summary.txt"
    report.write_text("\n\n".join(parts) + "\n")
    return report


Progress = Callable[[int, int, str], None]


async def run_transport_bench(
    *,
    duration: float = DEFAULT_DURATION,
    repeat: int = DEFAULT_REPEAT,
    scheme: str = "tcp",
    loop: str = "auto",
    profile_dir: Path | None = None,
    profiler: str = "py-spy",
    pin: bool = False,
    progress: Progress | None = None,
    on_note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every case ``repeat`` times (rounds interleave the contenders, so load that comes and
    goes hits all of them alike) and return the summary (the ``--json`` object)."""
    started = time.monotonic()
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    all_runs: dict[str, list[CaseResult]] = {kind: [] for kind, _ in CASES}
    total = len(CASES) * repeat
    with tempfile.TemporaryDirectory(prefix="dapsdk-bench-") as tmp:
        workdir = Path(tmp)
        cert, key = write_self_signed_cert(workdir)
        loop_name, note = await asyncio.to_thread(choose_loop, loop, scheme, cert, key)
        if note and on_note is not None:
            on_note(note)
        for round_no in range(repeat):
            tag = f"-r{round_no + 1}" if repeat > 1 else ""
            for index, (kind, label) in enumerate(CASES):
                if progress is not None:
                    suffix = f" (round {round_no + 1}/{repeat})" if repeat > 1 else ""
                    progress(round_no * len(CASES) + index, total, label + suffix)
                all_runs[kind].append(
                    await run_case(
                        kind,
                        duration=duration,
                        scheme=scheme,
                        loop=loop_name,
                        workdir=workdir,
                        cert=cert,
                        key=key,
                        profile_dir=profile_dir,
                        profiler=profiler,
                        pin=pin,
                        tag=tag,
                    )
                )
        if progress is not None:
            progress(total, total, "done")
    if profile_dir is not None and profiler == "py-spy":
        write_profile_report(profile_dir)
    return summarize(
        all_runs,
        duration=duration,
        scheme=scheme,
        loop=loop_name,
        loop_note=note,
        elapsed=time.monotonic() - started,
        pin=pin,
    )
