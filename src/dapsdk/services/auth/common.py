"""Small helpers shared by the authentication modules: wall-clock time and cluster ids.

Every function of :mod:`dapsdk.services.auth` that depends on time takes ``now`` as POSIX seconds
(wall clock, ``time.time()``), never reading a clock itself: certificates, tokens and TOTP codes are
about calendar time, so the monotonic clock of the stream core does not apply. Callers that need a
clock pass ``clock: Clock`` (default ``time.time``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

#: Source of wall-clock time in POSIX seconds.
Clock = Callable[[], float]

CLUSTER_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
_CLUSTER_ID_RE: Final = re.compile(rf"^{CLUSTER_ID_PATTERN}$")
CLUSTER_ID_ALLOWED: Final = (
    "1 to 64 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
)


def validate_cluster_id(cluster_id: str) -> str:
    """Return ``cluster_id`` if it is well formed, else raise ``ValueError``."""
    if not _CLUSTER_ID_RE.match(cluster_id):
        raise ValueError(f"cluster id {cluster_id!r} is not valid: {CLUSTER_ID_ALLOWED}")
    return cluster_id


def to_datetime(now: float) -> datetime:
    """POSIX seconds -> aware UTC datetime, truncated to whole seconds (X.509 granularity)."""
    return datetime.fromtimestamp(int(now), tz=UTC)


def from_datetime(moment: datetime) -> float:
    """Aware datetime -> POSIX seconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def format_time(now: float) -> str:
    """POSIX seconds as ISO 8601 UTC, for messages."""
    return to_datetime(now).strftime("%Y-%m-%dT%H:%M:%SZ")
