"""Transport registry: how a node listens and connects for each endpoint scheme.

A transport only moves bytes: it builds a :class:`~dapsdk.runtime.driver.ByteSink` for each
connection and asks the node's ``DriverFactory`` for the driver to feed. The protocol (handshake,
sealing, channels) is identical on every transport.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

from .driver import ByteSink, ConnectionDriver
from .endpoint import Endpoint

#: Builds the driver for a new connection; returns None to refuse it (the factory may have
#: written a final ERROR to the sink first).
DriverFactory = Callable[[ByteSink], "ConnectionDriver | None"]


class TransportServer(Protocol):
    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class Transport(Protocol):
    async def listen(
        self, endpoint: Endpoint, make_driver: DriverFactory
    ) -> tuple[TransportServer, Endpoint]:
        """Start listening; return the server and the bound endpoint (real port)."""
        ...

    async def connect(self, endpoint: Endpoint, make_driver: DriverFactory) -> Callable[[], None]:
        """Open a connection; return a function that aborts it."""
        ...


# scheme -> "module:attribute" of a zero-argument Transport factory, imported on first use so a
# node that only speaks TCP does not load aiohttp or aioquic.
_REGISTRY: dict[str, str] = {
    "tcp": "dapsdk.runtime.tcp:TcpTransport",
    "ws": "dapsdk.runtime.ws:WsTransport",
    "wss": "dapsdk.runtime.ws:WssTransport",
    "quic": "dapsdk.runtime.quic:QuicTransport",
}
_LOADED: dict[str, Transport] = {}


def register_transport(scheme: str, target: str) -> None:
    """Register ``module:attribute`` as the transport for ``scheme``."""
    _REGISTRY[scheme] = target
    _LOADED.pop(scheme, None)


def available_schemes() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_transport(scheme: str) -> Transport:
    loaded = _LOADED.get(scheme)
    if loaded is not None:
        return loaded
    target = _REGISTRY.get(scheme)
    if target is None:
        raise ValueError(
            f"no transport for scheme {scheme!r}; available: {', '.join(sorted(_REGISTRY))}"
        )
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    transport: Transport = factory()
    _LOADED[scheme] = transport
    return transport
