"""``avrs publish``, ``avrs play`` and ``avrs vod``: media in and out of a node.

Credentials: ``--key``/``--cert`` (a certificate of the cluster CA: a SERVER or HOST certificate
may publish) and/or ``--token`` (an access token, sent in the join). Each command prints one JSON
line of results on stdout at the end (stderr with ``-o -``), and a live status line on stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.serialization import Encoding
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ..avrs import AvrsError
from ..avrs.signing import AvrsSigner
from ..runtime.loop import run
from ..runtime.node import StreamNode
from ..services.auth import AuthError, load_certificate, load_private_key, save_private_key
from ..services.avrs_client import AvrsClient, AvrsRequestError
from ..services.avrs_cluster import cluster_guuid, content_guuid
from ..services.media.convert_sink import ConvertingSink
from ..services.media.model import ContentKind, MediaPacket
from ..services.media.player import FileSink, PlayError, PlayStats, play, report_quality
from ..services.media.publisher import PublishRefused, import_file, publish
from ..services.media.source import SourceError, open_source
from ..services.media.store import VodStore
from ..stream.channel_key import ChannelKey
from ..stream.config import StreamConfig
from ..stream.errors import DapError
from ..stream.identity import NodeIdentity

IDENTITY_FILE = "node.key"


def _content_key(value: str | None) -> ChannelKey | None:
    if value is None:
        return None
    try:
        return ChannelKey(bytes.fromhex(value))
    except ValueError as exc:
        raise click.UsageError(f"--content-key: {exc} (64 hex digits)") from None


def _credentials(command: Any) -> Any:
    for option in (
        click.option("--content-key", help="64 hex digits: the key that seals the media "
                     "(encrypted contents; publishers seal, players open)."),
        click.option("--cluster", default="main_cluster", show_default=True,
                     help="Cluster the content belongs to."),
        click.option("--token", help="Access token (from `avrs token issue`), sent in the join."),
        click.option("--cert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="Certificate of --key from the cluster CA (gives its roles)."),
        click.option("--key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="Identity key (PEM); default: a fresh one."),
    ):  # fmt: skip
        command = option(command)
    return command


async def connect(
    url: str, key: Path | None, cert: Path | None, token: str | None, cluster: str
) -> tuple[StreamNode, AvrsClient]:
    """A client stream to ``url`` with an opened AVRS session (joined with ``token``)."""
    if cert is not None and key is None:
        raise click.UsageError("--cert needs --key (the key the certificate binds)")
    try:
        identity = NodeIdentity(load_private_key(key)) if key else NodeIdentity.generate()
        der = load_certificate(cert).public_bytes(Encoding.DER) if cert else None
    except AuthError as exc:
        raise click.UsageError(str(exc)) from None
    node = StreamNode(identity, StreamConfig(certificate=der))
    await node.start()
    try:
        stream = await node.connect(url)
        client = AvrsClient(stream, AvrsSigner(identity.private_key))
        await client.open()
        if token is not None:
            reply = await client.join(cluster_guuid(cluster), token=token)
            if reply.code != AvrsError.SUCCESS:
                raise AvrsRequestError(reply)
    except BaseException:
        await node.close()
        raise
    return node, client


def _fail(exc: BaseException, code: int = 1) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(code)


# ---------------------------------------------------------------------------------- publish


@click.command("publish")
@click.argument("source")
@click.option("--content", "name", required=True, help="Content name (the stream key).")
@click.option("--node", "url", required=True, help="Node URL, e.g. tcp://127.0.0.1:8079?node=...")
@click.option("--as-fast-as-possible", is_flag=True, help="Do not pace files in real time.")
@click.option("--loop", is_flag=True, help="Repeat the file (timestamps continue).")
@click.option("--duration", type=float, help="testsrc: stop after this many seconds.")
@_credentials
def publish_cmd(
    source: str, name: str, url: str, as_fast_as_possible: bool, loop: bool,
    duration: float | None, key: Path | None, cert: Path | None, token: str | None, cluster: str,
    content_key: str | None,
) -> None:  # fmt: skip
    """Publish SOURCE live: any file or URL FFmpeg opens (remuxed, never re-encoded), or
    `testsrc` (a moving picture with a frame counter and a tone, encoded live as H.264 + AAC).

    Every packet goes in a signed-media envelope. Prints `publishing CONTENT` when the content
    info was sent, and a JSON line of results at the end."""
    try:
        stats = run(_publish(source, name, url, not as_fast_as_possible, loop, duration,
                             key, cert, token, cluster, _content_key(content_key)))  # fmt: skip
    except PublishRefused as exc:
        _fail(exc, 3)
    except (SourceError, DapError, OSError, ValueError, AvrsRequestError) as exc:
        _fail(exc)
    click.echo(json.dumps(stats))


async def _publish(
    source_url: str, name: str, url: str, realtime: bool, loop: bool, duration: float | None,
    key: Path | None, cert: Path | None, token: str | None, cluster: str,
    content_key: ChannelKey | None = None,
) -> dict[str, Any]:  # fmt: skip
    source = await asyncio.get_running_loop().run_in_executor(
        None, lambda: open_source(source_url, loop=loop, duration=duration)
    )
    node, client = await connect(url, key, cert, token, cluster)
    announced = False

    def on_packet(_packet: MediaPacket) -> None:
        nonlocal announced
        if not announced:
            announced = True
            print(f"publishing {name}", flush=True)

    try:
        stats = await publish(client, cluster_guuid(cluster), content_guuid(name), source,
                              realtime=realtime, on_packet=on_packet,
                              content_key=content_key)  # fmt: skip
    finally:
        await client.close()
        await node.close()
    return {
        "content": name,
        "packets": stats.packets,
        "bytes": stats.bytes,
        "media_seconds": round(stats.media_us / 1e6, 3),
        "seconds": round(stats.seconds, 3),
        "first_sent": stats.first_sent,
        "tracks": [f"{t.kind}:{t.codec}" for t in source.info.tracks],
    }


# ---------------------------------------------------------------------------------- play


@click.command("play")
@click.argument("content")
@click.option("--node", "url", required=True, help="Node URL.")
@click.option("-o", "--output", required=True,
              help="out.mp4, out.ts, out.webm, out.mkv, or - (MPEG-TS on stdout).")  # fmt: skip
@click.option("--start", type=float, help="Start at this position in seconds (VoD).")
@click.option("--rendition", help="Rendition to play (e.g. 720p; default: the first).")
@click.option("--duration", type=float, help="Stop after this many seconds of media.")
@click.option("--wait", type=float, default=30.0, show_default=True,
              help="Seconds to wait for a publisher that has not started.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No status line.")
@_credentials
def play_cmd(
    content: str, url: str, output: str, start: float | None, rendition: str | None,
    duration: float | None, wait: float, quiet: bool, key: Path | None, cert: Path | None,
    token: str | None, cluster: str, content_key: str | None,
) -> None:  # fmt: skip
    """Play CONTENT into a file (or stdout), remuxed with PyAV, every packet's signature checked.

    Prints `playing CONTENT` on stderr once subscribed (it then waits for a publisher that has
    not started). Ends when the content ends or after --duration. Shows bitrate, rendition, buffer and
    latency behind live; reports the session's quality (QUALITY_REPORT) to the node; prints a
    JSON line of results at the end."""
    try:
        # remuxed bit-exact when the container takes the codecs, else converted (webm: VP9+Opus)
        sink = ConvertingSink(FileSink(output), output)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        result = run(_play(content, url, sink, start, rendition, duration, wait, quiet,
                           key, cert, token, cluster, _content_key(content_key)))  # fmt: skip
    except PlayError as exc:
        _fail(exc, 3)
    except (DapError, OSError, ValueError, AvrsRequestError) as exc:
        _fail(exc)
    click.echo(json.dumps(result), err=output == "-")


async def _play(
    content: str, url: str, sink: ConvertingSink, start: float | None, rendition: str | None,
    duration: float | None, wait: float, quiet: bool, key: Path | None, cert: Path | None,
    token: str | None, cluster: str, content_key: ChannelKey | None = None,
) -> dict[str, Any]:  # fmt: skip
    node, client = await connect(url, key, cert, token, cluster)
    output_name = sink.inner.target if isinstance(sink.inner, FileSink) else "?"
    console = Console(stderr=True)
    last = 0.0

    def status(_packet: MediaPacket, stats: PlayStats) -> None:
        nonlocal last
        now = time.monotonic()
        if quiet or now - last < 0.25:
            return
        last = now
        buffered = client.channels[0x63].buf_size if 0x63 in client.channels else 0
        latency = "-" if stats.latency_ms is None else f"{stats.latency_ms:.0f} ms"
        console.print(
            f"[bold]{content}[/] {stats.bitrate() / 1000:7.0f} kbit/s  rendition "
            f"{stats.rendition or '-'}  buffer {buffered} pkts  behind live {latency}  "
            f"media {(stats.last_time_us - (stats.first_time_us or 0)) / 1e6:6.2f} s",
            end="\r", highlight=False,
        )  # fmt: skip

    try:
        stats = await play(
            client, cluster_guuid(cluster), content_guuid(content), sink,
            start_us=None if start is None else int(start * 1_000_000), rendition=rendition,
            duration=duration, wait=wait, on_packet=status, content_key=content_key,
            on_started=lambda: print(f"playing {content}", file=sys.stderr, flush=True),
        )  # fmt: skip
        await _report(client, stats)
    finally:
        if not quiet:
            console.print()
        await client.close()
        await node.close()
    result = stats.as_dict()
    result["content"] = content
    result["output"] = output_name
    result["converted"] = sink.converting
    return result


async def _report(client: AvrsClient, stats: PlayStats) -> None:
    """Tell the node how the session went (signal QUALITY_REPORT)."""
    try:
        await report_quality(client, stats)
    except (TimeoutError, ConnectionError, DapError):
        pass


# ---------------------------------------------------------------------------------- vod


@click.group("vod")
def vod() -> None:
    """Video on demand: import files into a node's store, list and remove them."""


@vod.command("add")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--content", "name", required=True, help="Content name.")
@click.option("--node", "url", help="Import through a running node.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Import straight into a node's data directory (the node need not run).")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--ladder", default="1080p:5000k,720p:2800k,480p:1400k,360p:800k", show_default=True,
              help="Renditions made at import (HEIGHTp:BITRATE, those below the source height); "
              "'none': the source only.")  # fmt: skip
@click.option("--formats", default=None,
              help="Convert to these codecs/containers (as supported_formats, e.g. mp4); "
              "default: keep the source's codecs.")  # fmt: skip
@_credentials
def vod_add(
    file: str, name: str, url: str | None, data_dir: Path | None, quiet: bool,
    ladder: str, formats: str | None,
    key: Path | None, cert: Path | None, token: str | None, cluster: str,
    content_key: str | None,
) -> None:  # fmt: skip
    """Import FILE as VoD content NAME (remuxed; keyframe-aligned segments for HLS)."""
    if (url is None) == (data_dir is None):
        raise click.UsageError("give exactly one of --node and --data-dir")
    progress = Progress(
        TextColumn(f"importing {name}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(), console=Console(stderr=True), disable=quiet,
    )  # fmt: skip
    try:
        with progress:
            task = progress.add_task("import", total=1.0)

            def advance(done_us: int, total_us: int) -> None:
                if total_us > 0:
                    progress.update(task, completed=min(1.0, done_us / total_us))

            sealing = _content_key(content_key)
            source = _vod_source(file, ladder, formats)
            if data_dir is not None:
                result = _import_local(file, name, data_dir, advance, sealing, source)
            else:
                assert url is not None
                result = run(_import_remote(file, name, url, key, cert, token, cluster, advance,
                                            sealing, source))  # fmt: skip
            progress.update(task, completed=1.0)
    except PublishRefused as exc:
        _fail(exc, 3)
    except (SourceError, DapError, OSError, ValueError, AvrsRequestError) as exc:
        _fail(exc)
    click.echo(json.dumps(result))


def _node_signer(data_dir: Path) -> AvrsSigner:
    """The node's identity in its data directory (created when the node never ran)."""
    path = data_dir / IDENTITY_FILE
    if path.exists():
        return AvrsSigner(load_private_key(path))
    identity = NodeIdentity.generate()
    data_dir.mkdir(parents=True, exist_ok=True)
    save_private_key(path, identity.private_key)
    return AvrsSigner(identity.private_key)


def _vod_source(file: str, ladder: str, formats: str | None) -> Any:
    """FILE through the rendition ladder and format conversion (docs/media-ingest.md), or None
    when neither changes anything (then it is imported as it is)."""
    from ..services.media.ingest import format_policy
    from ..services.media.transcode import KEEP_SOURCE, parse_ladder
    from ..services.media.transcoded_source import TranscodedSource

    rungs = () if ladder.strip().lower() == "none" else parse_ladder(ladder)
    target = format_policy([w for w in formats.split(",") if w.strip()]) if formats else KEEP_SOURCE
    source = TranscodedSource(file, ladder=rungs, target=target)
    if source.transcodes:
        return source
    source.close()
    return None


def _import_local(
    file: str, name: str, data_dir: Path, advance: Any, content_key: ChannelKey | None,
    source: Any = None,
) -> dict[str, Any]:  # fmt: skip
    store = VodStore(data_dir / "vod")
    item = import_file(store, file, name, _node_signer(data_dir), on_progress=advance,
                       content_key=content_key, source=source)  # fmt: skip
    return item.describe()


async def _import_remote(
    file: str, name: str, url: str, key: Path | None, cert: Path | None, token: str | None,
    cluster: str, advance: Any, content_key: ChannelKey | None, source: Any = None,
) -> dict[str, Any]:  # fmt: skip
    from dataclasses import replace

    from ..services.media.source import FileSource

    if source is None:
        source = FileSource(file, kind=ContentKind.VOD)
    source.info = replace(source.info, title=name)
    total = source.info.duration_us
    origin: list[int] = []

    def on_packet(packet: MediaPacket) -> None:
        if packet.data:
            origin.append(packet.time) if not origin else None
            advance(packet.time - origin[0], total)

    node, client = await connect(url, key, cert, token, cluster)
    try:
        stats = await publish(client, cluster_guuid(cluster), content_guuid(name), source,
                              realtime=False, on_packet=on_packet,
                              content_key=content_key)  # fmt: skip
    finally:
        await client.close()
        await node.close()
    return {"content": name, "packets": stats.packets, "bytes": stats.bytes,
            "duration_s": round(total / 1e6, 3), "node": url}  # fmt: skip


@vod.command("list")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The node's data directory.")  # fmt: skip
def vod_list(data_dir: Path) -> None:
    """List the VoD items of a node's store, one JSON object per line."""
    for item in VodStore(data_dir / "vod").items():
        click.echo(json.dumps(item.describe()))


@vod.command("rm")
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Remove from a node's data directory.")  # fmt: skip
@click.option("--node", "url", help="Remove through a running node (cluster CONTENT_DEL).")
@_credentials
def vod_rm(
    name: str, data_dir: Path | None, url: str | None, key: Path | None, cert: Path | None,
    token: str | None, cluster: str, content_key: str | None,
) -> None:  # fmt: skip
    """Remove VoD content NAME."""
    if (url is None) == (data_dir is None):
        raise click.UsageError("give exactly one of --node and --data-dir")
    if content_key is not None:
        raise click.UsageError("--content-key has no use when removing")
    content_id = content_guuid(name)
    if data_dir is not None:
        if not VodStore(data_dir / "vod").remove(content_id):
            _fail(ValueError(f"CONTENT_NOT_FOUND: no VoD item {name!r} in {data_dir}"), 3)
        click.echo(json.dumps({"removed": name}))
        return
    assert url is not None
    try:
        run(_remove_remote(content_id, url, key, cert, token, cluster))
    except AvrsRequestError as exc:
        _fail(exc, 3)
    except (DapError, OSError) as exc:
        _fail(exc)
    click.echo(json.dumps({"removed": name}))


async def _remove_remote(
    content_id: bytes, url: str, key: Path | None, cert: Path | None, token: str | None,
    cluster: str,
) -> None:  # fmt: skip
    from ..avrs.constants import AvrsChannel, ClusterArg, ClusterOp
    from ..avrs.tsd import Tsd

    node, client = await connect(url, key, cert, token, cluster)
    try:
        await client.call(
            AvrsChannel.CLUSTER, ClusterOp.CONTENT_DEL,
            [Tsd(ClusterArg.ID, cluster_guuid(cluster)), Tsd(ClusterArg.CONTENT_ID, content_id)],
            signed=True,
        )  # fmt: skip
    finally:
        await client.close()
        await node.close()
