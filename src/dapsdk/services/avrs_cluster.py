"""The node's own cluster: the local replica the AVRS core authorises against, the credentials
(access tokens, certificates) that make a peer a member, and the answers to cluster ('C')
requests the core hands to layer 4 as :class:`~dapsdk.avrs.events.ClusterRequestReceived`.

A node serves one cluster, named by ``[avrs] cluster_id``; its 16-byte GUUID on the wire is
:func:`cluster_guuid` of that name. Contents are named by strings in tokens and by 16-byte GUUIDs
on the wire: :func:`content_guuid` maps one to the other (32 hex digits are taken as the GUUID).

**Credentials** travel in a signed MEMBER_REQUEST_ADD as two arguments this layer defines (the core
passes unknown argument types through): ``TOKEN`` (0x50, a JWT access token) and ``CERTIFICATE``
(0x51, a DER X.509 certificate of the cluster CA). A token whose subject is a node address must
have been issued to the signer (proof of possession); other subjects are user ids (bearer tokens,
as LiveKit's). A certificate must bind the signer's key. The member then holds the token's or the
certificate's roles, and a token's content grants restrict which contents the member can see.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from cryptography import x509

from dapsdk.avrs.constants import GUUID_SIZE, ClusterArg, ClusterOp, Role
from dapsdk.avrs.directory import ClusterInfo, ContentInfo, MemoryClusterView
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError
from dapsdk.avrs.events import ClusterRequestReceived
from dapsdk.avrs.signing import SignatureAlgorithm, identity_of
from dapsdk.stream.identity import NodeAddress

from .auth import AuthError, CertificateVerifier, TokenGrants, TokenVerifier

log = logging.getLogger("dapsdk.avrs.cluster")


class CredentialArg(enum.IntEnum):
    """Arguments of cluster MEMBER_REQUEST_ADD defined by this layer (unknown to the core)."""

    TOKEN = 0x50  #: ASCII JWT access token
    CERTIFICATE = 0x51  #: DER X.509 certificate issued by the cluster CA


#: Longest token / certificate accepted in a join request.
MAX_TOKEN_SIZE: Final = 8192
MAX_CERTIFICATE_SIZE: Final = 16384


def cluster_guuid(name: str) -> bytes:
    """The 16-byte wire id of the cluster named ``name`` in the configuration."""
    return hashlib.sha256(b"avrs.cluster\0" + name.encode()).digest()[:GUUID_SIZE]


def content_guuid(name: str | bytes) -> bytes:
    """The 16-byte wire id of a content: bytes are taken as is, 32 hex digits are parsed, any other
    string is hashed (so tokens can name contents by readable ids such as ``lecture-1``)."""
    if isinstance(name, bytes):
        if len(name) != GUUID_SIZE:
            raise ValueError(f"content id must be {GUUID_SIZE} bytes, got {len(name)}")
        return name
    if len(name) == 2 * GUUID_SIZE:
        try:
            return bytes.fromhex(name)
        except ValueError:
            pass
    if not name:
        raise ValueError("content id must not be empty")
    return hashlib.sha256(b"avrs.content\0" + name.encode()).digest()[:GUUID_SIZE]


def node_address_of(identity: bytes) -> NodeAddress:
    """The dap_stream node address of an AVRS identity (both come from the same SHA3-256)."""
    return NodeAddress(int.from_bytes(identity[:4] + identity[-4:], "big"))


class CredentialRefused(Exception):
    """A token or certificate did not make the signer a member; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Membership:
    """What verified credentials grant an identity."""

    roles: Role
    grants: TokenGrants | None = None
    """The token's grants (None: certificate or approval, which see every content)."""
    subject: str | None = None
    """The token's subject (a node address or a user id)."""


@dataclass(frozen=True, slots=True)
class _Visible:
    contents: frozenset[bytes] | None
    """Content GUUIDs a token holder may see, None for all."""


class ClusterDirectory:
    """The node's cluster (a :class:`MemoryClusterView` with one entry) and its membership rules.

    Synchronous and clock-free: ``now`` is passed in. The node's own identity owns the cluster.
    """

    def __init__(
        self,
        name: str,
        owner: bytes,
        *,
        token_verifier: TokenVerifier | None = None,
        certificate_verifier: CertificateVerifier | None = None,
        algorithm: SignatureAlgorithm = SignatureAlgorithm.ED25519,
    ) -> None:
        self.name = name
        self.cluster_id = cluster_guuid(name)
        self.token_verifier = token_verifier
        self.certificate_verifier = certificate_verifier
        self.view = MemoryClusterView()
        self.view.put(ClusterInfo(self.cluster_id, owner, signature_algorithm=algorithm))
        self.version = 0
        """Incremented on every change (filtered views cache per version)."""
        self.observers: list[Callable[[ClusterInfo, ClusterInfo], None]] = []
        """Called with (old, new) after every change (the registry sync, :mod:`.cluster_sync`)."""
        self._visible: dict[bytes, _Visible] = {}

    # ------------------------------------------------------------------ state

    @property
    def info(self) -> ClusterInfo:
        info = self.view.cluster(self.cluster_id)
        assert info is not None  # put in __init__, never removed
        return info

    def _put(self, info: ClusterInfo) -> None:
        old = self.view.cluster(info.cluster_id)
        self.view.put(info)
        self.version += 1
        if old is not None:
            for observer in tuple(self.observers):
                observer(old, info)

    def add_member(self, identity: bytes, membership: Membership) -> None:
        info = self.info
        members = dict(info.members)
        members[identity] = membership.roles
        self._put(replace(info, members=members, pending=info.pending - {identity}))
        grants = membership.grants
        if grants is None:
            self._visible.pop(identity, None)
        elif grants.content_ids == "*":
            self._visible[identity] = _Visible(None)
        else:
            self._visible[identity] = _Visible(
                frozenset(content_guuid(c) for c in grants.content_ids)
            )

    def remove_member(self, identity: bytes) -> None:
        info = self.info
        members = {k: v for k, v in info.members.items() if k != identity}
        self._put(replace(info, members=members, pending=info.pending - {identity}))
        self._visible.pop(identity, None)

    def add_pending(self, identity: bytes) -> None:
        info = self.info
        self._put(replace(info, pending=info.pending | {identity}))

    def put_content(self, content: ContentInfo) -> None:
        info = self.info
        contents = dict(info.contents)
        contents[content.content_id] = content
        self._put(replace(info, contents=contents))

    def remove_content(self, content_id: bytes) -> None:
        info = self.info
        contents = {k: v for k, v in info.contents.items() if k != content_id}
        self._put(replace(info, contents=contents))

    def visible_to(self, identity: bytes | None) -> ClusterInfo:
        """The cluster as ``identity`` sees it: a token holder sees only the contents its grants
        cover (and those it owns); everyone else sees everything."""
        info = self.info
        visible = None if identity is None else self._visible.get(identity)
        if visible is None or visible.contents is None:
            return info
        allowed = visible.contents
        contents = {
            cid: c for cid, c in info.contents.items() if cid in allowed or c.owner == identity
        }
        return replace(info, contents=contents)

    # ------------------------------------------------------------------ credentials

    def check_credentials(
        self,
        identity: bytes,
        *,
        token: str | None = None,
        certificate: bytes | x509.Certificate | None = None,
        now: float,
    ) -> Membership:
        """Verify ``token`` and/or ``certificate`` for the signer ``identity``; raise
        :class:`CredentialRefused`. With both, both must pass and the roles add up."""
        if token is None and certificate is None:
            raise CredentialRefused("no credentials")
        roles = Role.NONE
        grants: TokenGrants | None = None
        subject: str | None = None
        if certificate is not None:
            roles |= self._check_certificate(identity, certificate, now)
        if token is not None:
            grants, subject = self._check_token(identity, token, now)
            roles |= Role(int(grants.role) & 0xFFFF)
        return Membership(roles or Role.CLIENT, grants, subject)

    def _check_certificate(
        self, identity: bytes, certificate: bytes | x509.Certificate, now: float
    ) -> Role:
        if self.certificate_verifier is None:
            raise CredentialRefused("this node has no ca_certificate_file to check certificates")
        try:
            info = self.certificate_verifier.verify(certificate, now=now)
        except (AuthError, ValueError) as exc:
            raise CredentialRefused(str(exc)) from None
        if info.public_key is None or identity_of(info.public_key) != identity:
            raise CredentialRefused("certificate does not bind the key that signed the request")
        if info.cluster_id is not None and info.cluster_id != self.name:
            raise CredentialRefused(f"certificate is for cluster {info.cluster_id!r}")
        return Role(int(info.roles) & 0xFFFF)

    def _check_token(self, identity: bytes, token: str, now: float) -> tuple[TokenGrants, str]:
        if self.token_verifier is None:
            raise CredentialRefused("this node has no token_issuers to check tokens")
        try:
            verified = self.token_verifier.verify(token, now=now)
        except (AuthError, ValueError) as exc:
            raise CredentialRefused(str(exc)) from None
        try:
            bound = NodeAddress.parse(verified.subject)
        except ValueError:
            bound = None  # a user id: a bearer token
        if bound is not None and bound != node_address_of(identity):
            raise CredentialRefused(
                f"token was issued to node {bound}, the request is signed by "
                f"{node_address_of(identity)}"
            )
        if not (verified.grants.subscribe or verified.grants.publish or verified.grants.moderate):
            raise CredentialRefused("token grants neither subscribe, publish nor moderate")
        return verified.grants, verified.subject

    # ------------------------------------------------------------------ cluster requests

    def handle_request(self, event: ClusterRequestReceived, now: float) -> tuple[int, str | None]:
        """Apply a verified, authorised cluster request. Returns (code, detail)."""
        try:
            return self._apply(event, now)
        except AvrsProtocolError as exc:
            return int(exc.code), exc.reason
        except CredentialRefused as exc:
            log.info("join refused: %s", exc.reason)
            return int(AvrsError.MEMBER_SECURITY_ISSUE), exc.reason

    def _apply(self, event: ClusterRequestReceived, now: float) -> tuple[int, str | None]:
        op, signer = event.op, event.signer
        if event.cluster_id is not None and event.cluster_id != self.cluster_id:
            return int(AvrsError.CLUSTER_NOT_FOUND), "this node serves another cluster"
        handler = _HANDLERS.get(op)
        if handler is None or signer is None:
            return int(AvrsError.CLUSTER_WRONG_REQUEST), "not served by this node"
        return handler(self, signer, event, now)

    def _join(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        raw_token = event.args.get(CredentialArg.TOKEN)
        raw_cert = event.args.get(CredentialArg.CERTIFICATE)
        if raw_token is None and raw_cert is None:
            self.add_pending(signer)
            return int(AvrsError.SUCCESS), "pending approval"
        token = None
        if raw_token is not None:
            if len(raw_token) > MAX_TOKEN_SIZE:
                raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "token too long")
            token = raw_token.rstrip(b"\0").decode("ascii", "replace")
        if raw_cert is not None and len(raw_cert) > MAX_CERTIFICATE_SIZE:
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "certificate too long")
        membership = self.check_credentials(signer, token=token, certificate=raw_cert, now=now)
        self.add_member(signer, membership)
        log.info(
            "member %s joined %r with roles 0x%04x",
            node_address_of(signer),
            self.name,
            int(membership.roles),
        )
        return int(AvrsError.SUCCESS), None

    def _approve(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        member = event.args.require(ClusterArg.MEMBER)
        role = event.args.uint(ClusterArg.ROLE, 2, required=False)
        self.add_member(member, Membership(Role(role) if role else Role.CLIENT))
        return int(AvrsError.SUCCESS), None

    def _deny(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        member = event.args.require(ClusterArg.MEMBER)
        info = self.info
        self._put(replace(info, pending=info.pending - {member}))
        return int(AvrsError.SUCCESS), None

    def _remove(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        self.remove_member(event.args.require(ClusterArg.MEMBER))
        return int(AvrsError.SUCCESS), None

    def _assign(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        member = event.args.require(ClusterArg.MEMBER)
        role = event.args.uint(ClusterArg.ROLE, 2)
        info = self.info
        members = dict(info.members)
        members[member] = Role(role or 0)
        self._put(replace(info, members=members))
        return int(AvrsError.SUCCESS), None

    def _content_add(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        args = event.args
        content_id = args.require(ClusterArg.CONTENT_ID)
        existing = self.info.contents.get(content_id)
        if existing is not None and existing.owner != signer:
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "content id taken by another owner")
        flows = args.text(ClusterArg.CONTENT_FLOWS, 32) or ""
        title = args.text(ClusterArg.CONTENT_TITLE, 255, required=False) or ""
        codecs = tuple(
            data[1:].rstrip(b"\0").decode("ascii")
            for data in sorted(args.all(ClusterArg.CONTENT_FLOW_CODEC), key=lambda d: d[0])
        )
        self.put_content(ContentInfo(content_id, signer, flows, codecs, title))
        return int(AvrsError.SUCCESS), None

    def _content_del(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        self.remove_content(event.args.require(ClusterArg.CONTENT_ID))
        return int(AvrsError.SUCCESS), None


_Handler = Callable[
    [ClusterDirectory, bytes, ClusterRequestReceived, float], tuple[int, str | None]
]

_HANDLERS: Final[dict[int, _Handler]] = {
    ClusterOp.MEMBER_REQUEST_ADD: ClusterDirectory._join,
    ClusterOp.MEMBER_REQUEST_APPROVE: ClusterDirectory._approve,
    ClusterOp.MEMBER_REQUEST_DEL: ClusterDirectory._deny,
    ClusterOp.MEMBER_REMOVE: ClusterDirectory._remove,
    ClusterOp.ROLE_ASSIGN: ClusterDirectory._assign,
    ClusterOp.CONTENT_ADD: ClusterDirectory._content_add,
    ClusterOp.CONTENT_DEL: ClusterDirectory._content_del,
}


class GrantedView:
    """The :class:`~dapsdk.avrs.directory.ClusterView` of one connection: the directory as the
    connection's session identity sees it (see :meth:`ClusterDirectory.visible_to`)."""

    __slots__ = ("_cache", "_directory", "_identity")

    def __init__(self, directory: ClusterDirectory, identity: Callable[[], bytes | None]) -> None:
        self._directory = directory
        self._identity = identity
        self._cache: tuple[int, bytes | None, ClusterInfo] | None = None

    def cluster(self, cluster_id: bytes) -> ClusterInfo | None:
        directory = self._directory
        if cluster_id != directory.cluster_id:
            return directory.view.cluster(cluster_id)
        identity = self._identity()
        cached = self._cache
        if cached is not None and cached[0] == directory.version and cached[1] == identity:
            return cached[2]
        info = directory.visible_to(identity)
        self._cache = (directory.version, identity, info)
        return info
