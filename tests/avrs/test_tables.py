"""The permission table and the session state table, checked over their whole domains."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dapsdk.avrs.constants import AvrsChannel, ClusterOp, Role, SessionOp, SignalOp
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.permissions import PERMISSIONS, PUBLISH, RESPONSE_ONLY, Scope, authorize
from dapsdk.avrs.state import TRANSITIONS, SessionInput, SessionState, decide

OWNER, HOST2, OPER, SERV, BAL, CLI, NOBODY = [
    "owner",
    "host",
    "operator",
    "server",
    "balancer",
    "client",
    "nobody",
]
ROLES = {
    HOST2: Role.HOST,
    OPER: Role.OPERATOR,
    SERV: Role.SERVER,
    BAL: Role.BALANCER,
    CLI: Role.CLIENT,
    OWNER: None,
    NOBODY: None,
}
IDS = {name: name.encode().ljust(32, b".") for name in ROLES}
EVERYONE = set(ROLES)
MEMBERS = EVERYONE - {NOBODY}

#: Who may send each cluster request (without the allow-self cases).
EXPECTED = {
    ClusterOp.CREATE: EVERYONE,
    ClusterOp.DESTROY: {OWNER},
    ClusterOp.CHANGE: {OWNER, HOST2},
    ClusterOp.INFO: MEMBERS,
    ClusterOp.LIST_REQ: EVERYONE,
    ClusterOp.MEMBER_REQUEST_ADD: EVERYONE,
    ClusterOp.MEMBER_REQUEST_DEL: {OWNER, HOST2, OPER},
    ClusterOp.MEMBER_REQUEST_APPROVE: {OWNER, HOST2, OPER},
    ClusterOp.MEMBER_REMOVE: {OWNER, HOST2, OPER},
    ClusterOp.ROLE_ASSIGN: {OWNER, HOST2},
    ClusterOp.CONTENT_ADD: {OWNER, HOST2, OPER, SERV},
    ClusterOp.CONTENT_UPDATE: {OWNER, HOST2, SERV},
    ClusterOp.CONTENT_DEL: {OWNER, HOST2, OPER},
    ClusterOp.CONTENT_LIST_REQ: MEMBERS,
    ClusterOp.BALANCE_REQ: MEMBERS,
    ClusterOp.LOAD_REPORT: {OWNER, SERV, BAL},
    ClusterOp.ROUTE_ADD: {OWNER, HOST2, BAL},
    ClusterOp.ROUTE_DEL: {OWNER, HOST2, BAL},
    ClusterOp.ROUTE_FIND: MEMBERS,
    ClusterOp.ROUTE_CHECK: MEMBERS,
    ClusterOp.STATS_REQ: {OWNER, HOST2, OPER, BAL},
}


def allowed(op: int, who: str, target: bytes | None = None) -> bool:
    permission = PERMISSIONS[(AvrsChannel.CLUSTER, op)]
    return authorize(
        permission,
        signer=IDS[who],
        member_roles=ROLES[who],
        cluster_owner=IDS[OWNER],
        target=target,
    )


@pytest.mark.parametrize("op", sorted(EXPECTED))
def test_cluster_permission_matrix(op: ClusterOp) -> None:
    assert {who for who in ROLES if allowed(op, who)} == EXPECTED[op]


def test_every_op_has_a_row_or_is_response_only() -> None:
    for op in ClusterOp:
        key = (AvrsChannel.CLUSTER, int(op))
        assert (key in PERMISSIONS) != (key in RESPONSE_ONLY), op
    for session_op in SessionOp:
        key = (AvrsChannel.SESSION, int(session_op))
        assert (key in PERMISSIONS) != (key in RESPONSE_ONLY), session_op
    for signal_op in SignalOp:
        assert (AvrsChannel.SIGNAL, signal_op) in PERMISSIONS
    assert set(EXPECTED) == {op for op in ClusterOp if (AvrsChannel.CLUSTER, op) in PERMISSIONS}


def test_allow_self() -> None:
    client = IDS[CLI]
    assert allowed(ClusterOp.MEMBER_REMOVE, CLI, target=client)  # leaving
    assert not allowed(ClusterOp.MEMBER_REMOVE, CLI, target=IDS[SERV])  # kicking someone
    assert allowed(ClusterOp.MEMBER_REQUEST_DEL, NOBODY, target=IDS[NOBODY])  # withdrawing
    assert not allowed(ClusterOp.ROLE_ASSIGN, CLI, target=client)  # no self promotion
    # Content owner (target = the content's owner) may update and delete, not a stranger.
    assert allowed(ClusterOp.CONTENT_DEL, CLI, target=client)
    assert not allowed(ClusterOp.CONTENT_DEL, BAL, target=client)


def test_publish_row_and_unsigned_member_requests() -> None:
    publish = PERMISSIONS[PUBLISH]
    ids = {"signer": IDS[CLI], "cluster_owner": IDS[OWNER]}
    assert not authorize(publish, member_roles=Role.CLIENT, **ids)
    assert authorize(publish, member_roles=Role.CLIENT, target=IDS[CLI], **ids)
    assert authorize(publish, member_roles=Role.SERVER, **ids)
    member_row = PERMISSIONS[(AvrsChannel.CLUSTER, ClusterOp.INFO)]
    assert member_row.scope is Scope.MEMBER
    assert not authorize(member_row, signer=None, member_roles=Role.ALL, cluster_owner=IDS[OWNER])


def test_every_state_input_pair_moves_or_has_a_code() -> None:
    codes = set()
    for state in SessionState:
        for event in SessionInput:
            result = decide(state, event)
            if isinstance(result, AvrsError):
                codes.add(result)
                if state in (SessionState.CREATED, SessionState.CLOSED):
                    assert result is AvrsError.SESSION_NOT_OPENED
                elif event is SessionInput.OPEN:
                    assert result is AvrsError.SESSION_ALREADY_OPENED
                else:
                    assert result is AvrsError.SESSION_WRONG_REQUEST
            else:
                assert event in TRANSITIONS[state]
    assert codes == {
        AvrsError.SESSION_NOT_OPENED,
        AvrsError.SESSION_ALREADY_OPENED,
        AvrsError.SESSION_WRONG_REQUEST,
    }


def test_error_state_only_closes() -> None:
    leaving = {e for e in SessionInput if not isinstance(decide(SessionState.ERROR, e), AvrsError)}
    assert leaving == {SessionInput.CLOSE}


def test_every_state_is_reachable_from_created() -> None:
    seen, frontier = {SessionState.CREATED}, [SessionState.CREATED]
    while frontier:
        state = frontier.pop()
        for event in SessionInput:
            result = decide(state, event)
            if isinstance(result, SessionState) and result not in seen:
                seen.add(result)
                frontier.append(result)
    assert seen == set(SessionState)


@given(st.lists(st.sampled_from(list(SessionInput)), max_size=60))
def test_random_walks_stay_in_the_table(events: list[SessionInput]) -> None:
    state = SessionState.CREATED
    for event in events:
        result = decide(state, event)
        if isinstance(result, SessionState):
            assert result is state or result in TRANSITIONS[state].values()
            state = result
        else:
            assert result in AvrsError
