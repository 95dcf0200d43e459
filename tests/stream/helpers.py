"""In-memory pairs of wire cores with a virtual clock (aioquic/h11 style pair tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dapsdk.stream.config import StreamConfig
from dapsdk.stream.connection import StreamConnection
from dapsdk.stream.events import DataBatchReceived, DataReceived, StreamEvent
from dapsdk.stream.identity import NodeAddress, NodeIdentity

CLIENT_ID = NodeIdentity.from_seed(bytes(range(32)))
SERVER_ID = NodeIdentity.from_seed(bytes(range(1, 33)))


def expand(event: DataBatchReceived) -> list[DataReceived]:
    return [
        DataReceived(channel_id=event.channel_id, packet_type=1, data=m, flow_bytes=0, reserved=0)
        for m in event.messages
    ]


def data_events(conn: StreamConnection) -> list[DataReceived]:
    """Drain ``conn``'s events; DATA messages only, batches expanded."""
    out: list[DataReceived] = []
    while (event := conn.next_event()) is not None:
        if isinstance(event, DataBatchReceived):
            out.extend(expand(event))
        elif isinstance(event, DataReceived):
            out.append(event)
    return out


@dataclass
class Pair:
    client: StreamConnection
    server: StreamConnection
    now: float = 0.0
    client_events: list[StreamEvent] = field(default_factory=list)
    server_events: list[StreamEvent] = field(default_factory=list)
    auto_release: bool = True

    def transfer(self, limit: int = 1 << 20) -> int:
        """Move bytes both ways until quiet; return the number of bytes moved."""
        moved_total = 0
        for _ in range(10_000):
            moved = 0
            for src, dst, sink in (
                (self.client, self.server, self.server_events),
                (self.server, self.client, self.client_events),
            ):
                data = b"".join(src.data_to_send(limit))
                if data:
                    dst.receive_data(data, self.now)
                    moved += len(data)
                self._drain(src, self.client_events if src is self.client else self.server_events)
                self._drain(dst, sink)
            moved_total += moved
            if not moved:
                return moved_total
        raise AssertionError("transfer did not settle")

    def _drain(self, conn: StreamConnection, sink: list[StreamEvent]) -> None:
        while (event := conn.next_event()) is not None:
            if isinstance(event, DataBatchReceived):
                # one record per message, so tests read batched and single messages alike
                sink.extend(expand(event))
            else:
                sink.append(event)
            if self.auto_release and isinstance(event, (DataReceived, DataBatchReceived)):
                conn.release(event)

    def events_of(self, side: str, kind: type) -> list:  # type: ignore[type-arg]
        events = self.client_events if side == "client" else self.server_events
        return [e for e in events if isinstance(e, kind)]


def make_pair(
    client_config: StreamConfig | None = None,
    server_config: StreamConfig | None = None,
    *,
    expected: NodeAddress | None = None,
    handshake: bool = True,
) -> Pair:
    client = StreamConnection(
        client_config or StreamConfig(), CLIENT_ID, is_client=True, now=0.0, expected_peer=expected
    )
    server = StreamConnection(server_config or StreamConfig(), SERVER_ID, is_client=False, now=0.0)
    pair = Pair(client, server)
    if handshake:
        pair.transfer()
    return pair
