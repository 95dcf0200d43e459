"""``avrs cluster``: membership of a cluster across machines, from any node's configuration.

Each command connects to the configured ``host_address`` (``--to`` overrides it) with the
identity of ``--config`` and sends one signed cluster request:

- ``members``: STATS_REQ, prints members, their roles and the pending joins (host/operator);
- ``join``: MEMBER_REQUEST_ADD without credentials: pending until a host or operator approves;
- ``approve MEMBER [--role R] [--totp CODE]``: MEMBER_REQUEST_APPROVE (host/operator);
- ``remove MEMBER [--totp CODE]``: MEMBER_REMOVE (host/operator), revoked cluster-wide;
- ``roles MEMBER ROLES [--totp CODE]``: ROLE_ASSIGN (host);
- ``drain NODE [--undo] [--totp CODE]``: CHANGE with DRAIN (host): balancers move the node's
  clients away.

MEMBER is the 64-hex-digit identity ``avrs cluster join`` and ``members`` print.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..avrs.constants import AvrsChannel, ClusterArg, ClusterOp, CommonArg
from ..avrs.errors import AvrsError
from ..avrs.tsd import Tsd
from ..node.config import ConfigError, load_node_config
from ..node.wiring import build_node
from ..runtime.loop import run
from ..services.auth.roles import format_roles, parse_roles
from ..services.cluster_requests import ServiceArg
from ..services.registry import RegistryUnavailable
from ..services.registry.memory import MemoryRegistry
from ..stream.identity import NodeAddress

_config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="INI configuration whose identity signs the request (and whose host_address is used).",
)
_to_option = click.option("--to", "target", default=None, help="Node URL (default: host_address).")


_totp_option = click.option(
    "--totp",
    "totp",
    default=None,
    help="Current TOTP code of the administrator (administrative requests need it).",
)


async def _send(
    config_path: Path, target: str | None, op: ClusterOp, args: list[Tsd]
) -> tuple[int, str, str, list[Any]]:
    # A command needs no registry of its own: it talks to a node.
    node = build_node(load_node_config(config_path), registry=MemoryRegistry())
    await node.start()
    try:
        client = await node.connect_client(target)
        try:
            await client.open()
            cluster = node.directory.cluster_id
            reply = await client.request(
                AvrsChannel.CLUSTER, op, [Tsd(ClusterArg.ID, cluster), *args], signed=True
            )
            detail = reply.arg(0xFFF2)
            responses = [r for r in client.responses if r.request_id == reply.request_id]
            return (
                reply.code,
                reply.token,
                detail.decode("utf-8", "replace") if detail else "",
                responses,
            )
        finally:
            await client.close()
    finally:
        await node.close()


def _member(text: str) -> bytes:
    try:
        identity = bytes.fromhex(text)
    except ValueError:
        identity = b""
    if len(identity) != 32:
        raise click.BadParameter("MEMBER is a 64-hex-digit identity (see `avrs cluster members`)")
    return identity


def _finish(code: int, token: str, detail: str) -> None:
    if code == AvrsError.SUCCESS:
        click.echo(token + (f": {detail}" if detail else ""))
        return
    click.echo(f"error: {token} (0x{code:08x}){': ' + detail if detail else ''}", err=True)
    sys.exit(1)


def _run(config_path: Path, target: str | None, op: ClusterOp, args: list[Tsd]) -> Any:
    try:
        return run(_send(config_path, target, op, args))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (RegistryUnavailable, OSError, TimeoutError, ConnectionError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@click.group("cluster")
def cluster() -> None:
    """Cluster membership across machines (join, approve, remove, roles)."""


@cluster.command("members")
@_config_option
@_to_option
@click.option("--json", "as_json", is_flag=True, help="Print the cluster statistics as JSON.")
def members(config_path: Path, target: str | None, as_json: bool) -> None:
    """Members, their roles, pending joins and live nodes."""
    code, token, detail, responses = _run(config_path, target, ClusterOp.STATS_REQ, [])
    if code != AvrsError.SUCCESS or not responses:
        _finish(code if code != AvrsError.SUCCESS else int(AvrsError.ERROR), token, detail)
        return
    raw = responses[0].args.get(ServiceArg.STATS) or b"{}"
    stats = json.loads(raw)
    if as_json:
        click.echo(json.dumps(stats, indent=2, sort_keys=True))
        return
    for identity, member in stats.get("members", {}).items():
        click.echo(f"member  {identity}  {member['address']}  {format_roles(member['roles'])}")
    for identity in stats.get("pending", []):
        click.echo(f"pending {identity}")
    for address, node in stats.get("nodes", {}).items():
        load = node.get("load") or {}
        click.echo(
            f"node    {address}  {format_roles(node['roles'])}  region={node['region'] or '-'}"
            f"  sessions={load.get('sessions', '-')}"
        )


@cluster.command("join")
@_config_option
@_to_option
def join(config_path: Path, target: str | None) -> None:
    """Ask to join: pending until a host or operator approves. Prints this node's identity."""
    try:
        identity = build_node(
            load_node_config(config_path), registry=MemoryRegistry()
        ).signer.identity
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"identity {identity.hex()}")
    _finish(*_run(config_path, target, ClusterOp.MEMBER_REQUEST_ADD, [])[:3])


@cluster.command("approve")
@_config_option
@_to_option
@click.argument("member")
@click.option("--role", "role", default="client", show_default=True, help="Roles to grant.")
@_totp_option
def approve(
    config_path: Path, target: str | None, member: str, role: str, totp: str | None
) -> None:
    """Approve a pending join (host or operator)."""
    args = [
        Tsd(ClusterArg.MEMBER, _member(member)),
        Tsd(ClusterArg.ROLE, int(_roles(role)).to_bytes(2, "little")),
    ]
    _finish(*_run(config_path, target, ClusterOp.MEMBER_REQUEST_APPROVE, _totp(args, totp))[:3])


@cluster.command("remove")
@_config_option
@_to_option
@click.argument("member")
@_totp_option
def remove(config_path: Path, target: str | None, member: str, totp: str | None) -> None:
    """Remove a member; every node drops it as soon as the host's revocation arrives."""
    args = [Tsd(ClusterArg.MEMBER, _member(member))]
    _finish(*_run(config_path, target, ClusterOp.MEMBER_REMOVE, _totp(args, totp))[:3])


@cluster.command("roles")
@_config_option
@_to_option
@click.argument("member")
@click.argument("roles")
@_totp_option
def roles(config_path: Path, target: str | None, member: str, roles: str, totp: str | None) -> None:
    """Set a member's roles (host only), e.g. `server,operator`."""
    args = [
        Tsd(ClusterArg.MEMBER, _member(member)),
        Tsd(ClusterArg.ROLE, int(_roles(roles)).to_bytes(2, "little")),
    ]
    _finish(*_run(config_path, target, ClusterOp.ROLE_ASSIGN, _totp(args, totp))[:3])


def _totp(args: list[Tsd], code: str | None) -> list[Tsd]:
    """Administrative requests carry the administrator's current TOTP code (signed)."""
    if code is None:
        return args
    if len(code) != 6 or not code.isdigit():
        click.echo("error: --totp takes the 6 digits of the authenticator", err=True)
        sys.exit(2)
    return [*args, Tsd(CommonArg.TOTP, code.encode("ascii"))]


def _roles(text: str) -> int:
    try:
        return int(parse_roles(text)) & 0xFFFF
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cluster.command("drain")
@_config_option
@_to_option
@click.argument("node_address")
@click.option("--undo", is_flag=True, help="Let the node take clients again.")
@_totp_option
def drain(
    config_path: Path, target: str | None, node_address: str, undo: bool, totp: str | None
) -> None:
    """Drain a server (host only): it takes no new clients and balancers move its clients."""
    try:
        address = NodeAddress.parse(node_address)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    data = address.value.to_bytes(8, "little") + bytes([0 if undo else 1])
    args = _totp([Tsd(ServiceArg.DRAIN, data)], totp)
    _finish(*_run(config_path, target, ClusterOp.CHANGE, args)[:3])
