"""Endpoints: where a node listens or connects, written as URLs (``tcp://host:port``, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..stream.identity import NodeAddress

#: Schemes understood by :func:`parse_endpoint`; the transport for each is chosen in node.py.
SCHEMES = ("tcp", "ws", "wss", "quic")
DEFAULT_SCHEME = "tcp"


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    path: str = "/"
    node: NodeAddress | None = None
    """Identity the peer must prove (``?node=XXXX::XXXX::XXXX::XXXX`` in the URL)."""
    insecure_no_pin: bool = False
    """``?insecure_no_pin`` in the URL: connect without checking the peer's identity (see
    :mod:`.known_hosts`; without a pin or this, clients refuse to connect)."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = self.path if self.scheme in ("ws", "wss") else ""
        query = f"?node={self.node}" if self.node is not None else ""
        if self.insecure_no_pin and self.node is None:
            query = "?insecure_no_pin"
        return f"{self.scheme}://{host}:{self.port}{path}{query}"

    def __str__(self) -> str:
        return self.url


def parse_endpoint(text: str, *, default_port: int | None = None) -> Endpoint:
    """Parse ``[scheme://]host:port[/path][?node=ADDR]``; raise ValueError naming what is wrong."""
    raw = text.strip()
    if "://" not in raw:
        raw = f"{DEFAULT_SCHEME}://{raw}"
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"endpoint {text!r}: scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"endpoint {text!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"endpoint {text!r}: port is not a number in 0..65535") from None
    if port is None:
        if default_port is None:
            raise ValueError(f"endpoint {text!r}: no port")
        port = default_port
    node = None
    insecure = False
    if parts.query:
        for item in parts.query.split("&"):
            key, _, value = item.partition("=")
            if key == "node":
                node = NodeAddress.parse(value)
            elif key == "insecure_no_pin" and value in ("", "1", "true", "yes"):
                insecure = True
            else:
                raise ValueError(f"endpoint {text!r}: unknown query parameter {key!r}")
    return Endpoint(scheme, parts.hostname, port, parts.path or "/", node, insecure)
