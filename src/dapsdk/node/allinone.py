"""The all-in-one node: what ``avrs node`` runs without ``--config``.

Its state lives in one data directory (default ``./avrs-data``), created on first start and reused
afterwards, so its address and its CA are stable:

* ``node.key``: the node's Ed25519 identity (mode 0600);
* ``ca/ca.crt``, ``ca/ca.key``, ``ca/crl.pem``: a local cluster CA (``avrs cert`` reads it);
* ``node.crt``: the node's host+server certificate from that CA (re-issued when it no longer
  verifies, e.g. expired), which is also the issuer of access tokens
  (``avrs token issue --key avrs-data/node.key --cert avrs-data/node.crt ...``).

The configuration itself is :data:`EMBEDDED_CONFIG`, an INI text parsed by the normal loader with
the data directory as its base, so every default is a documented key (docs/operations.md) and the
same checks apply as to a file. It listens on loopback only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from dapsdk.services.auth import (
    AuthError,
    CertificateVerifier,
    ClusterCA,
    Role,
    load_certificate,
    load_private_key,
    save_certificate,
    save_private_key,
)
from dapsdk.stream.identity import NodeIdentity

from .config import IDENTITY_FILE_NAME, ConfigError, NodeConfig, parse_node_config

DEFAULT_DATA_DIR: Final = Path("avrs-data")
CA_DIR: Final = "ca"
CERT_FILE: Final = "node.crt"
ROLES: Final = Role.HOST | Role.SERVER
CERT_DAYS: Final = 365

#: The embedded defaults (paths relative to the data directory).
EMBEDDED_CONFIG: Final = f"""\
[avrs]
role = host,server
cluster_id = main_cluster
listen = tcp://127.0.0.1:8079
rtmp_listen = 127.0.0.1:1935
http_listen = 127.0.0.1:8080
data_dir = .
private_key_file = {IDENTITY_FILE_NAME}
certificate_file = {CERT_FILE}
ca_certificate_file = {CA_DIR}/ca.crt
crl_file = {CA_DIR}/crl.pem
token_issuers = {CERT_FILE}
"""


def prepare_data_dir(data_dir: Path, *, now: float | None = None) -> None:
    """Create the identity, the local CA and the node certificate in ``data_dir`` where missing;
    keep what is there. Raises :class:`ConfigError` when the directory cannot be used."""
    now = time.time() if now is None else now
    source = str(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = data_dir / IDENTITY_FILE_NAME
        if key_path.exists():
            identity = NodeIdentity(load_private_key(key_path))
        else:
            identity = NodeIdentity.generate()
            save_private_key(key_path, identity.private_key)
        ca_dir = data_dir / CA_DIR
        if (ca_dir / "ca.crt").exists():
            ca = ClusterCA.load(ca_dir)
        else:
            ca = ClusterCA.create("main_cluster", now=now)
            ca.save(ca_dir, now=now)
        cert_path = data_dir / CERT_FILE
        if not _certificate_valid(cert_path, ca, identity, now):
            cert = ca.issue(identity.public_key, ROLES, now=now, days=CERT_DAYS)
            save_certificate(cert_path, cert)
    except (OSError, AuthError, ValueError) as exc:
        raise ConfigError(
            f"--data-dir {source}: cannot prepare the node's data directory: {exc}",
            path=source,
            key="data_dir",
            value=source,
        ) from None


def _certificate_valid(path: Path, ca: ClusterCA, identity: NodeIdentity, now: float) -> bool:
    if not path.exists():
        return False
    try:
        info = CertificateVerifier(ca.certificate).verify(load_certificate(path), now=now + 86400)
    except (AuthError, ValueError):
        return False
    return info.public_key == identity.public_key and (info.roles & ROLES) == ROLES


def embedded_config(data_dir: Path = DEFAULT_DATA_DIR, *, now: float | None = None) -> NodeConfig:
    """The all-in-one node's configuration, with its data directory prepared."""
    data_dir = data_dir.absolute()
    prepare_data_dir(data_dir, now=now)
    return parse_node_config(
        EMBEDDED_CONFIG, source=f"<embedded defaults, data dir {data_dir}>", base_dir=data_dir
    )
