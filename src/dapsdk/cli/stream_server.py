"""``avrs stream-server``: a dap_stream node that echoes every message on every channel."""

from __future__ import annotations

import sys

import click

from ..runtime.channel import Channel
from ..runtime.loop import run
from ..runtime.node import ChannelProc, StreamNode
from .logs import logging_options
from .signals import announce_and_serve


def _echo(channel: Channel, ptype: int, data: bytes, _arg: object) -> int:
    channel.write_nowait(ptype, data)
    return len(data)


async def serve(urls: tuple[str, ...], ready_line: bool, max_connections: int = 10000) -> None:
    node = StreamNode(max_connections=max_connections)
    await node.start()
    node.default_channel_proc = ChannelProc(packet_in=_echo)
    listeners = [await node.listen(url) for url in urls]
    await announce_and_serve((listener.url for listener in listeners), ready_line, node.close)


@click.command("stream-server")
@click.option(
    "--listen",
    "urls",
    multiple=True,
    default=("tcp://127.0.0.1:8080",),
    show_default=True,
    help="URL to listen on (repeatable): tcp://host:port; port 0 picks a free port.",
)
@click.option("--ready", is_flag=True, help="Print 'ready' once every listener is up.")
@click.option(
    "--max-connections",
    type=click.IntRange(1, 1_000_000),
    default=10000,
    show_default=True,
    help="Established streams accepted; beyond: ERROR CONNECTION_LIMIT.",
)
@logging_options
def stream_server(urls: tuple[str, ...], ready: bool, max_connections: int) -> None:
    """Run a dap_stream echo node: every message on any channel is sent back on that channel.
    Prints the bound URLs (with the node address to pin as ?node=...)."""
    try:
        run(serve(urls, ready, max_connections))
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
