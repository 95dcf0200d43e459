"""The content-callback registry (``avrs_ch_pkt_in_content_add_callback``).

Callbacks run, in registration order, for every incoming content packet that passed the built-in
checks (session, handle, STREAMING_IN, flow id). Unlike the original, return codes are honoured: the
first callback that returns anything but SUCCESS stops the chain, and its code is sent to the peer.
A callback that raises stops the chain with AVRS ERROR; the exception never leaves the core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import AvrsError
from .packets import ContentPacket
from .sessions import SessionContent

if TYPE_CHECKING:
    from .connection import AvrsConnection

#: ``(avrs_ch, content_session, pkt, data_size) -> int`` (an AvrsError value).
ContentCallback: TypeAlias = Callable[["AvrsConnection", SessionContent, ContentPacket, int], int]


class ContentCallbacks:
    """Any number of callbacks. Share one registry between the connections of a node."""

    __slots__ = ("_callbacks",)

    def __init__(self) -> None:
        self._callbacks: list[ContentCallback] = []

    def __len__(self) -> int:
        return len(self._callbacks)

    def add(self, callback: ContentCallback) -> int:
        """Register ``callback``; returns 0 like the seed function."""
        if not callable(callback):
            raise TypeError("content callback must be callable")
        self._callbacks.append(callback)
        return 0

    def remove(self, callback: ContentCallback) -> None:
        self._callbacks.remove(callback)

    def run(
        self, avrs_ch: AvrsConnection, content_session: SessionContent, packet: ContentPacket
    ) -> tuple[int, str]:
        """Run the chain. Returns (code, reason); (SUCCESS, "") when every callback agreed."""
        for callback in tuple(self._callbacks):
            try:
                result: Any = callback(avrs_ch, content_session, packet, len(packet.payload))
            except Exception as exc:  # a callback bug must not break the connection
                return int(AvrsError.ERROR), f"content callback raised {type(exc).__name__}"
            if not isinstance(result, int) or isinstance(result, bool):
                return int(AvrsError.ERROR), f"content callback returned {type(result).__name__}"
            code = result & 0xFFFFFFFF
            if code != AvrsError.SUCCESS:
                return code, f"content callback {getattr(callback, '__name__', '?')} refused"
        return int(AvrsError.SUCCESS), ""
