"""The session state machine, as data (h11 ``_state.py`` style).

Every transition lives in :data:`TRANSITIONS`. A (state, input) pair that is not listed is refused
with the code :func:`refusal` gives, so every pair of the cross product either moves somewhere or
yields a coded error; ``tests/avrs/test_state.py`` walks the whole product.

The seed's lifecycle::

    CREATED -> AUTHENTICATED -> CONTENT_SELECTED -> STREAM_OPEN -> SYNCED -> STREAMING
    (MONITORING, ERROR handling) -> CLOSED

maps onto requests: OPEN authenticates, CONTENT_ADD selects, START opens the stream, SYNC exchanges
clock references, and the first media packet after SYNC makes the session STREAMING. MONITOR enters
MONITORING (metrics without media, host/operator). ERROR is sticky: only CLOSE leaves it.
"""

from __future__ import annotations

import enum
from typing import Final

from .errors import AvrsError


class SessionState(enum.Enum):
    CREATED = "CREATED"  #: the channel exists; no session yet
    AUTHENTICATED = "AUTHENTICATED"  #: a signed OPEN bound the session to the signer's identity
    CONTENT_SELECTED = "CONTENT_SELECTED"  #: at least one content attached
    STREAM_OPEN = "STREAM_OPEN"  #: START accepted; waiting for clock sync
    SYNCED = "SYNCED"  #: SYNC exchanged clock references; media may flow
    STREAMING = "STREAMING"  #: media is flowing
    MONITORING = "MONITORING"  #: watching a cluster's metrics, no media
    ERROR = "ERROR"  #: too many errors or a fatal failure; only CLOSE is accepted
    CLOSED = "CLOSED"  #: closed by CLOSE (a new OPEN starts over) or by losing the connection


class SessionInput(enum.Enum):
    """Requests of the session channel, plus media and internal inputs."""

    OPEN = "OPEN"
    UPDATE = "UPDATE"
    CLOSE = "CLOSE"
    CONTENT_ADD = "CONTENT_ADD"
    CONTENT_REMOVE = "CONTENT_REMOVE"
    CONTENT_UPDATE = "CONTENT_UPDATE"
    CLUSTER_ADD = "CLUSTER_ADD"
    CLUSTER_DEL = "CLUSTER_DEL"
    CLUSTER_UPDATE = "CLUSTER_UPDATE"
    START = "START"
    SYNC = "SYNC"
    STOP = "STOP"
    MONITOR = "MONITOR"
    CHAT = "CHAT"
    MEDIA = "MEDIA"  #: a content packet, received or sent
    FAIL = "FAIL"  #: internal: error budget exhausted or the application failed the session


S = SessionState
I = SessionInput  # noqa: E741 - table shorthand

#: Inputs that leave every open, non-error state where it is.
_HOUSEKEEPING: Final = {
    I.UPDATE: None,
    I.CLUSTER_ADD: None,
    I.CLUSTER_DEL: None,
    I.CLUSTER_UPDATE: None,
    I.CHAT: None,
    I.CLOSE: S.CLOSED,
    I.FAIL: S.ERROR,
}
#: Content management while content is selected (the stream stage is kept).
_CONTENT_EDIT: Final = {I.CONTENT_ADD: None, I.CONTENT_REMOVE: None, I.CONTENT_UPDATE: None}

#: TRANSITIONS[state][input] = next state, or None for "stay in this state".
TRANSITIONS: Final[dict[SessionState, dict[SessionInput, SessionState | None]]] = {
    S.CREATED: {I.OPEN: S.AUTHENTICATED},
    S.AUTHENTICATED: {
        **_HOUSEKEEPING,
        I.CONTENT_ADD: S.CONTENT_SELECTED,
        I.MONITOR: S.MONITORING,
    },
    S.CONTENT_SELECTED: {**_HOUSEKEEPING, **_CONTENT_EDIT, I.START: S.STREAM_OPEN},
    S.STREAM_OPEN: {
        **_HOUSEKEEPING,
        **_CONTENT_EDIT,
        I.SYNC: S.SYNCED,
        I.STOP: S.CONTENT_SELECTED,
    },
    S.SYNCED: {
        **_HOUSEKEEPING,
        **_CONTENT_EDIT,
        I.SYNC: None,
        I.MEDIA: S.STREAMING,
        I.STOP: S.CONTENT_SELECTED,
    },
    S.STREAMING: {
        **_HOUSEKEEPING,
        **_CONTENT_EDIT,
        I.SYNC: None,
        I.MEDIA: None,
        I.STOP: S.CONTENT_SELECTED,
    },
    S.MONITORING: {**_HOUSEKEEPING, I.MONITOR: None, I.STOP: S.AUTHENTICATED},
    S.ERROR: {I.CLOSE: S.CLOSED},
    S.CLOSED: {I.OPEN: S.AUTHENTICATED},
}

#: State-triggered rule (applied after CONTENT_REMOVE): states that need an attached content fall
#: back to AUTHENTICATED when the last one is removed.
WITHOUT_CONTENT: Final[dict[SessionState, SessionState]] = {
    S.CONTENT_SELECTED: S.AUTHENTICATED,
    S.STREAM_OPEN: S.AUTHENTICATED,
    S.SYNCED: S.AUTHENTICATED,
    S.STREAMING: S.AUTHENTICATED,
}

#: States without a session bound to the connection.
NOT_OPEN: Final = frozenset({S.CREATED, S.CLOSED})


def refusal(state: SessionState, event: SessionInput) -> AvrsError:
    """The code for a pair :data:`TRANSITIONS` does not list."""
    if state in NOT_OPEN:
        return AvrsError.SESSION_NOT_OPENED
    if event is I.OPEN:
        return AvrsError.SESSION_ALREADY_OPENED
    return AvrsError.SESSION_WRONG_REQUEST


def decide(state: SessionState, event: SessionInput) -> SessionState | AvrsError:
    """Pure: the next state, or the error code that refuses the input. Never raises."""
    row = TRANSITIONS[state]
    if event not in row:
        return refusal(state, event)
    target = row[event]
    return state if target is None else target


def state_after_content_change(state: SessionState, has_content: bool) -> SessionState:
    """Apply :data:`WITHOUT_CONTENT` once contents were removed."""
    if has_content:
        return state
    return WITHOUT_CONTENT.get(state, state)


def resumed_state(has_content: bool) -> SessionState:
    """Where a re-OPENed (resumed) session starts: its contents are kept, the stream is not,
    because the new connection needs START and SYNC again to get a fresh keyframe and clock."""
    return S.CONTENT_SELECTED if has_content else S.AUTHENTICATED
