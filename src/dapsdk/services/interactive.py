"""Interactive broadcasts (the seed's ``allow_chat``, ``allow_polls``, ``moderation``): chat, polls
and moderation per content, as sans-IO state. The service (:mod:`.avrs_channels`) authorises the
requests with the permission table first, then asks this state and pushes what it returns to every
session that has the content attached.

Everything is bounded (docs/reliability.md): :data:`HISTORY` recent chat lines per content (sent to a
session when it attaches the content), :data:`MAX_POLLS` polls per content (the oldest closed poll
is forgotten first; with that many open ones a new poll is BUSY), :data:`MAX_OPTIONS` options per
poll, :data:`MAX_ROOMS` contents (the least recently active is forgotten), :data:`MAX_LISTED`
muted or banned identities per content (the oldest entry is forgotten first).
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final

from dapsdk.avrs.errors import AvrsError

HISTORY: Final = 50
MAX_POLLS: Final = 16
MAX_OPTIONS: Final = 10
MAX_OPTION_TEXT: Final = 100
MAX_ROOMS: Final = 1024
MAX_LISTED: Final = 4096
MAX_SLOW_MODE: Final = 3600


class Refused(Exception):
    """An interactive request refused with ``code`` (nothing changed)."""

    def __init__(self, code: AvrsError, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ModAction(enum.IntEnum):
    """MODERATE's MOD_ACTION (u8)."""

    DELETE_MESSAGE = 1  #: MESSAGE_ID
    MUTE = 2  #: MEMBER, DURATION (seconds, 0 = until unmuted)
    UNMUTE = 3  #: MEMBER
    BAN = 4  #: MEMBER (detached from the content, cannot attach, chat or vote again)
    UNBAN = 5  #: MEMBER
    SLOW_MODE = 6  #: DURATION (seconds between two lines of one member, 0 = off)


@dataclass(frozen=True, slots=True)
class Features:
    """The seed's ``avrs_interactive_config_t`` for one content."""

    allow_chat: bool = True
    allow_polls: bool = True
    moderation: bool = True

    @classmethod
    def from_bits(cls, bits: int) -> Features:
        return cls(bool(bits & 1), bool(bits & 2), bool(bits & 4))

    @property
    def bits(self) -> int:
        return int(self.allow_chat) | int(self.allow_polls) << 1 | int(self.moderation) << 2


@dataclass(frozen=True, slots=True)
class ChatMessage:
    message_id: int
    sender: bytes
    display_name: str
    text: str
    sent_at: float


@dataclass(slots=True)
class Poll:
    poll_id: int
    question: str
    options: tuple[str, ...]
    creator: bytes
    votes: dict[bytes, int] = field(default_factory=dict)
    """One choice per identity."""
    open: bool = True

    def counts(self) -> list[int]:
        result = [0] * len(self.options)
        for choice in self.votes.values():
            result[choice] += 1
        return result


@dataclass(slots=True)
class Room:
    """The interactive state of one content."""

    history: deque[ChatMessage] = field(default_factory=lambda: deque(maxlen=HISTORY))
    next_message: int = 1
    polls: OrderedDict[int, Poll] = field(default_factory=OrderedDict)
    next_poll: int = 1
    muted: OrderedDict[bytes, float] = field(default_factory=OrderedDict)
    """identity -> muted until (POSIX seconds, inf = until unmuted)."""
    banned: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    slow_mode: float = 0.0
    last_line: OrderedDict[bytes, float] = field(default_factory=OrderedDict)


def _remember(table: OrderedDict[bytes, object], key: bytes, value: object) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > MAX_LISTED:
        table.popitem(last=False)


class InteractiveState:
    """Chat, polls and moderation of every content of a node. Time is passed in."""

    def __init__(self) -> None:
        self._rooms: OrderedDict[bytes, Room] = OrderedDict()

    def room(self, content_id: bytes) -> Room:
        room = self._rooms.get(content_id)
        if room is None:
            room = self._rooms[content_id] = Room()
            while len(self._rooms) > MAX_ROOMS:
                self._rooms.popitem(last=False)
        else:
            self._rooms.move_to_end(content_id)
        return room

    def forget(self, content_id: bytes) -> None:
        self._rooms.pop(content_id, None)

    def is_banned(self, content_id: bytes, identity: bytes) -> bool:
        room = self._rooms.get(content_id)
        return room is not None and identity in room.banned

    def history(self, content_id: bytes) -> list[ChatMessage]:
        room = self._rooms.get(content_id)
        return [] if room is None else list(room.history)

    def polls(self, content_id: bytes) -> list[Poll]:
        room = self._rooms.get(content_id)
        return [] if room is None else list(room.polls.values())

    def _check_member(self, room: Room, identity: bytes, now: float) -> None:
        if identity in room.banned:
            raise Refused(AvrsError.MEMBER_BANNED, "banned from this content")

    # ------------------------------------------------------------------ chat

    def chat(
        self,
        content_id: bytes,
        features: Features,
        sender: bytes,
        display_name: str,
        text: str,
        now: float,
    ) -> ChatMessage:
        if not features.allow_chat:
            raise Refused(AvrsError.INTERACTIVE_DISABLED, "chat is off for this content")
        if not text.strip():
            raise Refused(AvrsError.ARG_INCORRECT, "empty chat line")
        room = self.room(content_id)
        self._check_member(room, sender, now)
        until = room.muted.get(sender)
        if until is not None:
            if now < until:
                raise Refused(AvrsError.CHAT_MUTED, "muted in this content")
            del room.muted[sender]
        last = room.last_line.get(sender)
        if room.slow_mode and last is not None and now - last < room.slow_mode:
            wait = room.slow_mode - (now - last)
            raise Refused(AvrsError.CHAT_SLOW_MODE, f"slow mode: next line in {wait:.1f} s")
        message = ChatMessage(room.next_message, sender, display_name, text, now)
        room.next_message += 1
        room.history.append(message)
        _remember(room.last_line, sender, now)  # type: ignore[arg-type]
        return message

    # ------------------------------------------------------------------ polls

    def create_poll(
        self,
        content_id: bytes,
        features: Features,
        creator: bytes,
        question: str,
        options: list[str],
    ) -> Poll:
        if not features.allow_polls:
            raise Refused(AvrsError.INTERACTIVE_DISABLED, "polls are off for this content")
        if not question.strip() or not 2 <= len(options) <= MAX_OPTIONS:
            raise Refused(
                AvrsError.ARG_INCORRECT, f"a poll needs a question and 2..{MAX_OPTIONS} options"
            )
        if any(not o.strip() for o in options):
            raise Refused(AvrsError.ARG_INCORRECT, "empty poll option")
        room = self.room(content_id)
        if len(room.polls) >= MAX_POLLS:
            closed = next((pid for pid, p in room.polls.items() if not p.open), None)
            if closed is None:
                raise Refused(AvrsError.BUSY, f"{MAX_POLLS} polls are open; close one first")
            del room.polls[closed]
        poll = Poll(room.next_poll, question, tuple(options), creator)
        room.next_poll += 1
        room.polls[poll.poll_id] = poll
        return poll

    def _poll(self, content_id: bytes, poll_id: int) -> Poll:
        room = self._rooms.get(content_id)
        poll = None if room is None else room.polls.get(poll_id)
        if poll is None:
            raise Refused(AvrsError.POLL_NOT_FOUND, f"no poll {poll_id} in this content")
        return poll

    def vote(self, content_id: bytes, voter: bytes, poll_id: int, choice: int, now: float) -> Poll:
        poll = self._poll(content_id, poll_id)
        self._check_member(self.room(content_id), voter, now)
        if not poll.open:
            raise Refused(AvrsError.POLL_CLOSED, "the poll is closed")
        if voter in poll.votes:
            raise Refused(AvrsError.POLL_ALREADY_VOTED, "one vote per identity")
        if not 0 <= choice < len(poll.options):
            raise Refused(AvrsError.ARG_INCORRECT, f"choice {choice} of {len(poll.options)}")
        poll.votes[voter] = choice
        return poll

    def close_poll(self, content_id: bytes, poll_id: int) -> Poll:
        poll = self._poll(content_id, poll_id)
        if not poll.open:
            raise Refused(AvrsError.POLL_CLOSED, "the poll is already closed")
        poll.open = False
        return poll

    # ------------------------------------------------------------------ moderation

    def moderate(
        self,
        content_id: bytes,
        features: Features,
        action: ModAction,
        *,
        member: bytes | None,
        message_id: int | None,
        duration: int | None,
        now: float,
    ) -> None:
        if not features.moderation:
            raise Refused(AvrsError.INTERACTIVE_DISABLED, "moderation is off for this content")
        room = self.room(content_id)
        if action is ModAction.DELETE_MESSAGE:
            if message_id is None:
                raise Refused(AvrsError.ARG_INCORRECT, "DELETE_MESSAGE needs MESSAGE_ID")
            kept = [m for m in room.history if m.message_id != message_id]
            if len(kept) == len(room.history):
                raise Refused(AvrsError.MESSAGE_NOT_FOUND, f"no message {message_id}")
            room.history = deque(kept, maxlen=HISTORY)
        elif action is ModAction.SLOW_MODE:
            if duration is None or duration > MAX_SLOW_MODE:
                raise Refused(
                    AvrsError.ARG_INCORRECT, f"SLOW_MODE needs DURATION <= {MAX_SLOW_MODE}"
                )
            room.slow_mode = float(duration)
        else:
            if member is None:
                raise Refused(AvrsError.ARG_INCORRECT, f"{action.name} needs MEMBER")
            if action is ModAction.MUTE:
                until = now + duration if duration else float("inf")
                _remember(room.muted, member, until)  # type: ignore[arg-type]
            elif action is ModAction.UNMUTE:
                if room.muted.pop(member, None) is None:
                    raise Refused(AvrsError.MEMBER_NOT_FOUND, "not muted")
            elif action is ModAction.BAN:
                _remember(room.banned, member, None)  # type: ignore[arg-type]
            elif room.banned.pop(member, 0) == 0:  # UNBAN
                raise Refused(AvrsError.MEMBER_NOT_FOUND, "not banned")
