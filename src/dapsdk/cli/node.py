"""``avrs node``: run an AVRS node from its INI configuration file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..node.config import ConfigError, load_node_config
from ..node.wiring import build_node
from ..runtime.loop import run
from ..services.registry import RegistryUnavailable
from .signals import announce_and_serve


async def serve(path: Path, ready_line: bool) -> None:
    node = build_node(load_node_config(path))
    await node.start()
    print(f"node {node.address}", flush=True)
    for label, url in node.announcements:
        print(f"{label} {url}", flush=True)
    await announce_and_serve(node.urls, ready_line, node.close)


@click.command("node")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="INI configuration file ([avrs] and [stream] sections; see docs/operations.md).",
)
@click.option("--ready", is_flag=True, help="Print 'ready' once every listener is up.")
def node(config_path: Path, ready: bool) -> None:
    """Run an AVRS node: its roles, cluster, certificates and listeners come from --config.

    Prints `node ADDRESS` and one `listening URL?node=ADDRESS` line per listener (clients pin the
    node with that URL). SIGINT/SIGTERM stop it gracefully."""
    try:
        run(serve(config_path, ready))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except RegistryUnavailable as exc:
        click.echo(f"error: cluster registry unavailable: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"error: cannot listen: {exc}", err=True)
        sys.exit(1)
