"""Sealed datagrams for realtime channels (sans-IO): loss- and reorder-tolerant.

Over QUIC, realtime channels (MEDIA, or channels flagged realtime) may skip the reliable byte
stream and travel in QUIC DATAGRAM frames, which can be lost, duplicated or reordered. The
stream's sealing (implicit sequence numbers, next-one-only replay check) cannot work there, so
datagrams are sealed on their own:

* **Keys.** One secret per direction from the dap_stream handshake's exporter
  (:meth:`~dapsdk.stream.handshake.HandshakeResult.export` with ``b"quic datagram c2s"`` /
  ``b"quic datagram s2c"``), never the stream's traffic keys. From it, AES-256-GCM key and IV for
  *epoch* ``e = pn >> EPOCH_BITS`` by HKDF-Expand: the key changes every 2**23 packets (RFC 9001
  §6.6's AES-GCM confidentiality limit) without any signalling, since the epoch follows from
  the packet number.
* **Wire format.** ``pn u64 | channel_id u16 | ciphertext | tag(16)``, little-endian; the first
  10 bytes are the AAD; nonce = IV XOR pn (RFC 9001 §5.3).
* **Replay.** An RFC 6479 sliding bitmap window (2048 bits by default, as WireGuard) is
  checked and updated only after the AEAD verified, so forged datagrams can never move it.
* **Deadline and drop.** :class:`RealtimeQueue` holds outgoing datagrams with deadlines and
  drops those already late before they are sealed (SRT's too-late drop); when full it drops the
  oldest (the newest media matters most).

Failure tier (STYLE.md §3): a datagram that does not parse, authenticate or pass the window is
dropped and counted (:class:`DropReason`); it never raises and never closes the stream.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .constants import TAG_SIZE
from .crypto import hkdf_expand

#: ``pn u64, channel_id u16``: the clear header of a sealed datagram, authenticated as AAD.
DATAGRAM_HEADER = struct.Struct("<QH")
#: Bytes a sealed datagram adds to its payload.
DATAGRAM_OVERHEAD = DATAGRAM_HEADER.size + TAG_SIZE
#: log2 of the packets sealed under one key (2**23, RFC 9001 §6.6 for AES-GCM).
EPOCH_BITS = 23
#: Packet numbers stop here (far beyond any real connection); sealing more raises.
MAX_PACKET_NUMBER = (1 << 62) - 1
#: Exporter labels of the two directions.
LABEL_CLIENT_TO_SERVER = b"quic datagram c2s"
LABEL_SERVER_TO_CLIENT = b"quic datagram s2c"
#: Default replay window in packets (RFC 6479 blocks of 64 bits; WireGuard uses 2048).
DEFAULT_WINDOW = 2048


class DropReason(enum.Enum):
    MALFORMED = "malformed"  #: shorter than header + tag, or an impossible epoch
    AUTHENTICATION = "authentication"  #: AEAD tag did not verify
    REPLAY = "replay"  #: packet number already seen
    TOO_OLD = "too old"  #: packet number left the window


def datagram_secrets(
    export: Callable[[bytes, int], bytes], *, is_client: bool
) -> tuple[bytes, bytes]:
    """(send secret, receive secret) for one side, from a handshake exporter."""
    c2s = export(LABEL_CLIENT_TO_SERVER, 32)
    s2c = export(LABEL_SERVER_TO_CLIENT, 32)
    return (c2s, s2c) if is_client else (s2c, c2s)


def _epoch_cipher(secret: bytes, epoch: int) -> tuple[AESGCM, int]:
    tag = epoch.to_bytes(8, "little")
    key = hkdf_expand(secret, b"dapstream datagram key " + tag, 32)
    iv = hkdf_expand(secret, b"dapstream datagram iv " + tag, 12)
    return AESGCM(key), int.from_bytes(iv, "big")


class DatagramSealer:
    """Seals outgoing datagrams of one direction with consecutive packet numbers."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("datagram secret must be at least 32 bytes")
        self._secret = secret
        self._epoch = -1
        self._aead: AESGCM | None = None
        self._iv = 0
        self.next_packet_number = 0

    def seal(self, channel_id: int, payload: bytes | memoryview) -> bytes:
        """Return the sealed datagram for ``payload`` on ``channel_id``."""
        if not 0 <= channel_id <= 0xFFFF:
            raise ValueError(f"channel id {channel_id} is not a u16")
        pn = self.next_packet_number
        if pn > MAX_PACKET_NUMBER:
            raise ValueError("datagram packet numbers exhausted")
        self.next_packet_number = pn + 1
        epoch = pn >> EPOCH_BITS
        if epoch != self._epoch:
            self._aead, self._iv = _epoch_cipher(self._secret, epoch)
            self._epoch = epoch
        assert self._aead is not None
        header = DATAGRAM_HEADER.pack(pn, channel_id)
        nonce = (self._iv ^ pn).to_bytes(12, "big")
        return header + self._aead.encrypt(nonce, bytes(payload), header)


class ReplayWindow:
    """RFC 6479 anti-replay window: a ring of 64-bit blocks, O(1) per packet.

    Accepts each packet number at most once, and none that is ``size`` or more below the highest
    accepted. ``size`` is rounded up to whole blocks; one extra block makes the ring slide
    without losing bits inside the window.
    """

    __slots__ = ("_bitmap", "_blocks", "highest", "size")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 64:
            raise ValueError("replay window must hold at least 64 packets")
        self._blocks = (size + 63) // 64 + 1
        self.size = (self._blocks - 1) * 64
        self._bitmap = [0] * self._blocks
        self.highest = -1
        """Highest packet number accepted so far (-1 before the first)."""

    def check(self, pn: int) -> DropReason | None:
        """Why ``pn`` would be refused, or None if it is fresh. Does not change the window."""
        if pn < 0:
            return DropReason.MALFORMED
        if pn + self.size <= self.highest:
            return DropReason.TOO_OLD
        if pn > self.highest:
            return None
        block = (pn >> 6) % self._blocks
        if self._bitmap[block] >> (pn & 63) & 1:
            return DropReason.REPLAY
        return None

    def update(self, pn: int) -> None:
        """Mark ``pn`` as seen (call only after :meth:`check` passed and the AEAD verified)."""
        index = pn >> 6
        if pn > self.highest:
            current = self.highest >> 6 if self.highest >= 0 else -1
            diff = min(index - current, self._blocks)
            for i in range(1, diff + 1):
                self._bitmap[(current + i) % self._blocks] = 0
            self.highest = pn
        self._bitmap[index % self._blocks] |= 1 << (pn & 63)


@dataclass(slots=True)
class OpenerStats:
    accepted: int = 0
    dropped: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DropReason, 0))

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class DatagramOpener:
    """Opens incoming datagrams of one direction; drops (and counts) anything not genuine and fresh."""

    def __init__(self, secret: bytes, *, window: int = DEFAULT_WINDOW) -> None:
        if len(secret) < 32:
            raise ValueError("datagram secret must be at least 32 bytes")
        self._secret = secret
        self.window = ReplayWindow(window)
        self.stats = OpenerStats()
        self.last_drop: DropReason | None = None
        # epoch -> (aead, iv); only epochs that verified a packet are kept, at most two.
        self._ciphers: dict[int, tuple[AESGCM, int]] = {}

    def open(self, datagram: bytes | memoryview) -> tuple[int, bytes] | None:
        """(channel_id, payload) of a genuine, fresh datagram; None when it was dropped."""
        if len(datagram) < DATAGRAM_OVERHEAD:
            return self._drop(DropReason.MALFORMED)
        pn, channel_id = DATAGRAM_HEADER.unpack_from(datagram, 0)
        if pn > MAX_PACKET_NUMBER:
            return self._drop(DropReason.MALFORMED)
        epoch = pn >> EPOCH_BITS
        known = self.window.highest >> EPOCH_BITS if self.window.highest >= 0 else 0
        if not known - 1 <= epoch <= known + 1:
            # A sender numbers consecutively: a jump of a whole epoch means 2**23 lost packets,
            # and refusing it here keeps forged packets from costing key derivations.
            return self._drop(DropReason.MALFORMED)
        cipher = self._ciphers.get(epoch)
        fresh_cipher = cipher is None
        if cipher is None:
            cipher = _epoch_cipher(self._secret, epoch)
        aead, iv = cipher
        view = memoryview(datagram)
        header = bytes(view[: DATAGRAM_HEADER.size])
        try:
            payload = aead.decrypt(
                (iv ^ pn).to_bytes(12, "big"), bytes(view[DATAGRAM_HEADER.size :]), header
            )
        except InvalidTag:
            return self._drop(DropReason.AUTHENTICATION)
        # Only now, with the datagram proven genuine, may the window be consulted and moved.
        reason = self.window.check(pn)
        if reason is not None:
            return self._drop(reason)
        self.window.update(pn)
        if fresh_cipher:
            self._ciphers[epoch] = cipher
            for old in [e for e in self._ciphers if e < epoch - 1]:
                del self._ciphers[old]
        self.stats.accepted += 1
        return channel_id, payload

    def _drop(self, reason: DropReason) -> tuple[int, bytes] | None:
        self.stats.dropped[reason] += 1
        self.last_drop = reason
        return None


@dataclass(frozen=True, slots=True)
class QueuedDatagram:
    channel_id: int
    payload: bytes
    deadline: float | None
    """Monotonic time after which the datagram is useless (None: no deadline)."""


class RealtimeQueue:
    """Bounded send queue with deadlines: late datagrams are dropped before sealing, and a full
    queue drops its oldest entry (for live media the newest data matters most)."""

    def __init__(self, *, max_datagrams: int = 256, max_bytes: int = 1024 * 1024) -> None:
        if max_datagrams < 1 or max_bytes < 1:
            raise ValueError("queue bounds must be positive")
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self._items: deque[QueuedDatagram] = deque()
        self._bytes = 0
        self.dropped_late = 0
        self.dropped_overflow = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def push(self, channel_id: int, payload: bytes, deadline: float | None) -> None:
        if len(payload) > self.max_bytes:
            raise ValueError(f"datagram of {len(payload)} bytes exceeds the queue bound")
        self._items.append(QueuedDatagram(channel_id, payload, deadline))
        self._bytes += len(payload)
        while len(self._items) > self.max_datagrams or self._bytes > self.max_bytes:
            old = self._items.popleft()
            self._bytes -= len(old.payload)
            self.dropped_overflow += 1

    def pop_due(self, now: float, limit: int | None = None) -> list[QueuedDatagram]:
        """Up to ``limit`` datagrams still in time, oldest first; late ones are dropped."""
        out: list[QueuedDatagram] = []
        items = self._items
        while items and (limit is None or len(out) < limit):
            item = items.popleft()
            self._bytes -= len(item.payload)
            if item.deadline is not None and now > item.deadline:
                self.dropped_late += 1
                continue
            out.append(item)
        return out
