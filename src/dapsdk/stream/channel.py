"""Per-channel state inside the wire core: send queue, credits, reassembly, close state."""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compression import AdaptiveCompressor
    from .ratelimit import TokenBucket


class ChannelState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  #: we sent CLOSE and wait for the peer's CLOSE; inbound data is discarded


class PendingMessage:
    """A message queued for sending; ``offset`` advances as packets are sealed from it."""

    __slots__ = ("data", "deadline", "fragmented", "offset", "ptype")

    def __init__(
        self,
        ptype: int,
        data: bytes | memoryview,
        fragmented: bool,
        deadline: float | None = None,
    ) -> None:
        self.ptype = ptype
        self.data = data
        self.offset = 0
        self.fragmented = fragmented
        self.deadline = deadline  # realtime: dropped before sending once now > deadline


class ChannelCore:
    """Everything the core tracks for one open channel."""

    __slots__ = (
        "blocked",
        "bucket",
        "close_after_flush",
        "compressor",
        "consumed",
        "dropped_late",
        "id",
        "last_seq",
        "priority",
        "queue",
        "queued_bytes",
        "realtime_budget",
        "reassembly",
        "reassembly_total",
        "recv_max",
        "recv_offset",
        "recv_window",
        "scheduled",
        "send_max",
        "send_offset",
        "state",
        "window_sent_at",
    )

    def __init__(self, channel_id: int, send_window: int, recv_window: int) -> None:
        self.id = channel_id
        self.state = ChannelState.OPEN
        self.queue: deque[PendingMessage] = deque()
        self.queued_bytes = 0
        self.blocked = False  # above the high-water mark; ChannelWritable when it drains
        self.close_after_flush: tuple[int, str] | None = None
        self.send_offset = 0  # DATA bytes sent
        self.send_max = send_window  # absolute credit from the peer
        self.recv_offset = 0  # DATA bytes received
        self.recv_window = recv_window
        self.recv_max = recv_window  # absolute credit we granted
        self.consumed = 0  # DATA bytes the application has released
        self.reassembly: bytearray | None = None
        self.reassembly_total = 0
        self.last_seq = 0
        self.priority = 3  # RFC 9218 urgency: 0 is the most urgent
        self.scheduled = False  # in the connection's round-robin of channels with data to send
        self.realtime_budget: float | None = None  # latency budget of realtime messages
        self.dropped_late = 0  # realtime messages dropped because they were late
        self.compressor: AdaptiveCompressor | None = None
        self.bucket: TokenBucket | None = None  # send shaping
        self.window_sent_at = -1.0  # when we last granted credit (window auto-tuning)
