"""What every client command shares: the pinning options, and ``avrs status``.

Clients pin the node they connect to (see :mod:`dapsdk.runtime.known_hosts`): a URL needs
``?node=XXXX::XXXX::XXXX::XXXX``, or ``--trust-on-first-use`` (the address the node proves the
first time is remembered in ``--known-hosts``, like SSH), or an explicit ``?insecure_no_pin``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from cryptography.hazmat.primitives.serialization import Encoding

from ..runtime.known_hosts import KnownHosts, PinRequired
from ..runtime.loop import run
from ..runtime.node import StreamNode
from ..services.auth import AuthError, load_certificate, load_private_key
from ..stream.config import StreamConfig
from ..stream.errors import DapError
from ..stream.identity import NodeIdentity
from .logs import client_logging_options

#: Where ``--trust-on-first-use`` keeps pins unless ``--known-hosts`` or $AVRS_KNOWN_HOSTS says.
DEFAULT_KNOWN_HOSTS: Final = Path("~/.config/avrs/known_hosts")

F = TypeVar("F", bound=Callable[..., Any])


def known_hosts_path(option: Path | None) -> Path:
    if option is not None:
        return option
    env = os.environ.get("AVRS_KNOWN_HOSTS")
    return Path(env) if env else DEFAULT_KNOWN_HOSTS.expanduser()


def pin_options(command: F) -> F:
    """``--trust-on-first-use`` and ``--known-hosts`` (values: ``trust_on_first_use``,
    ``known_hosts``); pass them to :func:`configure_pinning`."""
    command = click.option(
        "--known-hosts",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Pin file of --trust-on-first-use [default: $AVRS_KNOWN_HOSTS or "
        f"{DEFAULT_KNOWN_HOSTS}].",
    )(command)
    return click.option(
        "--trust-on-first-use",
        is_flag=True,
        help="Accept a URL without ?node=: remember the address the node proves the first time "
        "and require it afterwards.",
    )(command)


def configure_pinning(node: StreamNode, trust_on_first_use: bool, known_hosts: Path | None) -> None:
    """Give ``node`` its trust-on-first-use file when the flag is set."""
    if trust_on_first_use:
        node.known_hosts = KnownHosts(known_hosts_path(known_hosts))


def client_identity(key: Path | None, cert: Path | None) -> tuple[NodeIdentity, bytes | None]:
    """The identity (``--key``, else a fresh one) and certificate (``--cert``) a client proves."""
    if cert is not None and key is None:
        raise click.UsageError("--cert needs --key (the key the certificate binds)")
    try:
        identity = NodeIdentity(load_private_key(key)) if key else NodeIdentity.generate()
        der = load_certificate(cert).public_bytes(Encoding.DER) if cert else None
    except AuthError as exc:
        raise click.UsageError(str(exc)) from None
    return identity, der


async def _status(
    url: str, identity: NodeIdentity, cert: bytes | None, tofu: bool, known: Path | None
) -> dict[str, Any]:
    node = StreamNode(identity, StreamConfig(certificate=cert))
    configure_pinning(node, tofu, known)
    await node.start()
    try:
        stream = await node.connect(url)
        response = await stream.http_request("GET", "/api/v1/status")
        if response.status != 200:
            raise DapError(f"/api/v1/status answered {response.status}: {response.body[:200]!r}")
        result: dict[str, Any] = response.json()
        return result
    finally:
        await node.close()


@click.command("status")
@click.argument("url")
@click.option(
    "--key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Identity key (PEM) to connect with; operators and hosts see the full status.",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Certificate of --key from the cluster CA (gives the roles).",
)
@pin_options
@client_logging_options
def status(
    url: str, key: Path | None, cert: Path | None, trust_on_first_use: bool,
    known_hosts: Path | None,
) -> None:  # fmt: skip
    """Print a node's /api/v1/status as JSON (fetched over the stream's SERVICE channel).

    Without host or operator credentials the node shows only public facts: version, roles,
    load."""
    identity, der = client_identity(key, cert)
    try:
        result = run(_status(url, identity, der, trust_on_first_use, known_hosts))
    except PinRequired as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (DapError, OSError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result, indent=2, sort_keys=True))
