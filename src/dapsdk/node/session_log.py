"""The node's session log: one INFO line per authenticate, join, publish/play and refusal, with
the peer's socket address, its node address, this node's address and the session id (connect and
disconnect lines come from the stream runtime, with the same fields).

It is an event listener on :class:`~dapsdk.services.avrs_channels.AvrsService`, installed by the
composition root; the fields are passed as ``extra`` so ``--log-format json`` gets them as keys.
Credentials (tokens, keys, TOTP codes) are never logged.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from dapsdk.avrs.constants import ClusterOp, ContentFlag
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.events import (
    AvrsEvent,
    ClusterRequestReceived,
    ContentAttached,
    ContentDetached,
    RequestRefused,
    SessionOpened,
)
from dapsdk.services.avrs_channels import AvrsBinding, AvrsService

log = logging.getLogger("dapsdk.avrs.session")

_JOIN_OPS: Final = frozenset({ClusterOp.MEMBER_REQUEST_ADD})


def _code_name(code: int) -> str:
    try:
        return AvrsError(code).name
    except ValueError:
        return f"{code:#x}"


def _op_name(op: int) -> str:
    try:
        return ClusterOp(op).name
    except ValueError:
        return f"{op:#x}"


class SessionLog:
    """Turns AVRS events into log lines."""

    def __init__(self, service: AvrsService) -> None:
        self.service = service

    def install(self) -> SessionLog:
        self.service.listeners.append(self)
        return self

    def _fields(self, binding: AvrsBinding, event: str, **more: Any) -> dict[str, Any]:
        session = binding.conn.session
        fields: dict[str, Any] = {"event": event, **binding.stream.log_fields()}
        fields["session"] = session.session_id.hex()[:16] if session is not None else "-"
        fields.update(more)
        return fields

    def __call__(self, binding: AvrsBinding, event: AvrsEvent) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        if isinstance(event, SessionOpened):
            log.info(
                "authenticate: session %s %s by %s",
                event.session_id.hex()[:16],
                "resumed" if event.resumed else "opened",
                binding.stream.peer.address,
                extra=self._fields(binding, "authenticate"),
            )
        elif isinstance(event, ClusterRequestReceived):
            self._cluster(binding, event)
        elif isinstance(event, ContentAttached):
            publishing = bool(event.flags & ContentFlag.STREAMING_IN)
            log.info(
                "%s: content %s attached as handle %d",
                "publish" if publishing else "play",
                event.content_id.hex(),
                event.handle,
                extra=self._fields(
                    binding, "publish" if publishing else "play", content=event.content_id.hex()
                ),
            )
        elif isinstance(event, ContentDetached):
            log.info(
                "detach: content %s handle %d",
                event.content_id.hex(),
                event.handle,
                extra=self._fields(binding, "detach", content=event.content_id.hex()),
            )
        elif isinstance(event, RequestRefused):
            log.info(
                "refuse: request %#x on channel %r: %s (%s)",
                event.op,
                chr(event.channel) if 32 < event.channel < 127 else event.channel,
                _code_name(event.code),
                event.reason,
                extra=self._fields(binding, "refuse", code=_code_name(event.code), op=event.op),
            )

    def _cluster(self, binding: AvrsBinding, event: ClusterRequestReceived) -> None:
        reply = self.service.last_cluster_reply
        if reply is None:
            return
        code, detail = reply
        op = _op_name(event.op)
        if code != AvrsError.SUCCESS:
            log.info(
                "refuse: cluster %s: %s%s",
                op,
                _code_name(code),
                f" ({detail})" if detail else "",
                extra=self._fields(binding, "refuse", code=_code_name(code), op=op),
            )
        elif event.op in _JOIN_OPS:
            log.info(
                "join: %s %s answered SUCCESS",
                binding.stream.peer.address,
                op,
                extra=self._fields(binding, "join", op=op),
            )
        else:
            log.info("cluster %s: SUCCESS", op, extra=self._fields(binding, "cluster", op=op))
