"""AVRS on a real dap_stream stream, client side: open the five channels, send signed requests and
await their retcodes, publish and receive content packets.

The requests are encoded by the sans-IO core (:meth:`AvrsConnection.send_request`), and retcodes
come back through it as :class:`~dapsdk.avrs.events.ReplyReceived`. Content packets the node sends
are read straight from the ``'c'`` channel by :meth:`AvrsClient.receive_content`, so a slow reader
holds back the node through dap_stream's end-to-end flow control instead of growing a queue.

``content_key`` (a :class:`~dapsdk.stream.channel_key.ChannelKey`) seals the *payload* of every
content packet sent and opens every one received: the node routes by the clear 28-byte header but
never sees the media, so it stays sealed end to end through any number of servers and relays.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dapsdk.avrs.config import AvrsConfig
from dapsdk.avrs.connection import AvrsConnection
from dapsdk.avrs.constants import (
    AvrsChannel,
    ClusterArg,
    ClusterOp,
    CommonArg,
    ContentFlag,
    MediaFlag,
    ReplyArg,
    SessionArg,
    SessionOp,
    SignalArg,
    SignalOp,
)
from dapsdk.avrs.directory import MemoryClusterView
from dapsdk.avrs.errors import AvrsError
from dapsdk.avrs.events import ReplyReceived, ResponseReceived, SignalReceived
from dapsdk.avrs.packets import ContentPacket, Reply, decode_content, encode_content
from dapsdk.avrs.signing import AvrsSigner
from dapsdk.avrs.tsd import Tsd
from dapsdk.runtime.channel import Channel
from dapsdk.runtime.stream import Stream
from dapsdk.stream.channel_key import ChannelKey
from dapsdk.stream.constants import PacketType
from dapsdk.stream.errors import DapError

from .avrs_channels import AVRS_CHANNEL_IDS, channel_priority
from .avrs_cluster import CredentialArg

#: Interactive pushes kept unread by a client.
MAX_PUSHES = 256
#: Seconds a request waits for its retcode (the node's own reply timeout is 10 s).
DEFAULT_REQUEST_TIMEOUT = 15.0
#: Redirects kept unread, and typed responses kept (oldest dropped first).
MAX_REDIRECTS = 16
MAX_RESPONSES = 256


class AvrsRequestError(DapError):
    """A request was refused: ``code`` (an AvrsError value), ``token`` and ``detail`` from the
    retcode."""

    def __init__(self, reply: Reply) -> None:
        detail_raw = reply.arg(ReplyArg.DETAIL)
        self.code = reply.code
        self.token = reply.token
        self.detail = detail_raw.decode("utf-8", "replace") if detail_raw else ""
        self.reply = reply
        super().__init__(f"{reply.token}: {self.detail}" if self.detail else reply.token)


@dataclass(frozen=True, slots=True)
class OpenResult:
    session_id: bytes
    """The session id (the signer's identity)."""
    resumed: bool


class AvrsClient:
    """The AVRS side of a client stream. Call :meth:`open` first (it opens the channels and sends
    the signed OPEN)."""

    def __init__(
        self,
        stream: Stream,
        signer: AvrsSigner,
        *,
        config: AvrsConfig | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.stream = stream
        self.signer = signer
        self.request_timeout = request_timeout
        self.conn = AvrsConnection(MemoryClusterView(), config)
        self.channels: dict[int, Channel] = {}
        self.content_key: ChannelKey | None = None
        """Seals content payloads end to end (see the module docstring)."""
        self.content_errors: list[Reply] = []
        """Retcodes the node sent for refused content packets we published."""
        self._content_error_queue: asyncio.Queue[Reply] = asyncio.Queue()
        self.responses: list[ResponseReceived] = []
        self.pushes: asyncio.Queue[ResponseReceived] = asyncio.Queue(maxsize=MAX_PUSHES)
        """Interactive pushes of the node (CHAT_MESSAGE, POLL_STATE, MODERATION on 'S' with
        request id 0); beyond MAX_PUSHES unread the newest are dropped (counted in
        :attr:`pushes_dropped`)."""
        self.pushes_dropped = 0
        self.notices: asyncio.Queue[Reply] = asyncio.Queue(maxsize=64)
        """Unsolicited retcodes (request id 0), e.g. MEMBER_REVOKED when the node ended the
        session; beyond 64 unread the newest are dropped."""
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._seq: dict[tuple[int, int], int] = {}
        self.redirects: asyncio.Queue[tuple[str, str]] = asyncio.Queue(MAX_REDIRECTS)
        """(target URL, reason) of every signal REDIRECT the node sent (balancer, failover,
        drain); the oldest is dropped when nobody reads them."""

    @property
    def identity(self) -> bytes:
        return self.signer.identity

    @property
    def is_active(self) -> bool:
        return self.stream.is_active

    # ------------------------------------------------------------------ plumbing

    def _open_channels(self) -> None:
        for channel_id in AVRS_CHANNEL_IDS:
            if channel_id in self.channels:
                continue
            channel = self.stream.channel_new(channel_id, priority=channel_priority(channel_id))
            if channel_id != AvrsChannel.CONTENT:
                channel.packet_in = self._packet_in
            self.channels[channel_id] = channel

    def _packet_in(self, channel: Channel, _ptype: int, data: bytes, _arg: object) -> int:
        self.conn.receive(channel.id, data, time.time())
        self._pump()
        return len(data)

    def _pump(self) -> None:
        while (event := self.conn.next_event()) is not None:
            if isinstance(event, ReplyReceived):
                reply = event.reply
                if reply.channel == AvrsChannel.CONTENT:
                    self.content_errors.append(reply)
                    self._content_error_queue.put_nowait(reply)
                    continue
                if reply.request_id == 0:
                    if not self.notices.full():
                        self.notices.put_nowait(reply)
                    continue
                waiter = self._waiting.pop(reply.request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(reply)
            elif (
                isinstance(event, ResponseReceived)
                and event.channel == AvrsChannel.SESSION
                and event.request_id == 0
            ):
                if self.pushes.full():
                    self.pushes_dropped += 1
                else:
                    self.pushes.put_nowait(event)
            elif isinstance(event, ResponseReceived):
                if len(self.responses) >= MAX_RESPONSES:
                    del self.responses[0]
                self.responses.append(event)
            elif isinstance(event, SignalReceived) and event.op == SignalOp.REDIRECT:
                target = event.args.text(SignalArg.TARGET, 1024, required=False) or ""
                reason = event.args.text(SignalArg.REASON, 63, required=False) or ""
                if self.redirects.full():
                    self.redirects.get_nowait()
                self.redirects.put_nowait((target, reason))
        self._transmit()

    def _transmit(self) -> None:
        for channel_id, payload in self.conn.data_to_send():
            channel = self.channels.get(channel_id)
            if channel is not None and channel.is_active:
                channel.write_nowait(PacketType.DATA, payload)

    # ------------------------------------------------------------------ requests

    async def request(
        self,
        channel: AvrsChannel,
        op: int,
        args: Sequence[Tsd] = (),
        *,
        signed: bool = False,
        timeout: float | None = None,
        totp: str | None = None,
    ) -> Reply:
        """Send a request and return its retcode (whatever its code). ``totp``: the signer's
        current TOTP code, which administrative requests need (sent as CommonArg.TOTP, signed)."""
        self._open_channels()
        if totp is not None:
            args = [*args, Tsd(CommonArg.TOTP, totp.encode("ascii"))]
        request_id = self.conn.send_request(
            channel, op, args, signer=self.signer if signed else None, now=time.time()
        )
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        self._transmit()
        closed = asyncio.ensure_future(self.stream.wait_closed())
        watched: list[asyncio.Future[Any]] = [waiter, closed]
        try:
            done, _ = await asyncio.wait(
                watched,
                timeout=self.request_timeout if timeout is None else timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            closed.cancel()
            self._waiting.pop(request_id, None)
        if waiter in done:
            return waiter.result()
        waiter.cancel()
        if not self.stream.is_active:
            raise ConnectionError("the stream closed before the answer came")
        raise TimeoutError(f"no answer to request {request_id} (op 0x{op:02x} on {chr(channel)})")

    async def call(
        self,
        channel: AvrsChannel,
        op: int,
        args: Sequence[Tsd] = (),
        *,
        signed: bool = False,
        totp: str | None = None,
    ) -> Reply:
        """:meth:`request` that raises :class:`AvrsRequestError` unless the answer is SUCCESS."""
        reply = await self.request(channel, op, args, signed=signed, totp=totp)
        if reply.code != AvrsError.SUCCESS:
            raise AvrsRequestError(reply)
        return reply

    async def open(self) -> OpenResult:
        """Open the channels and the session (signed OPEN)."""
        reply = await self.call(AvrsChannel.SESSION, SessionOp.OPEN, signed=True)
        session_id = reply.arg(ReplyArg.SESSION_ID) or b""
        return OpenResult(session_id, reply.arg(ReplyArg.RESUMED) == b"\x01")

    async def join(
        self,
        cluster_id: bytes,
        *,
        token: str | None = None,
        certificate: bytes | x509.Certificate | None = None,
    ) -> Reply:
        """Ask to join a cluster (signed MEMBER_REQUEST_ADD) with an access token and/or a
        certificate; returns the retcode (SUCCESS: member; MEMBER_SECURITY_ISSUE: refused)."""
        args = [Tsd(ClusterArg.ID, cluster_id)]
        if token is not None:
            args.append(Tsd(CredentialArg.TOKEN, token.encode("ascii")))
        if certificate is not None:
            der = (
                certificate.public_bytes(Encoding.DER)
                if isinstance(certificate, x509.Certificate)
                else certificate
            )
            args.append(Tsd(CredentialArg.CERTIFICATE, der))
        return await self.request(
            AvrsChannel.CLUSTER, ClusterOp.MEMBER_REQUEST_ADD, args, signed=True
        )

    async def add_content(
        self,
        cluster_id: bytes,
        content_id: bytes,
        flows: str,
        *,
        codecs: Sequence[str] = (),
        title: str = "",
        name: str = "",
    ) -> None:
        """Declare a content in the cluster (signed cluster CONTENT_ADD); we become its owner.
        ``name``: its readable name (``content_guuid(name)`` must be ``content_id``), which token
        content patterns match."""
        args = [
            Tsd(ClusterArg.ID, cluster_id),
            Tsd(ClusterArg.CONTENT_ID, content_id),
            Tsd(ClusterArg.CONTENT_FLOWS, flows.encode("ascii")),
        ]
        args += [
            Tsd(ClusterArg.CONTENT_FLOW_CODEC, bytes([i]) + c.encode("ascii"))
            for i, c in enumerate(codecs)
        ]
        if title:
            args.append(Tsd(ClusterArg.CONTENT_TITLE, title.encode()))
        if name:
            args.append(Tsd(ClusterArg.CONTENT_NAME, name.encode()))
        await self.call(AvrsChannel.CLUSTER, ClusterOp.CONTENT_ADD, args, signed=True)

    async def attach(
        self, cluster_id: bytes, content_id: bytes, flags: ContentFlag = ContentFlag.STREAMING_OUT
    ) -> int:
        """Attach a content to the session (session CONTENT_ADD); returns its handle."""
        reply = await self.call(
            AvrsChannel.SESSION,
            SessionOp.CONTENT_ADD,
            [
                Tsd(SessionArg.CLUSTER_ID, cluster_id),
                Tsd(SessionArg.CONTENT_UUID, content_id),
                Tsd(SessionArg.CONTENT_FLAGS, int(flags).to_bytes(4, "little")),
            ],
        )
        handle = reply.arg(ReplyArg.CONTENT_ID)
        if handle is None or len(handle) != 4:
            raise AvrsRequestError(replace(reply, code=int(AvrsError.ERROR), token="ERROR"))
        return int.from_bytes(handle, "little")

    async def start(self, position_us: int | None = None) -> None:
        """START then SYNC: afterwards the node streams (and accepts) media."""
        args = [] if position_us is None else [Tsd(SessionArg.START_POSITION, _i64(position_us))]
        await self.call(AvrsChannel.SESSION, SessionOp.START, args)
        clock = [Tsd(SessionArg.CLOCK, _i64(int(time.time() * 1_000_000)))]
        await self.call(AvrsChannel.SESSION, SessionOp.SYNC, clock)

    async def stop(self) -> None:
        await self.call(AvrsChannel.SESSION, SessionOp.STOP)

    async def close_session(self) -> None:
        """CLOSE: the node forgets the session (no resume)."""
        await self.call(AvrsChannel.SESSION, SessionOp.CLOSE)

    async def close(self) -> None:
        """CLOSE the session if the stream is up, then close the stream."""
        if self.stream.is_active:
            try:
                await self.request(AvrsChannel.SESSION, SessionOp.CLOSE, timeout=5.0)
            except (TimeoutError, ConnectionError, DapError):
                pass
            await self.stream.close()

    # ------------------------------------------------------------------ content

    def send_content(
        self,
        handle: int,
        flow_id: int,
        payload: bytes,
        *,
        pts: int | None = None,
        flags: MediaFlag = MediaFlag.NONE,
        dts: int | None = None,
        seq: int | None = None,
    ) -> ContentPacket:
        """Publish one media packet on an attached STREAMING_IN content; returns what was sent
        (the payload sealed when ``content_key`` is set). ``seq`` defaults to a per-flow
        counter (pass the one inside a signed envelope to keep them equal)."""
        self._open_channels()
        if seq is None:
            seq = self._seq.get((handle, flow_id), 0)
        self._seq[(handle, flow_id)] = (seq + 1) & 0xFFFFFFFF
        if self.content_key is not None:
            payload = self.content_key.seal(AvrsChannel.CONTENT, flow_id, payload)
        packet = ContentPacket(handle, flow_id, seq, payload, flags=flags)
        if pts is not None:
            packet = replace(packet, pts=pts)
        if dts is not None:
            packet = replace(packet, dts=dts)
        self.channels[AvrsChannel.CONTENT].write_nowait(PacketType.DATA, encode_content(packet))
        return packet

    # ------------------------------------------------------------------ interactive

    async def interactive(
        self,
        op: SessionOp,
        cluster_id: bytes,
        content_id: bytes,
        args: Sequence[Tsd] = (),
        *,
        totp: str | None = None,
    ) -> Reply:
        """A signed chat / poll / moderation request about ``content_id``; raises
        :class:`AvrsRequestError` unless SUCCESS."""
        base = [Tsd(SessionArg.CLUSTER_ID, cluster_id), Tsd(SessionArg.CONTENT_UUID, content_id)]
        return await self.call(AvrsChannel.SESSION, op, [*base, *args], signed=True, totp=totp)

    async def chat(self, cluster_id: bytes, content_id: bytes, text: str) -> int:
        """Send a chat line to the members of ``content_id``; returns its message id."""
        reply = await self.interactive(
            SessionOp.CHAT, cluster_id, content_id, [Tsd(SessionArg.TEXT, text.encode())]
        )
        return int.from_bytes(reply.arg(SessionArg.MESSAGE_ID) or bytes(8), "little")

    async def create_poll(
        self, cluster_id: bytes, content_id: bytes, question: str, options: Sequence[str]
    ) -> int:
        args = [Tsd(SessionArg.TEXT, question.encode())]
        args += [Tsd(SessionArg.POLL_OPTION, o.encode()) for o in options]
        reply = await self.interactive(SessionOp.POLL_CREATE, cluster_id, content_id, args)
        return int.from_bytes(reply.arg(SessionArg.POLL_ID) or bytes(4), "little")

    async def vote(self, cluster_id: bytes, content_id: bytes, poll_id: int, choice: int) -> None:
        args = [
            Tsd(SessionArg.POLL_ID, poll_id.to_bytes(4, "little")),
            Tsd(SessionArg.POLL_CHOICE, bytes([choice])),
        ]
        await self.interactive(SessionOp.POLL_VOTE, cluster_id, content_id, args)

    async def close_poll(self, cluster_id: bytes, content_id: bytes, poll_id: int) -> None:
        args = [Tsd(SessionArg.POLL_ID, poll_id.to_bytes(4, "little"))]
        await self.interactive(SessionOp.POLL_CLOSE, cluster_id, content_id, args)

    async def moderate(
        self,
        cluster_id: bytes,
        content_id: bytes,
        action: int,
        *,
        member: bytes | None = None,
        message_id: int | None = None,
        duration: int | None = None,
        totp: str | None = None,
    ) -> None:
        """MODERATE (ModAction); a host or operator moderating by role needs ``totp``."""
        args = [Tsd(SessionArg.MOD_ACTION, bytes([action]))]
        if member is not None:
            args.append(Tsd(SessionArg.MEMBER, member))
        if message_id is not None:
            args.append(Tsd(SessionArg.MESSAGE_ID, message_id.to_bytes(8, "little")))
        if duration is not None:
            args.append(Tsd(SessionArg.DURATION, duration.to_bytes(4, "little")))
        await self.interactive(SessionOp.MODERATE, cluster_id, content_id, args, totp=totp)

    async def next_push(self, timeout: float | None = None) -> ResponseReceived:
        """The next interactive push (CHAT_MESSAGE, POLL_STATE, MODERATION)."""
        return await asyncio.wait_for(self.pushes.get(), timeout)

    async def next_notice(self, timeout: float | None = None) -> Reply:
        """Wait for the next unsolicited retcode (e.g. MEMBER_REVOKED)."""
        return await asyncio.wait_for(self.notices.get(), timeout)

    async def receive_content(self, timeout: float | None = None) -> ContentPacket:
        """The next content packet the node sent (payload opened when ``content_key`` is set).
        Raises TimeoutError, StreamClosedError once the stream is gone, DecryptError when the
        payload does not open with ``content_key``, AvrsProtocolError when it does not parse."""
        self._open_channels()
        channel = self.channels[AvrsChannel.CONTENT]
        _ptype, data = await asyncio.wait_for(channel.receive(), timeout)
        packet = decode_content(data)
        if self.content_key is not None:
            opened = self.content_key.open(AvrsChannel.CONTENT, packet.flow_id, packet.payload)
            packet = replace(packet, payload=opened)
        return packet

    async def next_content_error(self, timeout: float | None = None) -> Reply:
        """Wait for the next retcode refusing a content packet we published."""
        return await asyncio.wait_for(self._content_error_queue.get(), timeout)

    def has_pending_content(self) -> bool:
        """Whether content packets were received and not read yet."""
        channel = self.channels.get(AvrsChannel.CONTENT)
        return channel is not None and channel.buf_size > 0


def _i64(value: int) -> bytes:
    return value.to_bytes(8, "little", signed=True)
