"""Builds the AVRS test vectors (``tests/vectors/avrs_*.json``) from fixed 32-byte key seeds.

Regenerate with ``.venv/bin/python -m tests.avrs.vectors_gen`` after a deliberate format change;
``test_vectors.py`` checks the stored files against both this builder and the decoders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dapsdk.avrs.connection import AvrsConnection
from dapsdk.avrs.constants import (
    NO_TIMESTAMP,
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    ContentFlag,
    MediaFlag,
    RequestFlag,
    Role,
    SessionArg,
    SessionOp,
    SignalArg,
    SignalOp,
)
from dapsdk.avrs.directory import ClusterInfo, ContentInfo, MemoryClusterView
from dapsdk.avrs.packets import (
    ContentPacket,
    Reply,
    RequestHeader,
    decode_request,
    encode_content,
    encode_reply,
    encode_request,
)
from dapsdk.avrs.signing import AvrsSigner
from dapsdk.avrs.tsd import Tsd, encode_tsds

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SPEC = "docs/avrs-protocol.md"
NOW = 1_767_225_600.0
SEEDS = {name: bytes([n]) * 32 for n, name in enumerate(["host", "server", "client", "alien"], 1)}
SIGNERS = {name: AvrsSigner.from_seed(seed) for name, seed in SEEDS.items()}


def _tsds(items: list[Tsd]) -> list[dict[str, Any]]:
    return [{"type": item.type, "data": item.data.hex()} for item in items]


def tsd_vectors() -> dict[str, Any]:
    valid = [
        [],
        [Tsd(0x0001, b"")],
        [Tsd(0x0011, bytes(range(16))), Tsd(0x0021, (7).to_bytes(4, "little"))],
        [Tsd(0xFFF2, "детали".encode())],
    ]
    invalid = {
        "header truncated": "010005",
        "size beyond data": "0100050000006162",
        "size u32 max": "0100ffffffff",
        "trailing byte": "01000000000000",
    }
    return {
        "spec": f"{SPEC} §TSD",
        "valid": [{"items": _tsds(items), "hex": encode_tsds(items).hex()} for items in valid],
        "invalid": [
            {"why": why, "hex": hex_, "code": "ARG_INCORRECT"} for why, hex_ in invalid.items()
        ],
    }


def _request(
    name: str,
    channel: AvrsChannel,
    op: int,
    request_id: int,
    args: list[Tsd],
    signer: str | None,
    nonce_byte: int = 0,
    flags: RequestFlag = RequestFlag.NONE,
) -> dict[str, Any]:
    header = RequestHeader(op, channel, request_id, flags)
    entry: dict[str, Any] = {
        "name": name,
        "channel": chr(channel),
        "op": op,
        "request_id": request_id,
        "flags": int(flags),
        "args": _tsds(args),
    }
    if signer is None:
        data = encode_request(header, args)
    else:
        key = SIGNERS[signer]
        timestamp, nonce = int(NOW * 1000), bytes([nonce_byte]) * 16
        data = encode_request(header, args, signer=key, timestamp_ms=timestamp, nonce=nonce)
        parsed = decode_request(channel, data)
        entry |= {
            "signer_seed": SEEDS[signer].hex(),
            "algorithm": key.algorithm.name,
            "public_key": key.public_key.hex(),
            "identity": key.identity.hex(),
            "timestamp_ms": timestamp,
            "nonce": nonce.hex(),
            "sign_offset": parsed.sign_offset,
        }
    entry["hex"] = data.hex()
    return entry


CLUSTER_ID = bytes(range(16))
CONTENT_ID = b"\xc0" * 16


def packet_vectors() -> dict[str, Any]:
    c, s, a = AvrsChannel.CLUSTER, AvrsChannel.SESSION, AvrsChannel.SIGNAL
    requests = [
        _request("session OPEN (signed)", s, SessionOp.OPEN, 1, [], "client", 1),
        _request(
            "session CONTENT_ADD (unsigned, bound to the session)",
            s,
            SessionOp.CONTENT_ADD,
            2,
            [
                Tsd(SessionArg.CLUSTER_ID, CLUSTER_ID),
                Tsd(SessionArg.CONTENT_UUID, CONTENT_ID),
                Tsd(SessionArg.CONTENT_FLAGS, int(ContentFlag.STREAMING_OUT).to_bytes(4, "little")),
            ],
            None,
        ),
        _request(
            "cluster DESTROY (signed by the owner)",
            c,
            ClusterOp.DESTROY,
            3,
            [Tsd(ClusterArg.ID, CLUSTER_ID)],
            "host",
            2,
        ),
        _request(
            "cluster MEMBER_REQUEST_ADD with a profile",
            c,
            ClusterOp.MEMBER_REQUEST_ADD,
            4,
            [Tsd(ClusterArg.ID, CLUSTER_ID), Tsd(ClusterArg.DISPLAY_NAME, "Анна".encode())],
            "alien",
            3,
        ),
        _request(
            "signal HELLO",
            a,
            SignalOp.HELLO,
            5,
            [Tsd(SignalArg.SOFTWARE, b"dapsdk/0.1")],
            None,
        ),
        _request(
            "cluster CONTENT_LIST_RESP (response)",
            c,
            ClusterOp.CONTENT_LIST_RESP,
            6,
            [Tsd(ClusterArg.CONTENT_ID, CONTENT_ID)],
            None,
            flags=RequestFlag.RESPONSE,
        ),
    ]
    replies = [
        Reply(
            0,
            1,
            ord("S"),
            SessionOp.OPEN,
            "SUCCESS",
            (Tsd(0x01, SIGNERS["client"].identity), Tsd(0x03, b"\x00")),
        ),
        Reply(0x401, 9, ord("S"), SessionOp.START, "SESSION_NOT_OPENED"),
        Reply(0x210, 77, ord("c"), 2, "CONTENT_FLOW_WRONG_ID", (Tsd(0xFFF2, b"flow 2 of 2"),)),
    ]
    contents = [
        ContentPacket(1, 0, 0, b"", NO_TIMESTAMP, NO_TIMESTAMP),
        ContentPacket(
            3, 1, 0xFFFFFFFF, bytes.fromhex("00000001674d"), 40_000, 33_333, MediaFlag.KEYFRAME
        ),
    ]
    return {
        "spec": f"{SPEC} §Packets",
        "requests": requests,
        "replies": [
            {
                "code": r.code,
                "request_id": r.request_id,
                "channel": chr(r.channel),
                "op": r.op,
                "token": r.token,
                "args": _tsds(list(r.args)),
                "hex": encode_reply(r).hex(),
            }
            for r in replies
        ],
        "content": [
            {
                "handle": p.handle,
                "flow_id": p.flow_id,
                "seq": p.seq,
                "pts": p.pts,
                "dts": p.dts,
                "flags": int(p.flags),
                "payload": p.payload.hex(),
                "hex": encode_content(p).hex(),
            }
            for p in contents
        ],
    }


def exchange_directory() -> dict[str, Any]:
    """The cluster the exchange runs against, as data (so other implementations can load it)."""
    return {
        "cluster_id": CLUSTER_ID.hex(),
        "owner": SIGNERS["host"].identity.hex(),
        "members": {
            SIGNERS["server"].identity.hex(): int(Role.SERVER),
            SIGNERS["client"].identity.hex(): int(Role.CLIENT),
        },
        "contents": [
            {
                "content_id": CONTENT_ID.hex(),
                "owner": SIGNERS["server"].identity.hex(),
                "flows": "av",
            }
        ],
    }


def load_directory(spec: dict[str, Any]) -> MemoryClusterView:
    contents = {
        bytes.fromhex(c["content_id"]): ContentInfo(
            bytes.fromhex(c["content_id"]), bytes.fromhex(c["owner"]), c["flows"]
        )
        for c in spec["contents"]
    }
    members = {bytes.fromhex(k): Role(v) for k, v in spec["members"].items()}
    view = MemoryClusterView()
    view.put(
        ClusterInfo(
            bytes.fromhex(spec["cluster_id"]),
            bytes.fromhex(spec["owner"]),
            members,
            contents=contents,
        )
    )
    return view


def exchange_inputs() -> list[tuple[str, AvrsChannel, bytes]]:
    c, s = AvrsChannel.CLUSTER, AvrsChannel.SESSION
    server = SIGNERS["server"]
    publish = [
        Tsd(SessionArg.CLUSTER_ID, CLUSTER_ID),
        Tsd(SessionArg.CONTENT_UUID, CONTENT_ID),
        Tsd(SessionArg.CONTENT_FLAGS, int(ContentFlag.STREAMING_IN).to_bytes(4, "little")),
    ]
    ts = int(NOW * 1000)

    def signed(
        op: int, rid: int, args: list[Tsd], who: AvrsSigner, n: int, ch: AvrsChannel = s
    ) -> bytes:
        return encode_request(
            RequestHeader(op, ch, rid), args, signer=who, timestamp_ms=ts, nonce=bytes([n]) * 16
        )

    def plain(op: int, rid: int, args: list[Tsd] | None = None) -> bytes:
        return encode_request(RequestHeader(op, s, rid), args or [])

    open_request = signed(SessionOp.OPEN, 2, [], server, 1)
    return [
        ("START before OPEN", s, plain(SessionOp.START, 1)),
        ("OPEN signed by the server", s, open_request),
        ("the same OPEN replayed", s, open_request),
        ("CONTENT_ADD to publish", s, plain(SessionOp.CONTENT_ADD, 3, publish)),
        ("START", s, plain(SessionOp.START, 4)),
        ("SYNC", s, plain(SessionOp.SYNC, 5, [Tsd(SessionArg.CLOCK, bytes(8))])),
        (
            "media on flow 0",
            AvrsChannel.CONTENT,
            encode_content(ContentPacket(1, 0, 1, b"frame", 0, 0, MediaFlag.KEYFRAME)),
        ),
        (
            "media on flow 2 (content has 'av')",
            AvrsChannel.CONTENT,
            encode_content(ContentPacket(1, 2, 2, b"frame", 0, 0)),
        ),
        (
            "media for handle 9",
            AvrsChannel.CONTENT,
            encode_content(ContentPacket(9, 0, 3, b"frame", 0, 0)),
        ),
        (
            "cluster DESTROY by a non-owner",
            c,
            signed(ClusterOp.DESTROY, 6, [Tsd(ClusterArg.ID, CLUSTER_ID)], server, 2, c),
        ),
        ("unknown cluster op 0x99", c, encode_request(RequestHeader(0x99, c, 7))),
        ("CLOSE", s, plain(SessionOp.CLOSE, 8)),
    ]


def exchange_vectors() -> dict[str, Any]:
    directory = exchange_directory()
    conn = AvrsConnection(load_directory(directory))
    steps = []
    for name, channel, data in exchange_inputs():
        out = conn.handle(channel, data, NOW)
        steps.append(
            {
                "name": name,
                "channel": chr(channel),
                "in": data.hex(),
                "out": [{"channel": chr(ch), "hex": payload.hex()} for ch, payload in out],
                "state_after": conn.state.value,
            }
        )
    return {
        "spec": f"{SPEC} §Exchanges",
        "now": NOW,
        "note": "DETAIL (0xfff2) text in refusals is informational; compare the other fields.",
        "directory": directory,
        "steps": steps,
    }


BUILDERS = {
    "avrs_tsd.json": tsd_vectors,
    "avrs_packets.json": packet_vectors,
    "avrs_exchange.json": exchange_vectors,
}


def main() -> None:
    for name, build in BUILDERS.items():
        text = json.dumps(build(), indent=1, ensure_ascii=False) + "\n"
        (VECTORS / name).write_text(text, encoding="utf-8")
        print(f"wrote {VECTORS / name}")


if __name__ == "__main__":
    main()
