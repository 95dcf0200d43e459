"""TOTP: enrolment, ±1 step window, replay refusal, lockout, the secret file."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest
from authkit import NOW

from dapsdk.services.auth import (
    CredentialFileError,
    TotpInvalid,
    TotpLocked,
    TotpMissing,
    TotpReplay,
    TotpVerifier,
    enroll_totp,
    load_totp_secrets,
    save_totp_secrets,
    set_totp_secret,
    totp_code,
)
from dapsdk.stream.identity import NodeIdentity

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_enrolment() -> None:
    enrolment = enroll_totp("ABCD::0000::0000::0001", issuer="AVRS main_cluster")
    assert len(enrolment.secret) == 32
    assert enrolment.provisioning_uri.startswith("otpauth://totp/AVRS%20main_cluster:ABCD")
    assert pyotp.parse_uri(enrolment.provisioning_uri).secret == enrolment.secret


def test_code_matches_rfc6238_reference() -> None:
    # RFC 6238 Appendix B: SHA-1 secret "12345678901234567890", T = 59 s -> 94287082 (8 digits);
    # our 6-digit codes are its last six digits.
    import base64

    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp_code(secret, now=59) == "287082"
    assert totp_code(secret, now=1111111109) == "081804"


def test_window_of_one_step() -> None:
    verifier = TotpVerifier(SECRET)
    assert verifier.verify(totp_code(SECRET, now=NOW - 30), now=NOW) == int(NOW) // 30 - 1
    fresh = TotpVerifier(SECRET)
    fresh.verify(totp_code(SECRET, now=NOW + 30), now=NOW)
    with pytest.raises(TotpInvalid):
        TotpVerifier(SECRET).verify(totp_code(SECRET, now=NOW - 60), now=NOW)
    with pytest.raises(TotpInvalid):
        TotpVerifier(SECRET).verify(totp_code(SECRET, now=NOW + 60), now=NOW)


def test_replay_refused() -> None:
    verifier = TotpVerifier(SECRET)
    code = totp_code(SECRET, now=NOW)
    verifier.verify(code, now=NOW)
    with pytest.raises(TotpReplay, match="already used"):
        verifier.verify(code, now=NOW + 5)  # same code, same window
    with pytest.raises(TotpReplay):
        verifier.verify(totp_code(SECRET, now=NOW - 30), now=NOW + 5)  # an older step
    verifier.verify(totp_code(SECRET, now=NOW + 30), now=NOW + 30)  # the next step is fine


def test_missing_and_malformed_codes() -> None:
    verifier = TotpVerifier(SECRET)
    with pytest.raises(TotpMissing):
        verifier.verify(None, now=NOW)
    with pytest.raises(TotpMissing):
        verifier.verify("", now=NOW)
    for bad in ("12345", "abcdef", "1234567"):
        with pytest.raises(TotpInvalid):
            verifier.verify(bad, now=NOW)
    spaced = totp_code(SECRET, now=NOW)
    assert verifier.verify(f"{spaced[:3]} {spaced[3:]}", now=NOW)


def test_lockout_after_failures() -> None:
    verifier = TotpVerifier(SECRET, max_failures=3, lockout=300)
    good = totp_code(SECRET, now=NOW)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for _ in range(2):
        with pytest.raises(TotpInvalid, match="attempts left"):
            verifier.verify(wrong, now=NOW)
    with pytest.raises(TotpInvalid, match="locked for 300 seconds"):
        verifier.verify(wrong, now=NOW)
    with pytest.raises(TotpLocked):
        verifier.verify(good, now=NOW + 10)
    verifier.verify(totp_code(SECRET, now=NOW + 300), now=NOW + 300)


def test_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "totp.secrets"
    alice, bob = NodeIdentity.generate().address, NodeIdentity.generate().address
    save_totp_secrets(path, {alice: SECRET})
    set_totp_secret(path, bob, enroll_totp("bob").secret)
    set_totp_secret(path, alice, SECRET.lower())
    secrets = load_totp_secrets(path)
    assert secrets[alice] == SECRET and len(secrets) == 2
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text(f"# comment\n{alice} {SECRET}\nnot-an-address {SECRET}\n")
    with pytest.raises(CredentialFileError, match=r"totp\.secrets:3: node address"):
        load_totp_secrets(path)
    path.write_text(f"{alice} 1!!\n")
    with pytest.raises(CredentialFileError, match="not base32"):
        load_totp_secrets(path)
    with pytest.raises(CredentialFileError, match="does not exist"):
        load_totp_secrets(tmp_path / "missing")
