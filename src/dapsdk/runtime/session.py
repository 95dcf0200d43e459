"""Session: the seed's ``dap_stream_session_t``: a logical conversation with one node."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..stream.identity import NodeAddress
from .endpoint import Endpoint

if TYPE_CHECKING:
    from .channel import Channel
    from .stream import Stream


class Session:
    def __init__(
        self, session_id: int, node_addr: NodeAddress | None, endpoint: Endpoint | None
    ) -> None:
        self.id = session_id
        """u32 session id, unique within the node."""
        self.node_addr = node_addr
        """Address of the peer node (None until a stream proves it, when created for a URL only)."""
        self.endpoint = endpoint
        """Where the peer is reached (client side); None for sessions accepted by a server."""
        self.stream: Stream | None = None
        self.is_active = True
        self.create_time = time.time()
        self.last_activity = self.create_time
        self.cluster: Any = None
        """The cluster this session joined (``dap_stream_session_join_cluster``)."""
        self.cluster_member_id = 0

    @property
    def channels(self) -> list[Channel]:
        return list(self.stream.channels.values()) if self.stream is not None else []

    @property
    def channels_count(self) -> int:
        return len(self.channels)

    def touch(self) -> None:
        self.last_activity = time.time()

    def __repr__(self) -> str:
        return f"<Session {self.id} node={self.node_addr} active={self.is_active}>"
