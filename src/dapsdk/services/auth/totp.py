"""TOTP (RFC 6238) second factor for administrative requests of hosts and operators.

* Enrolment makes a random base32 secret and an ``otpauth://`` provisioning URI for authenticator
  apps (:func:`enroll_totp`).
* :class:`TotpVerifier` accepts the code of the current 30 s step or of one step either side
  (clock skew), and each step at most once: a code equal to or older than the last accepted one is
  refused as a replay (RFC 6238 §5.2). After ``max_failures`` wrong codes in a row it refuses every
  code for ``lockout`` seconds, which keeps guessing 6 digits impractical.
* The host keeps the secrets of its administrators in a file of ``ADDRESS SECRET`` lines
  (``totp_secret_file``, mode 0600): :func:`load_totp_secrets`, :func:`save_totp_secrets`.

Replay state lives in the memory of the verifying process; admin requests go to the cluster host.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyotp

from dapsdk.stream.identity import NodeAddress

from .errors import CredentialFileError, TotpInvalid, TotpLocked, TotpMissing, TotpReplay
from .pem import write_private

DIGITS: Final = 6
INTERVAL: Final = 30
WINDOW: Final = 1
MAX_FAILURES: Final = 5
LOCKOUT_SECONDS: Final = 300.0


def validate_secret(secret: str) -> str:
    """Return the normalised (upper case, no spaces) base32 secret, or raise ``ValueError``."""
    normal = secret.replace(" ", "").upper()
    try:
        raw = base64.b32decode(normal + "=" * (-len(normal) % 8))
    except (binascii.Error, ValueError):
        raise ValueError("TOTP secret is not base32") from None
    if len(raw) < 10:
        raise ValueError(f"TOTP secret holds {len(raw)} bytes; at least 10 (80 bits) are needed")
    return normal


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    secret: str
    """Base32 secret; show it once, store it in the host's secret file."""
    provisioning_uri: str
    """``otpauth://totp/...`` for QR codes and authenticator apps."""


def enroll_totp(account: str, *, issuer: str = "AVRS", secret: str | None = None) -> TotpEnrolment:
    """A new TOTP secret (160 bits) for ``account`` (e.g. the admin's node address)."""
    secret = validate_secret(secret) if secret is not None else pyotp.random_base32()
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(
        name=account, issuer_name=issuer
    )
    return TotpEnrolment(secret=secret, provisioning_uri=uri)


def totp_code(secret: str, *, now: float) -> str:
    """The code of ``secret`` at ``now`` (what an authenticator app shows)."""
    return str(pyotp.TOTP(validate_secret(secret), digits=DIGITS, interval=INTERVAL).at(int(now)))


class TotpVerifier:
    """Verifies codes of one secret, with replay refusal and lockout. Time is passed in."""

    __slots__ = (
        "_failures",
        "_locked_until",
        "_otp",
        "interval",
        "last_step",
        "lockout",
        "max_failures",
        "window",
    )

    def __init__(
        self,
        secret: str,
        *,
        window: int = WINDOW,
        interval: int = INTERVAL,
        max_failures: int = MAX_FAILURES,
        lockout: float = LOCKOUT_SECONDS,
    ) -> None:
        if window < 0 or interval < 1 or max_failures < 1 or lockout < 0:
            raise ValueError("window >= 0, interval >= 1, max_failures >= 1, lockout >= 0")
        self._otp = pyotp.TOTP(validate_secret(secret), digits=DIGITS, interval=interval)
        self.window = window
        self.interval = interval
        self.max_failures = max_failures
        self.lockout = lockout
        self.last_step: int | None = None
        """Time step of the last accepted code; it and every older step are spent."""
        self._failures = 0
        self._locked_until = float("-inf")

    def verify(self, code: str | None, *, now: float) -> int:
        """Accept ``code`` at ``now`` (POSIX seconds) and return its time step, or raise
        :class:`TotpMissing`, :class:`TotpInvalid`, :class:`TotpReplay` or :class:`TotpLocked`."""
        if now < self._locked_until:
            raise TotpLocked(
                f"too many wrong codes; second factor locked for "
                f"{self._locked_until - now:.0f} more seconds"
            )
        if not code:
            raise TotpMissing("a TOTP code is required")
        code = code.replace(" ", "")
        step = self._match(code, int(now) // self.interval)
        if step is None:
            self._failures += 1
            left = self.max_failures - self._failures
            if left <= 0:
                self._failures = 0
                self._locked_until = now + self.lockout
                raise TotpInvalid(
                    f"wrong TOTP code; locked for {self.lockout:.0f} seconds after "
                    f"{self.max_failures} failures"
                )
            raise TotpInvalid(f"wrong TOTP code ({left} attempts left before lockout)")
        if self.last_step is not None and step <= self.last_step:
            raise TotpReplay(
                "TOTP code already used: each code is accepted once, and never after a newer one"
            )
        self.last_step = step
        self._failures = 0
        return step

    def _match(self, code: str, current: int) -> int | None:
        if len(code) != DIGITS or not code.isdigit():
            return None
        found = None
        for step in range(current - self.window, current + self.window + 1):
            if step >= 0 and hmac.compare_digest(self._otp.generate_otp(step), code):
                found = step
        return found


def load_totp_secrets(path: str | Path) -> dict[NodeAddress, str]:
    """Read ``ADDRESS SECRET`` lines (``#`` starts a comment). Raises :class:`CredentialFileError`
    naming the line of a bad entry."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialFileError(target, "TOTP secret file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialFileError(target, f"cannot read TOTP secret file: {exc}") from None
    result: dict[NodeAddress, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected 'XXXX::XXXX::XXXX::XXXX BASE32SECRET'")
            address = NodeAddress.parse(parts[0])
            if address in result:
                raise ValueError(f"node {address} appears twice")
            result[address] = validate_secret(parts[1])
        except ValueError as exc:
            raise CredentialFileError(f"{target}:{number}", str(exc)) from None
    return result


def save_totp_secrets(path: str | Path, secrets: Mapping[NodeAddress, str]) -> None:
    lines = ["# AVRS administrators' TOTP secrets: node address, base32 secret. Keep private."]
    lines += [f"{address} {validate_secret(secret)}" for address, secret in sorted(secrets.items())]
    write_private(path, ("\n".join(lines) + "\n").encode())


def set_totp_secret(path: str | Path, address: NodeAddress, secret: str) -> None:
    """Add or replace the secret of ``address`` in the secret file (created if missing)."""
    current = load_totp_secrets(path) if Path(path).exists() else {}
    current[address] = validate_secret(secret)
    save_totp_secrets(path, current)
