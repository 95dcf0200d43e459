"""Pinning of the node a client connects to.

A client must know which node it talks to: the ``?node=XXXX::XXXX::XXXX::XXXX`` of a URL is the
identity the handshake must prove. :func:`pinned_identity` is the rule every client entry point
applies (``StreamNode.connect`` and so everything above it: ``AvrsNode.connect_client``, the
compat layer, the CLI):

* a URL with ``?node=`` is pinned to that address;
* otherwise, with a :class:`KnownHosts` file (``--trust-on-first-use``), the address remembered for
  that ``scheme://host:port``, or, the first time, whatever the node proves, which is then
  remembered (like SSH's known_hosts: a later change of identity fails the handshake);
* otherwise, with ``?insecure_no_pin`` in the URL (or ``insecure_no_pin=True``), nothing is
  checked, explicitly;
* otherwise the connection is refused with :class:`PinRequired` before any byte is sent.

The file has one line per host: ``scheme://host:port XXXX::XXXX::XXXX::XXXX``; ``#`` comments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from ..stream.errors import DapError, ErrorCode
from ..stream.identity import NodeAddress
from .endpoint import Endpoint

#: Largest known-hosts file read (bytes): the file is a list of pins, not a data store.
MAX_KNOWN_HOSTS_BYTES: Final = 1024 * 1024


class PinRequired(DapError):
    """A client was asked to connect without knowing which node to expect."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(
            f"{endpoint.url}: refusing to connect without a pinned node identity: add "
            f"?node=XXXX::XXXX::XXXX::XXXX (the address `avrs node` prints in its listening "
            f"line), or use --trust-on-first-use to remember the address it proves the first "
            f"time, or add ?insecure_no_pin to skip the check knowingly"
        )
        self.endpoint = endpoint
        self.code = ErrorCode.AUTHENTICATION_FAILED


def host_key(endpoint: Endpoint) -> str:
    """``scheme://host:port`` (the known-hosts key of an endpoint)."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{endpoint.scheme}://{host}:{endpoint.port}"


class KnownHosts:
    """A known_hosts-like file of pinned node addresses (trust on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, NodeAddress]:
        try:
            with self.path.open("rb") as fh:
                data = fh.read(MAX_KNOWN_HOSTS_BYTES + 1)
        except FileNotFoundError:
            return {}
        if len(data) > MAX_KNOWN_HOSTS_BYTES:
            raise ValueError(f"{self.path}: larger than {MAX_KNOWN_HOSTS_BYTES} bytes")
        pins: dict[str, NodeAddress] = {}
        for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) != 2:
                raise ValueError(f"{self.path}:{number}: expected 'scheme://host:port ADDRESS'")
            try:
                pins[parts[0]] = NodeAddress.parse(parts[1])
            except ValueError as exc:
                raise ValueError(f"{self.path}:{number}: {exc}") from None
        return pins

    def lookup(self, endpoint: Endpoint) -> NodeAddress | None:
        return self._read().get(host_key(endpoint))

    def remember(self, endpoint: Endpoint, address: NodeAddress) -> None:
        """Add the pin of ``endpoint`` (an existing pin for it is never replaced)."""
        key = host_key(endpoint)
        if key in self._read():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(f"{key} {address}\n")


def pinned_identity(
    endpoint: Endpoint, known_hosts: KnownHosts | None, *, insecure_no_pin: bool = False
) -> tuple[NodeAddress | None, bool]:
    """``(expected address, remember after the handshake)`` for a connection to ``endpoint``,
    or :class:`PinRequired`. See the module docstring for the rule."""
    if endpoint.node is not None:
        return endpoint.node, False
    if known_hosts is not None:
        known = known_hosts.lookup(endpoint)
        return (known, False) if known is not None else (None, True)
    if insecure_no_pin or endpoint.insecure_no_pin:
        return None, False
    raise PinRequired(endpoint)
