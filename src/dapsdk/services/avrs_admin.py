"""The second factor of administrative AVRS requests: the core's
:class:`~dapsdk.avrs.verification.SecondFactor` backed by the node's TOTP secrets
(``[avrs] totp_secret_file``, :class:`~dapsdk.services.auth.AdminAuthenticator`).

The secret file is re-read when it changes (``avrs token totp-enroll`` on a running host), keeping
the replay state of unchanged secrets; a file that vanishes or breaks refuses every code (fails
closed) until it is readable again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dapsdk.avrs.errors import AvrsError

from .auth import AdminAuthenticator, TotpInvalid, TotpLocked, TotpReplay, load_totp_secrets
from .auth.errors import AuthError
from .avrs_cluster import node_address_of

log = logging.getLogger("dapsdk.avrs.admin")


class TotpSecondFactor:
    """Verifies the TOTP code (CommonArg.TOTP) of an administrative request's signer."""

    __slots__ = ("_admin", "_broken", "_path", "_stamp")

    def __init__(self, admin: AdminAuthenticator, path: Path | None = None) -> None:
        self._admin = admin
        self._path = path
        self._stamp = self._file_stamp()
        self._broken = False

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _reload(self) -> None:
        stamp = self._file_stamp()
        if self._path is None or (stamp == self._stamp and not self._broken):
            return
        self._stamp = stamp
        try:
            self._admin.update_secrets(load_totp_secrets(self._path))
            self._broken = False
        except AuthError as exc:
            log.error("TOTP secret file unusable, refusing admin requests: %s", exc)
            self._broken = True

    def verify(self, identity: bytes, code: str | None, now: float) -> AvrsError:
        self._reload()
        if self._broken:
            return AvrsError.MEMBER_TOTP_REQUIRED
        try:
            self._admin.verify_code(node_address_of(identity), code, now=now)
        except TotpReplay:
            return AvrsError.MEMBER_TOTP_REPLAYED
        except (TotpInvalid, TotpLocked):
            return AvrsError.MEMBER_TOTP_INVALID
        except AuthError:  # not enrolled, missing
            return AvrsError.MEMBER_TOTP_REQUIRED
        return AvrsError.SUCCESS
