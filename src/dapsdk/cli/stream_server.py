"""``avrs stream-server``: a dap_stream node that echoes every message on every channel."""

from __future__ import annotations

import sys

import click

from ..runtime.channel import Channel
from ..runtime.loop import run
from ..runtime.node import ChannelProc, StreamNode
from .logs import client_logging_options
from .signals import announce_and_serve


def _echo(channel: Channel, ptype: int, data: bytes, _arg: object) -> int:
    """Echo a message only while the channel's send queue is below its high-water mark.

    Otherwise the message stays unread (returning 0 keeps it queued), so its credit is not
    returned and the peer's sending stops at its window: a peer that does not consume its
    echoes holds back its own writes instead of growing our memory."""
    if channel.has_unread or channel.queued_bytes >= channel.stream.config.send_high_water:
        return 0
    channel.write_nowait(ptype, data)
    return len(data)


def _resume(channel: Channel, _arg: object) -> None:
    """``ready_to_write``: echo the messages held back while the channel was full."""
    high_water = channel.stream.config.send_high_water
    while channel.is_active and channel.queued_bytes < high_water:
        item = channel.read()
        if item is None:
            return
        channel.write_nowait(*item)


def _new(channel: Channel) -> None:
    channel.ready_to_write = _resume


async def serve(urls: tuple[str, ...], ready_line: bool, max_connections: int = 10000) -> None:
    node = StreamNode(max_connections=max_connections)
    await node.start()
    node.default_channel_proc = ChannelProc(new=_new, packet_in=_echo)
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
@client_logging_options
def stream_server(urls: tuple[str, ...], ready: bool, max_connections: int) -> None:
    """Run a dap_stream echo node: every message on any channel is sent back on that channel.
    Prints the bound URLs (with the node address to pin as ?node=...)."""
    try:
        run(serve(urls, ready, max_connections))
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
