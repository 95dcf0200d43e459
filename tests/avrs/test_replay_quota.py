"""Issue 9: one anonymous peer filled the node-wide replay memory with signed Signal HELLOs, and
every legitimate signed OPEN and join was then refused BUSY. The replay memory now has two pools
(authenticated members / anonymous and optional-signature requests) and quotas per signer and per
connected peer. Two connections share one guard, as the connections of a node do."""

from __future__ import annotations

import hashlib

import pytest

from dapsdk.avrs.config import AvrsConfig
from dapsdk.avrs.connection import AvrsConnection
from dapsdk.avrs.constants import AvrsChannel, ClusterArg, ClusterOp, SignalArg, SignalOp
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.replay import ANONYMOUS, AUTHENTICATED, ReplayGuard
from dapsdk.avrs.signing import AvrsSigner
from dapsdk.avrs.tsd import Tsd

from .kit import ALIEN, CLIENT, CLUSTER_ID, NOW, SERVER, Wire, make_directory, open_session, replies

CONFIG = AvrsConfig(
    replay_entries=400, replay_anonymous_entries=400, replay_per_signer=50, replay_per_peer=150
)


def flood_hellos(conn: AvrsConnection, count: int, *, rotate_keys: bool) -> dict[int, int]:
    """Signed Signal HELLOs (optional signature), each with a fresh nonce; codes counted."""
    wire = Wire()
    codes: dict[int, int] = {}
    signer = AvrsSigner.from_seed(hashlib.sha256(b"attacker").digest())
    for i in range(count):
        if rotate_keys:
            signer = AvrsSigner.from_seed(hashlib.sha256(b"attacker %d" % i).digest())
        data = wire.request(
            AvrsChannel.SIGNAL, SignalOp.HELLO, [Tsd(SignalArg.SOFTWARE, b"x")], signer=signer
        )
        for reply in replies(conn.handle(AvrsChannel.SIGNAL, data, NOW)):
            codes[reply.code] = codes.get(reply.code, 0) + 1
    return codes


@pytest.mark.parametrize("rotate_keys", [False, True])
def test_anonymous_flood_of_signed_hellos_does_not_refuse_other_peers(rotate_keys: bool) -> None:
    directory = make_directory()
    guard = CONFIG.replay_guard()
    attacker = AvrsConnection(directory, CONFIG, replay_guard=guard, peer=b"attacker-node")
    codes = flood_hellos(attacker, 1000, rotate_keys=rotate_keys)
    # The attacker is held to its own quota: per signer, or per connection when it rotates keys.
    accepted = 150 if rotate_keys else 50
    assert codes == {0: accepted, int(AvrsError.BUSY): 1000 - accepted}
    assert guard.pool_size(ANONYMOUS) == accepted

    legit = AvrsConnection(directory, CONFIG, replay_guard=guard, peer=b"legit-node")
    wire = Wire()
    assert open_session(legit, wire, CLIENT).code == 0  # signed OPEN
    join = wire.request(
        AvrsChannel.CLUSTER,
        ClusterOp.MEMBER_REQUEST_ADD,
        [Tsd(ClusterArg.ID, CLUSTER_ID)],
        signer=ALIEN,
    )
    assert [r.code for r in replies(legit.handle(AvrsChannel.CLUSTER, join, NOW))] == []
    info = wire.request(
        AvrsChannel.CLUSTER, ClusterOp.INFO, [Tsd(ClusterArg.ID, CLUSTER_ID)], signer=SERVER
    )
    assert [r.code for r in replies(legit.handle(AvrsChannel.CLUSTER, info, NOW))] == []
    assert guard.pool_size(AUTHENTICATED) == 1  # the member's INFO; OPEN and join are anonymous


def test_member_pool_is_apart_from_the_anonymous_pool() -> None:
    guard = ReplayGuard(max_entries=3, anonymous_entries=2, per_signer=10, per_peer=10)
    ts = int(NOW * 1000)
    for i in range(2):
        assert guard.check(b"anon%d" % i, b"n", ts, NOW, pool=ANONYMOUS, peer=b"p%d" % i).accepted
    full = guard.check(b"anon9", b"n", ts, NOW, pool=ANONYMOUS, peer=b"p9")
    assert (full.accepted, full.code) == (False, AvrsError.BUSY)
    assert "anonymous" in full.reason
    for i in range(3):
        assert guard.check(b"member", b"n%d" % i, ts, NOW, pool=AUTHENTICATED).accepted


def test_quotas_free_up_when_entries_expire() -> None:
    guard = ReplayGuard(max_skew=30, per_signer=2)
    ts = int(NOW * 1000)
    assert guard.check(b"s", b"1", ts, NOW).accepted
    assert guard.check(b"s", b"2", ts, NOW).accepted
    assert guard.check(b"s", b"3", ts, NOW).code is AvrsError.BUSY
    assert guard.check(b"other", b"3", ts, NOW).accepted  # only the signer over quota is refused
    assert guard.check(b"s", b"3", ts + 31_000, NOW + 31).accepted


def test_skew_window_is_bounded() -> None:
    with pytest.raises(ValueError, match="at most 300"):
        ReplayGuard(max_skew=301)
    with pytest.raises(ValueError, match="max_clock_skew"):
        AvrsConfig(max_clock_skew=3600)
