"""Replay protection for signed requests: a bounded, time-windowed set of seen (signer, nonce).

A signed request carries TIMESTAMP (ms since the epoch) and a 16-byte NONCE under its signature.
It is accepted once, and only if its timestamp is within ``max_skew`` seconds of our clock. Entries
older than the window are forgotten, which is safe: a replay of a forgotten request now fails the
skew check. One guard should be shared by every connection of a node, so a request captured on
one connection cannot be replayed on another.

The set is bounded (``max_entries``). When full, the guard first expires old entries; if it is
still full it refuses new requests with BUSY rather than forgetting live entries, because
forgetting would reopen the replay hole.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Final

from .errors import AvrsError

DEFAULT_MAX_SKEW: Final = 30.0
"""Seconds a signed timestamp may differ from our clock (NTP-synchronised hosts differ by ms;
30 s tolerates phones and VMs with drifting clocks and bounds what the guard must remember)."""
DEFAULT_MAX_ENTRIES: Final = 100_000
"""Remembered (signer, nonce) pairs: 60 s of 1,600 signed requests per second per node."""


@dataclass(frozen=True, slots=True)
class ReplayVerdict:
    accepted: bool
    code: AvrsError
    reason: str


_ACCEPT: Final = ReplayVerdict(True, AvrsError.SUCCESS, "")


class ReplayGuard:
    """Sans-IO: ``now`` is wall-clock seconds since the Unix epoch, supplied by the caller."""

    __slots__ = ("_expiries", "_seen", "max_entries", "max_skew")

    def __init__(
        self, *, max_skew: float = DEFAULT_MAX_SKEW, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if max_skew <= 0:
            raise ValueError("max_skew must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_skew = max_skew
        self.max_entries = max_entries
        # (signer, nonce) -> expiry time, plus a min-heap of the same pairs by expiry.
        self._seen: dict[tuple[bytes, bytes], float] = {}
        self._expiries: list[tuple[float, tuple[bytes, bytes]]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def expire(self, now: float) -> None:
        """Forget entries whose timestamps can no longer pass the skew check."""
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _expiry, key = heapq.heappop(heap)
            self._seen.pop(key, None)

    def check(self, signer: bytes, nonce: bytes, timestamp_ms: int, now: float) -> ReplayVerdict:
        """Accept and remember (signer, nonce), or say why not. Pure apart from the set."""
        timestamp = timestamp_ms / 1000.0
        if abs(timestamp - now) > self.max_skew:
            return ReplayVerdict(
                False,
                AvrsError.SIGN_EXPIRED,
                f"timestamp {timestamp:.3f} is {timestamp - now:+.3f} s from our clock",
            )
        key = (signer, nonce)
        if key in self._seen:
            return ReplayVerdict(False, AvrsError.SIGN_REPLAYED, "nonce already used")
        self.expire(now)
        if len(self._seen) >= self.max_entries:
            return ReplayVerdict(False, AvrsError.BUSY, "replay window full, retry later")
        # Remember until the timestamp leaves the window on the far side.
        expiry = max(timestamp, now) + self.max_skew
        self._seen[key] = expiry
        heapq.heappush(self._expiries, (expiry, key))
        return _ACCEPT
