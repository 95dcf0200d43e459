"""Constants and helpers of the authentication tests (a uniquely named module, imported by path)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

#: 2025-06-15T15:06:40Z: every test runs at this wall-clock instant (no sleeps, no real clock).
NOW = 1_750_000_000.0
DAY = 86400.0


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)
