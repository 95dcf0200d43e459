"""Replay protection for signed requests: a bounded, time-windowed set of seen (signer, nonce).

A signed request carries TIMESTAMP (ms since the epoch) and a 16-byte NONCE under its signature.
It is accepted once, and only if its timestamp is within ``max_skew`` seconds of our clock. Entries
are forgotten once their timestamp can no longer pass the skew check (at most ``2 * max_skew``
after they were stored), which is safe: a replay of a forgotten request fails the skew check. One
guard is shared by every connection of a node, so a request captured on one connection cannot be
replayed on another.

No peer can exhaust the memory for another (issue 9):

* **Two pools.** Requests whose signer is an authenticated cluster member (or owner) and whose
  permission requires the signature are remembered in the ``authenticated`` pool
  (``max_entries``); every other signed request (optional-signature requests such as Signal
  HELLO, and signers the cluster does not know, such as join requests) in the ``anonymous`` pool
  (``anonymous_entries``). Filling the anonymous pool never refuses a member.
* **Per-signer quota.** One signer holds at most ``per_signer`` live entries.
* **Per-peer quota (anonymous pool).** One connected peer (its transport identity) holds at most
  ``per_peer`` anonymous entries, however many signing keys it invents.
* **Skew bound.** ``max_skew`` is at most :data:`MAX_SKEW_BOUND` seconds.

A request over a quota or a full pool is refused with BUSY rather than forgetting live entries,
because forgetting would reopen the replay hole. Only the one who is over its quota is refused.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Final

from .errors import AvrsError

DEFAULT_MAX_SKEW: Final = 30.0
"""Seconds a signed timestamp may differ from our clock (NTP-synchronised hosts differ by ms;
30 s tolerates phones and VMs with drifting clocks and bounds what the guard must remember)."""
MAX_SKEW_BOUND: Final = 300.0
"""Largest accepted ``max_skew``: an entry is remembered for at most twice the skew."""
DEFAULT_MAX_ENTRIES: Final = 100_000
"""Remembered (signer, nonce) pairs of authenticated members: 60 s of 1,600 signed requests per
second per node."""
DEFAULT_ANONYMOUS_ENTRIES: Final = 50_000
"""Remembered pairs of optional-signature requests and signers the cluster does not know."""
DEFAULT_PER_SIGNER: Final = 2_000
"""Live entries of one signer (33 signed requests per second sustained over a 60 s lifetime)."""
DEFAULT_PER_PEER: Final = 5_000
"""Live anonymous-pool entries of one connected peer, whatever keys it signs with."""

AUTHENTICATED: Final = "authenticated"
ANONYMOUS: Final = "anonymous"


@dataclass(frozen=True, slots=True)
class ReplayVerdict:
    accepted: bool
    code: AvrsError
    reason: str


_ACCEPT: Final = ReplayVerdict(True, AvrsError.SUCCESS, "")


class ReplayGuard:
    """Sans-IO: ``now`` is wall-clock seconds since the Unix epoch, supplied by the caller."""

    __slots__ = (
        "_counts",
        "_expiries",
        "_peers",
        "_seen",
        "_signers",
        "max_entries",
        "max_skew",
        "per_peer",
        "per_signer",
        "pool_limits",
    )

    def __init__(
        self,
        *,
        max_skew: float = DEFAULT_MAX_SKEW,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        anonymous_entries: int = DEFAULT_ANONYMOUS_ENTRIES,
        per_signer: int = DEFAULT_PER_SIGNER,
        per_peer: int = DEFAULT_PER_PEER,
    ) -> None:
        if not 0 < max_skew <= MAX_SKEW_BOUND:
            raise ValueError(f"max_skew must be positive and at most {MAX_SKEW_BOUND:.0f} s")
        if min(max_entries, anonymous_entries, per_signer, per_peer) < 1:
            raise ValueError("max_entries, anonymous_entries and the quotas must be at least 1")
        self.max_skew = max_skew
        self.max_entries = max_entries
        self.per_signer = per_signer
        self.per_peer = per_peer
        self.pool_limits = {AUTHENTICATED: max_entries, ANONYMOUS: anonymous_entries}
        # (signer, nonce) -> (expiry, pool, peer), plus a min-heap of the same keys by expiry.
        self._seen: dict[tuple[bytes, bytes], tuple[float, str, bytes | None]] = {}
        self._expiries: list[tuple[float, tuple[bytes, bytes]]] = []
        self._counts = {AUTHENTICATED: 0, ANONYMOUS: 0}
        self._signers: dict[bytes, int] = {}
        self._peers: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def pool_size(self, pool: str) -> int:
        return self._counts[pool]

    def expire(self, now: float) -> None:
        """Forget entries whose timestamps can no longer pass the skew check."""
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _expiry, key = heapq.heappop(heap)
            entry = self._seen.pop(key, None)
            if entry is None:
                continue
            _, pool, peer = entry
            self._counts[pool] -= 1
            _decrement(self._signers, key[0])
            if peer is not None and pool == ANONYMOUS:
                _decrement(self._peers, peer)

    def check(
        self,
        signer: bytes,
        nonce: bytes,
        timestamp_ms: int,
        now: float,
        *,
        pool: str = AUTHENTICATED,
        peer: bytes | None = None,
    ) -> ReplayVerdict:
        """Accept and remember (signer, nonce) in ``pool``, or say why not.

        ``peer`` is the connected peer's transport identity (quota of the anonymous pool)."""
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
        limit = self.pool_limits.get(pool)
        if limit is None:
            raise ValueError(f"unknown replay pool {pool!r}")
        self.expire(now)
        if self._signers.get(signer, 0) >= self.per_signer:
            return ReplayVerdict(
                False, AvrsError.BUSY, "replay quota of this signer full, retry later"
            )
        counted_peer = peer if pool == ANONYMOUS else None
        if counted_peer is not None and self._peers.get(counted_peer, 0) >= self.per_peer:
            return ReplayVerdict(
                False, AvrsError.BUSY, "replay quota of this connection full, retry later"
            )
        if self._counts[pool] >= limit:
            return ReplayVerdict(False, AvrsError.BUSY, f"{pool} replay window full, retry later")
        # Remember until the timestamp leaves the window on the far side.
        expiry = max(timestamp, now) + self.max_skew
        self._seen[key] = (expiry, pool, counted_peer)
        heapq.heappush(self._expiries, (expiry, key))
        self._counts[pool] += 1
        self._signers[signer] = self._signers.get(signer, 0) + 1
        if counted_peer is not None:
            self._peers[counted_peer] = self._peers.get(counted_peer, 0) + 1
        return _ACCEPT


def _decrement(counts: dict[bytes, int], key: bytes) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
