"""Shared test kit: fixed keys (32-byte seeds), a cluster with one member per role, a request builder
and a reply reader. Everything is deterministic: Ed25519 from seeds, nonces from a counter."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from dapsdk.avrs.config import AvrsConfig
from dapsdk.avrs.connection import AvrsConnection
from dapsdk.avrs.constants import (
    AvrsChannel,
    CommonArg,
    ContentFlag,
    Role,
    SessionArg,
    SessionOp,
)
from dapsdk.avrs.directory import ClusterInfo, ContentInfo, MemoryClusterView
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.events import AvrsEvent
from dapsdk.avrs.packets import Reply, RequestHeader, decode_reply, encode_request
from dapsdk.avrs.replay import ReplayGuard
from dapsdk.avrs.sessions import SessionRegistry
from dapsdk.avrs.signing import AvrsSigner, SignatureAlgorithm
from dapsdk.avrs.tsd import Tsd
from dapsdk.services.auth import TotpError, TotpReplay, TotpVerifier, totp_code

#: A fixed wall clock (2026-01-01T00:00:00Z) for every test.
NOW = 1_767_225_600.0


def seed(n: int) -> bytes:
    return bytes([n]) * 32


HOST = AvrsSigner.from_seed(seed(1))  # the cluster owner
OPERATOR = AvrsSigner.from_seed(seed(2))
SERVER = AvrsSigner.from_seed(seed(3))
BALANCER = AvrsSigner.from_seed(seed(4))
CLIENT = AvrsSigner.from_seed(seed(5))
ALIEN = AvrsSigner.from_seed(seed(6))  # valid key, not a member
CANDIDATE = AvrsSigner.from_seed(seed(7))  # asked to join, pending
PQ_CLIENT = AvrsSigner.from_seed(seed(8), SignatureAlgorithm.ML_DSA_65)

CLUSTER_ID = bytes(range(16))
PQ_CLUSTER_ID = bytes(range(16, 32))
MISSING_CLUSTER_ID = b"\xee" * 16
CONTENT_ID = b"\xc0" * 16  # flows "av", owned by SERVER
OFFLINE_CONTENT_ID = b"\xc1" * 16  # available=False
MISSING_CONTENT_ID = b"\xcf" * 16

CONTENT = ContentInfo(CONTENT_ID, SERVER.identity, "av", ("h264", "aac"), "Main stage")
OFFLINE = ContentInfo(OFFLINE_CONTENT_ID, SERVER.identity, "v", (), "Offline", available=False)


def make_cluster() -> ClusterInfo:
    return ClusterInfo(
        CLUSTER_ID,
        HOST.identity,
        members={
            OPERATOR.identity: Role.OPERATOR,
            SERVER.identity: Role.SERVER,
            BALANCER.identity: Role.BALANCER,
            CLIENT.identity: Role.CLIENT,
        },
        pending=frozenset({CANDIDATE.identity}),
        contents={CONTENT_ID: CONTENT, OFFLINE_CONTENT_ID: OFFLINE},
    )


def make_directory() -> MemoryClusterView:
    view = MemoryClusterView()
    view.put(make_cluster())
    view.put(
        ClusterInfo(
            PQ_CLUSTER_ID,
            HOST.identity,
            members={PQ_CLIENT.identity: Role.CLIENT, CLIENT.identity: Role.CLIENT},
            signature_algorithm=SignatureAlgorithm.ML_DSA_65,
        )
    )
    return view


def counter_rng() -> Iterator[bytes]:
    for i in itertools.count(1):
        yield i.to_bytes(16, "big")


class Wire:
    """Builds requests with deterministic nonces and request ids."""

    def __init__(self) -> None:
        self._nonces = counter_rng()
        self._ids = itertools.count(1)

    def request(
        self,
        channel: AvrsChannel,
        op: int,
        args: Sequence[Tsd] = (),
        *,
        signer: AvrsSigner | None = None,
        now: float = NOW,
        request_id: int | None = None,
        nonce: bytes | None = None,
    ) -> bytes:
        rid = next(self._ids) if request_id is None else request_id
        header = RequestHeader(op, channel, rid)
        if signer is None:
            return encode_request(header, args)
        return encode_request(
            header,
            args,
            signer=signer,
            timestamp_ms=int(now * 1000),
            nonce=next(self._nonces) if nonce is None else nonce,
        )


#: Every kit identity's TOTP secret (base32, 160 bits).
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


class KitSecondFactor:
    """A real RFC 6238 verifier (pyotp) per identity, all with :data:`TOTP_SECRET`."""

    def __init__(self) -> None:
        self._verifiers: dict[bytes, TotpVerifier] = {}

    def verify(self, identity: bytes, code: str | None, now: float) -> AvrsError:
        verifier = self._verifiers.setdefault(identity, TotpVerifier(TOTP_SECRET))
        try:
            verifier.verify(code, now=now)
        except TotpReplay:
            return AvrsError.MEMBER_TOTP_REPLAYED
        except TotpError:
            return AvrsError.MEMBER_TOTP_INVALID
        return AvrsError.SUCCESS


def totp(now: float = NOW) -> Tsd:
    """The TOTP argument with the current code of :data:`TOTP_SECRET`."""
    return Tsd(CommonArg.TOTP, totp_code(TOTP_SECRET, now=now).encode())


def make_conn(
    directory: MemoryClusterView | None = None,
    *,
    sessions: SessionRegistry | None = None,
    guard: ReplayGuard | None = None,
    config: AvrsConfig | None = None,
    second_factor: KitSecondFactor | None = None,
) -> AvrsConnection:
    return AvrsConnection(
        directory if directory is not None else make_directory(),
        config,
        sessions=sessions,
        replay_guard=guard,
        second_factor=second_factor if second_factor is not None else KitSecondFactor(),
    )


def replies(out: list[tuple[int, bytes]]) -> list[Reply]:
    """Decode every retcode in ``out``."""
    return [decode_reply(data) for ch, data in out if ch == AvrsChannel.RETCODE]


def only_reply(out: list[tuple[int, bytes]]) -> Reply:
    found = replies(out)
    assert len(found) == 1, f"expected exactly one retcode, got {found}"
    return found[0]


def drain(conn: AvrsConnection) -> list[AvrsEvent]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


def cid(handle: int) -> Tsd:
    return Tsd(SessionArg.CONTENT_ID, handle.to_bytes(4, "little"))


def content_add_args(
    content_id: bytes = CONTENT_ID,
    flags: ContentFlag = ContentFlag.STREAMING_OUT,
    cluster_id: bytes = CLUSTER_ID,
) -> list[Tsd]:
    return [
        Tsd(SessionArg.CLUSTER_ID, cluster_id),
        Tsd(SessionArg.CONTENT_UUID, content_id),
        Tsd(SessionArg.CONTENT_FLAGS, int(flags).to_bytes(4, "little")),
    ]


def open_session(conn: AvrsConnection, wire: Wire, signer: AvrsSigner, now: float = NOW) -> Reply:
    return only_reply(
        conn.handle(
            AvrsChannel.SESSION,
            wire.request(AvrsChannel.SESSION, SessionOp.OPEN, signer=signer, now=now),
            now,
        )
    )


def session_request(
    conn: AvrsConnection,
    wire: Wire,
    op: int,
    args: Sequence[Tsd] = (),
    *,
    signer: AvrsSigner | None = None,
    now: float = NOW,
) -> Reply:
    data = wire.request(AvrsChannel.SESSION, op, args, signer=signer, now=now)
    return only_reply(conn.handle(AvrsChannel.SESSION, data, now))


def bring_to_synced(
    conn: AvrsConnection,
    wire: Wire,
    signer: AvrsSigner,
    flags: ContentFlag = ContentFlag.STREAMING_IN,
    content_id: bytes = CONTENT_ID,
) -> int:
    """OPEN, CONTENT_ADD, START, SYNC; returns the content handle."""
    assert open_session(conn, wire, signer).code == 0
    added = session_request(conn, wire, SessionOp.CONTENT_ADD, content_add_args(content_id, flags))
    assert added.code == 0, added
    handle_data = added.arg(0x02)
    assert handle_data is not None
    assert session_request(conn, wire, SessionOp.START).code == 0
    clock = Tsd(SessionArg.CLOCK, (0).to_bytes(8, "little"))
    assert session_request(conn, wire, SessionOp.SYNC, [clock]).code == 0
    return int.from_bytes(handle_data, "little")
