"""``avrs token``: access tokens (EdDSA JWT with grants) and the TOTP second factor of admins."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

import click

from dapsdk.services.auth import (
    AuthError,
    CertificateVerifier,
    Role,
    TokenError,
    TokenGrants,
    TokenIssuer,
    TokenVerifier,
    TrustedIssuer,
    describe_certificate,
    enroll_totp,
    load_certificate,
    load_private_key,
    load_public_key,
    load_totp_secrets,
    set_totp_secret,
    totp_code,
)
from dapsdk.services.auth.common import format_time
from dapsdk.services.auth.pem import raw_public_key
from dapsdk.services.auth.roles import format_roles
from dapsdk.services.auth.tokens import DEFAULT_TTL, MAX_TTL
from dapsdk.stream.identity import NodeAddress, NodeIdentity

from .cert import ADDRESS, ROLE_CHOICES, ROLES, fail

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group("token")
def token() -> None:
    """Access tokens and the second factor (TOTP) of administrators.

    \b
    Tokens are JWTs signed (EdDSA) by a host or operator identity, for one cluster (aud), with
    grants: role, publish / subscribe / moderate, content ids, attributes.
      avrs token issue --key host.key --cert host.crt --subject viewer-1 --subscribe \\
                       --content lecture-1 --ttl 3600
      avrs token verify --issuer-cert host.crt --ca ca.crt TOKEN
    \b
    Administrative requests of hosts and operators also need a TOTP code:
      avrs token totp-enroll --secrets /etc/avrs/totp.secrets --node-key operator.crt
    """


def _issuer_facts(
    key_path: Path, cert_path: Path | None, roles: Role | None, cluster_id: str | None
) -> tuple[NodeIdentity, Role, str]:
    identity = NodeIdentity(load_private_key(key_path))
    if cert_path is None:
        if roles is None or cluster_id is None:
            raise click.UsageError("without --cert, give --issuer-roles and --cluster-id")
        return identity, roles, cluster_id
    info = describe_certificate(load_certificate(cert_path))
    if info.public_key != identity.public_key:
        fail(f"{cert_path}: certificate is for node {info.node_address}, not for the key in "
             f"{key_path} (node {identity.address})")  # fmt: skip
    if cluster_id is not None and cluster_id != info.cluster_id:
        fail(f"--cluster-id {cluster_id!r} differs from the certificate's {info.cluster_id!r}")
    return identity, roles if roles is not None else info.roles, info.cluster_id or ""


def _attributes(pairs: tuple[str, ...]) -> dict[str, str | int | float | bool]:
    result: dict[str, str | int | float | bool] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--attr")
        value: str | int | float | bool = text
        if text in ("true", "false"):
            value = text == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    continue
        result[key] = value
    return result


@token.command("issue")
@click.option("--key", "key_path", required=True, type=_FILE, help="Issuer's private key (PEM).")
@click.option(
    "--cert",
    "cert_path",
    type=_FILE,
    help="Issuer's certificate: gives its roles and the cluster id.",
)
@click.option("--issuer-roles", type=ROLES, help="Issuer's roles when there is no --cert.")
@click.option("--cluster-id", help="Audience (cluster id); default: from --cert.")
@click.option("--subject", required=True, help="Who the token is for (user id or node address).")
@click.option(
    "--role",
    "grant_role",
    type=ROLES,
    default="client",
    show_default=True,
    help=f"Role granted ({ROLE_CHOICES}); an operator cannot grant host.",
)
@click.option("--publish", is_flag=True, help="Grant publishing content.")
@click.option("--subscribe", is_flag=True, help="Grant watching content.")
@click.option("--moderate", is_flag=True, help="Grant moderating (interactive content).")
@click.option(
    "--content",
    "content_ids",
    multiple=True,
    help="Content id the grants apply to (repeatable), or '*' for all.",
)
@click.option("--attr", "attrs", multiple=True, help="Attribute KEY=VALUE (repeatable), for ABAC.")
@click.option(
    "--ttl",
    default=DEFAULT_TTL,
    show_default=True,
    type=click.FloatRange(min=1, max=MAX_TTL),
    help="Lifetime in seconds.",
)
@click.option(
    "--not-before", default=0.0, type=click.FloatRange(min=0), help="Seconds from now until valid."
)
def issue(
    key_path: Path,
    cert_path: Path | None,
    issuer_roles: Role | None,
    cluster_id: str | None,
    subject: str,
    grant_role: Role,
    publish: bool,
    subscribe: bool,
    moderate: bool,
    content_ids: tuple[str, ...],
    attrs: tuple[str, ...],
    ttl: float,
    not_before: float,
) -> None:
    """Issue a signed access token and print it on stdout."""
    now = time.time()
    content: tuple[str, ...] | Literal["*"] = "*" if "*" in content_ids else content_ids
    try:
        identity, roles, audience = _issuer_facts(key_path, cert_path, issuer_roles, cluster_id)
        grants = TokenGrants(
            role=grant_role,
            publish=publish,
            subscribe=subscribe,
            moderate=moderate,
            content_ids=content,
            attributes=_attributes(attrs),
        )
        issuer = TokenIssuer(identity, roles, audience)
        jwt_text = issuer.issue(subject, grants, now=now, ttl=ttl, not_before=now + not_before)
    except (AuthError, ValueError) as exc:
        fail(exc)
    click.echo(jwt_text)


@token.command("verify")
@click.option(
    "--issuer-cert",
    "issuer_certs",
    multiple=True,
    required=True,
    type=_FILE,
    help="Certificate of a trusted issuer (repeatable); its roles bound what it may grant.",
)
@click.option("--ca", "ca_file", type=_FILE, help="Check the issuer certificates against this CA.")
@click.option("--cluster-id", help="Expected audience; default: the issuers' cluster.")
@click.option("--subject", help="Require the token to be issued to this subject.")
@click.argument("token_text", metavar="TOKEN", default="-")
def verify(
    issuer_certs: tuple[Path, ...],
    ca_file: Path | None,
    cluster_id: str | None,
    subject: str | None,
    token_text: str,
) -> None:
    """Verify TOKEN ('-' reads stdin) and print its claims as JSON; exit 1 naming the refusal."""
    now = time.time()
    if token_text == "-":
        token_text = sys.stdin.read().strip()
    try:
        ca = CertificateVerifier(load_certificate(ca_file)) if ca_file is not None else None
        issuers, clusters = [], set()
        for path in issuer_certs:
            certificate = load_certificate(path)
            info = ca.verify(certificate, now=now) if ca else describe_certificate(certificate)
            if info.public_key is None:
                fail(f"{path}: not an Ed25519 certificate")
            issuers.append(TrustedIssuer(info.public_key, info.roles))
            clusters.add(info.cluster_id)
        audience = cluster_id or (clusters.pop() if len(clusters) == 1 else None)
        if not audience:
            raise click.UsageError("issuers of several clusters: give --cluster-id")
        verified = TokenVerifier(issuers, audience).verify(token_text, now=now, subject=subject)
    except TokenError as exc:
        fail(f"{exc.failure}: {exc}")
    except (AuthError, ValueError) as exc:
        fail(exc)
    grants = verified.grants
    report: dict[str, Any] = {
        "issuer": str(verified.issuer),
        "issuer_roles": format_roles(verified.issuer_roles),
        "subject": verified.subject,
        "audience": verified.audience,
        "issued_at": format_time(verified.issued_at),
        "not_before": format_time(verified.not_before),
        "expires_at": format_time(verified.expires_at),
        "token_id": verified.token_id,
        "role": format_roles(grants.role),
        "publish": grants.publish,
        "subscribe": grants.subscribe,
        "moderate": grants.moderate,
        "content": grants.content_ids if grants.content_ids == "*" else list(grants.content_ids),
        "attributes": dict(grants.attributes),
    }
    click.echo(json.dumps(report, indent=2))


def _node_address(node: NodeAddress | None, node_key: Path | None) -> NodeAddress:
    if (node is None) == (node_key is None):
        raise click.UsageError("give exactly one of --node ADDRESS or --node-key FILE")
    if node is not None:
        return node
    return NodeAddress.from_public_key(raw_public_key(load_public_key(str(node_key))))


@token.command("totp-enroll")
@click.option(
    "--secrets",
    "secrets_file",
    required=True,
    type=_FILE,
    help="The host's TOTP secret file (config key totp_secret_file); created if missing.",
)
@click.option("--node", type=ADDRESS, help="Administrator's node address.")
@click.option("--node-key", type=_FILE, help="Or: the administrator's key or certificate (PEM).")
@click.option("--issuer", default="AVRS", show_default=True, help="Name shown in the app.")
def totp_enroll(
    secrets_file: Path, node: NodeAddress | None, node_key: Path | None, issuer: str
) -> None:
    """Enrol a host or operator for the second factor: make a secret, store it in the host's
    secret file, and print the otpauth:// URI to load into an authenticator app (as a QR code).

    Enrolling again replaces the secret."""
    try:
        address = _node_address(node, node_key)
        enrolment = enroll_totp(str(address), issuer=issuer)
        set_totp_secret(secrets_file, address, enrolment.secret)
    except (AuthError, ValueError) as exc:
        fail(exc)
    click.echo(f"node {address} enrolled in {secrets_file}")
    click.echo(f"secret: {enrolment.secret}")
    click.echo(f"uri: {enrolment.provisioning_uri}")


@token.command("totp-code")
@click.option("--secrets", "secrets_file", required=True, type=_FILE, help="TOTP secret file.")
@click.option("--node", type=ADDRESS, help="Administrator's node address.")
@click.option("--node-key", type=_FILE, help="Or: the administrator's key or certificate.")
def totp_code_command(secrets_file: Path, node: NodeAddress | None, node_key: Path | None) -> None:
    """Print the current TOTP code of an enrolled node (for scripts; people use their app)."""
    try:
        address = _node_address(node, node_key)
        secret = load_totp_secrets(secrets_file).get(address)
    except (AuthError, ValueError) as exc:
        fail(exc)
    if secret is None:
        fail(f"{secrets_file}: node {address} is not enrolled")
    click.echo(totp_code(secret, now=time.time()))
