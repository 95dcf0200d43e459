"""``avrs node``: run an AVRS node, from an INI file (``--config``) or, without one, as the
all-in-one node on embedded defaults with its state in ``--data-dir``."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import click

from ..avrs.constants import Role
from ..node.allinone import DEFAULT_DATA_DIR, embedded_config
from ..node.config import DEFAULT_HTTP, ConfigError, NodeConfig, load_node_config
from ..node.values import HostPort
from ..node.wiring import AvrsNode, build_node
from ..runtime.endpoint import parse_endpoint
from ..runtime.loop import run
from ..services.registry import RegistryUnavailable
from .logs import logging_options
from .signals import announce_and_serve

log = logging.getLogger("dapsdk.cli.node")


@dataclasses.dataclass(frozen=True, slots=True)
class Overrides:
    """What the command line changes in the configuration."""

    data_dir: Path | None = None
    listen: tuple[str, ...] = ()
    rtmp_port: int | None = None
    http_port: int | None = None


def _port(current: HostPort | None, port: int | None) -> HostPort | None:
    if port is None:
        return current
    return HostPort(current.host if current is not None else "127.0.0.1", port)


def apply_overrides(config: NodeConfig, overrides: Overrides) -> NodeConfig:
    """``config`` with the flags applied (flags win over keys)."""
    avrs = config.avrs
    changes: dict[str, object] = {}
    if overrides.listen:
        try:
            changes["listen"] = tuple(parse_endpoint(url) for url in overrides.listen)
        except ValueError as exc:
            raise ConfigError(f"--listen: {exc}", path="<command line>", key="listen") from None
    if overrides.data_dir is not None and "data_dir" not in changes:
        changes["data_dir"] = overrides.data_dir.absolute()
    changes["rtmp_listen"] = _port(avrs.rtmp_listen, overrides.rtmp_port)
    changes["http_listen"] = _port(avrs.http_listen, overrides.http_port)
    return dataclasses.replace(config, avrs=dataclasses.replace(avrs, **changes))  # type: ignore[arg-type]


def make_config(config_path: Path | None, overrides: Overrides) -> NodeConfig:
    """The configuration of ``avrs node``: the file, or the embedded defaults; then the flags."""
    if config_path is None:
        config = embedded_config(overrides.data_dir or DEFAULT_DATA_DIR)
        return apply_overrides(config, dataclasses.replace(overrides, data_dir=None))
    return apply_overrides(load_node_config(config_path), overrides)


def _print_facts(node: AvrsNode, config_path: Path | None) -> None:
    avrs = node.config.avrs
    print(f"node {node.address}", flush=True)
    if avrs.data_dir is not None:
        print(f"data-dir {avrs.data_dir}", flush=True)
    if config_path is None and avrs.data_dir is not None:
        key, cert = avrs.data_dir / "node.key", avrs.data_dir / "node.crt"
        print(
            f"tokens avrs token issue --key {key} --cert {cert} --subject NAME --subscribe",
            flush=True,
        )
    for label, url in node.announcements:
        print(f"{label} {url}", flush=True)


async def _start_gateway(node: AvrsNode) -> None:
    """The HTTP gateway on ``http_listen`` for host and server roles. The default address
    (127.0.0.1:8080) is best effort: when it is taken the node runs without the gateway and says
    so; an address set in the configuration or by ``--http-port`` must be free (OSError)."""
    where = node.config.avrs.http_listen
    if where is None or not node.role & (Role.HOST | Role.SERVER):
        return
    try:
        gateway = await node.start_gateway(where.host, where.port)
    except OSError as exc:
        if where != DEFAULT_HTTP:
            await node.close()
            raise OSError(exc.errno, f"HTTP gateway on {where}: {exc.strerror}") from None
        log.warning("HTTP gateway not started: %s is in use (%s)", where, exc.strerror)
        return
    node.announcements.append(("http", gateway.url))


async def serve(config_path: Path | None, overrides: Overrides, ready_line: bool) -> None:
    node = build_node(make_config(config_path, overrides))
    await node.start()
    await _start_gateway(node)
    _print_facts(node, config_path)
    await announce_and_serve(node.urls, ready_line, node.close)


@click.command("node")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="INI configuration file ([avrs] and [stream]; see docs/operations.md). Without it: the "
    "all-in-one node on embedded defaults.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"State directory: identity, local CA, node certificate [default: ./{DEFAULT_DATA_DIR}].",
)
@click.option(
    "--listen",
    "listen",
    multiple=True,
    help="dap_stream URL to listen on (repeatable), e.g. tcp://127.0.0.1:8079; port 0 picks a "
    "free port. Replaces the listen key.",
)
@click.option("--rtmp-port", type=click.IntRange(0, 65535), help="RTMP port (0: a free port).")
@click.option("--http-port", type=click.IntRange(0, 65535), help="HTTP port (0: a free port).")
@click.option("--ready", is_flag=True, help="Print 'ready' once every listener is up.")
@logging_options
def node(
    config_path: Path | None,
    data_dir: Path | None,
    listen: tuple[str, ...],
    rtmp_port: int | None,
    http_port: int | None,
    ready: bool,
) -> None:
    """Run an AVRS node.

    Without --config it is the all-in-one node: host and server of its own cluster, its identity,
    local CA and certificate kept in --data-dir (created on first start, reused after), listening
    on loopback only (dap_stream tcp://127.0.0.1:8079).

    Prints `node ADDRESS`, the data directory, and one `listening URL?node=ADDRESS` line per
    listener: clients connect with that URL, which pins the node's identity. SIGINT/SIGTERM stop
    it gracefully. Configuration errors exit with status 2, a port that cannot be bound with 1."""
    overrides = Overrides(data_dir, listen, rtmp_port, http_port)
    try:
        run(serve(config_path, overrides, ready))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except RegistryUnavailable as exc:
        click.echo(f"error: cluster registry unavailable: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"error: cannot listen: {exc}", err=True)
        sys.exit(1)
