"""The stored vectors (tests/vectors/avrs_*.json) match the builder and decode to their fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dapsdk.avrs.connection import AvrsConnection
from dapsdk.avrs.constants import AvrsChannel, CommonArg
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError
from dapsdk.avrs.packets import (
    REQUEST_HEADER_SIZE,
    decode_content,
    decode_reply,
    decode_request,
)
from dapsdk.avrs.signing import AvrsSigner, decode_sign_blob, tsd_sign_pkt_verify, verify_blob
from dapsdk.avrs.tsd import Tsd, parse_tsds

from .vectors_gen import BUILDERS, VECTORS, load_directory


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


def items(spec: list[dict[str, Any]]) -> list[Tsd]:
    return [Tsd(item["type"], bytes.fromhex(item["data"])) for item in spec]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_stored_vectors_equal_the_builder(name: str) -> None:
    assert load(name) == json.loads(json.dumps(BUILDERS[name](), ensure_ascii=False))


def test_tsd_vectors_decode() -> None:
    vectors = load("avrs_tsd.json")
    for case in vectors["valid"]:
        data = bytes.fromhex(case["hex"])
        assert list(parse_tsds(data).items) == items(case["items"])
        # Feeding it with a trailing byte must fail (every byte belongs to an item).
        with pytest.raises(AvrsProtocolError):
            parse_tsds(data + b"\x00")
    for case in vectors["invalid"]:
        with pytest.raises(AvrsProtocolError) as info:
            parse_tsds(bytes.fromhex(case["hex"]))
        assert info.value.code.token == case["code"]


def test_request_vectors_decode_and_verify() -> None:
    for case in load("avrs_packets.json")["requests"]:
        data = bytes.fromhex(case["hex"])
        channel = AvrsChannel(ord(case["channel"]))
        request = decode_request(channel, data)
        assert (request.header.op, request.header.request_id, int(request.header.flags)) == (
            case["op"],
            case["request_id"],
            case["flags"],
        )
        if "signer_seed" not in case:
            assert request.sign is None
            assert list(request.args) == items(case["args"])
            continue
        signer = AvrsSigner.from_seed(bytes.fromhex(case["signer_seed"]))
        assert signer.identity.hex() == case["identity"]
        assert request.sign is not None and request.sign_offset == case["sign_offset"]
        blob = decode_sign_blob(request.sign.data)
        assert blob.public_key.hex() == case["public_key"]
        assert verify_blob(blob, data[: REQUEST_HEADER_SIZE + case["sign_offset"]])
        assert tsd_sign_pkt_verify(
            request.sign, request.sign_offset, data, REQUEST_HEADER_SIZE, request.args_size
        )
        expected = [
            *items(case["args"]),
            Tsd(CommonArg.TIMESTAMP, case["timestamp_ms"].to_bytes(8, "little")),
            Tsd(CommonArg.NONCE, bytes.fromhex(case["nonce"])),
        ]
        assert list(request.args) == expected


def test_reply_and_content_vectors_decode() -> None:
    vectors = load("avrs_packets.json")
    for case in vectors["replies"]:
        reply = decode_reply(bytes.fromhex(case["hex"]))
        assert (reply.code, reply.request_id, chr(reply.channel), reply.op, reply.token) == (
            case["code"],
            case["request_id"],
            case["channel"],
            case["op"],
            case["token"],
        )
        assert list(reply.args) == items(case["args"])
        assert AvrsError(case["code"]).token == case["token"]
    for case in vectors["content"]:
        packet = decode_content(bytes.fromhex(case["hex"]))
        assert (packet.handle, packet.flow_id, packet.seq, packet.pts, packet.dts) == (
            case["handle"],
            case["flow_id"],
            case["seq"],
            case["pts"],
            case["dts"],
        )
        assert (int(packet.flags), packet.payload.hex()) == (case["flags"], case["payload"])


def test_exchange_vectors_replay_through_a_fresh_connection() -> None:
    vectors = load("avrs_exchange.json")
    conn = AvrsConnection(load_directory(vectors["directory"]))
    tokens = []
    for step in vectors["steps"]:
        channel = ord(step["channel"])
        out = conn.handle(channel, bytes.fromhex(step["in"]), vectors["now"])
        assert [(chr(ch), data.hex()) for ch, data in out] == [
            (o["channel"], o["hex"]) for o in step["out"]
        ], step["name"]
        assert conn.state.value == step["state_after"], step["name"]
        tokens.append([decode_reply(data).token for _ch, data in out])
    assert tokens == [
        ["SESSION_NOT_OPENED"],
        ["SUCCESS"],
        ["SIGN_REPLAYED"],
        ["SUCCESS"],
        ["SUCCESS"],
        ["SUCCESS"],
        [],
        ["CONTENT_FLOW_WRONG_ID"],
        ["SESSION_CONTENT_ID_WRONG"],
        ["SIGN_ALIEN"],
        ["CLUSTER_WRONG_REQUEST"],
        ["SUCCESS"],
    ]
