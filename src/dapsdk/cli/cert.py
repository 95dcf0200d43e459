"""``avrs cert``: the cluster certificate authority on the command line.

The cluster host keeps the CA directory (``ca.crt``, ``ca.key``, ``crl.pem``) and issues a
certificate for each node's Ed25519 identity key, naming its node address and roles.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dapsdk.services.auth import (
    AuthError,
    CaPaths,
    CertificateError,
    CertificateVerifier,
    ClusterCA,
    CrlFile,
    describe_certificate,
    load_certificate,
    load_crl,
    load_public_key,
    save_certificate,
    save_crl,
    save_private_key,
)
from dapsdk.services.auth.ca import DEFAULT_CA_DAYS, DEFAULT_NODE_DAYS, revocation_reason
from dapsdk.services.auth.common import format_time, from_datetime
from dapsdk.services.auth.pem import raw_public_key
from dapsdk.services.auth.roles import ROLE_NAMES, Role, format_roles, parse_roles
from dapsdk.stream.identity import NodeAddress


class RolesType(click.ParamType[Role, Any]):
    """A comma list of role names (client, host, operator, server, balancer, all)."""

    name = "ROLES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Role:
        if isinstance(value, Role):
            return value
        try:
            return parse_roles(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class AddressType(click.ParamType[NodeAddress, Any]):
    """A node address XXXX::XXXX::XXXX::XXXX."""

    name = "ADDRESS"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> NodeAddress:
        if isinstance(value, NodeAddress):
            return value
        try:
            return NodeAddress.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


ROLES = RolesType()
ADDRESS = AddressType()
ROLE_CHOICES = ", ".join(ROLE_NAMES)


def fail(error: Exception | str) -> NoReturn:
    """Exit with status 1 and ``Error: <message>``."""
    raise click.ClickException(str(error))


@click.group("cert")
def cert() -> None:
    """Cluster certificates: the cluster host is the certificate authority (CA).

    \b
    Typical use, on the host:
      avrs cert ca --cluster-id main_cluster --out /etc/avrs/ca
      avrs cert issue --ca-dir /etc/avrs/ca --generate --roles server --out /etc/avrs --name server
      avrs cert revoke --ca-dir /etc/avrs/ca /etc/avrs/server.crt
      avrs cert show /etc/avrs/server.crt
    Then give the node server.crt, server.key and ca.crt (config keys certificate_file,
    private_key_file, ca_certificate_file) and the host's crl.pem (crl_file).
    """


@cert.command("ca")
@click.option("--cluster-id", required=True, help="Cluster id written into the CA (O=...).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for ca.crt, ca.key (mode 0600) and crl.pem; created if missing.",
)
@click.option(
    "--days",
    default=DEFAULT_CA_DAYS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Validity of the CA in days; node certificates never outlive it.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing CA (old certificates die).")
def create_ca(cluster_id: str, out_dir: Path, days: int, force: bool) -> None:
    """Create the cluster CA: an Ed25519 key and a self-signed CA certificate.

    Keep ca.key secret (ideally offline); distribute ca.crt to every node.
    """
    now = time.time()
    try:
        ca = ClusterCA.create(cluster_id, now=now, days=days)
        paths = ca.save(out_dir, now=now, overwrite=force)
    except (AuthError, ValueError) as exc:
        fail(exc)
    info = describe_certificate(ca.certificate)
    click.echo(f"CA of cluster {cluster_id!r}, valid until {format_time(info.not_after)}")
    for path in (paths.certificate, paths.key, paths.crl):
        click.echo(f"  wrote {path}")
    click.echo(f"  fingerprint (SHA-256) {info.fingerprint_sha256}")


@cert.command("issue")
@click.option(
    "--ca-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="CA directory made by `avrs cert ca`.",
)
@click.option(
    "--node-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's Ed25519 key: PEM public key (preferred) or private key.",
)
@click.option("--generate", is_flag=True, help="Generate a new node key and write NAME.key.")
@click.option("--roles", required=True, type=ROLES, help=f"Comma list of roles: {ROLE_CHOICES}.")
@click.option(
    "--days",
    default=DEFAULT_NODE_DAYS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Validity in days (starts 5 minutes ago, for clock skew).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for NAME.crt (and NAME.key with --generate).",
)
@click.option("--name", default="node", show_default=True, help="Base name of the files.")
def issue(
    ca_dir: Path,
    node_key: Path | None,
    generate: bool,
    roles: Role,
    days: int,
    out_dir: Path,
    name: str,
) -> None:
    """Issue a node certificate binding a node's identity key to its roles.

    The certificate names the node address derived from the key
    (avrs:node=XXXX::XXXX::XXXX::XXXX) and the roles (avrs:roles=0x0100); a peer that presents it
    must prove that key in the handshake.
    """
    if generate == (node_key is not None):
        raise click.UsageError("give exactly one of --node-key KEYFILE or --generate")
    now = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    try:
        ca = ClusterCA.load(ca_dir)
        private = Ed25519PrivateKey.generate() if node_key is None else None
        public = private.public_key() if private is not None else load_public_key(str(node_key))
        certificate = ca.issue(public, roles, now=now, days=days)
    except (AuthError, ValueError) as exc:
        fail(exc)
    if private is not None:
        if key_path.exists():
            fail(f"{key_path}: already exists; not overwriting a node key")
        save_private_key(key_path, private)
    save_certificate(cert_path, certificate)
    address = NodeAddress.from_public_key(raw_public_key(public))
    click.echo(
        f"node {address} roles {format_roles(roles)} serial {certificate.serial_number:x} "
        f"valid until {format_time(from_datetime(certificate.not_valid_after_utc))}"
    )
    click.echo(f"  wrote {cert_path}")
    if private is not None:
        click.echo(f"  wrote {key_path} (secret, mode 0600)")


_REASONS = [reason.name for reason in x509.ReasonFlags if reason.name not in ("remove_from_crl",)]


@cert.command("revoke")
@click.option(
    "--ca-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="CA directory made by `avrs cert ca`; its crl.pem is re-signed.",
)
@click.option("--reason", type=click.Choice(_REASONS), help="Reason recorded in the CRL.")
@click.argument("certfile", type=click.Path(dir_okay=False, path_type=Path))
def revoke(ca_dir: Path, reason: str | None, certfile: Path) -> None:
    """Revoke CERTFILE: add its serial to the CA's revocation list (crl.pem).

    Nodes with crl_file set re-read the file when it changes; copy it to nodes on other machines.
    """
    now = time.time()
    paths = CaPaths(ca_dir)
    try:
        ca = ClusterCA.load(ca_dir)
        certificate = load_certificate(certfile)
        current = load_crl(paths.crl) if paths.crl.exists() else None
        crl = ca.revoke(
            certificate,
            now=now,
            crl=current,
            reason=x509.ReasonFlags[reason] if reason else None,
        )
    except (AuthError, ValueError) as exc:
        fail(exc)
    save_crl(paths.crl, crl)
    info = describe_certificate(certificate)
    click.echo(
        f"revoked serial {info.serial:x} (node {info.node_address}); "
        f"{len(list(crl))} revoked in {paths.crl}"
    )


def _crl_json(crl: x509.CertificateRevocationList) -> dict[str, Any]:
    return {
        "type": "crl",
        "issuer": crl.issuer.rfc4514_string(),
        "last_update": format_time(from_datetime(crl.last_update_utc)),
        "next_update": (
            format_time(from_datetime(crl.next_update_utc)) if crl.next_update_utc else None
        ),
        "revoked": [
            {
                "serial": f"{entry.serial_number:x}",
                "date": format_time(from_datetime(entry.revocation_date_utc)),
                "reason": revocation_reason(entry),
            }
            for entry in crl
        ],
    }


@cert.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def show(as_json: bool, file: Path) -> None:
    """Show what a certificate (or a revocation list) says: cluster, node address, roles,
    serial, validity, key. No trust decision is made; use `avrs cert verify` for that."""
    data = file.read_bytes() if file.is_file() else b""
    try:
        if b"X509 CRL" in data:
            report = _crl_json(load_crl(file))
        else:
            report = {
                "type": "certificate",
                **describe_certificate(load_certificate(file)).to_json(),
            }
    except AuthError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if key == "revoked":
            click.echo(f"{'revoked':>18}: {len(value)}")
            for entry in value:
                click.echo(f"{'':>20}{entry['serial']} at {entry['date']} {entry['reason'] or ''}")
        elif key != "type":
            click.echo(f"{key:>18}: {value}")


@cert.command("verify")
@click.option(
    "--ca",
    "ca_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The cluster CA certificate (ca.crt).",
)
@click.option(
    "--crl", type=click.Path(dir_okay=False, path_type=Path), help="Revocation list (crl.pem)."
)
@click.option(
    "--node-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also check the certificate belongs to this key (public or private PEM).",
)
@click.argument("certfile", type=click.Path(dir_okay=False, path_type=Path))
def verify(ca_file: Path, crl: Path | None, node_key: Path | None, certfile: Path) -> None:
    """Check CERTFILE as a peer would: issued by the CA, valid now, not revoked, (bound to
    --node-key). Exits 1 naming the failed check."""
    try:
        verifier = CertificateVerifier(
            load_certificate(ca_file), CrlFile(crl) if crl is not None else None
        )
        public = raw_public_key(load_public_key(node_key)) if node_key is not None else None
        info = verifier.verify(load_certificate(certfile), now=time.time(), public_key=public)
    except CertificateError as exc:
        fail(f"{exc.failure}: {exc}")
    except (AuthError, ValueError) as exc:
        fail(exc)
    click.echo(
        f"OK: node {info.node_address} of cluster {info.cluster_id!r}, roles "
        f"{format_roles(info.roles)}, valid until {format_time(info.not_after)}"
    )
