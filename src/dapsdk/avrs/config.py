"""Configuration of the AVRS protocol core. Every limit is a field; defaults say where they come from."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from .replay import (
    DEFAULT_ANONYMOUS_ENTRIES,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_SKEW,
    DEFAULT_PER_PEER,
    DEFAULT_PER_SIGNER,
    MAX_SKEW_BOUND,
    ReplayGuard,
)
from .sessions import DEFAULT_MAX_CONTENTS, DEFAULT_RESUME_TIMEOUT
from .tsd import DEFAULT_MAX_TSD_ITEMS, DEFAULT_MAX_TSD_TOTAL


@dataclass(frozen=True, slots=True)
class AvrsConfig:
    max_tsd_items: int = DEFAULT_MAX_TSD_ITEMS
    """Arguments per request (64: twice a full member profile)."""
    max_args_size: int = DEFAULT_MAX_TSD_TOTAL
    """Bytes of arguments per request (1 MiB: a 100 KiB avatar with ML-DSA keys fits)."""
    max_content_payload: int = 8 * 1024 * 1024
    """Media payload per content packet (8 MiB: a 4K keyframe; dap_stream fragments it)."""
    max_chat_text: int = 2000
    """Bytes of one chat line."""
    reply_timeout: float = 10.0
    """Seconds the application has to answer a cluster request before REQUEST_TIMEOUT."""
    max_pending_requests: int = 64
    """Cluster requests of one connection awaiting the application; more are BUSY."""
    max_contents_per_session: int = DEFAULT_MAX_CONTENTS
    """Contents one session may attach (the original's initial capacity, 255)."""
    max_consecutive_errors: int = 32
    """Refused session/content packets in a row before the session enters ERROR."""
    resume_timeout: float = DEFAULT_RESUME_TIMEOUT
    """Seconds a detached session waits for its owner to re-OPEN (seed reconnect_timeout 60)."""
    max_clock_skew: float = DEFAULT_MAX_SKEW
    """Seconds a signed timestamp may differ from our clock (used for the default ReplayGuard)."""
    replay_entries: int = DEFAULT_MAX_ENTRIES
    """(signer, nonce) pairs of authenticated members remembered by the default ReplayGuard."""
    replay_anonymous_entries: int = DEFAULT_ANONYMOUS_ENTRIES
    """Pairs of optional-signature requests and unknown signers (a separate pool)."""
    replay_per_signer: int = DEFAULT_PER_SIGNER
    """Live replay entries one signer may hold."""
    replay_per_peer: int = DEFAULT_PER_PEER
    """Live anonymous-pool replay entries one connected peer may hold."""
    rng: Callable[[int], bytes] = field(default=os.urandom, repr=False)
    """Source of nonces; inject a seeded one in tests."""

    def __post_init__(self) -> None:
        positive = {
            "max_tsd_items": self.max_tsd_items,
            "max_args_size": self.max_args_size,
            "max_content_payload": self.max_content_payload,
            "max_chat_text": self.max_chat_text,
            "reply_timeout": self.reply_timeout,
            "max_pending_requests": self.max_pending_requests,
            "max_contents_per_session": self.max_contents_per_session,
            "max_consecutive_errors": self.max_consecutive_errors,
            "max_clock_skew": self.max_clock_skew,
            "replay_entries": self.replay_entries,
            "replay_anonymous_entries": self.replay_anonymous_entries,
            "replay_per_signer": self.replay_per_signer,
            "replay_per_peer": self.replay_per_peer,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"AvrsConfig.{name} must be positive, got {value}")
        if self.max_clock_skew > MAX_SKEW_BOUND:
            raise ValueError(
                f"AvrsConfig.max_clock_skew must be at most {MAX_SKEW_BOUND:.0f} s, "
                f"got {self.max_clock_skew}"
            )
        if self.resume_timeout < 0:
            raise ValueError("AvrsConfig.resume_timeout must be >= 0")

    def replay_guard(self) -> ReplayGuard:
        """A replay guard with this configuration's window, pools and quotas."""
        return ReplayGuard(
            max_skew=self.max_clock_skew,
            max_entries=self.replay_entries,
            anonymous_entries=self.replay_anonymous_entries,
            per_signer=self.replay_per_signer,
            per_peer=self.replay_per_peer,
        )
