"""Turn the security keys of a :class:`~.config.NodeConfig` into working objects: the node's
identity, its certificate, the peer verifier for :class:`~dapsdk.stream.config.StreamConfig`, the
token verifier and the admin authenticator. Every failure is a :class:`~.config.ConfigError` that
names the key and the file."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dapsdk.services.auth import (
    AdminAuthenticator,
    AuthError,
    CertificateInfo,
    CertificateVerifier,
    Clock,
    CrlFile,
    Role,
    TokenVerifier,
    TrustedIssuer,
    format_roles,
    load_certificate,
    load_private_key,
    load_totp_secrets,
    save_private_key,
)
from dapsdk.stream.config import PeerIdentity, PeerVerifier
from dapsdk.stream.identity import NodeAddress, NodeIdentity

from .config import ConfigError, NodeConfig


@dataclass(frozen=True, slots=True)
class NodeCredentials:
    identity: NodeIdentity
    certificate: x509.Certificate | None
    """This node's certificate (verified against the CA and bound to ``identity``)."""
    certificate_verifier: CertificateVerifier | None
    """Set when ``ca_certificate_file`` is: peers must then present a certificate."""
    token_verifier: TokenVerifier | None
    """Set when ``token_issuers`` is."""
    admin: AdminAuthenticator | None
    """Set when ``totp_secret_file`` is."""

    @property
    def certificate_der(self) -> bytes | None:
        return None if self.certificate is None else self.certificate.public_bytes(Encoding.DER)

    def peer_verifier(
        self,
        clock: Clock = time.time,
        on_verified: Callable[[PeerIdentity, CertificateInfo], None] | None = None,
    ) -> PeerVerifier | None:
        if self.certificate_verifier is None:
            return None
        return self.certificate_verifier.as_peer_verifier(clock, on_verified)

    def stream_overrides(self, clock: Clock = time.time) -> dict[str, Any]:
        """``certificate`` and ``peer_verifier`` for :meth:`NodeConfig.stream_config`."""
        return {"certificate": self.certificate_der, "peer_verifier": self.peer_verifier(clock)}


def _fail(config: NodeConfig, key: str, path: object, problem: object) -> ConfigError:
    return ConfigError(
        f"{config.source} [avrs] {key} = {str(path)!r}: {problem}",
        path=config.source,
        section="avrs",
        key=key,
        value=str(path),
    )


def _identity(config: NodeConfig, create: bool) -> NodeIdentity:
    """The node's identity key: ``identity_file``/``private_key_file``, else ``data_dir/node.key``.
    ``identity_file`` and the data-directory key are created on first start (mode 0600) and reused
    afterwards, so the node's address is stable; only ``data_dir =`` (empty) is ephemeral."""
    avrs = config.avrs
    path = avrs.identity_key_file
    if avrs.identity_file is not None:
        key_name = "identity_file"
    elif avrs.private_key_file is not None:
        key_name = "private_key_file"
    else:
        key_name = "data_dir"
    if path is None:
        return NodeIdentity.generate()  # data_dir = (empty): a new address on every start
    if not path.exists() and create and key_name != "private_key_file":
        identity = NodeIdentity.generate()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            save_private_key(path, identity.private_key)
        except OSError as exc:
            raise _fail(config, key_name, path, f"cannot create the identity key: {exc}") from None
        return identity
    try:
        return NodeIdentity(load_private_key(path))
    except AuthError as exc:
        raise _fail(config, key_name, path, exc) from None


def load_node_credentials(
    config: NodeConfig,
    *,
    now: float,
    create_identity: bool = True,
    role_lookup: Callable[[NodeAddress], Role] | None = None,
) -> NodeCredentials:
    """Load and cross-check the security files of ``config`` at ``now`` (POSIX seconds).

    Checks that this node's certificate is issued by the CA, valid now, not revoked, bound to the
    identity key, and grants every role in ``role``; that each token issuer's certificate is valid
    and held by a host or operator. ``role_lookup`` gives admin roles when there is no CA.
    """
    avrs = config.avrs
    identity = _identity(config, create_identity)
    verifier: CertificateVerifier | None = None
    if avrs.ca_certificate_file is not None:
        try:
            ca = load_certificate(avrs.ca_certificate_file)
        except AuthError as exc:
            raise _fail(config, "ca_certificate_file", avrs.ca_certificate_file, exc) from None
        crl = None
        if avrs.crl_file is not None:
            try:
                crl = CrlFile(avrs.crl_file)
            except AuthError as exc:
                raise _fail(config, "crl_file", avrs.crl_file, exc) from None
        try:
            verifier = CertificateVerifier(ca, crl)
        except ValueError as exc:
            raise _fail(config, "ca_certificate_file", avrs.ca_certificate_file, exc) from None
        try:
            verifier.current_crl()
        except AuthError as exc:
            raise _fail(config, "crl_file", avrs.crl_file, exc) from None
    certificate = _own_certificate(config, identity, verifier, now)
    tokens = _token_verifier(config, verifier, now)
    admin = None
    if avrs.totp_secret_file is not None:
        try:
            secrets = load_totp_secrets(avrs.totp_secret_file)
        except AuthError as exc:
            raise _fail(config, "totp_secret_file", avrs.totp_secret_file, exc) from None
        if verifier is None and role_lookup is None:
            raise _fail(
                config, "totp_secret_file", avrs.totp_secret_file,
                "admin requests need ca_certificate_file (or a role lookup) to learn roles",
            )  # fmt: skip
        admin = AdminAuthenticator(secrets, certificate_verifier=verifier, role_lookup=role_lookup)
    return NodeCredentials(identity, certificate, verifier, tokens, admin)


def _own_certificate(
    config: NodeConfig, identity: NodeIdentity, verifier: CertificateVerifier | None, now: float
) -> x509.Certificate | None:
    path = config.avrs.certificate_file
    if path is None:
        return None
    try:
        certificate = load_certificate(path)
        if verifier is None:
            raise ValueError("ca_certificate_file is required to check it")
        info = verifier.verify(certificate, now=now)
    except (AuthError, ValueError) as exc:
        raise _fail(config, "certificate_file", path, exc) from None
    if info.public_key != identity.public_key:
        key_name = "identity_file" if config.avrs.identity_file is not None else "private_key_file"
        raise _fail(
            config, "certificate_file", path,
            f"certificate belongs to node {info.node_address}, but the key in {key_name} is "
            f"node {identity.address}",
        )  # fmt: skip
    missing = config.avrs.role & ~info.roles
    if missing:
        raise _fail(
            config, "certificate_file", path,
            f"grants roles {format_roles(info.roles)!r} but [avrs] role also asks for "
            f"{format_roles(Role(missing))!r}; issue a certificate with those roles",
        )  # fmt: skip
    return certificate


def _token_verifier(
    config: NodeConfig, verifier: CertificateVerifier | None, now: float
) -> TokenVerifier | None:
    paths: tuple[Path, ...] = config.avrs.token_issuers
    if not paths:
        return None
    issuers = []
    for path in paths:
        try:
            if verifier is None:
                raise ValueError("ca_certificate_file is required to check issuers")
            info = verifier.verify(load_certificate(path), now=now)
        except (AuthError, ValueError) as exc:
            raise _fail(config, "token_issuers", path, exc) from None
        if info.public_key is None or not info.roles & (Role.HOST | Role.OPERATOR):
            raise _fail(
                config, "token_issuers", path,
                f"roles {format_roles(info.roles)!r}: only hosts and operators issue tokens",
            )  # fmt: skip
        issuers.append(TrustedIssuer(info.public_key, info.roles))
    return TokenVerifier(issuers, config.avrs.cluster_id, leeway=config.avrs.token_leeway)
