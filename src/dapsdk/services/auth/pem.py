"""Reading and writing the PEM files named by the config keys ``certificate_file``,
``private_key_file``, ``ca_certificate_file`` (and our ``crl_file``).

Every loader raises :class:`~.errors.CredentialFileError` naming the path and the problem (missing,
unreadable, not PEM, wrong kind of key) instead of a bare ``OSError`` or ``ValueError``.
Private keys are written with mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import CredentialFileError


def _read(path: str | Path, what: str) -> bytes:
    target = Path(path)
    try:
        return target.read_bytes()
    except FileNotFoundError:
        raise CredentialFileError(target, f"{what} file does not exist") from None
    except IsADirectoryError:
        raise CredentialFileError(target, f"is a directory, expected a {what} file") from None
    except OSError as exc:
        raise CredentialFileError(target, f"cannot read {what} file: {exc.strerror}") from None


def load_certificate(path: str | Path) -> x509.Certificate:
    """A PEM (or DER) X.509 certificate."""
    data = _read(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CredentialFileError(path, f"not a valid X.509 certificate ({exc})") from None


def load_crl(path: str | Path) -> x509.CertificateRevocationList:
    """A PEM (or DER) certificate revocation list."""
    data = _read(path, "CRL")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CredentialFileError(
            path, f"not a valid certificate revocation list ({exc})"
        ) from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An unencrypted PEM (PKCS#8) Ed25519 private key."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CredentialFileError(
            path, "private key is encrypted; give an unencrypted key"
        ) from None
    except ValueError as exc:
        raise CredentialFileError(path, f"not a valid PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialFileError(path, f"{type(key).__name__} is not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file holding a public key, a private key or a certificate."""
    data = _read(path, "key")
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    key: object
    if b"CERTIFICATE" in data:
        key = load_certificate(path).public_key()
    else:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise CredentialFileError(path, f"not a valid PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CredentialFileError(path, f"{type(key).__name__} is not an Ed25519 public key")
    return key


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_private(path: str | Path, data: bytes) -> None:
    """Write secret material with mode 0600 (created so; never world-readable in between)."""
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(target, 0o600)


def save_private_key(path: str | Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)


def save_public_key(path: str | Path, key: Ed25519PublicKey) -> None:
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    Path(path).write_bytes(pem)


def save_certificate(path: str | Path, cert: x509.Certificate) -> None:
    Path(path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def save_crl(path: str | Path, crl: x509.CertificateRevocationList) -> None:
    """Replace the CRL atomically, so a node reloading it never reads half a file."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, target)
