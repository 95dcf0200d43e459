"""Configuration of the dap_stream wire core. Every limit is a field; defaults say where they come from."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from .constants import (
    PROTOCOL_VERSIONS,
    STREAM_KEEPALIVE_TIMEOUT,
    SUPPORTED_FEATURES,
    ChannelId,
    Feature,
)
from .identity import NodeAddress


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who the peer proved to be in the handshake."""

    public_key: bytes
    """Ed25519 identity public key (32 bytes)."""
    address: NodeAddress
    """Node address derived from ``public_key``."""
    certificate: bytes | None = None
    """DER X.509 certificate the peer presented, if any (issue 5 verifies it)."""


#: Called with the peer's proven identity; raise any exception to refuse the peer.
PeerVerifier = Callable[[PeerIdentity], None]


@dataclass(frozen=True, slots=True)
class StreamConfig:
    max_packet_payload: int = 65536
    """Largest plaintext body of one packet (the seed config's ``buffer_size``). A header announcing
    more than this plus the tag is refused before any allocation."""
    max_message_size: int = 64 * 1024 * 1024
    """Largest message after reassembly of fragments; announced sizes above it are refused."""
    handshake_timeout: float = 5.0
    """Seconds from connection to a completed handshake (WireGuard/Noise practice: 5 s)."""
    keepalive_interval: float = 1.0
    """Send a KEEPALIVE after this many idle seconds."""
    keepalive_timeout: float = float(STREAM_KEEPALIVE_TIMEOUT)
    """A peer silent this long, or a socket that will not drain this long, is dead (seed: 3 s)."""
    initial_channel_window: int = 1024 * 1024
    """Initial per-channel credit in bytes of DATA (yamux starts at 256 KiB and had to add
    auto-tuning; measured here, 1 MiB/4 MiB windows give 2-4x the bulk rate of 256 KiB/1 MiB)."""
    initial_connection_window: int = 2 * 1024 * 1024
    """Initial per-connection credit in bytes of DATA. It also bounds the DATA in flight ahead
    of a control packet (about 2 ms of transfer at loopback speed)."""
    max_channel_window: int = 16 * 1024 * 1024
    """Upper bound of a channel window after RTT-based growth (py-libp2p's 16 MiB)."""
    connection_memory_budget: int = 64 * 1024 * 1024
    """Upper bound of the connection window: all inbound buffering of one peer fits in this."""
    max_channels: int = 256
    """Open channels per stream; an OPEN beyond it is refused."""
    send_high_water: int = 1024 * 1024
    """Bytes queued on one channel at which ``await channel.write`` suspends."""
    send_low_water: int = 256 * 1024
    """Queued bytes below which a blocked channel is writable again (``ready_to_write``)."""
    max_send_queue: int = 16 * 1024 * 1024
    """Bytes one peer may have waiting on our side: unsent DATA of all its channels plus sealed
    packets (CONTROL, PONG, WINDOW, ...) the transport could not take because the peer is not
    reading. Beyond it the peer is closed with ERROR ENHANCE_YOUR_CALM (a peer that does not read
    cannot make us buffer without end). A single message may exceed it if the queue was below."""
    rekey_after_packets: int = 1 << 23
    """Packets sealed with one key before a one-way rekey (far below AES-GCM's limits)."""
    realtime_channels: frozenset[int] = frozenset({int(ChannelId.MEDIA)})
    """Channels whose messages carry a deadline and are dropped before sending once late."""
    realtime_deadline: float = 0.5
    """Latency budget (s) of a message on a realtime channel, unless the writer gives one."""
    default_priority: int = 3
    """RFC 9218 urgency (0 most urgent .. 7) of a new channel; the CONTROL channel (0x00) gets 0."""
    channel_rate_limit: int | None = None
    """Bytes/s each channel may send (token bucket, burst = 1 s or 2 packets); None = unlimited."""
    peer_rate_limit: int | None = None
    """Bytes/s all channels to one peer may send together; None = unlimited."""
    open_close_rate: tuple[float, float] = (200.0, 512.0)
    """Channel OPEN/CLOSE packets per second a peer may send (rate, burst); beyond: ERROR."""
    ping_rate: tuple[float, float] = (20.0, 50.0)
    """KEEPALIVE pings per second a peer may send (rate, burst); beyond: ERROR."""
    control_rate: tuple[float, float] = (20000.0, 40000.0)
    """Other control packets per second (application CONTROL, WINDOW, REKEY, PRIORITY,
    DISCARD); beyond: ERROR ENHANCE_YOUR_CALM."""
    empty_rate: tuple[float, float] = (1000.0, 2000.0)
    """Packets that carry nothing, per second (rate, burst): empty DATA, a PONG answering no
    PING of ours, a WINDOW that grants nothing, a DISCARD or PRIORITY that changes nothing;
    beyond: ERROR ENHANCE_YOUR_CALM."""
    window_autotune: bool = True
    """Double a window when it is used up in less than two RTTs, up to the maxima."""
    max_error_reason: int = 1024
    """Longest reason text carried in an ERROR or CLOSE packet."""
    versions: tuple[int, ...] = PROTOCOL_VERSIONS
    """Protocol versions offered (initiator) or accepted (responder)."""
    features: Feature = SUPPORTED_FEATURES
    """Features offered or accepted; the intersection is used."""
    certificate: bytes | None = None
    """DER X.509 certificate of our identity, sent in the handshake when set."""
    peer_verifier: PeerVerifier | None = None
    """Extra policy run on the peer's identity after its signature verified."""
    rng: Callable[[int], bytes] = field(default=os.urandom)
    """Source of randomness for ephemeral keys (fixed in test vectors)."""

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            (
                "max_packet_payload",
                512 <= self.max_packet_payload <= 16 * 1024 * 1024,
                "between 512 and 16777216",
            ),
            (
                "max_message_size",
                self.max_message_size >= self.max_packet_payload,
                ">= max_packet_payload",
            ),
            ("handshake_timeout", self.handshake_timeout > 0, "> 0"),
            (
                "keepalive_interval",
                0 < self.keepalive_interval < self.keepalive_timeout,
                "> 0 and < keepalive_timeout",
            ),
            (
                "initial_channel_window",
                self.initial_channel_window >= 2 * self.max_packet_payload,
                ">= 2 * max_packet_payload (so a full packet always fits the credit left)",
            ),
            (
                "initial_connection_window",
                self.initial_connection_window >= self.initial_channel_window,
                ">= initial_channel_window",
            ),
            (
                "max_channel_window",
                self.max_channel_window >= self.initial_channel_window,
                ">= initial_channel_window",
            ),
            (
                "connection_memory_budget",
                self.connection_memory_budget >= self.initial_connection_window,
                ">= initial_connection_window",
            ),
            ("max_channels", 1 <= self.max_channels <= 65536, "between 1 and 65536"),
            (
                "send_low_water",
                0 <= self.send_low_water < self.send_high_water,
                ">= 0 and < send_high_water",
            ),
            (
                "max_send_queue",
                self.max_send_queue >= self.send_high_water + self.max_packet_payload,
                ">= send_high_water + max_packet_payload",
            ),
            (
                "rekey_after_packets",
                1 <= self.rekey_after_packets <= 1 << 32,
                "between 1 and 2**32",
            ),
            ("versions", len(self.versions) > 0, "at least one version"),
            ("realtime_deadline", self.realtime_deadline > 0, "> 0"),
            ("default_priority", 0 <= self.default_priority <= 7, "between 0 and 7"),
            (
                "channel_rate_limit",
                self.channel_rate_limit is None or self.channel_rate_limit >= 1024,
                "None or >= 1024",
            ),
            (
                "peer_rate_limit",
                self.peer_rate_limit is None or self.peer_rate_limit >= 1024,
                "None or >= 1024",
            ),
            ("open_close_rate", min(self.open_close_rate) > 0, "two positive numbers"),
            ("ping_rate", min(self.ping_rate) > 0, "two positive numbers"),
            ("control_rate", min(self.control_rate) > 0, "two positive numbers"),
            ("empty_rate", min(self.empty_rate) > 0, "two positive numbers"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(
                    f"StreamConfig.{name} = {getattr(self, name)!r}: must be {allowed}"
                )
