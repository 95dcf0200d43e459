"""``AvrsConnection``: the sans-IO AVRS endpoint of one dap_stream connection.

The runtime feeds it the payloads of the AVRS channels (``receive(channel_id, data, now)``), then
sends what :meth:`AvrsConnection.data_to_send` returns on the named channels and dispatches
:meth:`AvrsConnection.next_event`. ``now`` is **wall-clock** seconds since the Unix epoch, because
signed timestamps are compared across machines.

Every request is answered on the Retcode channel ('r'), and bad input never raises out of
:meth:`receive`: it is answered with its code (or, for unreadable retcodes and responses, dropped
and traced). The checks run in this order, each refusing with its code before anything changes:

1. structure (header, TSDs, SIGN last)              ARG_INCORRECT / SIGN_INCORRECT / *_WRONG_REQUEST
2. signature present when the table requires it     SIGN_NOT_PRESENT
3. signature verifies over the bytes before it      SIGN_INCORRECT
4. 'S' after OPEN: the session is the signer         SESSION_NOT_OPENED (no session) / SIGN_ALIEN
5. signer allowed by the permission table and its   ARG_INCORRECT (no cluster id) / CLUSTER_NOT_FOUND /
   token grants (permissions.authorize_operation)   MEMBER_SECURITY_ISSUE / SIGN_ALIEN /
                                                    MEMBER_GRANT_DENIED / MEMBER_REVOKED
6. fresh: timestamp within skew, nonce unseen        SIGN_EXPIRED / SIGN_REPLAYED
7. arguments decoded against the argument table     ARG_INCORRECT / MEMBER_INFO_PROBLEM / CONTENT_INFO_CORRUPTED
8. administrative: a fresh TOTP code of the signer  MEMBER_TOTP_REQUIRED / MEMBER_TOTP_INVALID /
                                                    MEMBER_TOTP_REPLAYED
9. session state table allows it ('S')              SESSION_ALREADY_OPENED / SESSION_WRONG_REQUEST
10. act                                             the operation's own codes
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .args import validate_args
from .callbacks import ContentCallbacks
from .config import AvrsConfig
from .constants import (
    NONCE_SIZE,
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    ReplyArg,
    RequestFlag,
    SessionOp,
    SignalArg,
    SignalOp,
)
from .directory import ClusterInfo, ClusterView
from .errors import AvrsError, AvrsProtocolError, code_token
from .events import (
    AvrsEvent,
    ClusterRequestReceived,
    ContentReceived,
    InteractiveRequestReceived,
    PacketDropped,
    ReplyReceived,
    RequestRefused,
    ResponseReceived,
    SignalReceived,
)
from .packets import (
    REQUEST_HEADER_SIZE,
    ContentPacket,
    Reply,
    Request,
    RequestHeader,
    decode_content,
    decode_reply,
    decode_request,
    encode_content,
    encode_reply,
    encode_request,
)
from .permissions import (
    PERMISSIONS,
    RESPONSE_ONLY,
)
from .replay import ReplayGuard
from .session_core import OP_INPUTS, SessionMachine
from .sessions import AvrsSession, SessionRegistry
from .signing import AvrsSigner, SignatureAlgorithm
from .state import SessionState
from .tsd import Tsd, TsdList
from .verification import (
    ContentCheck,
    SecondFactor,
    authorize_request,
    check_algorithm,
    check_cluster_targets,
    check_fresh,
    check_second_factor,
    replay_pool,
    signature_ok,
    verify_request_signature,
)

#: The code for an unknown request type, per channel.
WRONG_REQUEST: Final = {
    AvrsChannel.CLUSTER: AvrsError.CLUSTER_WRONG_REQUEST,
    AvrsChannel.SESSION: AvrsError.SESSION_WRONG_REQUEST,
    AvrsChannel.SIGNAL: AvrsError.SIGNAL_WRONG_REQUEST,
}
#: Longest detail text put in a refusal.
MAX_DETAIL: Final = 200


@dataclass(frozen=True, slots=True)
class _Pending:
    op: int
    deadline: float
    channel: AvrsChannel = AvrsChannel.CLUSTER


class AvrsConnection:
    """One peer's AVRS state: its session, pending cluster requests, outgoing packets, events.

    Share ``sessions``, ``replay_guard`` and ``content_callbacks`` between the connections of a
    node (resume, cross-connection replay protection and the seed's global callback registry).
    """

    def __init__(
        self,
        directory: ClusterView,
        config: AvrsConfig | None = None,
        *,
        sessions: SessionRegistry | None = None,
        replay_guard: ReplayGuard | None = None,
        content_callbacks: ContentCallbacks | None = None,
        peer: bytes | None = None,
        second_factor: SecondFactor | None = None,
    ) -> None:
        self.config = config if config is not None else AvrsConfig()
        self.peer = peer
        """The connected peer's transport identity (its replay quota in the anonymous pool)."""
        self.second_factor = second_factor
        """Checks the TOTP code of administrative requests (None: they are all refused)."""
        self.unsupported: dict[tuple[int, int], str] = {}
        """(channel, op) -> why: request types this endpoint refuses with NOT_SUPPORTED after
        the checks (e.g. a node given a REDIRECT meant for clients)."""
        cfg = self.config
        self.directory = directory
        self.sessions = (
            sessions
            if sessions is not None
            else SessionRegistry(
                resume_timeout=cfg.resume_timeout, max_contents=cfg.max_contents_per_session
            )
        )
        self.replay_guard = replay_guard if replay_guard is not None else cfg.replay_guard()
        self.content_callbacks = (
            content_callbacks if content_callbacks is not None else ContentCallbacks()
        )
        self._machine = SessionMachine(
            self, self.sessions, directory, max_chat_text=cfg.max_chat_text
        )
        self._outgoing: list[tuple[int, bytes]] = []
        self._events: deque[AvrsEvent] = deque()
        self._pending: dict[int, _Pending] = {}
        self._next_request_id = 1
        self._consecutive_errors = 0
        self.peer_software: str | None = None
        """SOFTWARE the peer announced in Signal HELLO."""

    # ------------------------------------------------------------------ public state

    @property
    def state(self) -> SessionState:
        return self._machine.state

    @property
    def session(self) -> AvrsSession | None:
        return self._machine.session

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> list[tuple[int, bytes]]:
        """Drain the queued (channel_id, payload) pairs, in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> AvrsEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline of a cluster request the application has not answered."""
        if not self._pending:
            return None
        return min(p.deadline for p in self._pending.values())

    def handle_timer(self, now: float) -> None:
        """Answer REQUEST_TIMEOUT for every overdue request. Safe to call early or twice.
        Transmit afterwards."""
        for request_id, pending in list(self._pending.items()):
            if pending.deadline <= now:
                del self._pending[request_id]
                self._refuse(
                    AvrsChannel.CLUSTER,
                    pending.op,
                    request_id,
                    AvrsError.REQUEST_TIMEOUT,
                    "the application did not answer in time",
                )

    # ------------------------------------------------------------------ input

    def handle(self, channel_id: int, data: bytes, now: float) -> list[tuple[int, bytes]]:
        """:meth:`receive` then :meth:`data_to_send`."""
        self.receive(channel_id, data, now)
        return self.data_to_send()

    def receive(self, channel_id: int, data: bytes | bytearray | memoryview, now: float) -> None:
        """Process one channel payload. Never raises for any input. Transmit afterwards."""
        try:
            channel = AvrsChannel(channel_id)
        except ValueError:
            self._events.append(PacketDropped(channel=channel_id, reason="not an AVRS channel"))
            return
        payload = bytes(data)
        try:
            if channel is AvrsChannel.RETCODE:
                self._receive_reply(payload)
            elif channel is AvrsChannel.CONTENT:
                self._receive_content(payload, now)
            else:
                self._receive_request(channel, payload, now)
        except Exception as exc:  # last-resort boundary (h2 #140/#1231): never leak to the runtime
            self._events.append(
                PacketDropped(channel=channel_id, reason=f"internal error {type(exc).__name__}")
            )

    def connection_lost(self, now: float) -> None:
        """The dap_stream channel is gone: detach the session (resumable) and forget pending
        requests."""
        self._pending.clear()
        self._events.extend(self._machine.lost(now))

    # ------------------------------------------------------------------ application commands

    def reply(
        self,
        request_id: int,
        code: int = AvrsError.SUCCESS,
        args: Sequence[Tsd] = (),
        *,
        detail: str | None = None,
    ) -> bool:
        """Answer a :class:`ClusterRequestReceived`. False if it was already answered (e.g. timed
        out). Transmit afterwards."""
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return False
        items = list(args)
        if detail:
            items.append(Tsd(ReplyArg.DETAIL, detail.encode()[:MAX_DETAIL]))
        self._send_reply(
            Reply(code, request_id, pending.channel, pending.op, code_token(code), tuple(items))
        )
        return True

    def respond(
        self, channel: AvrsChannel, op: int, request_id: int, args: Sequence[Tsd] = ()
    ) -> None:
        """Send a typed response (RESPONSE flag), e.g. LIST_RESP. Transmit afterwards."""
        header = RequestHeader(op, channel, request_id, RequestFlag.RESPONSE)
        self._outgoing.append((int(channel), encode_request(header, args)))

    def send_request(
        self,
        channel: AvrsChannel,
        op: int,
        args: Sequence[Tsd] = (),
        *,
        signer: AvrsSigner | None = None,
        now: float,
    ) -> int:
        """Queue a request (signed when ``signer`` is given); returns its request id."""
        request_id = self._next_request_id
        self._next_request_id = request_id % 0xFFFFFFFF + 1
        header = RequestHeader(op, channel, request_id)
        if signer is None:
            data = encode_request(header, args)
        else:
            data = encode_request(
                header,
                args,
                signer=signer,
                timestamp_ms=int(now * 1000),
                nonce=self.config.rng(NONCE_SIZE),
            )
        self._outgoing.append((int(channel), data))
        return request_id

    def send_content(self, packet: ContentPacket) -> None:
        """Queue a media packet to the peer. Raises AvrsProtocolError (the code the peer would get)
        when the session cannot stream it. Transmit afterwards."""
        self._events.extend(self._machine.refresh())
        self._machine.media_out(packet)
        self._outgoing.append((AvrsChannel.CONTENT, encode_content(packet)))
        self._events.extend(self._machine.media_flowed())

    def end_session(self, code: AvrsError, reason: str) -> bool:
        """The membership behind the session ended (removed, revoked, expired): tell the peer with
        an unsolicited retcode (request id 0, channel 'S', op CLOSE, ``code``) and close the
        session with its contents. False when there was no session. Transmit afterwards."""
        self._events.extend(self._machine.refresh())
        if self._machine.session is None:
            return False
        detail = (Tsd(ReplyArg.DETAIL, reason.encode()[:MAX_DETAIL]),)
        self._send_reply(
            Reply(code, 0, AvrsChannel.SESSION, SessionOp.CLOSE, code_token(code), detail)
        )
        self._events.extend(self._machine.revoke())
        return True

    def detach_content(self, handle: int, code: AvrsError, reason: str) -> bool:
        """Take one attached content away from the session (its grant ended, a ban): an
        unsolicited retcode (request id 0, channel 'S', op CONTENT_REMOVE, ``code``, the handle
        as CONTENT_ID) tells the peer. Transmit afterwards."""
        self._events.extend(self._machine.refresh())
        session = self._machine.session
        if session is None or handle not in session.contents:
            return False
        args = (
            Tsd(ReplyArg.CONTENT_ID, handle.to_bytes(4, "little")),
            Tsd(ReplyArg.DETAIL, reason.encode()[:MAX_DETAIL]),
        )
        self._send_reply(
            Reply(code, 0, AvrsChannel.SESSION, SessionOp.CONTENT_REMOVE, code_token(code), args)
        )
        self._events.extend(self._machine.detach(handle))
        return True

    def fail_session(self) -> None:
        """The application gave up on the session (media pipeline failure): enter ERROR."""
        self._events.extend(self._machine.fail())

    # ------------------------------------------------------------------ replies

    def _send_reply(self, reply: Reply) -> None:
        self._outgoing.append((AvrsChannel.RETCODE, encode_reply(reply)))

    def _answer(self, channel: int, op: int, request_id: int, args: Sequence[Tsd] = ()) -> None:
        self._consecutive_errors = 0
        self._send_reply(
            Reply(AvrsError.SUCCESS, request_id, channel, op, AvrsError.SUCCESS.token, tuple(args))
        )

    def _refuse(self, channel: int, op: int, request_id: int, code: int, reason: str) -> None:
        detail = (Tsd(ReplyArg.DETAIL, reason.encode()[:MAX_DETAIL]),)
        self._send_reply(Reply(code, request_id, channel, op, code_token(code), detail))
        self._events.append(
            RequestRefused(channel=channel, op=op, request_id=request_id, code=code, reason=reason)
        )
        if channel in (AvrsChannel.SESSION, AvrsChannel.CONTENT):
            self._consecutive_errors += 1
            if self._consecutive_errors >= self.config.max_consecutive_errors:
                self._events.extend(self._machine.fail())

    # ------------------------------------------------------------------ retcodes

    def _receive_reply(self, data: bytes) -> None:
        try:
            reply = decode_reply(
                data, max_items=self.config.max_tsd_items, max_total=self.config.max_args_size
            )
        except AvrsProtocolError as exc:  # never answer a retcode: that could loop
            self._events.append(PacketDropped(channel=AvrsChannel.RETCODE, reason=exc.reason))
            return
        self._events.append(ReplyReceived(reply=reply))

    # ------------------------------------------------------------------ content

    def _receive_content(self, data: bytes, now: float) -> None:
        del now  # media needs no clock; kept for a uniform signature
        flow = data[0] if data else 0
        seq = int.from_bytes(data[8:12], "little") if len(data) >= 12 else 0
        try:
            packet = decode_content(data, max_payload=self.config.max_content_payload)
            self._events.extend(self._machine.refresh())
            slot = self._machine.media_in(packet)
        except AvrsProtocolError as exc:
            self._refuse(AvrsChannel.CONTENT, flow, seq, exc.code, exc.reason)
            return
        session = self._machine.session
        if session is None:  # media_in() refused this already; keeps the type checker honest
            return
        code, reason = self.content_callbacks.run(self, slot, packet)
        if code != AvrsError.SUCCESS:
            self._refuse(AvrsChannel.CONTENT, flow, seq, code, reason)
            return
        self._consecutive_errors = 0
        self._events.extend(self._machine.media_flowed())
        self._events.append(
            ContentReceived(
                session_id=session.session_id,
                content_id=slot.content.content_id,
                packet=packet,
            )
        )

    # ------------------------------------------------------------------ requests

    def _receive_request(self, channel: AvrsChannel, data: bytes, now: float) -> None:
        op = data[0] if data else 0
        request_id = int.from_bytes(data[4:8], "little") if len(data) >= REQUEST_HEADER_SIZE else 0
        looks_like_response = len(data) >= 4 and bool(data[3] & RequestFlag.RESPONSE)
        try:
            request = decode_request(
                channel,
                data,
                max_items=self.config.max_tsd_items,
                max_total=self.config.max_args_size,
            )
        except AvrsProtocolError as exc:
            if looks_like_response:  # never answer a response
                self._events.append(PacketDropped(channel=channel, reason=exc.reason))
            else:
                self._refuse(channel, op, request_id, exc.code, exc.reason)
            return
        if request.is_response:
            if request.sign is not None and not signature_ok(request):
                self._events.append(PacketDropped(channel=channel, reason="forged response"))
                return
            self._events.append(
                ResponseReceived(channel=channel, op=op, request_id=request_id, args=request.args)
            )
            return
        try:
            self._process(request, now)
        except AvrsProtocolError as exc:
            self._refuse(channel, op, request_id, exc.code, exc.reason)
        except Exception as exc:  # a bug must still answer, with the generic code
            self._refuse(channel, op, request_id, AvrsError.ERROR, f"internal {type(exc).__name__}")

    def _process(self, request: Request, now: float) -> None:
        channel, op = request.header.channel, request.header.op
        permission = PERMISSIONS.get((channel, op))
        if permission is None or (channel, op) in RESPONSE_ONLY:
            raise AvrsProtocolError(WRONG_REQUEST[channel], f"unknown request type 0x{op:02x}")
        signer, algorithm = verify_request_signature(request, permission)
        if channel is AvrsChannel.SESSION and op != SessionOp.OPEN:
            signer, algorithm = self._session_signer(op, signer, algorithm)
        cluster, decision = authorize_request(
            self.directory, channel, op, permission, request.args, signer, algorithm, now
        )
        if request.sign is not None and signer is not None:
            pool = replay_pool(permission, signer, cluster)
            check_fresh(self.replay_guard, request.args, signer, now, pool=pool, peer=self.peer)
        validate_args(channel, op, request.args)
        if decision is not None and decision.second_factor and signer is not None:
            if cluster is not None and channel is AvrsChannel.CLUSTER:
                check_cluster_targets(op, request.args, cluster)
            check_second_factor(self.second_factor, request.args, signer, now)
        request_id = request.header.request_id
        reason = self.unsupported.get((channel, op))
        if reason is not None:
            raise AvrsProtocolError(AvrsError.NOT_SUPPORTED, reason)
        if channel is AvrsChannel.CLUSTER:
            self._cluster_request(op, request_id, request.args, signer, algorithm, cluster, now)
        elif channel is AvrsChannel.SESSION:
            outcome = self._machine.handle(
                op,
                request.args,
                signer=signer,
                algorithm=algorithm,
                publish_check=ContentCheck(signer, algorithm, now),
                now=now,
            )
            if outcome.deferred:
                self._defer(op, request_id, now)
                self._events.extend(outcome.events)
                session = self._machine.session
                assert session is not None
                self._events.append(
                    InteractiveRequestReceived(
                        request_id=request_id,
                        op=op,
                        session_id=session.session_id,
                        args=request.args,
                    )
                )
            else:
                self._answer(channel, op, request_id, outcome.reply_args)
                self._events.extend(outcome.events)
        else:
            self._signal_request(op, request_id, request.args, now)

    def _session_signer(
        self, op: int, signer: bytes | None, algorithm: SignatureAlgorithm | None
    ) -> tuple[bytes, SignatureAlgorithm]:
        """Step 4: requests after OPEN act as the session's identity. Without a session the
        signer is unknown (SESSION_NOT_OPENED); a signature by anyone else is SIGN_ALIEN."""
        self._events.extend(self._machine.refresh())
        session = self._machine.session
        if session is None:
            self._machine.check(OP_INPUTS[op])  # raises SESSION_NOT_OPENED in CREATED / CLOSED
            raise AvrsProtocolError(AvrsError.SESSION_NOT_OPENED, "no session")
        if signer is not None and signer != session.session_id:
            raise AvrsProtocolError(
                AvrsError.SIGN_ALIEN, "signed by another identity than the session's"
            )
        del algorithm  # verified, and necessarily the session's (same key)
        return session.session_id, session.algorithm

    # ------------------------------------------------------------------ cluster & signal

    def _cluster_request(
        self,
        op: int,
        request_id: int,
        args: TsdList,
        signer: bytes | None,
        algorithm: SignatureAlgorithm | None,
        cluster: ClusterInfo | None,
        now: float,
    ) -> None:
        """Checks that need the directory, then hand the request to the application."""
        cluster_id = args.get(ClusterArg.ID)
        if op == ClusterOp.MEMBER_REQUEST_ADD:
            cluster = self.directory.cluster(args.require(ClusterArg.ID))
            if cluster is None:
                raise AvrsProtocolError(AvrsError.CLUSTER_NOT_FOUND, "no such cluster")
            check_algorithm(cluster, algorithm)
        if cluster is not None:
            check_cluster_targets(op, args, cluster)
        if request_id in self._pending:
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "request id already pending")
        if len(self._pending) >= self.config.max_pending_requests:
            raise AvrsProtocolError(AvrsError.BUSY, "too many requests await an answer")
        self._pending[request_id] = _Pending(op, now + self.config.reply_timeout)
        self._events.append(
            ClusterRequestReceived(
                request_id=request_id, op=op, signer=signer, cluster_id=cluster_id, args=args
            )
        )

    def _defer(self, op: int, request_id: int, now: float) -> None:
        if request_id in self._pending:
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "request id already pending")
        if len(self._pending) >= self.config.max_pending_requests:
            raise AvrsProtocolError(AvrsError.BUSY, "too many requests await an answer")
        self._pending[request_id] = _Pending(
            op, now + self.config.reply_timeout, AvrsChannel.SESSION
        )

    def _signal_request(self, op: int, request_id: int, args: TsdList, now: float) -> None:
        reply_args: list[Tsd] = []
        content_ids: tuple[bytes, ...] = ()
        if op == SignalOp.HELLO:
            self.peer_software = args.text(SignalArg.SOFTWARE, 255, required=False)
        elif op == SignalOp.HEARTBEAT:
            reply_args.append(Tsd(ReplyArg.CLOCK, int(now * 1000).to_bytes(8, "little")))
        elif op == SignalOp.QUALITY_REPORT:
            content_ids = self._report_contents(args)
        session = self._machine.session
        self._answer(AvrsChannel.SIGNAL, op, request_id, reply_args)
        self._events.append(
            SignalReceived(
                op=op,
                args=args,
                session_id=None if session is None else session.session_id,
                content_ids=content_ids,
            )
        )

    def _report_contents(self, args: TsdList) -> tuple[bytes, ...]:
        """The contents a QUALITY_REPORT is stored under: the one it names, which the session must
        have attached (else CONTENT_NOT_FOUND), or every attached one."""
        self._events.extend(self._machine.refresh())
        session = self._machine.session
        attached = (
            [] if session is None else [s.content.content_id for s in session.contents.values()]
        )
        named = args.get(SignalArg.CONTENT_UUID)
        if named is not None:
            if named not in attached:
                raise AvrsProtocolError(
                    AvrsError.CONTENT_NOT_FOUND, "the report names a content the session lacks"
                )
            return (named,)
        return tuple(dict.fromkeys(attached))  # none: only the node-wide QoE history keeps it
