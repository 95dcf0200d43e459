"""The session side of one connection: the state machine plus the session ('S') and content ('c')
request handlers.

Handlers run only after the connection verified the signature, authorised the signer and checked
replay. They either return the reply arguments and events, or raise :class:`AvrsProtocolError`
*before* changing anything, so a refused request leaves the session exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .constants import AvrsChannel, ContentFlag, ReplyArg, SessionArg, SessionOp
from .directory import ClusterInfo, ClusterView, ContentInfo
from .errors import AvrsError, AvrsProtocolError
from .events import (
    AvrsEvent,
    ContentAttached,
    ContentDetached,
    SessionOpened,
    SessionStateChanged,
    StreamControl,
)
from .packets import ContentPacket
from .permissions import PUBLISH, SUBSCRIBE
from .sessions import AvrsSession, SessionContent, SessionRegistry
from .signing import SignatureAlgorithm
from .state import (
    NOT_OPEN,
    SessionInput,
    SessionState,
    decide,
    resumed_state,
    state_after_content_change,
)
from .tsd import Tsd, TsdList

#: Flows of a content attached with ContentFlag.WAIT before it was declared (the most tracks a
#: content info may have).
WAIT_FLOWS = "0123456789abcdef"

#: SessionOp -> state machine input.
OP_INPUTS: dict[int, SessionInput] = {
    SessionOp.OPEN: SessionInput.OPEN,
    SessionOp.UPDATE: SessionInput.UPDATE,
    SessionOp.CLOSE: SessionInput.CLOSE,
    SessionOp.CONTENT_ADD: SessionInput.CONTENT_ADD,
    SessionOp.CONTENT_REMOVE: SessionInput.CONTENT_REMOVE,
    SessionOp.CONTENT_UPDATE: SessionInput.CONTENT_UPDATE,
    SessionOp.CLUSTER_ADD: SessionInput.CLUSTER_ADD,
    SessionOp.CLUSTER_DEL: SessionInput.CLUSTER_DEL,
    SessionOp.CLUSTER_UPDATE: SessionInput.CLUSTER_UPDATE,
    SessionOp.START: SessionInput.START,
    SessionOp.SYNC: SessionInput.SYNC,
    SessionOp.STOP: SessionInput.STOP,
    SessionOp.MONITOR: SessionInput.MONITOR,
    SessionOp.CHAT: SessionInput.CHAT,
    SessionOp.POLL_CREATE: SessionInput.CHAT,
    SessionOp.POLL_VOTE: SessionInput.CHAT,
    SessionOp.POLL_CLOSE: SessionInput.CHAT,
    SessionOp.MODERATE: SessionInput.CHAT,
}

#: Interactive requests: answered by the service (deferred), not by the core.
INTERACTIVE_OPS: frozenset[int] = frozenset(
    {
        SessionOp.CHAT,
        SessionOp.POLL_CREATE,
        SessionOp.POLL_VOTE,
        SessionOp.POLL_CLOSE,
        SessionOp.MODERATE,
    }
)


@dataclass(slots=True)
class Outcome:
    """What a handled request produced."""

    reply_args: list[Tsd] = field(default_factory=list)
    events: list[AvrsEvent] = field(default_factory=list)
    deferred: bool = False
    """The service answers (interactive requests): the connection registers it as pending."""


#: Authorisation hook supplied by the connection: may the session publish into (PUBLISH) or
#: receive (SUBSCRIBE) this content? Raises SIGN_ALIEN, MEMBER_GRANT_DENIED, MEMBER_REVOKED or
#: MEMBER_SECURITY_ISSUE when not.
PublishCheck = Callable[[ClusterInfo, ContentInfo, tuple[AvrsChannel, int]], None]

#: Session requests whose feature this node does not implement yet: refused with NOT_SUPPORTED
#: before anything changes (never answered SUCCESS without their effect).
UNSUPPORTED: dict[int, str] = {
    SessionOp.MONITOR: "monitoring sessions are not implemented by this node yet",
    **{op: "no interactive service on this endpoint" for op in INTERACTIVE_OPS},
}


class SessionMachine:
    """State and session of one connection. ``owner`` is the connection (for the registry)."""

    def __init__(
        self,
        owner: object,
        registry: SessionRegistry,
        directory: ClusterView,
        *,
        max_chat_text: int,
    ) -> None:
        self.owner = owner
        self.registry = registry
        self.directory = directory
        self.max_chat_text = max_chat_text
        self.state = SessionState.CREATED
        self.session: AvrsSession | None = None
        self.unsupported = dict(UNSUPPORTED)
        """Refused with NOT_SUPPORTED; a service that implements one removes it."""

    # ------------------------------------------------------------------ guards (no mutation)

    def refresh(self) -> list[AvrsEvent]:
        """Notice a takeover by another connection: our side of the session is then CLOSED."""
        session = self.session
        if session is not None and session.attached_to is not self.owner:
            self.session = None
            return self._move(SessionState.CLOSED, session.session_id)
        return []

    def check(self, event: SessionInput) -> SessionState:
        """The next state for ``event``, or raise its refusal code. Pure."""
        result = decide(self.state, event)
        if isinstance(result, AvrsError):
            raise AvrsProtocolError(result, f"{event.value} not valid in {self.state.value}")
        return result

    def cluster(self, cluster_id: bytes) -> ClusterInfo:
        info = self.directory.cluster(cluster_id)
        if info is None:
            raise AvrsProtocolError(AvrsError.CLUSTER_NOT_FOUND, "no such cluster")
        return info

    # ------------------------------------------------------------------ transitions

    def _move(self, new: SessionState, session_id: bytes | None) -> list[AvrsEvent]:
        old, self.state = self.state, new
        if old is new:
            return []
        return [SessionStateChanged(old=old, new=new, session_id=session_id)]

    def fail(self) -> list[AvrsEvent]:
        """Enter ERROR (error budget exhausted or the application gave up)."""
        if self.state in NOT_OPEN or self.state is SessionState.ERROR:
            return []
        return self._move(SessionState.ERROR, self._sid())

    def detach(self, handle: int) -> list[AvrsEvent]:
        """Remove one attached content (its grant ended, or a ban); the stage falls back as after
        CONTENT_REMOVE."""
        session = self.session
        if session is None or handle not in session.contents:
            return []
        slot = session.detach_content(handle)
        events: list[AvrsEvent] = [
            ContentDetached(
                session_id=session.session_id, handle=handle, content_id=slot.content.content_id
            )
        ]
        events += self._move(
            state_after_content_change(self.state, bool(session.contents)), session.session_id
        )
        return events

    def revoke(self) -> list[AvrsEvent]:
        """The membership behind the session ended: forget the session and its contents (no
        resume) and enter CLOSED."""
        session = self.session
        if session is None:
            return []
        self.registry.close(session, self.owner)
        self.session = None
        return self._move(SessionState.CLOSED, session.session_id)

    def lost(self, now: float) -> list[AvrsEvent]:
        """The connection is gone: detach the session for resume."""
        session = self.session
        if session is None:
            return []
        self.registry.detach(session, self.owner, now)
        self.session = None
        return self._move(SessionState.CLOSED, session.session_id)

    def _sid(self) -> bytes | None:
        return None if self.session is None else self.session.session_id

    def _require_session(self) -> AvrsSession:
        if self.session is None:  # unreachable when check() passed; kept as a coded guard
            raise AvrsProtocolError(AvrsError.SESSION_NOT_OPENED, "no session")
        return self.session

    # ------------------------------------------------------------------ handlers

    def handle(
        self,
        op: int,
        args: TsdList,
        *,
        signer: bytes | None,
        algorithm: SignatureAlgorithm | None,
        publish_check: PublishCheck,
        now: float,
    ) -> Outcome:
        """Apply an authorised session request. Raises before any change if it is refused."""
        target = self.check(OP_INPUTS[op])
        if op in self.unsupported:
            raise AvrsProtocolError(AvrsError.NOT_SUPPORTED, self.unsupported[op])
        if op == SessionOp.OPEN:
            if signer is None or algorithm is None:  # the permission table requires a signature
                raise AvrsProtocolError(AvrsError.SIGN_NOT_PRESENT, "OPEN must be signed")
            return self._open(signer, algorithm, now, publish_check)
        session = self._require_session()
        sid = session.session_id
        outcome = Outcome()
        if op == SessionOp.CLOSE:
            self.registry.close(session, self.owner)
            self.session = None
        elif op == SessionOp.UPDATE:
            name = args.text(SessionArg.DISPLAY_NAME, 63, required=False)
            if name is not None:
                session.display_name = name
        elif op == SessionOp.CONTENT_ADD:
            self._content_add(session, args, publish_check, outcome)
        elif op == SessionOp.CONTENT_REMOVE:
            handle = args.uint(SessionArg.CONTENT_ID, 4)
            assert handle is not None
            slot = session.detach_content(handle)
            outcome.events.append(
                ContentDetached(session_id=sid, handle=handle, content_id=slot.content.content_id)
            )
            target = state_after_content_change(target, bool(session.contents))
        elif op == SessionOp.CONTENT_UPDATE:
            self._content_update(session, args, publish_check)
        elif op in (SessionOp.CLUSTER_ADD, SessionOp.CLUSTER_UPDATE):
            cluster_id = args.require(SessionArg.CLUSTER_ID)
            session.clusters.add(cluster_id)
        elif op == SessionOp.CLUSTER_DEL:
            cluster_id = args.require(SessionArg.CLUSTER_ID)
            if cluster_id not in session.clusters:
                raise AvrsProtocolError(AvrsError.CLUSTER_NOT_FOUND, "session is not in it")
            session.clusters.discard(cluster_id)
        elif op in INTERACTIVE_OPS:
            if op == SessionOp.CHAT:
                text = args.text(SessionArg.TEXT, self.max_chat_text)  # bounds the line
                assert text is not None
            outcome.deferred = True
        elif op == SessionOp.SYNC:
            outcome.reply_args.append(Tsd(ReplyArg.CLOCK, int(now * 1000).to_bytes(8, "little")))
            outcome.events.append(StreamControl(session_id=sid, op=op, args=args))
        else:  # START, STOP, MONITOR
            outcome.events.append(StreamControl(session_id=sid, op=op, args=args))
        outcome.events[:0] = self._move(target, sid)
        return outcome

    def _open(
        self,
        signer: bytes,
        algorithm: SignatureAlgorithm,
        now: float,
        publish_check: PublishCheck,
    ) -> Outcome:
        session, resumed = self.registry.open(signer, algorithm, self.owner, now)
        self.session = session
        if resumed:  # roles may have ended while it was detached: keep only what is still allowed
            for slot in list(session.contents.values()):
                if not self._still_allowed(slot, publish_check):
                    session.detach_content(slot.handle)
        target = resumed_state(bool(session.contents)) if resumed else SessionState.AUTHENTICATED
        outcome = Outcome(
            reply_args=[
                Tsd(ReplyArg.SESSION_ID, session.session_id),
                Tsd(ReplyArg.RESUMED, b"\x01" if resumed else b"\x00"),
            ]
        )
        outcome.events.extend(self._move(target, session.session_id))
        outcome.events.append(SessionOpened(session_id=session.session_id, resumed=resumed))
        return outcome

    def _still_allowed(self, slot: SessionContent, publish_check: PublishCheck) -> bool:
        cluster = self.directory.cluster(slot.cluster_id)
        if cluster is None:
            return False
        content = cluster.contents.get(slot.content.content_id, slot.content)
        try:
            if slot.accepts_input:
                publish_check(cluster, content, PUBLISH)
            if slot.streams_output:
                publish_check(cluster, content, SUBSCRIBE)
        except AvrsProtocolError:
            return False
        return True

    def _lookup_content(
        self, args: TsdList, *, wait: bool = False
    ) -> tuple[ClusterInfo, ContentInfo]:
        cluster = self.cluster(args.require(SessionArg.CLUSTER_ID))
        content_id = args.require(SessionArg.CONTENT_UUID)
        content = cluster.contents.get(content_id)
        if content is None:
            if not wait:
                raise AvrsProtocolError(
                    AvrsError.CONTENT_NOT_FOUND, "no such content in the cluster"
                )
            # a viewer that joins before the publisher: a placeholder with every possible flow
            content = ContentInfo(content_id, bytes(32), WAIT_FLOWS)
        return cluster, content

    def _content_add(
        self, session: AvrsSession, args: TsdList, publish_check: PublishCheck, outcome: Outcome
    ) -> None:
        flags_value = args.uint(SessionArg.CONTENT_FLAGS, 4, required=False)
        flags = ContentFlag(flags_value if flags_value is not None else ContentFlag.STREAMING_OUT)
        wait = bool(flags & ContentFlag.WAIT)
        if wait and flags & ContentFlag.STREAMING_IN:
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "WAIT is for STREAMING_OUT only")
        cluster, content = self._lookup_content(args, wait=wait)
        if flags & ContentFlag.STREAMING_IN:
            publish_check(cluster, content, PUBLISH)
        if flags & ContentFlag.STREAMING_OUT:
            publish_check(cluster, content, SUBSCRIBE)
        if flags & ContentFlag.STREAMING_OUT and not content.available and not wait:
            raise AvrsProtocolError(AvrsError.CONTENT_UNAVAILBLE, "content source is offline")
        slot = session.attach_content(cluster.cluster_id, content, flags)
        outcome.reply_args.append(Tsd(ReplyArg.CONTENT_ID, slot.handle.to_bytes(4, "little")))
        outcome.events.append(
            ContentAttached(
                session_id=session.session_id,
                handle=slot.handle,
                cluster_id=cluster.cluster_id,
                content_id=content.content_id,
                flags=flags,
            )
        )

    def _content_update(
        self, session: AvrsSession, args: TsdList, publish_check: PublishCheck
    ) -> None:
        handle = args.uint(SessionArg.CONTENT_ID, 4)
        flags_value = args.uint(SessionArg.CONTENT_FLAGS, 4)
        assert handle is not None and flags_value is not None
        slot = session.content(handle)
        flags = ContentFlag(flags_value)
        if flags & ContentFlag.STREAMING_IN and not slot.accepts_input:
            publish_check(self.cluster(slot.cluster_id), slot.content, PUBLISH)
        if flags & ContentFlag.STREAMING_OUT and not slot.streams_output:
            publish_check(self.cluster(slot.cluster_id), slot.content, SUBSCRIBE)
        slot.flags = flags

    # ------------------------------------------------------------------ media

    def media_in(self, packet: ContentPacket) -> SessionContent:
        """Check an incoming content packet; raises its refusal code. No mutation."""
        self.check(SessionInput.MEDIA)
        session = self._require_session()
        slot = session.content(packet.handle)
        if not slot.accepts_input:
            raise AvrsProtocolError(
                AvrsError.CONTENT_UNAVAILBLE, f"content {packet.handle} is not open for input"
            )
        cluster = self.directory.cluster(slot.cluster_id)
        current = None if cluster is None else cluster.contents.get(slot.content.content_id)
        if current is None or not current.available:
            raise AvrsProtocolError(AvrsError.CONTENT_UNAVAILBLE, "content no longer available")
        if not slot.content.has_flow(packet.flow_id):
            raise AvrsProtocolError(
                AvrsError.CONTENT_FLOW_WRONG_ID,
                f"flow {packet.flow_id} of {len(slot.content.flows)} ({slot.content.flows!r})",
            )
        return slot

    def media_out(self, packet: ContentPacket) -> SessionContent:
        """Check an outgoing content packet (API misuse raises AvrsProtocolError)."""
        self.check(SessionInput.MEDIA)
        slot = self._require_session().content(packet.handle)
        if not slot.streams_output:
            raise AvrsProtocolError(AvrsError.CONTENT_UNAVAILBLE, "content not subscribed")
        if not slot.content.has_flow(packet.flow_id):
            raise AvrsProtocolError(AvrsError.CONTENT_FLOW_WRONG_ID, f"flow {packet.flow_id}")
        return slot

    def media_flowed(self) -> list[AvrsEvent]:
        """A content packet went through: SYNCED becomes STREAMING."""
        result = decide(self.state, SessionInput.MEDIA)
        if isinstance(result, SessionState):
            return self._move(result, self._sid())
        return []
