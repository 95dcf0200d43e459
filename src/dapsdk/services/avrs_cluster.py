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
from dataclasses import replace
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dapsdk.avrs.constants import GUUID_SIZE, ClusterArg, ClusterOp, Role
from dapsdk.avrs.directory import ClusterInfo, ContentInfo, MemoryClusterView
from dapsdk.avrs.errors import AvrsError, AvrsProtocolError
from dapsdk.avrs.events import ClusterRequestReceived
from dapsdk.avrs.permissions import PATTERN_CHARS, Grants
from dapsdk.avrs.signing import SignatureAlgorithm, identity_of
from dapsdk.stream.identity import NodeAddress

from .auth import (
    AuthError,
    CertificateVerifier,
    TokenVerifier,
    grantable_roles,
    parse_certificate,
)
from .member_sources import MAX_REMOVED, AttributeRefused, Source, check_attributes
from .member_sources import Membership as Membership  # re-exported (cluster_sync, compat)

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


class GrantRefused(CredentialRefused):
    """The token verified but its ``attr`` rules do not hold here (MEMBER_GRANT_DENIED)."""


class RoleRefused(Exception):
    """An administrator tried to act above its own role (MEMBER_ROLE_EXCEEDED)."""


def role_ceiling(roles: Role | None) -> Role:
    """The roles a member holding ``roles`` may grant, approve or act on: a host every role, an
    operator every role but HOST, anyone else none."""
    return grantable_roles(roles or Role.NONE)


def core_grants(membership: Membership) -> Grants:
    """A TOKEN source as the core's :class:`~dapsdk.avrs.permissions.Grants`."""
    grants = membership.grants
    assert grants is not None
    if grants.content_ids == "*":
        contents: frozenset[bytes] | None = None
        patterns: tuple[str, ...] = ()
    else:
        exact = [c for c in grants.content_ids if not PATTERN_CHARS & set(c)]
        patterns = tuple(c for c in grants.content_ids if PATTERN_CHARS & set(c))
        contents = frozenset(content_guuid(c) for c in exact)
    return Grants(
        publish=grants.publish,
        subscribe=grants.subscribe,
        moderate=grants.moderate,
        contents=contents,
        patterns=patterns,
        expires_at=membership.expires_at,
        attributes=dict(grants.attributes),
    )


class ClusterDirectory:
    """The node's cluster (a :class:`MemoryClusterView` with one entry) and its membership rules.

    Synchronous and clock-free: ``now`` is passed in. The node's own identity owns the cluster.
    Roles come from sources (see :mod:`.membership`) and end with them: :meth:`sweep` drops the
    sources whose credential ended, and every change that takes something away is reported in
    :attr:`ended` for the service to end the sessions concerned.
    """

    def __init__(
        self,
        name: str,
        owner: bytes,
        *,
        token_verifier: TokenVerifier | None = None,
        certificate_verifier: CertificateVerifier | None = None,
        algorithm: SignatureAlgorithm = SignatureAlgorithm.ED25519,
        region: str | None = None,
    ) -> None:
        self.name = name
        self.cluster_id = cluster_guuid(name)
        self.token_verifier = token_verifier
        self.certificate_verifier = certificate_verifier
        self.region = region
        """``[avrs] region``: evaluated against token ``attr`` region rules."""
        self.view = MemoryClusterView()
        self.view.put(ClusterInfo(self.cluster_id, owner, signature_algorithm=algorithm))
        self.version = 0
        """Incremented on every change (filtered views cache per version)."""
        self.observers: list[Callable[[ClusterInfo, ClusterInfo], None]] = []
        """Called with (old, new) after every change (the registry sync, :mod:`.cluster_sync`)."""
        self._records: dict[bytes, dict[Source, Membership]] = {}
        self._removed: dict[bytes, None] = {}
        self._checked_crl: dict[tuple[bytes, Source], object] = {}
        self._stream_id: int | None = None
        self.ended: set[bytes] = set()
        """Identities that lost a role source since the service last looked (drained by it)."""

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

    def sources(self, identity: bytes) -> dict[Source, Membership]:
        """The member's role sources (a copy)."""
        return dict(self._records.get(identity, {}))

    def is_removed(self, identity: bytes) -> bool:
        return identity in self._removed

    def add_member(self, identity: bytes, membership: Membership) -> None:
        """Add (or replace) one role source of ``identity``."""
        self._records.setdefault(identity, {})[membership.source] = membership
        self._checked_crl.pop((identity, membership.source), None)
        if membership.source in (Source.APPROVAL, Source.LOCAL):
            self._removed.pop(identity, None)
        self._recompute(identity)

    def remove_member(self, identity: bytes, *, ban: bool = False) -> None:
        """Forget every role source of ``identity``; with ``ban`` its credentials cannot make it a
        member again until an administrator approves it."""
        self._records.pop(identity, None)
        if ban:
            self._removed[identity] = None
            while len(self._removed) > MAX_REMOVED:
                del self._removed[next(iter(self._removed))]
        self.ended.add(identity)
        self._recompute(identity)

    def drop_source(self, identity: bytes, source: Source) -> bool:
        records = self._records.get(identity)
        if records is None or records.pop(source, None) is None:
            return False
        if not records:
            del self._records[identity]
        self.ended.add(identity)
        self._recompute(identity)
        return True

    def _recompute(self, identity: bytes) -> None:
        info = self.info
        members = dict(info.members)
        grants = dict(info.grants)
        records = self._records.get(identity)
        if not records:
            members.pop(identity, None)
            grants.pop(identity, None)
        else:
            roles = Role.NONE
            for membership in records.values():
                roles |= membership.roles
            members[identity] = roles or Role.CLIENT
            token = records.get(Source.TOKEN)
            if token is not None and len(records) == 1:
                grants[identity] = core_grants(token)
            else:
                grants.pop(identity, None)
        self._put(replace(info, members=members, grants=grants, pending=info.pending - {identity}))

    def add_pending(self, identity: bytes) -> None:
        info = self.info
        self._put(replace(info, pending=info.pending | {identity}))

    def put_content(self, content: ContentInfo) -> None:
        info = self.info
        contents = dict(info.contents)
        contents[content.content_id] = content
        self._put(replace(info, contents=contents))

    def set_banned(self, content_id: bytes, identity: bytes, banned: bool) -> None:
        """Moderation: ``identity`` may (not) attach, chat or vote in ``content_id``."""
        info = self.info
        current = info.banned.get(content_id, frozenset())
        updated = current | {identity} if banned else current - {identity}
        table = dict(info.banned)
        if updated:
            table[content_id] = updated
        else:
            table.pop(content_id, None)
        self._put(replace(info, banned=table))

    def remove_content(self, content_id: bytes) -> None:
        info = self.info
        contents = {k: v for k, v in info.contents.items() if k != content_id}
        self._put(replace(info, contents=contents))

    def visible_to(self, identity: bytes | None) -> ClusterInfo:
        """The cluster as ``identity`` sees it: a member whose only source is a token sees only
        the contents its grants cover (and those it owns); everyone else sees everything."""
        info = self.info
        grants = None if identity is None else info.grants.get(identity)
        if grants is None or (grants.contents is None and not grants.patterns):
            return info
        contents = {
            cid: c
            for cid, c in info.contents.items()
            if c.owner == identity or grants.covers(cid, c.name)
        }
        return replace(info, contents=contents)

    # ------------------------------------------------------------------ lifetimes

    def sweep(
        self, now: float, *, live_streams: set[int], certified: set[tuple[bytes, bytes]]
    ) -> set[bytes]:
        """Drop every role source whose credential ended (see :mod:`.membership`).

        ``live_streams``: ids of the node's open streams; ``certified``: (identity, DER) of every
        open stream whose peer presented a certificate in the handshake. Returns the identities
        that lost a source (also added to :attr:`ended`)."""
        changed: set[bytes] = set()
        for identity, records in list(self._records.items()):
            for source, membership in list(records.items()):
                if not self._alive(identity, membership, now, live_streams, certified):
                    log.info(
                        "member %s loses its %s roles 0x%04x",
                        node_address_of(identity),
                        source.value,
                        int(membership.roles),
                    )
                    self.drop_source(identity, source)
                    changed.add(identity)
        return changed

    def _alive(
        self,
        identity: bytes,
        membership: Membership,
        now: float,
        live_streams: set[int],
        certified: set[tuple[bytes, bytes]],
    ) -> bool:
        if membership.expires_at is not None and now >= membership.expires_at:
            return False
        source = membership.source
        if source is Source.TOKEN:
            verifier = self.token_verifier
            revoked = () if verifier is None else verifier.revoked_ids
            return membership.token_id is None or membership.token_id not in revoked
        cert = membership.certificate
        if cert is None:
            return True
        if source is Source.HANDSHAKE:  # noqa: SIM102
            if (identity, cert.public_bytes(Encoding.DER)) not in certified:
                return False
        return self._certificate_valid(identity, source, cert, now)

    def _certificate_valid(
        self, identity: bytes, source: Source, cert: x509.Certificate, now: float
    ) -> bool:
        verifier = self.certificate_verifier
        if verifier is None:
            return False
        try:
            crl = verifier.current_crl()
        except AuthError:
            return False  # revocation fails closed
        key = (identity, source)
        if crl is not None and self._checked_crl.get(key) is crl:
            return True
        try:
            verifier.verify(cert, now=now)
        except (AuthError, ValueError):
            return False
        self._checked_crl[key] = crl
        return True

    # ------------------------------------------------------------------ credentials

    def check_credentials(
        self,
        identity: bytes,
        *,
        token: str | None = None,
        certificate: bytes | x509.Certificate | None = None,
        now: float,
    ) -> list[Membership]:
        """Verify ``token`` and/or ``certificate`` for the signer ``identity``; raise
        :class:`CredentialRefused`. With both, both must pass; one source each."""
        if token is None and certificate is None:
            raise CredentialRefused("no credentials")
        result: list[Membership] = []
        if certificate is not None:
            result.append(self._check_certificate(identity, certificate, now))
        if token is not None:
            result.append(self._check_token(identity, token, now))
        return result

    def _check_certificate(
        self, identity: bytes, certificate: bytes | x509.Certificate, now: float
    ) -> Membership:
        if self.certificate_verifier is None:
            raise CredentialRefused("this node has no ca_certificate_file to check certificates")
        try:
            info = self.certificate_verifier.verify(certificate, now=now)
            cert = parse_certificate(certificate)
        except (AuthError, ValueError) as exc:
            raise CredentialRefused(str(exc)) from None
        if info.public_key is None or identity_of(info.public_key) != identity:
            raise CredentialRefused("certificate does not bind the key that signed the request")
        if info.cluster_id is not None and info.cluster_id != self.name:
            raise CredentialRefused(f"certificate is for cluster {info.cluster_id!r}")
        return Membership(
            Role(int(info.roles) & 0xFFFF) or Role.CLIENT,
            source=Source.CERTIFICATE,
            expires_at=info.not_after,
            certificate=cert,
        )

    def _check_token(self, identity: bytes, token: str, now: float) -> Membership:
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
        grants = verified.grants
        if not (grants.subscribe or grants.publish or grants.moderate):
            raise CredentialRefused("token grants neither subscribe, publish nor moderate")
        try:
            check_attributes(grants.attributes, region=self.region)
        except AttributeRefused as exc:
            raise GrantRefused(str(exc)) from None
        return Membership(
            Role(int(grants.role) & 0xFFFF) or Role.CLIENT,
            grants,
            verified.subject,
            source=Source.TOKEN,
            expires_at=verified.expires_at,
            token_id=verified.token_id,
        )

    # ------------------------------------------------------------------ cluster requests

    def handle_request(
        self, event: ClusterRequestReceived, now: float, *, stream_id: int | None = None
    ) -> tuple[int, str | None]:
        """Apply a verified, authorised cluster request. Returns (code, detail). ``stream_id``:
        the stream it came on (a certificate join lives as long as that stream)."""
        self._stream_id = stream_id
        try:
            return self._apply(event, now)
        except AvrsProtocolError as exc:
            return int(exc.code), exc.reason
        except RoleRefused as exc:
            log.info("refused: %s", exc)
            return int(AvrsError.MEMBER_ROLE_EXCEEDED), str(exc)
        except GrantRefused as exc:
            log.info("join refused: %s", exc.reason)
            return int(AvrsError.MEMBER_GRANT_DENIED), exc.reason
        except CredentialRefused as exc:
            log.info("join refused: %s", exc.reason)
            return int(AvrsError.MEMBER_SECURITY_ISSUE), exc.reason
        finally:
            self._stream_id = None

    def _apply(self, event: ClusterRequestReceived, now: float) -> tuple[int, str | None]:
        op, signer = event.op, event.signer
        if event.cluster_id is not None and event.cluster_id != self.cluster_id:
            return int(AvrsError.CLUSTER_NOT_FOUND), "this node serves another cluster"
        handler = _HANDLERS.get(op)
        if handler is None or signer is None:
            return int(AvrsError.NOT_SUPPORTED), "not served by this node"
        return handler(self, signer, event, now)

    def _check_ceiling(self, signer: bytes, roles: Role, what: str) -> None:
        ceiling = role_ceiling(self.info.roles_of(signer))
        excess = Role(int(roles) & ~int(ceiling) & 0xFFFF)
        if excess:
            raise RoleRefused(
                f"{what}: roles 0x{int(excess):04x} are above the signer's own "
                f"(it may grant 0x{int(ceiling):04x})"
            )

    def _join(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        raw_token = event.args.get(CredentialArg.TOKEN)
        raw_cert = event.args.get(CredentialArg.CERTIFICATE)
        is_member = self.info.roles_of(signer) is not None
        if raw_token is None and raw_cert is None:
            if is_member:
                raise AvrsProtocolError(
                    AvrsError.MEMBER_ALREADY_EXISTS,
                    "already a member; a join without new credentials would reset it",
                )
            self.add_pending(signer)
            return int(AvrsError.SUCCESS), "pending approval"
        token = None
        if raw_token is not None:
            if len(raw_token) > MAX_TOKEN_SIZE:
                raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "token too long")
            token = raw_token.rstrip(b"\0").decode("ascii", "replace")
        if raw_cert is not None and len(raw_cert) > MAX_CERTIFICATE_SIZE:
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, "certificate too long")
        if self.is_removed(signer):
            raise CredentialRefused(
                "removed by an administrator; ask to join (without credentials) to be approved"
            )
        sources = self.check_credentials(signer, token=token, certificate=raw_cert, now=now)
        for membership in sources:
            self.add_member(signer, membership)
        log.info(
            "member %s joined %r with roles 0x%04x",
            node_address_of(signer),
            self.name,
            int(self.info.roles_of(signer) or 0),
        )
        return int(AvrsError.SUCCESS), None

    def _approve(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        member = event.args.require(ClusterArg.MEMBER)
        role = event.args.uint(ClusterArg.ROLE, 2, required=False)
        roles = Role(role) if role else Role.CLIENT
        if member == signer:
            raise RoleRefused("a member cannot approve its own join request")
        self._check_ceiling(signer, roles, "approve")
        self.add_member(member, Membership(roles, source=Source.APPROVAL))
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
        member = event.args.require(ClusterArg.MEMBER)
        if member == self.info.owner:
            raise RoleRefused("the cluster owner cannot be removed")
        if member != signer:
            self._check_ceiling(signer, self.info.roles_of(member) or Role.NONE, "remove")
        self.remove_member(member, ban=member != signer)
        log.info("member %s removed by %s", node_address_of(member), node_address_of(signer))
        return int(AvrsError.SUCCESS), None

    def _assign(
        self, signer: bytes, event: ClusterRequestReceived, now: float
    ) -> tuple[int, str | None]:
        member = event.args.require(ClusterArg.MEMBER)
        role = event.args.uint(ClusterArg.ROLE, 2)
        roles = Role(role or 0)
        if member == self.info.owner:
            raise RoleRefused("the cluster owner's roles cannot be changed")
        self._check_ceiling(signer, roles, "assign")
        self._check_ceiling(signer, self.info.roles_of(member) or Role.NONE, "reassign")
        if not roles:
            self.remove_member(member, ban=True)
            return int(AvrsError.SUCCESS), None
        records = self._records.setdefault(member, {})
        lost = any(m.roles & ~roles for m in records.values())
        # The assignment replaces every source the signer could have granted; credential roles
        # (certificate, token) stay until the credential ends.
        records[Source.APPROVAL] = Membership(roles, source=Source.APPROVAL)
        records.pop(Source.LOCAL, None)
        if lost:
            self.ended.add(member)
        self._recompute(member)
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
        name = args.text(ClusterArg.CONTENT_NAME, 255, required=False) or ""
        if name and content_guuid(name) != content_id:
            raise AvrsProtocolError(
                AvrsError.CONTENT_INFO_CORRUPTED, "CONTENT_NAME does not derive CONTENT_ID"
            )
        codecs = tuple(
            data[1:].rstrip(b"\0").decode("ascii")
            for data in sorted(args.all(ClusterArg.CONTENT_FLOW_CODEC), key=lambda d: d[0])
        )
        interactive = args.uint(ClusterArg.CONTENT_INTERACTIVE, 1, required=False)
        self.put_content(
            ContentInfo(
                content_id,
                signer,
                flows,
                codecs,
                title,
                name=name,
                interactive=0x07 if interactive is None else interactive & 0x07,
            )
        )
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
