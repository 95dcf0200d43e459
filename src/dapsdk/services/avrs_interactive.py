"""Interactive broadcasts over the session channel: the glue between the AVRS service and
:class:`~.interactive.InteractiveState`.

A chat, poll or moderation request reaches here only after the core verified its signature (they
are always signed), authorised it with the permission table and the member's token grants, and
checked the TOTP code of a moderation sent by role. This module then checks what only the content's
interactive state knows (muted, banned, slow mode, poll state, one vote per identity), answers the
request with its code, and pushes what happened to every session that has the content attached,
as typed responses on channel 'S' with request id 0 (CHAT_MESSAGE, POLL_STATE, MODERATION). A
session that attaches the content gets the recent history and the polls first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dapsdk.avrs.constants import AvrsChannel, SessionArg, SessionOp
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.events import ContentAttached, InteractiveRequestReceived
from dapsdk.avrs.tsd import Tsd

from .interactive import (
    ChatMessage,
    Features,
    InteractiveState,
    ModAction,
    Poll,
    Refused,
)

if TYPE_CHECKING:
    from .avrs_channels import AvrsBinding, AvrsService

log = logging.getLogger("dapsdk.avrs.interactive")


def _u(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def message_args(content_id: bytes, message: ChatMessage, *, history: bool) -> list[Tsd]:
    args = [
        Tsd(SessionArg.CONTENT_UUID, content_id),
        Tsd(SessionArg.MESSAGE_ID, _u(message.message_id, 8)),
        Tsd(SessionArg.MEMBER, message.sender),
        Tsd(SessionArg.TEXT, message.text.encode()),
        Tsd(SessionArg.TIME, _u(int(message.sent_at * 1000), 8)),
    ]
    if message.display_name:
        args.append(Tsd(SessionArg.DISPLAY_NAME, message.display_name.encode()))
    if history:
        args.append(Tsd(SessionArg.HISTORY, b"\x01"))
    return args


def poll_args(content_id: bytes, poll: Poll) -> list[Tsd]:
    args = [
        Tsd(SessionArg.CONTENT_UUID, content_id),
        Tsd(SessionArg.POLL_ID, _u(poll.poll_id, 4)),
        Tsd(SessionArg.TEXT, poll.question.encode()),
        Tsd(SessionArg.POLL_OPEN, b"\x01" if poll.open else b"\x00"),
        Tsd(SessionArg.POLL_COUNTS, b"".join(_u(c, 4) for c in poll.counts())),
    ]
    args += [Tsd(SessionArg.POLL_OPTION, option.encode()) for option in poll.options]
    return args


class InteractiveService:
    """Chat, polls and moderation of the node's contents (see the module docstring)."""

    def __init__(self, service: AvrsService) -> None:
        self.service = service
        self.state = InteractiveState()
        self.dropped = 0
        """Pushes not sent because the member's session channel was congested."""

    # ------------------------------------------------------------------ events

    def on_event(self, binding: AvrsBinding, event: object) -> None:
        if isinstance(event, InteractiveRequestReceived):
            self._request(binding, event)
        elif isinstance(event, ContentAttached):
            self._welcome(binding, event)

    def _welcome(self, binding: AvrsBinding, event: ContentAttached) -> None:
        """History and polls to a session that just attached an interactive content."""
        content = self.service.directory.info.contents.get(event.content_id)
        if content is None:
            return
        features = Features.from_bits(content.interactive)
        if features.allow_chat:
            for message in self.state.history(event.content_id):
                args = message_args(event.content_id, message, history=True)
                binding.conn.respond(AvrsChannel.SESSION, SessionOp.CHAT_MESSAGE, 0, args)
        if features.allow_polls:
            for poll in self.state.polls(event.content_id):
                args = poll_args(event.content_id, poll)
                binding.conn.respond(AvrsChannel.SESSION, SessionOp.POLL_STATE, 0, args)
        binding.transmit()

    # ------------------------------------------------------------------ requests

    def _request(self, binding: AvrsBinding, event: InteractiveRequestReceived) -> None:
        try:
            code, args = self._apply(binding, event, time.time())
        except Refused as exc:
            binding.conn.reply(event.request_id, exc.code, detail=exc.reason)
            log.info("interactive request 0x%02x refused: %s", event.op, exc.reason)
        else:
            binding.conn.reply(event.request_id, code, args)
        binding.transmit()

    def _apply(
        self, binding: AvrsBinding, event: InteractiveRequestReceived, now: float
    ) -> tuple[int, list[Tsd]]:
        args = event.args
        content_id = args.require(SessionArg.CONTENT_UUID)
        content = self.service.directory.info.contents.get(content_id)
        if content is None:
            raise Refused(AvrsError.CONTENT_NOT_FOUND, "no such content")
        features = Features.from_bits(content.interactive)
        sender = event.session_id
        op = event.op
        if op in (SessionOp.CHAT, SessionOp.POLL_VOTE):
            self._require_attached(binding, content_id)
        if op == SessionOp.CHAT:
            session = binding.conn.session
            name = "" if session is None else session.display_name
            text = args.text(SessionArg.TEXT, self.service.config.max_chat_text) or ""
            message = self.state.chat(content_id, features, sender, name, text, now)
            self._push(
                content_id,
                SessionOp.CHAT_MESSAGE,
                message_args(content_id, message, history=False),
            )
            return AvrsError.SUCCESS, [Tsd(SessionArg.MESSAGE_ID, _u(message.message_id, 8))]
        if op == SessionOp.POLL_CREATE:
            question = args.text(SessionArg.TEXT, 1000) or ""
            options = [d.rstrip(b"\0").decode() for d in args.all(SessionArg.POLL_OPTION)]
            poll = self.state.create_poll(content_id, features, sender, question, options)
            self._push(content_id, SessionOp.POLL_STATE, poll_args(content_id, poll))
            return AvrsError.SUCCESS, [Tsd(SessionArg.POLL_ID, _u(poll.poll_id, 4))]
        poll_id = args.uint(SessionArg.POLL_ID, 4, required=False)
        if op == SessionOp.POLL_VOTE:
            choice = args.uint(SessionArg.POLL_CHOICE, 1)
            assert poll_id is not None and choice is not None
            poll = self.state.vote(content_id, sender, poll_id, choice, now)
            self._push(content_id, SessionOp.POLL_STATE, poll_args(content_id, poll))
            return AvrsError.SUCCESS, []
        if op == SessionOp.POLL_CLOSE:
            assert poll_id is not None
            poll = self.state.close_poll(content_id, poll_id)
            self._push(content_id, SessionOp.POLL_STATE, poll_args(content_id, poll))
            return AvrsError.SUCCESS, []
        return self._moderate(content_id, content.owner, features, sender, event, now)

    def _moderate(
        self,
        content_id: bytes,
        owner: bytes,
        features: Features,
        moderator: bytes,
        event: InteractiveRequestReceived,
        now: float,
    ) -> tuple[int, list[Tsd]]:
        args = event.args
        raw = args.uint(SessionArg.MOD_ACTION, 1)
        try:
            action = ModAction(raw or 0)
        except ValueError:
            raise Refused(AvrsError.ARG_INCORRECT, f"unknown moderation action {raw}") from None
        member = args.fixed(SessionArg.MEMBER, 32, required=False)
        message_id = args.uint(SessionArg.MESSAGE_ID, 8, required=False)
        duration = args.uint(SessionArg.DURATION, 4, required=False)
        if member is not None and member in (owner, moderator, self.service.directory.info.owner):
            raise Refused(AvrsError.MEMBER_ROLE_EXCEEDED, "cannot moderate the owner or oneself")
        self.state.moderate(
            content_id,
            features,
            action,
            member=member,
            message_id=message_id,
            duration=duration,
            now=now,
        )
        directory = self.service.directory
        if action in (ModAction.BAN, ModAction.UNBAN) and member is not None:
            directory.set_banned(content_id, member, action is ModAction.BAN)
            if action is ModAction.BAN:
                directory.ended.add(member)
                self.service.enforce()  # detaches the content from the banned member's session
        push = [
            Tsd(SessionArg.CONTENT_UUID, content_id),
            Tsd(SessionArg.MOD_ACTION, bytes([action])),
        ]
        if member is not None:
            push.append(Tsd(SessionArg.MEMBER, member))
        if message_id is not None:
            push.append(Tsd(SessionArg.MESSAGE_ID, _u(message_id, 8)))
        if duration is not None:
            push.append(Tsd(SessionArg.DURATION, _u(duration, 4)))
        self._push(content_id, SessionOp.MODERATION, push, also=member)
        return AvrsError.SUCCESS, []

    # ------------------------------------------------------------------ helpers

    def _require_attached(self, binding: AvrsBinding, content_id: bytes) -> None:
        session = binding.conn.session
        if session is None or not any(
            s.content.content_id == content_id for s in session.contents.values()
        ):
            raise Refused(
                AvrsError.SESSION_CONTENT_ID_WRONG, "attach the content first (session CONTENT_ADD)"
            )

    def _members(self, content_id: bytes, also: bytes | None = None) -> Iterable[AvrsBinding]:
        for binding in list(self.service.bindings.values()):
            session = binding.conn.session
            if binding.lost or session is None:
                continue
            if session.session_id == also or any(
                s.content.content_id == content_id for s in session.contents.values()
            ):
                yield binding

    def _push(
        self, content_id: bytes, op: SessionOp, args: list[Tsd], *, also: bytes | None = None
    ) -> None:
        """Send a push to every session that has ``content_id`` attached (and ``also``). A member
        whose session channel holds ``send_high_water`` unread bytes misses it (counted in
        :attr:`dropped`): one reader that never reads cannot grow the node's memory."""
        for binding in self._members(content_id, also):
            channel = binding.channels.get(AvrsChannel.SESSION)
            if (
                channel is not None
                and channel.queued_bytes >= binding.stream.config.send_high_water
            ):
                self.dropped += 1
                continue
            binding.conn.respond(AvrsChannel.SESSION, op, 0, args)
            binding.transmit()
