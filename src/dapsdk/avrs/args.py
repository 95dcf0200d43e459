"""Argument tables: the shape of every known TSD type per channel, and what each request needs.

One table drives validation (STYLE.md §5: TLV options from one table, unknown types skipped so newer
peers can add arguments). A malformed known argument is refused with the spec's code: member
profile fields with MEMBER_INFO_PROBLEM, content descriptions with CONTENT_INFO_CORRUPTED, anything
else with ARG_INCORRECT. A required argument that is missing is ARG_INCORRECT.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from .constants import (
    GUUID_SIZE,
    IDENTITY_SIZE,
    KNOWN_CONTENT_FLAGS,
    KNOWN_ROLES,
    MAX_AVATAR,
    MAX_PROFILE_STRING,
    NONCE_SIZE,
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    ClusterSetup,
    CommonArg,
    SessionArg,
    SessionOp,
    SignalArg,
    SignalOp,
)
from .directory import MAX_CODEC_NAME, validate_flows
from .errors import AvrsError, AvrsProtocolError
from .signing import SignatureAlgorithm
from .tsd import TsdList


class Kind(enum.Enum):
    FIXED = "fixed"  #: exactly ``size`` bytes (ids, integers)
    TEXT = "text"  #: UTF-8 of at most ``size`` bytes, optional trailing NUL
    BYTES = "bytes"  #: at most ``size`` bytes
    FLOW_CODEC = "flow-codec"  #: u8 flow index + ASCII codec name


@dataclass(frozen=True, slots=True)
class ArgSpec:
    kind: Kind
    size: int
    code: AvrsError = AvrsError.ARG_INCORRECT
    repeatable: bool = False


def _fixed(size: int) -> ArgSpec:
    return ArgSpec(Kind.FIXED, size)


def _profile(size: int = MAX_PROFILE_STRING) -> ArgSpec:
    return ArgSpec(Kind.TEXT, size, AvrsError.MEMBER_INFO_PROBLEM)


_COMMON: Final[dict[int, ArgSpec]] = {
    CommonArg.TIMESTAMP: _fixed(8),
    CommonArg.NONCE: _fixed(NONCE_SIZE),
    CommonArg.DETAIL: ArgSpec(Kind.TEXT, 1024),
    CommonArg.TOTP: _fixed(6),
}

CLUSTER_ARGS: Final[dict[int, ArgSpec]] = {
    **_COMMON,
    ClusterArg.ID: _fixed(GUUID_SIZE),
    ClusterArg.TITLE: ArgSpec(Kind.TEXT, MAX_PROFILE_STRING),
    ClusterArg.SETUP: _fixed(1),
    ClusterArg.ENCRYPTED: _fixed(1),
    ClusterArg.SIGN_ALGORITHM: _fixed(2),
    ClusterArg.MEMBERS_COUNT: _fixed(4),
    ClusterArg.MEMBERS_MAX: _fixed(4),
    ClusterArg.MEMBER: _fixed(IDENTITY_SIZE),
    ClusterArg.ROLE: _fixed(2),
    ClusterArg.ADDR: _fixed(16),
    ClusterArg.DISPLAY_NAME: _profile(),
    ClusterArg.NAME: _profile(),
    ClusterArg.SECOND_NAME: _profile(),
    ClusterArg.SURNAME: _profile(),
    ClusterArg.PATRONIM: _profile(),
    ClusterArg.AVATAR: ArgSpec(Kind.BYTES, MAX_AVATAR, AvrsError.MEMBER_INFO_PROBLEM),
    ClusterArg.STATUS: _profile(),
    ClusterArg.MEMBER_TITLE: _profile(),
    ClusterArg.SIGNAL: _profile(),
    ClusterArg.CONTENT_ID: _fixed(GUUID_SIZE),
    ClusterArg.CONTENT_TITLE: ArgSpec(Kind.TEXT, 255, AvrsError.CONTENT_INFO_CORRUPTED),
    ClusterArg.CONTENT_FLOWS: ArgSpec(Kind.TEXT, 32, AvrsError.CONTENT_INFO_CORRUPTED),
    ClusterArg.CONTENT_FLOW_CODEC: ArgSpec(
        Kind.FLOW_CODEC, 1 + MAX_CODEC_NAME, AvrsError.CONTENT_INFO_CORRUPTED, repeatable=True
    ),
    ClusterArg.CONTENT_NAME: ArgSpec(Kind.TEXT, 255, AvrsError.CONTENT_INFO_CORRUPTED),
    ClusterArg.CONTENT_INTERACTIVE: _fixed(1),
    ClusterArg.LOAD: _fixed(4 + 8 + 2),
    ClusterArg.ROUTE: _fixed(GUUID_SIZE + 8),
}

SESSION_ARGS: Final[dict[int, ArgSpec]] = {
    **_COMMON,
    SessionArg.CLUSTER_ID: _fixed(GUUID_SIZE),
    SessionArg.CONTENT_UUID: _fixed(GUUID_SIZE),
    SessionArg.CONTENT_ID: _fixed(4),
    SessionArg.CONTENT_FLAGS: _fixed(4),
    SessionArg.DISPLAY_NAME: ArgSpec(Kind.TEXT, MAX_PROFILE_STRING),
    SessionArg.CLOCK: _fixed(8),
    SessionArg.START_POSITION: _fixed(8),
    SessionArg.TEXT: ArgSpec(Kind.TEXT, 64 * 1024),
    SessionArg.MESSAGE_ID: _fixed(8),
    SessionArg.POLL_ID: _fixed(4),
    SessionArg.POLL_OPTION: ArgSpec(Kind.TEXT, 100, repeatable=True),
    SessionArg.POLL_CHOICE: _fixed(1),
    SessionArg.POLL_COUNTS: ArgSpec(Kind.BYTES, 4 * 16),
    SessionArg.POLL_OPEN: _fixed(1),
    SessionArg.MOD_ACTION: _fixed(1),
    SessionArg.MEMBER: _fixed(IDENTITY_SIZE),
    SessionArg.DURATION: _fixed(4),
    SessionArg.TIME: _fixed(8),
    SessionArg.HISTORY: _fixed(1),
    SessionArg.RENDITION: ArgSpec(Kind.TEXT, 32),
}

SIGNAL_ARGS: Final[dict[int, ArgSpec]] = {
    **_COMMON,
    SignalArg.SOFTWARE: ArgSpec(Kind.TEXT, 255),
    SignalArg.CAPABILITIES: _fixed(4),
    SignalArg.RTT_US: _fixed(4),
    SignalArg.LOSS_PERMILLE: _fixed(2),
    SignalArg.JITTER_US: _fixed(4),
    SignalArg.BITRATE: _fixed(8),
    SignalArg.CLOCK: _fixed(8),
    SignalArg.TARGET: ArgSpec(Kind.TEXT, 1024),
    SignalArg.REASON: ArgSpec(Kind.TEXT, 63),
    SignalArg.CONTENT_UUID: _fixed(GUUID_SIZE),
    SignalArg.STARTUP_MS: _fixed(4),
    SignalArg.STALLS: _fixed(4),
    SignalArg.SWITCHES: _fixed(4),
    SignalArg.DROPPED: _fixed(4),
    SignalArg.LATENCY_MS: _fixed(4),
}

ARG_SPECS: Final[dict[AvrsChannel, dict[int, ArgSpec]]] = {
    AvrsChannel.CLUSTER: CLUSTER_ARGS,
    AvrsChannel.SESSION: SESSION_ARGS,
    AvrsChannel.SIGNAL: SIGNAL_ARGS,
}

_C = AvrsChannel.CLUSTER
_UUID = SessionArg.CONTENT_UUID
_S = AvrsChannel.SESSION
_ID = ClusterArg.ID
_MEMBER = ClusterArg.MEMBER
_CONTENT = ClusterArg.CONTENT_ID

#: Arguments each request must carry (requests not listed need none).
REQUIRED_ARGS: Final[dict[tuple[AvrsChannel, int], frozenset[int]]] = {
    (_C, ClusterOp.DESTROY): frozenset({_ID}),
    (_C, ClusterOp.CHANGE): frozenset({_ID}),
    (_C, ClusterOp.INFO): frozenset({_ID}),
    (_C, ClusterOp.MEMBER_REQUEST_ADD): frozenset({_ID}),
    (_C, ClusterOp.MEMBER_REQUEST_DEL): frozenset({_ID, _MEMBER}),
    (_C, ClusterOp.MEMBER_REQUEST_APPROVE): frozenset({_ID, _MEMBER}),
    (_C, ClusterOp.MEMBER_REMOVE): frozenset({_ID, _MEMBER}),
    (_C, ClusterOp.ROLE_ASSIGN): frozenset({_ID, _MEMBER, ClusterArg.ROLE}),
    (_C, ClusterOp.CONTENT_ADD): frozenset({_ID, _CONTENT, ClusterArg.CONTENT_FLOWS}),
    (_C, ClusterOp.CONTENT_UPDATE): frozenset({_ID, _CONTENT}),
    (_C, ClusterOp.CONTENT_DEL): frozenset({_ID, _CONTENT}),
    (_C, ClusterOp.CONTENT_LIST_REQ): frozenset({_ID}),
    (_C, ClusterOp.BALANCE_REQ): frozenset({_ID}),
    (_C, ClusterOp.LOAD_REPORT): frozenset({_ID, ClusterArg.LOAD}),
    (_C, ClusterOp.ROUTE_ADD): frozenset({_ID, ClusterArg.ROUTE}),
    (_C, ClusterOp.ROUTE_DEL): frozenset({_ID, ClusterArg.ROUTE}),
    (_C, ClusterOp.ROUTE_FIND): frozenset({_ID, _CONTENT}),
    (_C, ClusterOp.ROUTE_CHECK): frozenset({_ID, ClusterArg.ROUTE}),
    (_C, ClusterOp.STATS_REQ): frozenset({_ID}),
    (_S, SessionOp.CONTENT_ADD): frozenset({SessionArg.CLUSTER_ID, SessionArg.CONTENT_UUID}),
    (_S, SessionOp.CONTENT_REMOVE): frozenset({SessionArg.CONTENT_ID}),
    (_S, SessionOp.CONTENT_UPDATE): frozenset({SessionArg.CONTENT_ID, SessionArg.CONTENT_FLAGS}),
    (_S, SessionOp.CLUSTER_ADD): frozenset({SessionArg.CLUSTER_ID}),
    (_S, SessionOp.CLUSTER_DEL): frozenset({SessionArg.CLUSTER_ID}),
    (_S, SessionOp.CLUSTER_UPDATE): frozenset({SessionArg.CLUSTER_ID}),
    (_S, SessionOp.SYNC): frozenset({SessionArg.CLOCK}),
    (_S, SessionOp.MONITOR): frozenset({SessionArg.CLUSTER_ID}),
    (_S, SessionOp.CHAT): frozenset({SessionArg.CLUSTER_ID, _UUID, SessionArg.TEXT}),
    (_S, SessionOp.POLL_CREATE): frozenset({SessionArg.CLUSTER_ID, _UUID, SessionArg.TEXT}),
    (_S, SessionOp.POLL_VOTE): frozenset(
        {SessionArg.CLUSTER_ID, _UUID, SessionArg.POLL_ID, SessionArg.POLL_CHOICE}
    ),
    (_S, SessionOp.POLL_CLOSE): frozenset({SessionArg.CLUSTER_ID, _UUID, SessionArg.POLL_ID}),
    (_S, SessionOp.MODERATE): frozenset({SessionArg.CLUSTER_ID, _UUID, SessionArg.MOD_ACTION}),
    (AvrsChannel.SIGNAL, SignalOp.REDIRECT): frozenset({SignalArg.TARGET}),
}


def _check_one(tsd_type: int, data: bytes, spec: ArgSpec) -> None:
    bad = f"argument 0x{tsd_type:04x}"
    if spec.kind is Kind.FIXED:
        if len(data) != spec.size:
            raise AvrsProtocolError(spec.code, f"{bad} has {len(data)} bytes, expected {spec.size}")
    elif spec.kind is Kind.BYTES:
        if len(data) > spec.size:
            raise AvrsProtocolError(spec.code, f"{bad} longer than {spec.size} bytes")
    elif spec.kind is Kind.TEXT:
        text = data[:-1] if data.endswith(b"\x00") else data
        if len(text) > spec.size or b"\x00" in text:
            raise AvrsProtocolError(spec.code, f"{bad} is not a string of <= {spec.size} bytes")
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            raise AvrsProtocolError(spec.code, f"{bad} is not UTF-8") from None
    else:  # FLOW_CODEC
        name = data[1:].rstrip(b"\x00")
        if not 1 <= len(name) <= MAX_CODEC_NAME or not all(0x21 <= b <= 0x7E for b in name):
            raise AvrsProtocolError(spec.code, f"{bad} is not flow index + codec name")


def validate_args(channel: AvrsChannel, op: int, args: TsdList) -> None:
    """Check every known argument's shape and that the required ones are present."""
    specs = ARG_SPECS[channel]
    seen: set[int] = set()
    for item in args:
        spec = specs.get(item.type)
        if spec is None:
            continue  # unknown argument from a newer peer: skipped
        if item.type in seen and not spec.repeatable:
            raise AvrsProtocolError(spec.code, f"argument 0x{item.type:04x} repeated")
        seen.add(item.type)
        _check_one(item.type, item.data, spec)
    missing = REQUIRED_ARGS.get((channel, op), frozenset()) - seen
    if missing:
        names = ", ".join(f"0x{t:04x}" for t in sorted(missing))
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"missing argument(s) {names}")
    if channel is AvrsChannel.CLUSTER:
        _validate_cluster_values(args)
    elif channel is AvrsChannel.SESSION:
        flags = args.uint(SessionArg.CONTENT_FLAGS, 4, required=False)
        if flags is not None and (flags & ~KNOWN_CONTENT_FLAGS or not flags):
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"bad content flags 0x{flags:x}")


def _validate_cluster_values(args: TsdList) -> None:
    """Value checks that need more than a size: enums, bitmasks, the flow description."""
    role = args.uint(ClusterArg.ROLE, 2, required=False)
    if role is not None and (role & ~int(KNOWN_ROLES)) and role != 0xFFFF:
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"unknown role bits 0x{role:04x}")
    setup = args.uint(ClusterArg.SETUP, 1, required=False)
    if setup is not None and setup not in {int(v) for v in ClusterSetup}:
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"unknown cluster setup {setup}")
    algorithm = args.uint(ClusterArg.SIGN_ALGORITHM, 2, required=False)
    if algorithm is not None and algorithm not in {int(v) for v in SignatureAlgorithm}:
        raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"unknown algorithm {algorithm}")
    flows = args.text(
        ClusterArg.CONTENT_FLOWS, 32, required=False, code=AvrsError.CONTENT_INFO_CORRUPTED
    )
    if flows is not None:
        codecs = flow_codecs(args, len(flows))
        validate_flows(flows, tuple(codecs))


def flow_codecs(args: TsdList, flow_count: int) -> list[str | None]:
    """Per-flow codec names from the repeatable CONTENT_FLOW_CODEC arguments."""
    codecs: list[str | None] = [None] * flow_count
    for data in args.all(ClusterArg.CONTENT_FLOW_CODEC):
        index = data[0]
        if index >= flow_count or codecs[index] is not None:
            raise AvrsProtocolError(
                AvrsError.CONTENT_INFO_CORRUPTED, f"codec for flow {index} of {flow_count}"
            )
        codecs[index] = data[1:].rstrip(b"\x00").decode("ascii")
    while codecs and codecs[-1] is None:
        codecs.pop()
    return codecs
