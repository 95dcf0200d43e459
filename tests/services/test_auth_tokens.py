"""Tokens: issue and verify EdDSA JWTs; every refusal has its own error."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from authkit import NOW

from dapsdk.services.auth import (
    Role,
    TokenBadSignature,
    TokenExpired,
    TokenGrantError,
    TokenGrants,
    TokenIssuer,
    TokenMalformed,
    TokenNotYetValid,
    TokenRevoked,
    TokenUntrustedIssuer,
    TokenVerifier,
    TokenWrongAudience,
    TokenWrongSubject,
    TrustedIssuer,
)
from dapsdk.stream.identity import NodeIdentity

HOST = NodeIdentity.from_seed(bytes(range(32)))
OPERATOR = NodeIdentity.from_seed(bytes(range(1, 33)))
GRANTS = TokenGrants(
    role=Role.CLIENT,
    subscribe=True,
    content_ids=("lecture-1", "lecture-2"),
    attributes={"region": "eu", "tier": 2},
)


def verifier(**kwargs: object) -> TokenVerifier:
    issuers = [
        TrustedIssuer(HOST.public_key, Role.HOST),
        TrustedIssuer(OPERATOR.public_key, Role.OPERATOR),
    ]
    return TokenVerifier(issuers, "main_cluster", **kwargs)  # type: ignore[arg-type]


def host_issuer() -> TokenIssuer:
    return TokenIssuer(HOST, Role.HOST, "main_cluster")


def test_round_trip() -> None:
    token = host_issuer().issue("viewer-42", GRANTS, now=NOW, ttl=600, token_id="t1")
    verified = verifier().verify(token, now=NOW + 10, subject="viewer-42")
    assert verified.issuer == HOST.address
    assert verified.subject == "viewer-42"
    assert verified.audience == "main_cluster"
    assert (verified.issued_at, verified.not_before, verified.expires_at) == (NOW, NOW, NOW + 600)
    assert verified.token_id == "t1"
    assert verified.grants == GRANTS
    assert verified.grants.allows("subscribe", "lecture-1")
    assert not verified.grants.allows("subscribe", "other")
    assert not verified.grants.allows("publish", "lecture-1")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == str(HOST.address)


def test_wildcard_content_and_all_flags() -> None:
    grants = TokenGrants(
        role=Role.SERVER, publish=True, subscribe=True, moderate=True, content_ids="*"
    )
    token = host_issuer().issue(str(OPERATOR.address), grants, now=NOW)
    verified = verifier().verify(token, now=NOW)
    assert verified.grants.content_ids == "*"
    assert verified.grants.allows("moderate") and verified.grants.allows("publish", "anything")


def test_expired_refused() -> None:
    token = host_issuer().issue("viewer", GRANTS, now=NOW, ttl=60)
    verifier().verify(token, now=NOW + 59)
    with pytest.raises(TokenExpired, match="expired at"):
        verifier().verify(token, now=NOW + 60)
    verifier(leeway=30).verify(token, now=NOW + 80)  # tolerated clock skew


def test_not_yet_valid_refused() -> None:
    token = host_issuer().issue("viewer", GRANTS, now=NOW, not_before=NOW + 100)
    with pytest.raises(TokenNotYetValid, match="not valid before"):
        verifier().verify(token, now=NOW + 50)
    verifier().verify(token, now=NOW + 100)
    future = host_issuer().issue("viewer", GRANTS, now=NOW + 1000, not_before=NOW)
    with pytest.raises(TokenNotYetValid, match="issued in the future"):
        verifier().verify(future, now=NOW)


def test_wrong_audience_refused() -> None:
    token = TokenIssuer(HOST, Role.HOST, "other_cluster").issue("viewer", GRANTS, now=NOW)
    with pytest.raises(TokenWrongAudience, match="for cluster 'other_cluster'"):
        verifier().verify(token, now=NOW)


def test_untrusted_issuer_refused() -> None:
    stranger = NodeIdentity.generate()
    token = TokenIssuer(stranger, Role.HOST, "main_cluster").issue("viewer", GRANTS, now=NOW)
    with pytest.raises(
        TokenUntrustedIssuer, match=f"issuer {stranger.address} is not a trusted issuer"
    ):
        verifier().verify(token, now=NOW)


def test_wrongly_signed_refused() -> None:
    """A token claiming the host as issuer but signed by another key."""
    stranger = NodeIdentity.generate()
    claims = jwt.decode(
        host_issuer().issue("viewer", GRANTS, now=NOW), options={"verify_signature": False}
    )
    forged = jwt.encode(claims, stranger.private_key, algorithm="EdDSA")
    with pytest.raises(TokenBadSignature, match=f"key of issuer {HOST.address}"):
        verifier().verify(forged, now=NOW)


def test_altered_payload_refused() -> None:
    header, _payload, signature = host_issuer().issue("viewer", GRANTS, now=NOW).split(".")
    claims = jwt.decode(
        host_issuer().issue("viewer", GRANTS, now=NOW), options={"verify_signature": False}
    )
    claims["avrs"]["publish"] = True
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenBadSignature):
        verifier().verify(f"{header}.{body}.{signature}", now=NOW)


def test_other_algorithms_refused() -> None:
    claims = jwt.decode(
        host_issuer().issue("viewer", GRANTS, now=NOW), options={"verify_signature": False}
    )
    hs256 = jwt.encode(claims, HOST.public_key.hex(), algorithm="HS256")
    with pytest.raises(TokenMalformed, match="algorithm 'HS256' refused"):
        verifier().verify(hs256, now=NOW)
    unsigned = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(TokenMalformed, match="algorithm 'none' refused"):
        verifier().verify(unsigned, now=NOW)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "a.b.c.d"])
def test_garbage_refused(garbage: str) -> None:
    with pytest.raises(TokenMalformed):
        verifier().verify(garbage, now=NOW)


def test_missing_claims_and_bad_grants_refused() -> None:
    claims = jwt.decode(
        host_issuer().issue("viewer", GRANTS, now=NOW), options={"verify_signature": False}
    )
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    with pytest.raises(TokenMalformed, match="lacks required claims: exp"):
        verifier().verify(jwt.encode(no_exp, HOST.private_key, algorithm="EdDSA"), now=NOW)
    bad = dict(claims, avrs=dict(claims["avrs"], publish="yes"))
    with pytest.raises(TokenMalformed, match="'publish' = 'yes' is not a boolean"):
        verifier().verify(jwt.encode(bad, HOST.private_key, algorithm="EdDSA"), now=NOW)


def test_operator_cannot_grant_host() -> None:
    operator = TokenIssuer(OPERATOR, Role.OPERATOR, "main_cluster")
    with pytest.raises(TokenGrantError, match="may not grant 'host'"):
        operator.issue("x", TokenGrants(role=Role.HOST), now=NOW)
    operator.issue("x", TokenGrants(role=Role.SERVER | Role.OPERATOR), now=NOW)
    # An operator key that signs a HOST grant by hand is refused by the verifier too.
    claims = jwt.decode(
        operator.issue("x", TokenGrants(role=Role.CLIENT), now=NOW),
        options={"verify_signature": False},
    )
    claims["avrs"]["role"] = int(Role.HOST)
    minted = jwt.encode(claims, OPERATOR.private_key, algorithm="EdDSA")
    with pytest.raises(TokenGrantError, match="grants 'host', which issuer"):
        verifier().verify(minted, now=NOW)


def test_only_host_or_operator_may_issue() -> None:
    server = NodeIdentity.generate()
    with pytest.raises(TokenGrantError, match="only a host or an operator"):
        TokenIssuer(server, Role.SERVER, "main_cluster")
    token = TokenIssuer(server, Role.OPERATOR, "main_cluster").issue("x", GRANTS, now=NOW)
    only_server = TokenVerifier([TrustedIssuer(server.public_key, Role.SERVER)], "main_cluster")
    with pytest.raises(TokenGrantError, match="may not issue tokens"):
        only_server.verify(token, now=NOW)


def test_revoked_and_wrong_subject_refused() -> None:
    token = host_issuer().issue("viewer", GRANTS, now=NOW, token_id="revoked-1")
    with pytest.raises(TokenRevoked, match="revoked-1"):
        verifier(revoked_ids={"revoked-1"}).verify(token, now=NOW)
    with pytest.raises(TokenWrongSubject, match="issued to 'viewer', not to 'other'"):
        verifier().verify(token, now=NOW, subject="other")


def test_issue_refuses_bad_lifetimes() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        host_issuer().issue("x", GRANTS, now=NOW, ttl=0)
    with pytest.raises(ValueError, match="lifetime"):
        host_issuer().issue("x", GRANTS, now=NOW, ttl=365 * 86400)
    with pytest.raises(ValueError, match="subject"):
        host_issuer().issue("", GRANTS, now=NOW)
    with pytest.raises(ValueError, match="content_ids"):
        TokenGrants(content_ids=("",))
