"""Sessions and their registry: what outlives one connection so a client can resume.

A session's id is its owner's identity hash (a signed OPEN proves it), so there is at most one
session per identity per node. When a connection is lost the session is *detached* and kept for
``resume_timeout`` seconds; an OPEN by the same identity re-attaches it with its content handles.
An OPEN while the session is attached to another (probably half-dead) connection takes it over; the
old connection finds out on its next input (:meth:`AvrsSession.attached_to` is no longer it).

Content handles are small per-session integers starting at 1, never reused within a session, so a
late packet for a removed content cannot reach a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .constants import ContentFlag
from .directory import ContentInfo
from .errors import AvrsError, AvrsProtocolError
from .signing import SignatureAlgorithm

#: Seed config ``reconnect_timeout = 60``.
DEFAULT_RESUME_TIMEOUT: Final = 60.0
#: The original's initial content array capacity.
DEFAULT_MAX_CONTENTS: Final = 255


@dataclass(slots=True)
class SessionContent:
    """``avrs_session_content_t``: one content attached to a session."""

    handle: int
    """The u32 the peer puts in content packets."""
    cluster_id: bytes
    content: ContentInfo
    flags: ContentFlag

    @property
    def accepts_input(self) -> bool:
        return bool(self.flags & ContentFlag.STREAMING_IN)

    @property
    def streams_output(self) -> bool:
        return bool(self.flags & ContentFlag.STREAMING_OUT)


@dataclass(slots=True, eq=False)
class AvrsSession:
    session_id: bytes
    """= the identity hash of the key that signed OPEN."""
    algorithm: SignatureAlgorithm
    """The algorithm OPEN was signed with (checked against clusters' requirements)."""
    max_contents: int = DEFAULT_MAX_CONTENTS
    contents: dict[int, SessionContent] = field(default_factory=dict)
    clusters: set[bytes] = field(default_factory=set)
    display_name: str = ""
    next_handle: int = 1
    attached_to: object | None = None
    """The connection object the session is bound to, None while detached."""
    detached_at: float | None = None

    def attach_content(
        self, cluster_id: bytes, content: ContentInfo, flags: ContentFlag
    ) -> SessionContent:
        if len(self.contents) >= self.max_contents:
            raise AvrsProtocolError(
                AvrsError.SESSION_WRONG_REQUEST, f"session holds {self.max_contents} contents"
            )
        if self.next_handle > 0xFFFFFFFF:
            raise AvrsProtocolError(AvrsError.SESSION_WRONG_REQUEST, "content handles exhausted")
        slot = SessionContent(self.next_handle, cluster_id, content, flags)
        self.contents[slot.handle] = slot
        self.next_handle += 1
        return slot

    def content(self, handle: int) -> SessionContent:
        slot = self.contents.get(handle)
        if slot is None:
            raise AvrsProtocolError(
                AvrsError.SESSION_CONTENT_ID_WRONG, f"no content with handle {handle}"
            )
        return slot

    def detach_content(self, handle: int) -> SessionContent:
        slot = self.content(handle)
        del self.contents[handle]
        return slot


class SessionRegistry:
    """All sessions of a node, keyed by session id. Sans-IO; share one per node."""

    def __init__(
        self,
        *,
        resume_timeout: float = DEFAULT_RESUME_TIMEOUT,
        max_contents: int = DEFAULT_MAX_CONTENTS,
    ) -> None:
        if resume_timeout < 0 or max_contents < 1:
            raise ValueError("resume_timeout must be >= 0 and max_contents >= 1")
        self.resume_timeout = resume_timeout
        self.max_contents = max_contents
        self._sessions: dict[bytes, AvrsSession] = {}
        # Detached sessions only, so expiry costs O(detached), not O(all sessions).
        self._detached: dict[bytes, AvrsSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: bytes) -> AvrsSession | None:
        return self._sessions.get(session_id)

    def open(
        self, session_id: bytes, algorithm: SignatureAlgorithm, owner: object, now: float
    ) -> tuple[AvrsSession, bool]:
        """Create or resume (re-attach) the session; returns (session, resumed)."""
        self.expire(now)
        session = self._sessions.get(session_id)
        if session is not None and session.algorithm is algorithm:
            session.attached_to = owner
            session.detached_at = None
            self._detached.pop(session_id, None)
            return session, True
        session = AvrsSession(session_id, algorithm, self.max_contents, attached_to=owner)
        self._sessions[session_id] = session
        return session, False

    def detach(self, session: AvrsSession, owner: object, now: float) -> None:
        """The owner's connection is gone; keep the session for resume."""
        if session.attached_to is owner and self._sessions.get(session.session_id) is session:
            session.attached_to = None
            session.detached_at = now
            self._detached[session.session_id] = session

    def close(self, session: AvrsSession, owner: object) -> None:
        """Explicit CLOSE: forget the session (no resume)."""
        if session.attached_to is owner and self._sessions.get(session.session_id) is session:
            del self._sessions[session.session_id]
            self._detached.pop(session.session_id, None)
        session.attached_to = None

    def expire(self, now: float) -> None:
        """Forget detached sessions older than ``resume_timeout``."""
        stale = [
            sid
            for sid, s in self._detached.items()
            if s.detached_at is not None and now - s.detached_at > self.resume_timeout
        ]
        for sid in stale:
            del self._detached[sid]
            if self._sessions.get(sid) is not None and self._sessions[sid].attached_to is None:
                del self._sessions[sid]
