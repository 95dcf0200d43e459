"""``avrs bench``: benchmarks that measure side by side in one run and print ratios."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..bench.common import LOOPS
from ..bench.profile import PROFILERS, find_py_spy
from ..bench.transport import (
    CASES,
    DEFAULT_DURATION,
    DEFAULT_REPEAT,
    TARGETS,
    BenchError,
    run_transport_bench,
)


@click.group()
def bench() -> None:
    """Benchmarks (sender and receiver in separate processes on loopback)."""


def _check_transport(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from ..runtime.transport import available_schemes

    schemes = available_schemes()
    if value not in schemes:
        raise click.BadParameter(
            f"{value!r} is not an available dapsdk transport; available: {', '.join(schemes)}",
            ctx=ctx,
            param=param,
        )
    return value


@bench.command()
@click.option(
    "--transport",
    "scheme",
    default="tcp",
    show_default=True,
    callback=_check_transport,
    help="Endpoint scheme dapsdk listens and connects with (tcp|ws|quic, as registered).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.05, max=60),
    default=DEFAULT_DURATION,
    show_default=True,
    help=f"Seconds measured per case and round ({len(CASES)} cases, plus warm-up and process "
    "start).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1, max=20),
    default=DEFAULT_REPEAT,
    show_default=True,
    help="Rounds of all cases; the median round of each case is reported.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--loop",
    type=click.Choice(LOOPS),
    default="auto",
    show_default=True,
    help="Event loop of every worker; auto is uvloop when installed and usable by dapsdk.",
)
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Profile every worker process and write the profiles plus summary.txt here.",
)
@click.option(
    "--profiler",
    type=click.Choice(PROFILERS),
    default="py-spy",
    show_default=True,
    help="py-spy samples from outside (little overhead); pyinstrument runs inside the worker "
    "and slows it down.",
)
@click.option(
    "--pin/--no-pin",
    default=False,
    show_default=True,
    help="Pin the sender to CPU 0 and the receiver to CPU 1 (steadier, usually slower numbers).",
)
def transport(
    scheme: str,
    duration: float,
    repeat: int,
    as_json: bool,
    loop: str,
    profile_dir: Path | None,
    profiler: str,
    pin: bool,
) -> None:
    """dapsdk against plain TCP, TLS 1.3 and websockets: bulk MB/s, 100-byte messages per
    second, and the p99 latency of control packets while a bulk channel saturates the link."""
    err = Console(stderr=True)
    if profile_dir is not None and profiler == "py-spy" and find_py_spy() is None:
        raise click.UsageError("--profiler py-spy needs py-spy (pip install py-spy)")
    with Progress(
        TextColumn("[bold]bench transport"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=len(CASES) * repeat)

        def progress(index: int, total: int, label: str) -> None:
            bar.update(task, completed=index, description=label)

        def note(text: str) -> None:
            bar.console.print(f"[yellow]note:[/] {text}")

        try:
            summary = asyncio.run(
                run_transport_bench(
                    duration=duration,
                    repeat=repeat,
                    scheme=scheme,
                    loop=loop,
                    profile_dir=profile_dir,
                    profiler=profiler,
                    pin=pin,
                    progress=progress,
                    on_note=note,
                )
            )
        except BenchError as exc:
            raise click.ClickException(f"benchmark failed: {exc}") from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        Console().print(render_table(summary))
    if profile_dir is not None:
        err.print(f"profiles written to {profile_dir}")


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:,.1f} {unit}"


def render_table(summary: dict[str, Any]) -> Table:
    meta = summary["meta"]
    table = Table(
        title=f"dapsdk transport benchmark ({meta['transport']}, {meta['loop']}, "
        f"median of {meta['repeat']} x {meta['duration_s']:g} s per case, {meta['cpus']} CPUs)",
        title_justify="left",
    )
    table.add_column("measurement")
    table.add_column("dapsdk", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    bulk = summary["bulk_mb_s"]
    targets = summary["targets"]

    def mark(name: str | None) -> tuple[str, str]:
        if name is None:
            return "", ""
        t = targets[name]
        return t["target"], "[green]PASS[/]" if t["pass"] else "[red]FAIL[/]"

    rows: list[tuple[str, str, str, str, str | None]] = [
        (
            "bulk vs plain TCP",
            _fmt(bulk["dapsdk"], "MB/s"),
            _fmt(bulk["plain_tcp"], "MB/s"),
            _fmt(summary["vs_plain_tcp"], "x"),
            "vs_plain_tcp",
        ),
        (
            "bulk vs TLS 1.3",
            _fmt(bulk["dapsdk"], "MB/s"),
            _fmt(bulk["tls"], "MB/s"),
            _fmt(summary["vs_tls"], "x"),
            "vs_tls",
        ),
        (
            "bulk vs websockets",
            _fmt(bulk["dapsdk"], "MB/s"),
            _fmt(bulk["websockets"], "MB/s"),
            _fmt(summary["vs_websockets"], "x"),
            None,
        ),
        (
            "100 B messages",
            _fmt(summary["small_pps"]["dapsdk"], "/s"),
            "",
            "",
            "small_pps_dapsdk",
        ),
        (
            "100 B messages vs websockets",
            _fmt(summary["small_pps"]["dapsdk"], "/s"),
            _fmt(summary["small_pps"]["websockets"], "/s"),
            _fmt(summary["small_vs_websockets"], "x"),
            "small_vs_websockets",
        ),
        (
            f"control p99 under bulk ({summary['control']['bulk_mb_s']:,.0f} MB/s)",
            _fmt(summary["control_p99_ms"], "ms"),
            f"p50 {summary['control']['p50_ms']:.3f} ms",
            "",
            "control_p99_ms",
        ),
    ]
    for label, ours, base, ratio, name in rows:
        target, verdict = mark(name)
        table.add_row(label, ours, base, ratio, target, verdict)
    met = sum(1 for t in targets.values() if t["pass"])
    table.caption = f"{met}/{len(TARGETS)} targets met; MB = 10^6 bytes"
    if "loop_note" in meta:
        table.caption += f"; note: {meta['loop_note']}"
    return table


@bench.command("flood")
@click.option("--sockets", type=click.IntRange(0, 100_000), default=10_000, show_default=True,
              help="Bogus or idle TCP sockets held open (40% idle, 20% partial HELLO, "
              "20% slowloris, 20% replayed HELLO), each in its kind's attacker process.")  # fmt: skip
@click.option("--quic-initials", type=click.IntRange(0, 100_000), default=6_000,
              show_default=True, help="QUIC Initials sent by another attacker process.")  # fmt: skip
@click.option("--clients", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Legitimate connects, one after another, once the floods run.")  # fmt: skip
@click.option("--reconnect-delay", type=click.FloatRange(0, 60), default=0.0,
              show_default=True,
              help="Seconds an attacker waits before re-opening a socket the node closed.")  # fmt: skip
@click.option("--quic-rate", type=click.FloatRange(1, 100_000), default=1000.0,
              show_default=True, help="QUIC Initials per second.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def flood(
    sockets: int,
    quic_initials: int,
    clients: int,
    reconnect_delay: float,
    quic_rate: float,
    as_json: bool,
) -> None:
    """Legitimate connects while floods hit a node (node, attackers and clients in separate
    processes): success ratio, p99 connect time and the node's peak RSS."""
    from ..bench.flood import FloodError, run_flood_bench

    try:
        result = run_flood_bench(
            sockets=sockets,
            quic_initials=quic_initials,
            clients=clients,
            reconnect_delay=reconnect_delay,
            quic_rate=quic_rate,
        )
    except FloodError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(title=f"flood: {sockets} sockets, {quic_initials} QUIC Initials")
    table.add_column("measure")
    table.add_column("value")
    table.add_column("target")
    table.add_row("legitimate success", f"{result['legit_success_ratio']:.2%}", "100%")
    table.add_row("connect p99", f"{result['connect_p99_ms']} ms", "<= 500 ms")
    table.add_row("connect p50", f"{result['connect_p50_ms']} ms", "")
    table.add_row("node peak RSS", f"{result['node_peak_rss_kb'] / 1024:.0f} MB", "")
    Console().print(table)


@bench.command("transcode")
@click.option("--seconds", type=click.FloatRange(0.5, 60), default=4.0, show_default=True,
              help="Length of the synthetic source.")  # fmt: skip
@click.option("--height", type=click.IntRange(144, 2160), default=1080, show_default=True,
              help="Source height (16:9).")  # fmt: skip
@click.option("--preset", type=click.Choice(["ultrafast", "superfast", "veryfast", "faster"]),
              default="ultrafast", show_default=True,
              help="x264 preset: ultrafast is what live ingest uses, veryfast VoD import.")  # fmt: skip
@click.option("--ladder", default=None,
              help="Renditions as HEIGHTp:BITRATE, comma separated (default 1080p:5M,720p:2800k,"
              "480p:1400k,360p:800k); those below the source height are encoded.")  # fmt: skip
@click.option("--format", "target", type=click.Choice(["mp4", "webm"]), default="mp4",
              show_default=True, help="Output format (mp4: H.264 + AAC, webm: VP9 + Opus).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def transcode(
    seconds: float, height: int, preset: str, ladder: str | None, target: str, as_json: bool
) -> None:
    """Transcode speed of the rendition ladder, per rendition (× real time) and for the whole
    ladder at once, on a synthetic H.264 source."""
    from ..bench.transcode import run_transcode_bench
    from ..services.media.transcode import DEFAULT_LADDER, parse_ladder

    try:
        rungs = parse_ladder(ladder) if ladder else DEFAULT_LADDER
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ladder") from None
    result = run_transcode_bench(
        seconds=seconds, height=height, preset=preset, ladder=rungs, target=target
    )
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(title=f"transcode {height}p {seconds:g} s, {preset}, {target}")
    for column in ("rendition", "size", "frames", "wall s", "cpu s", "× real time"):
        table.add_column(column)
    for name, row in result["renditions"].items():
        table.add_row(name, row["size"], str(row["frames"]), str(row["wall_seconds"]),
                      str(row["cpu_seconds"]), str(row["speed_x_realtime"]))  # fmt: skip
    whole = result["ladder"]
    table.add_row("whole ladder", "", "", str(whole["wall_seconds"]), str(whole["cpu_seconds"]),
                  str(whole["speed_x_realtime"]))  # fmt: skip
    Console().print(table)


@bench.command("ingest")
@click.option("--seconds", type=click.FloatRange(2, 120), default=6.0, show_default=True,
              help="Length of the pushed stream.")  # fmt: skip
@click.option("--height", type=click.IntRange(144, 2160), default=360, show_default=True,
              help="Picture height (16:9, H.264 + AAC).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def ingest(seconds: float, height: int, as_json: bool) -> None:
    """RTMP ingest-to-play latency: a real-time RTMP publisher (FFmpeg through PyAV), a node
    (sandboxed cluster, in this process) and a verifying viewer; per video packet, the time from
    the publisher handing it to RTMP to the viewer verifying it."""
    from ..bench.ingest import run_ingest_bench
    from ..runtime.loop import run

    result = run(run_ingest_bench(seconds=seconds, height=height))
    if as_json:
        click.echo(json.dumps(result))
        return
    latency = result["latency_ms"]
    click.echo(
        f"ingest-to-play latency over {result['video_packets_matched']} video packets: "
        f"median {latency['median']} ms, p95 {latency['p95']} ms, max {latency['max']} ms; "
        f"viewer startup {result['viewer_startup_ms']} ms"
    )


@bench.command()
@click.option(
    "--sessions",
    type=click.IntRange(min=1, max=100_000),
    default=10_000,
    show_default=True,
    help="Concurrent authenticated sessions to open and hold on the node.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=4,
    show_default=True,
    help="Client worker processes sharing the sessions.",
)
@click.option(
    "--idle",
    "idle_seconds",
    type=click.FloatRange(min=0.5, max=600),
    default=10.0,
    show_default=True,
    help="Seconds every session is held idle (keepalive only) while the node's CPU is measured.",
)
@click.option(
    "--probe",
    type=click.IntRange(min=1, max=10_000),
    default=200,
    show_default=True,
    help="New clients connecting while every session is held (their connect p99 is reported).",
)
@click.option(
    "--pin/--no-pin", default=True, show_default=True, help="Node on CPU 0, clients on CPU 1."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def sessions(
    sessions: int, workers: int, idle_seconds: float, probe: int, pin: bool, as_json: bool
) -> None:
    """Many concurrent authenticated sessions on one node process: memory per session,
    keepalive CPU, handshake rate and connect p99 at full load (clients in other processes)."""
    from ..bench.sessions import SessionsBenchError, run_sessions_bench

    Console(stderr=True).print(
        f"[bold]bench sessions[/]: {sessions} sessions from {workers} worker processes ..."
    )
    try:
        summary = run_sessions_bench(
            sessions=sessions, workers=workers, idle_seconds=idle_seconds, probe=probe, pin=pin
        )
    except SessionsBenchError as exc:
        raise click.ClickException(f"benchmark failed: {exc}") from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"dapsdk sessions benchmark ({summary['sessions']} sessions)")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    for name, result in summary["targets"].items():
        verdict = "[green]PASS[/]" if result["pass"] else "[red]FAIL[/]"
        table.add_row(name, f"{summary[name]:,}", result["target"], verdict)
    Console().print(table)


@bench.command("join")
@click.option("--joins", type=click.IntRange(1, 100), default=8, show_default=True,
              help="Late joiners per phase (with and without the GOP cache).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def join(joins: int, as_json: bool) -> None:
    """Time from session open to the first decodable frame for a late joiner of a live stream
    (stream protocol), with and without the GOP cache, against half the GOP; plus the
    ingest-to-play latency (publisher signing to viewer receiving)."""
    from ..bench.join import run_join_bench
    from ..runtime.loop import run

    result = run(run_join_bench(joins))
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(title="late join, first decodable frame (median ms)")
    for column in ("gop cache", "no cache", "half GOP", "ingest-to-play p50", "p99"):
        table.add_column(column)
    frames, lat = result["first_frame_ms"], result["ingest_to_play_ms"]
    table.add_row(str(frames["gop_cache"]), str(frames["no_cache"]), str(result["half_gop_ms"]),
                  str(lat["p50"]), str(lat["p99"]))  # fmt: skip
    Console().print(table)
