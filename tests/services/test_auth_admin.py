"""Admin requests need an admin certificate (or known admin identity) AND a fresh TOTP code."""

from __future__ import annotations

import pytest
from authkit import NOW, der

from dapsdk.services.auth import (
    AdminAuthenticator,
    AdminAuthError,
    CertificateVerifier,
    ClusterCA,
    Role,
    enroll_totp,
    totp_code,
)
from dapsdk.stream.config import PeerIdentity
from dapsdk.stream.identity import NodeAddress, NodeIdentity


def admin_peer(ca: ClusterCA, roles: Role) -> tuple[NodeIdentity, PeerIdentity]:
    node = NodeIdentity.generate()
    cert = ca.issue(node.public_key, roles, now=NOW)
    return node, PeerIdentity(node.public_key, node.address, der(cert))


def test_certificate_and_totp_required(ca: ClusterCA) -> None:
    operator, peer = admin_peer(ca, Role.OPERATOR)
    secret = enroll_totp(str(operator.address)).secret
    auth = AdminAuthenticator(
        {operator.address: secret}, certificate_verifier=CertificateVerifier(ca.certificate)
    )
    approval = auth.authorize(peer, totp_code(secret, now=NOW), now=NOW, operation="member.approve")
    assert approval.roles == Role.OPERATOR and approval.operation == "member.approve"

    with pytest.raises(AdminAuthError, match=r"'member\.remove' .* TOTP code already used") as err:
        auth.authorize(peer, totp_code(secret, now=NOW), now=NOW + 1, operation="member.remove")
    assert err.value.reason == "TOTP_REPLAY"
    with pytest.raises(AdminAuthError, match="a TOTP code is required") as err:
        auth.authorize(peer, None, now=NOW + 60)
    assert err.value.reason == "TOTP_MISSING"
    with pytest.raises(AdminAuthError, match="wrong TOTP code") as err:
        auth.authorize(
            peer, "000000" if totp_code(secret, now=NOW + 60) != "000000" else "1" * 6, now=NOW + 60
        )
    assert err.value.reason == "TOTP_INVALID"


def test_host_only_operations(ca: ClusterCA) -> None:
    operator, peer = admin_peer(ca, Role.OPERATOR)
    secret = enroll_totp("op").secret
    auth = AdminAuthenticator(
        {operator.address: secret}, certificate_verifier=CertificateVerifier(ca.certificate)
    )
    with pytest.raises(AdminAuthError, match="roles 'operator' do not include 'host'") as err:
        auth.authorize(peer, totp_code(secret, now=NOW), now=NOW, allowed_roles=Role.HOST)
    assert err.value.reason == "ROLE"


def test_non_admin_and_uncertified_refused(ca: ClusterCA) -> None:
    server, server_peer = admin_peer(ca, Role.SERVER)
    secret = enroll_totp("s").secret
    auth = AdminAuthenticator(
        {server.address: secret}, certificate_verifier=CertificateVerifier(ca.certificate)
    )
    with pytest.raises(AdminAuthError, match="roles 'server' do not include"):
        auth.authorize(server_peer, totp_code(secret, now=NOW), now=NOW)
    bare = PeerIdentity(server.public_key, server.address, None)
    with pytest.raises(AdminAuthError, match="presented no certificate") as err:
        auth.authorize(bare, totp_code(secret, now=NOW), now=NOW)
    assert err.value.reason == "CERT_MISSING"
    other_ca = ClusterCA.create("main_cluster", now=NOW)
    _, foreign = admin_peer(other_ca, Role.HOST)
    with pytest.raises(AdminAuthError) as err:
        auth.authorize(foreign, "123456", now=NOW)
    assert err.value.reason == "CERT_UNTRUSTED"


def test_not_enrolled_then_enrolled(ca: ClusterCA) -> None:
    host, peer = admin_peer(ca, Role.HOST)
    auth = AdminAuthenticator({}, certificate_verifier=CertificateVerifier(ca.certificate))
    with pytest.raises(AdminAuthError, match="no enrolled second factor") as err:
        auth.authorize(peer, "123456", now=NOW)
    assert err.value.reason == "TOTP_NOT_ENROLLED"
    enrolment = auth.enroll(host.address)
    assert auth.is_enrolled(host.address)
    auth.authorize(peer, totp_code(enrolment.secret, now=NOW), now=NOW)


def test_role_lookup_without_certificates() -> None:
    host = NodeIdentity.generate()
    secret = enroll_totp("h").secret
    roles = {host.address: Role.HOST}

    def lookup(address: NodeAddress) -> Role:
        return roles.get(address, Role.NONE)

    auth = AdminAuthenticator({host.address: secret}, role_lookup=lookup)
    peer = PeerIdentity(host.public_key, host.address)
    auth.authorize(peer, totp_code(secret, now=NOW), now=NOW)
    stranger = NodeIdentity.generate()
    with pytest.raises(AdminAuthError, match="roles 'none'"):
        auth.authorize(PeerIdentity(stranger.public_key, stranger.address), "123456", now=NOW)
    with pytest.raises(ValueError, match="certificate_verifier or a role_lookup"):
        AdminAuthenticator({})
