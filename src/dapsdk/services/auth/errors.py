"""The exception tree of the authentication services.

Every refusal is a distinct class, so callers branch on the type (not on message text), and each
carries a :attr:`AuthError.failure` token (machine-readable, like the AVRS retcode texts) plus a
message that says what failed and why.
"""

from __future__ import annotations

from typing import ClassVar

from dapsdk.stream.errors import DapError


class AuthError(DapError):
    """Base of every authentication refusal."""

    failure: ClassVar[str] = "AUTH_FAILED"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CredentialFileError(AuthError):
    """A key, certificate, CRL or secret file is missing, unreadable or not what it should be."""

    failure = "CREDENTIAL_FILE"

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


# --- certificates ---------------------------------------------------------------------------


class CertificateError(AuthError):
    """A presented certificate was refused. Subclasses name the check that failed."""

    failure = "CERT_INVALID"


class CertificateMissing(CertificateError):
    failure = "CERT_MISSING"


class CertificateMalformed(CertificateError):
    failure = "CERT_MALFORMED"


class CertificateUntrusted(CertificateError):
    """Not issued by the cluster CA (wrong issuer or a signature that does not verify)."""

    failure = "CERT_UNTRUSTED"


class CertificateExpired(CertificateError):
    failure = "CERT_EXPIRED"


class CertificateNotYetValid(CertificateError):
    failure = "CERT_NOT_YET_VALID"


class CertificateRevoked(CertificateError):
    failure = "CERT_REVOKED"


class CertificateKeyMismatch(CertificateError):
    """The certificate's key is not the identity key the peer proved in the handshake."""

    failure = "CERT_KEY_MISMATCH"


class CertificateRoleError(CertificateError):
    """The certificate is valid but does not grant the roles required."""

    failure = "CERT_ROLE"


class CrlError(CertificateError):
    """The revocation list is not signed by the cluster CA or is malformed."""

    failure = "CRL_INVALID"


# --- tokens ---------------------------------------------------------------------------------


class TokenError(AuthError):
    failure = "TOKEN_INVALID"


class TokenMalformed(TokenError):
    failure = "TOKEN_MALFORMED"


class TokenUntrustedIssuer(TokenError):
    failure = "TOKEN_UNTRUSTED_ISSUER"


class TokenBadSignature(TokenError):
    failure = "TOKEN_BAD_SIGNATURE"


class TokenExpired(TokenError):
    failure = "TOKEN_EXPIRED"


class TokenNotYetValid(TokenError):
    failure = "TOKEN_NOT_YET_VALID"


class TokenWrongAudience(TokenError):
    failure = "TOKEN_WRONG_AUDIENCE"


class TokenWrongSubject(TokenError):
    failure = "TOKEN_WRONG_SUBJECT"


class TokenRevoked(TokenError):
    failure = "TOKEN_REVOKED"


class TokenGrantError(TokenError):
    """The issuer is not allowed to grant what the token claims (e.g. an operator granting HOST)."""

    failure = "TOKEN_GRANT_FORBIDDEN"


# --- TOTP and admin requests ----------------------------------------------------------------


class TotpError(AuthError):
    failure = "TOTP_INVALID"


class TotpMissing(TotpError):
    failure = "TOTP_MISSING"


class TotpInvalid(TotpError):
    failure = "TOTP_INVALID"


class TotpReplay(TotpError):
    """A code (or an older one) was already accepted: each time step is usable once."""

    failure = "TOTP_REPLAY"


class TotpLocked(TotpError):
    """Too many wrong codes in a row: refused until the lockout ends."""

    failure = "TOTP_LOCKED"


class TotpNotEnrolled(TotpError):
    failure = "TOTP_NOT_ENROLLED"


class AdminAuthError(AuthError):
    """An administrative request was refused (identity, role or second factor)."""

    failure = "ADMIN_REFUSED"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        """Token of the underlying refusal: ``ROLE`` or the ``failure`` of the cause
        (``CERT_REVOKED``, ``TOTP_MISSING``, ``TOTP_REPLAY``, ...)."""
