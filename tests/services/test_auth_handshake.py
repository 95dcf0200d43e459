"""Certificates in a real stream handshake (the sans-IO wire core, virtual clock): each side
presents a certificate of the cluster CA and checks the other's with make_peer_verifier."""

from __future__ import annotations

from authkit import DAY, NOW, der

from dapsdk.services.auth import ClusterCA, Role, make_peer_verifier
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.connection import StreamConnection
from dapsdk.stream.errors import ErrorCode
from dapsdk.stream.events import HandshakeCompleted, StreamEvent, StreamTerminated
from dapsdk.stream.identity import NodeIdentity

Events = tuple[list[StreamEvent], list[StreamEvent]]


def handshake(
    client: tuple[NodeIdentity, StreamConfig], server: tuple[NodeIdentity, StreamConfig]
) -> Events:
    """Run two wire cores until no bytes move; return (client events, server events)."""
    a = StreamConnection(client[1], client[0], is_client=True, now=0.0)
    b = StreamConnection(server[1], server[0], is_client=False, now=0.0)
    events: Events = ([], [])
    for _ in range(100):
        moved = 0
        for src, dst in ((a, b), (b, a)):
            data = b"".join(src.data_to_send())
            if data:
                dst.receive_data(data, 0.0)
                moved += len(data)
        for conn, sink in ((a, events[0]), (b, events[1])):
            while (event := conn.next_event()) is not None:
                sink.append(event)
        if not moved:
            return events
    raise AssertionError("handshake did not settle")


def node(
    issuing_ca: ClusterCA, trusted_ca: ClusterCA, roles: Role, *, now: float = NOW
) -> tuple[NodeIdentity, StreamConfig]:
    identity = NodeIdentity.generate()
    certificate = issuing_ca.issue(identity.public_key, roles, now=NOW, days=30)
    verifier = make_peer_verifier(trusted_ca.certificate, None, lambda: now)
    return identity, StreamConfig(certificate=der(certificate), peer_verifier=verifier)


def completed(events: list[StreamEvent]) -> list[HandshakeCompleted]:
    return [e for e in events if isinstance(e, HandshakeCompleted)]


def refusal(events: list[StreamEvent]) -> StreamTerminated:
    terminated = [e for e in events if isinstance(e, StreamTerminated)]
    assert terminated, events
    return terminated[0]


def test_both_certified_peers_connect(ca: ClusterCA) -> None:
    client, server = node(ca, ca, Role.CLIENT), node(ca, ca, Role.SERVER)
    client_events, server_events = handshake(client, server)
    assert completed(client_events)[0].peer.address == server[0].address
    assert completed(server_events)[0].peer.certificate == client[1].certificate


def test_certificate_of_another_cluster_refused(ca: ClusterCA) -> None:
    stranger_ca = ClusterCA.create("other_cluster", now=NOW)
    client = node(stranger_ca, ca, Role.CLIENT)
    _, server_events = handshake(client, node(ca, ca, Role.SERVER))
    assert not completed(server_events)
    end = refusal(server_events)
    assert end.code == ErrorCode.AUTHENTICATION_FAILED
    assert "not by the cluster CA" in end.reason


def test_expired_certificate_refused(ca: ClusterCA) -> None:
    client = node(ca, ca, Role.CLIENT)
    server = node(ca, ca, Role.SERVER, now=NOW + 31 * DAY)  # the server's clock is past expiry
    _, server_events = handshake(client, server)
    assert "expired at" in refusal(server_events).reason


def test_stolen_certificate_refused(ca: ClusterCA) -> None:
    thief_identity, _ = node(ca, ca, Role.CLIENT)
    _, victim_config = node(ca, ca, Role.HOST)
    stolen = (thief_identity, victim_config)  # presents the victim's certificate with its own key
    _, server_events = handshake(stolen, node(ca, ca, Role.SERVER))
    assert "the peer proved node" in refusal(server_events).reason
