"""Handshake admission: which unauthenticated connections a responder keeps (sans-IO).

A flood of connections that never finish their handshake must not lock legitimate clients out
(issue 9). The policy, with the current time passed in and no IO:

* **Table.** At most ``max_pending`` handshakes in progress. A new connection is always admitted;
  when the table (or its source's or prefix's share) is full, the *least advanced, oldest*
  incomplete handshake is evicted to make room: first connections that have not delivered a
  whole HELLO (idle, partial, slowloris), then HELLOs answered without a cookie, last HELLOs that
  carried a valid cookie. A legitimate client sends its HELLO at once, so floods that hold
  sockets without completing a HELLO only ever evict each other.
* **Per source and per prefix.** One address may hold ``per_source`` entries and one /24 (IPv4)
  or /64 (IPv6) prefix ``per_prefix``; beyond, the least advanced, oldest entry of that same
  source (or prefix) that is older than ``hello_grace`` is evicted, so a flooder displaces only
  itself (entries younger than the grace may overflow the share until the table is full).
* **Cookie under load** (WireGuard's cookie reply, QUIC's Retry). With ``cookie_threshold`` or
  more handshakes in progress (or more than half of the source's or prefix's share taken by
  its own), a HELLO without a valid cookie gets no key agreement work: the
  responder answers with a cookie bound to the source address and a secret that rotates every
  ``cookie_period`` seconds, keeps no state and closes; the client repeats its HELLO on a new
  connection with the cookie in front (``docs/protocol.md`` §3.7). A cookie is
  ``epoch u32 LE || HMAC-SHA256(secret_epoch, "dapstream cookie" || address)[:16]`` with
  ``secret_epoch = HMAC-SHA256(master, "dapstream cookie secret" || epoch u32 LE)``; cookies of
  the current and the previous epoch are accepted.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import itertools
import os
import struct
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

#: Bytes of a cookie: epoch u32 + 16-byte MAC.
COOKIE_SIZE = 20
_COOKIE_LABEL = b"dapstream cookie"
_SECRET_LABEL = b"dapstream cookie secret"
_EPOCH = struct.Struct("<I")

#: Ranks of a pending handshake, least advanced first (evicted first).
RANK_CONNECTED = 0
"""Connected; no whole HELLO yet (idle, partial or slowloris sockets)."""
RANK_HELLO = 1
"""HELLO answered without a cookie (not under load)."""
RANK_COOKIE = 2
"""HELLO answered after a valid cookie."""


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    max_pending: int = 512
    """Handshakes in progress a responder keeps; a new connection evicts the least advanced one."""
    per_source: int = 64
    """Handshakes in progress from one address."""
    per_prefix: int = 256
    """Handshakes in progress from one /24 (IPv4) or /64 (IPv6) prefix."""
    cookie_threshold: int = 128
    """Handshakes in progress (counting the one asking) from which a HELLO needs a cookie
    (WireGuard's 128 queued initiations); 0: always."""
    cookie_period: float = 120.0
    """Seconds between cookie secret rotations (WireGuard: 120 s)."""
    hello_grace: float = 2.0
    """A connection younger than this is not evicted to honour a source's or prefix's share
    (the share may overflow meanwhile, up to ``max_pending``): a burst of connections accepted in
    one event-loop turn must not evict a client before its HELLO, already sent, is read."""

    def __post_init__(self) -> None:
        if self.max_pending < 1:
            raise ValueError(f"max_pending = {self.max_pending}: must be >= 1")
        if not 1 <= self.per_source <= self.per_prefix:
            raise ValueError("per_source and per_prefix must satisfy 1 <= per_source <= per_prefix")
        if self.cookie_threshold < 0:
            raise ValueError(f"cookie_threshold = {self.cookie_threshold}: must be >= 0")
        if self.cookie_period <= 0:
            raise ValueError(f"cookie_period = {self.cookie_period}: must be > 0")


@functools.lru_cache(maxsize=8192)
def source_prefix(address: str) -> str:
    """The prefix an address is counted in: ``a.b.c.0/24`` (IPv4, also IPv4-mapped IPv6) or
    the /64 of an IPv6 address; an unparsable address is its own prefix."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if isinstance(ip, ipaddress.IPv4Address) else 64
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


@functools.lru_cache(maxsize=8192)
def _address_bytes(address: str) -> bytes:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address.encode("utf-8", "replace")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed


class CookieIssuer:
    """Stateless cookies bound to a source address and a rotating secret."""

    def __init__(self, master: bytes | None = None, period: float = 120.0) -> None:
        self._master = master if master is not None else os.urandom(32)
        self.period = period
        self._secrets: dict[int, bytes] = {}

    def _secret(self, epoch: int) -> bytes:
        secret = self._secrets.get(epoch)
        if secret is None:
            if len(self._secrets) > 4:
                self._secrets.clear()
            secret = hmac.new(self._master, _SECRET_LABEL + _EPOCH.pack(epoch), "sha256").digest()
            self._secrets[epoch] = secret
        return secret

    def epoch(self, now: float) -> int:
        return int(now // self.period) & 0xFFFFFFFF

    def make(self, address: str, now: float) -> bytes:
        epoch = self.epoch(now)
        mac = hmac.new(self._secret(epoch), _COOKIE_LABEL + _address_bytes(address), "sha256")
        return _EPOCH.pack(epoch) + mac.digest()[:16]

    def check(self, cookie: bytes, address: str, now: float) -> bool:
        """True for a cookie made for ``address`` in this or the previous epoch."""
        if len(cookie) != COOKIE_SIZE:
            return False
        (epoch,) = _EPOCH.unpack_from(cookie, 0)
        current = self.epoch(now)
        if epoch not in (current, (current - 1) & 0xFFFFFFFF):
            return False
        mac = hmac.new(self._secret(epoch), _COOKIE_LABEL + _address_bytes(address), "sha256")
        return hmac.compare_digest(mac.digest()[:16], cookie[4:])


@dataclass(slots=True)
class _Entry:
    key: Hashable
    source: str
    prefix: str
    started: float
    rank: int = RANK_CONNECTED


@dataclass(frozen=True, slots=True)
class HelloVerdict:
    """What to do with a HELLO: ``proceed``; else answer with ``cookie`` and close, or (no
    cookie: the connection is no longer tracked) refuse with ``SERVER_BUSY``."""

    proceed: bool
    cookie: bytes = b""


@dataclass(slots=True)
class AdmissionStats:
    admitted: int = 0
    evicted: int = 0
    evicted_per_source: int = 0
    evicted_per_prefix: int = 0
    cookies_sent: int = 0
    cookies_accepted: int = 0
    cookies_invalid: int = 0
    completed: int = 0


class HandshakeAdmission:
    """The table of handshakes in progress of one responder (all its listeners)."""

    def __init__(self, config: AdmissionConfig | None = None, *, master: bytes | None = None):
        self.config = config or AdmissionConfig()
        self.cookies = CookieIssuer(master, self.config.cookie_period)
        self.stats = AdmissionStats()
        self._entries: dict[Hashable, _Entry] = {}
        # One insertion-ordered set per rank: the oldest least advanced entry is found in O(1).
        self._ranks: list[OrderedDict[Hashable, None]] = [OrderedDict() for _ in range(3)]
        self._by_source: dict[str, OrderedDict[Hashable, None]] = {}
        self._by_prefix: dict[str, OrderedDict[Hashable, None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    @property
    def under_load(self) -> bool:
        return len(self._entries) >= self.config.cookie_threshold

    def source_count(self, address: str) -> int:
        group = self._by_source.get(address)
        return len(group) if group else 0

    def admit(self, key: Hashable, address: str, now: float) -> list[Hashable]:
        """Admit a new connection from ``address``; return the keys of the handshakes evicted to
        make room (the caller closes them, e.g. with ERROR ``SERVER_BUSY``)."""
        if key in self._entries:
            raise ValueError(f"connection {key!r} is already admitted")
        prefix = source_prefix(address)
        victims: list[Hashable] = []
        group = self._by_source.get(address)
        while group is not None and len(group) >= self.config.per_source:
            victim = self._evict_from(group, now)
            if victim is None:
                break
            victims.append(victim)
            self.stats.evicted_per_source += 1
        pgroup = self._by_prefix.get(prefix)
        while pgroup is not None and len(pgroup) >= self.config.per_prefix:
            victim = self._evict_from(pgroup, now)
            if victim is None:
                break
            victims.append(victim)
            self.stats.evicted_per_prefix += 1
        while len(self._entries) >= self.config.max_pending:
            victims.append(self._evict_global())
        entry = _Entry(key, address, prefix, now)
        self._entries[key] = entry
        self._ranks[RANK_CONNECTED][key] = None
        self._by_source.setdefault(address, OrderedDict())[key] = None
        self._by_prefix.setdefault(prefix, OrderedDict())[key] = None
        self.stats.admitted += 1
        self.stats.evicted += len(victims)
        return victims

    def hello(self, key: Hashable, cookie: bytes | None, now: float) -> HelloVerdict:
        """A whole HELLO arrived on connection ``key`` (after the cookie it echoed, if any)."""
        entry = self._entries.get(key)
        if entry is None:  # not tracked (evicted meanwhile): no work for it
            return HelloVerdict(False)
        valid = cookie is not None and self.cookies.check(cookie, entry.source, now)
        if cookie is not None:
            if valid:
                self.stats.cookies_accepted += 1
            else:
                self.stats.cookies_invalid += 1
        if valid:
            self._set_rank(entry, RANK_COOKIE)
            return HelloVerdict(True)
        if self._loaded(entry):
            self.stats.cookies_sent += 1
            self.discard(key)
            return HelloVerdict(False, self.cookies.make(entry.source, now))
        self._set_rank(entry, RANK_HELLO)
        return HelloVerdict(True)

    def needs_cookie(self, address: str) -> bool:
        """Would a new connection from ``address`` be under load (QUIC: send a Retry)?"""
        config = self.config
        if len(self._entries) + 1 >= config.cookie_threshold:
            return True
        source = self._by_source.get(address)
        if source is not None and 2 * (len(source) + 1) > config.per_source:
            return True
        prefix = self._by_prefix.get(source_prefix(address))
        return prefix is not None and 2 * (len(prefix) + 1) > config.per_prefix

    def validated(self, key: Hashable) -> None:
        """The connection proved its address another way (a QUIC Retry token)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._set_rank(entry, RANK_COOKIE)

    def complete(self, key: Hashable) -> None:
        """The handshake completed: the connection leaves the table."""
        if self.discard(key):
            self.stats.completed += 1

    def discard(self, key: Hashable) -> bool:
        """The connection ended (or was evicted); forget it. Returns whether it was tracked."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._ranks[entry.rank].pop(key, None)
        for table, name in ((self._by_source, entry.source), (self._by_prefix, entry.prefix)):
            group = table.get(name)
            if group is not None:
                group.pop(key, None)
                if not group:
                    del table[name]
        return True

    def expired(self, now: float, timeout: float) -> list[Hashable]:
        """Keys of handshakes started more than ``timeout`` seconds ago (oldest first)."""
        out = [e.key for e in self._entries.values() if now - e.started >= timeout]
        return out

    # -- internals ---------------------------------------------------------------------------

    def _loaded(self, entry: _Entry) -> bool:
        """Under load for this entry: the table holds ``cookie_threshold`` handshakes, or its
        source (prefix) holds half of its own share."""
        config = self.config
        if len(self._entries) >= config.cookie_threshold:
            return True
        source = self._by_source.get(entry.source)
        if source is not None and 2 * len(source) > config.per_source:
            return True
        prefix = self._by_prefix.get(entry.prefix)
        return prefix is not None and 2 * len(prefix) > config.per_prefix

    def _set_rank(self, entry: _Entry, rank: int) -> None:
        if entry.rank == rank:
            return
        self._ranks[entry.rank].pop(entry.key, None)
        entry.rank = rank
        self._ranks[rank][entry.key] = None

    def _evict_from(self, group: OrderedDict[Hashable, None], now: float) -> Hashable | None:
        """Evict the least advanced, oldest entry of ``group`` that is past the grace period."""
        cutoff = now - self.config.hello_grace
        entries = self._entries
        # Groups are in admission order, so the entries past the grace are a prefix.
        aged = list(itertools.takewhile(lambda k: entries[k].started <= cutoff, group))
        if not aged:
            return None
        victim = min(aged, key=lambda k: (entries[k].rank, entries[k].started))
        self.discard(victim)
        return victim

    def _evict_global(self) -> Hashable:
        for rank in self._ranks:
            if rank:
                victim = next(iter(rank))
                self.discard(victim)
                return victim
        raise AssertionError("eviction from an empty table")
