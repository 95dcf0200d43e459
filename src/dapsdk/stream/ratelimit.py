"""Token buckets (time passed in) for send shaping and for policing cheap inbound packets."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored. Starts full."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"token bucket needs rate > 0 and burst > 0 (got {rate}, {burst})")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if they are there."""
        self._refill(now)
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def spend(self, amount: float, now: float) -> None:
        """Spend unconditionally (may go negative: the debt delays the next send)."""
        self._refill(now)
        self.tokens -= amount

    def ready_at(self, amount: float, now: float) -> float:
        """When ``amount`` tokens will be available (``now`` if they are)."""
        self._refill(now)
        if self.tokens >= amount:
            return now
        return now + (amount - self.tokens) / self.rate


class CheapPacketPolicer:
    """Limits on packets that cost the sender nothing and the receiver something (RFC 9113 §10.5):
    channel opens and closes, pings, application control messages and other control ops.

    Each kind has a bucket; a peer that empties one is answered with ERROR ENHANCE_YOUR_CALM.
    """

    __slots__ = ("buckets",)

    KINDS = ("open_close", "ping", "control", "empty")

    def __init__(self, limits: dict[str, tuple[float, float]], now: float) -> None:
        self.buckets = {
            kind: TokenBucket(rate, burst, now) for kind, (rate, burst) in limits.items()
        }

    def allow(self, kind: str, now: float) -> bool:
        bucket = self.buckets.get(kind)
        return bucket is None or bucket.take(1.0, now)
