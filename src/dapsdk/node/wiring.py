"""The composition root: a :class:`NodeConfig` becomes a running AVRS node.

:func:`build_node` loads the credentials (identity, certificate, verifiers), builds a
:class:`~dapsdk.runtime.node.StreamNode` whose handshake checks peer certificates against the
cluster CA, the node's :class:`~dapsdk.services.avrs_cluster.ClusterDirectory` and the
:class:`~dapsdk.services.avrs_channels.AvrsService` on its channels. :meth:`AvrsNode.start` listens
on ``[avrs] listen`` (or the role's default). This is the only module that picks implementations
(today: the embedded in-memory cluster directory).

Peer policy: with ``ca_certificate_file`` every certificate a peer presents must be valid for the
cluster, and a peer whose certificate is valid becomes a member with the certificate's roles. A
node that also has ``token_issuers`` accepts peers *without* a certificate (viewers with an access
token); they are members only once a token they present verifies.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from dapsdk.avrs.callbacks import ContentCallbacks
from dapsdk.avrs.config import AvrsConfig
from dapsdk.avrs.constants import Role
from dapsdk.avrs.directory import ContentInfo
from dapsdk.avrs.signing import AvrsSigner, SignatureAlgorithm, identity_of
from dapsdk.gateway.app import Gateway
from dapsdk.runtime.endpoint import Endpoint
from dapsdk.runtime.http_service import HttpRequest, HttpResponse, HttpService
from dapsdk.runtime.node import Listener, StreamNode
from dapsdk.runtime.ws import set_tls
from dapsdk.services.auth import (
    CertificateInfo,
    describe_certificate,
    format_roles,
    parse_certificate,
)
from dapsdk.services.autoscale import AutoScaler
from dapsdk.services.avrs_admin import TotpSecondFactor
from dapsdk.services.avrs_channels import AvrsService
from dapsdk.services.avrs_client import AvrsClient
from dapsdk.services.avrs_cluster import ClusterDirectory, node_address_of
from dapsdk.services.balancer import Balancer
from dapsdk.services.cluster_requests import ClusterRequests
from dapsdk.services.cluster_sync import ClusterSync, LocalNode
from dapsdk.services.media.bridge import MediaBridge
from dapsdk.services.media.hub import HubConfig, LiveContent, MediaHub
from dapsdk.services.media.ingest import IngestPolicy, IngestService, format_policy
from dapsdk.services.media.store import VodStore
from dapsdk.services.media.transcode import parse_ladder
from dapsdk.services.member_sources import Membership, Source
from dapsdk.services.membership import RecordVerifier
from dapsdk.services.registry import NodeRecord, Registry
from dapsdk.services.registry.memory import MemoryRegistry
from dapsdk.services.registry.redis import RedisRegistry
from dapsdk.stream.config import PeerIdentity, PeerVerifier
from dapsdk.stream.errors import DapError
from dapsdk.stream.identity import NodeAddress, NodeIdentity

from .config import DEFAULT_RTMP, ConfigError, NodeConfig, key_error, tls_server_context
from .credentials import NodeCredentials, load_node_credentials
from .debug import set_avrs_debug
from .session_log import SessionLog

log = logging.getLogger("dapsdk.avrs.node")

_ALGORITHMS = {"ed25519": SignatureAlgorithm.ED25519, "ml-dsa-65": SignatureAlgorithm.ML_DSA_65}


@dataclass(slots=True)
class AvrsNode:
    """A node built from its configuration: stream node, cluster directory, AVRS service."""

    config: NodeConfig
    credentials: NodeCredentials
    stream_node: StreamNode
    directory: ClusterDirectory
    service: AvrsService
    http: HttpService | None = None
    """HTTP over the SERVICE channel: peers call this node's API (``/api/v1/status``) through
    their authenticated stream (``await stream.http_request("GET", "/api/v1/status")``)."""
    hub: MediaHub = field(default_factory=MediaHub)
    """The in-process media API (docs/architecture.md "Media hub")."""
    media: MediaBridge | None = None
    sync: ClusterSync | None = None
    """Keeps the directory and the cluster registry (memory or Redis) in step."""
    requests: ClusterRequests | None = None
    """Answers the cluster requests that read or change shared state (and balances)."""
    listeners: list[Listener] = field(default_factory=list)
    started: bool = False
    ingest: IngestService | None = None
    """RTMP ingest into :attr:`hub` (nodes whose roles include host or server)."""
    announcements: list[tuple[str, str]] = field(default_factory=list)
    """``(label, url)`` of further services a user needs (RTMP ingest, HTTP gateway): services
    composed onto the node append theirs; ``avrs node`` prints each as ``label url``."""
    _join_task: asyncio.Future[None] | None = None
    gateway: Gateway | None = None
    """The HTTP gateway (HLS, REST, metrics, pages, ``/ws``) once :meth:`start_gateway` ran."""

    @property
    def identity(self) -> NodeIdentity:
        return self.credentials.identity

    @property
    def address(self) -> NodeAddress:
        return self.identity.address

    @property
    def role(self) -> Role:
        return Role(int(self.config.avrs.role) & 0xFFFF)

    @property
    def signer(self) -> AvrsSigner:
        """The node identity as an AVRS request signer (same key, same identity hash)."""
        return AvrsSigner(self.identity.private_key)

    @property
    def urls(self) -> list[str]:
        """Bound listener URLs with ``?node=`` pinning this node's identity."""
        return [listener.url for listener in self.listeners]

    async def start(self) -> None:
        """Start the stream node and listen on the configured endpoints.

        The running loop's default executor becomes a pool of ``thread_pool_size`` threads (the
        node's blocking work runs there: ``loop.run_in_executor(None, ...)``); ``wss://``
        listeners serve ``tls_certificate_file``."""
        if self.started:
            return
        avrs = self.config.avrs
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=avrs.thread_pool_size, thread_name_prefix="avrs-worker")
        )
        if avrs.tls_listen:
            set_tls(server=tls_server_context(avrs))
        await self.stream_node.start()
        try:
            for endpoint in self.config.avrs.listen_endpoints:
                self.listeners.append(await self.stream_node.listen(endpoint))
        except BaseException:
            await self.stream_node.close()
            raise
        if self.sync is not None:
            try:
                await self.sync.start()
            except BaseException:
                await self.sync.close()
                await self.stream_node.close()
                self.listeners.clear()
                raise
        if self.ingest is not None:
            try:
                await self._start_rtmp(self.ingest)
            except BaseException:
                await self.close()
                raise
        self.started = True
        if self._joins_host():
            self._join_task = asyncio.ensure_future(self._join_host())
        for listener in self.listeners:
            log.info("AVRS node %s listening on %s", self.address, listener.url)

    async def _start_rtmp(self, ingest: IngestService) -> None:
        """Listen on ``rtmp_listen``. The default address (127.0.0.1:1935) is best effort: when
        it is taken the node runs without RTMP and says so; an address set in the
        configuration must be free (OSError)."""
        where = self.config.avrs.rtmp_listen
        assert where is not None
        try:
            url = await ingest.start(where.host, where.port)
        except OSError as exc:
            if where != DEFAULT_RTMP:
                raise OSError(exc.errno, f"RTMP ingest on {where}: {exc.strerror}") from None
            log.warning("RTMP ingest not started: %s is in use (%s)", where, exc.strerror)
            self.ingest = None
            return
        self.announcements.append(("rtmp", f"{url}/NAME"))
        log.info("RTMP ingest on %s/NAME", url)

    async def wait_joined(self) -> None:
        """Wait until the join at the host that :meth:`start` began (server and balancer roles)
        is answered, so that the host's signed membership record exists before the node acts."""
        if self._join_task is not None:
            await asyncio.shield(self._join_task)

    def _joins_host(self) -> bool:
        avrs = self.config.avrs
        return (
            self.sync is not None
            and self.sync.registry.kind != "memory"
            and self.sync.replicates_membership
            and not self.sync.signs_membership
            and self.credentials.certificate is not None
            and bool(avrs.role & (Role.SERVER | Role.BALANCER))
            and avrs.host_address is not None
        )

    async def _join_host(self) -> None:
        """A server or balancer with a CA certificate and a shared registry asks the host to
        admit it, so that the host signs its membership record (balancers only send clients to
        verified servers). The request needs no session: none is opened (or closed) here, so an
        application's own session of the same identity is not disturbed."""
        cert = self.credentials.certificate_der
        try:
            client = await self.connect_client(self.config.avrs.host_address)
            try:
                reply = await client.join(self.directory.cluster_id, certificate=cert)
                log.info("join at the host: %s", reply.token)
            finally:
                await client.stream.close()
        except (OSError, TimeoutError, ConnectionError, DapError) as exc:
            log.warning("could not join at the host %s: %s", self.config.avrs.host_address, exc)

    async def start_gateway(
        self, host: str | None = None, port: int | None = None, **options: Any
    ) -> Gateway:
        """Serve this node's gateway on ``host:port`` (default ``[avrs] http_listen``,
        127.0.0.1:8080; port 0: a free port); ``options`` go to
        :class:`~dapsdk.gateway.app.Gateway` (catalog, node_lister, vod_root, timings)."""
        if self.gateway is None:
            listen = self.config.avrs.http_listen
            if host is None or port is None:
                if listen is None:
                    raise ValueError(f"{self.config.source}: http_listen is not set")
                host = listen.host if host is None else host
                port = listen.port if port is None else port
            gateway = Gateway(self, **options)
            await gateway.start(host, port)
            self.gateway = gateway
        return self.gateway

    async def close(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()
            self.gateway = None
        if self.ingest is not None:
            await self.ingest.close()
        if self.media is not None:
            await self.media.close()
        if self._join_task is not None:
            self._join_task.cancel()
            self._join_task = None
        if self.sync is not None and self.sync.started:
            await self.sync.close()
        if self.requests is not None and self.requests.autoscaler is not None:
            await self.requests.autoscaler.close()
        await self.service.close()
        await self.stream_node.close()
        self.listeners.clear()
        self.started = False

    async def __aenter__(self) -> AvrsNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def upstream(self) -> Endpoint:
        """Where this node's clients go: ``host_address``, else ``balancer_address``."""
        endpoint = self.config.avrs.host_address or self.config.avrs.balancer_address
        if endpoint is None:
            raise ValueError(f"{self.config.source}: neither host_address nor balancer_address")
        return endpoint

    async def connect_client(
        self, target: Endpoint | str | None = None, *, signer: AvrsSigner | None = None
    ) -> AvrsClient:
        """Open a stream to ``target`` (default :meth:`upstream`) and wrap it in an AVRS client
        that signs with ``signer`` (default: this node's identity)."""
        if not self.started:
            await self.start()
        stream = await self.stream_node.connect(target or self.upstream())
        return AvrsClient(stream, signer or self.signer)


def _peer_verifier(
    credentials: NodeCredentials, directory: ClusterDirectory
) -> PeerVerifier | None:
    verifier = credentials.certificate_verifier
    if verifier is None:
        return None

    def remember(peer: PeerIdentity, info: CertificateInfo) -> None:
        # The roles live while a stream of this identity presents this certificate and it stays
        # valid and unrevoked (ClusterDirectory.sweep); a removed member gets none back this way.
        identity = identity_of(peer.public_key)
        if info.cluster_id in (None, directory.name) and peer.certificate is not None:
            if directory.is_removed(identity):
                return
            roles = Role(int(info.roles) & 0xFFFF) or Role.CLIENT
            directory.add_member(
                identity,
                Membership(
                    roles,
                    source=Source.HANDSHAKE,
                    expires_at=info.not_after,
                    certificate=parse_certificate(peer.certificate),
                ),
            )

    strict = credentials.peer_verifier(time.time, remember)
    assert strict is not None
    if credentials.token_verifier is None:
        return strict

    def verify(peer: PeerIdentity) -> None:
        if peer.certificate is None:
            return  # a viewer: becomes a member only with a verified access token
        strict(peer)

    return verify


def _autoscaler(config: NodeConfig) -> AutoScaler | None:
    """The balancer's scaling signal, when thresholds are configured (refused elsewhere)."""
    avrs = config.avrs
    thresholds = avrs.scale_up_sessions is not None or avrs.scale_down_sessions is not None
    actions = avrs.scale_command is not None or avrs.scale_webhook is not None

    def refuse(message: str, key: str) -> ConfigError:
        return key_error(config, key, message)

    if not thresholds and not actions:
        return None
    if not thresholds:
        raise refuse("scale_command/scale_webhook need scale_up_sessions or scale_down_sessions",
                     "scale_command")  # fmt: skip
    if not actions:
        raise refuse("scale_up_sessions/scale_down_sessions need scale_command or scale_webhook",
                     "scale_up_sessions")  # fmt: skip
    if not avrs.role & Role.BALANCER:
        raise refuse("only a node with the balancer role emits scaling signals", "scale_command")
    if (
        avrs.scale_up_sessions is not None
        and avrs.scale_down_sessions is not None
        and avrs.scale_down_sessions >= avrs.scale_up_sessions
    ):
        raise refuse("scale_down_sessions must be below scale_up_sessions", "scale_down_sessions")
    return AutoScaler(
        up=avrs.scale_up_sessions,
        down=avrs.scale_down_sessions,
        command=avrs.scale_command,
        webhook=avrs.scale_webhook,
        cooldown=avrs.scale_cooldown,
    )


def _registry(config: NodeConfig, registry: Registry | None) -> Registry:
    """The one place that picks the registry backend."""
    if registry is not None:
        return registry
    if config.avrs.redis_url:
        if config.avrs.ca_certificate_file is None:
            raise key_error(
                config,
                "redis_url",
                "needs ca_certificate_file: membership records read from Redis are checked "
                "against the cluster CA",
            )
        return RedisRegistry(config.avrs.redis_url, config.avrs.cluster_id)
    return MemoryRegistry()


def _host_certificate(config: NodeConfig, credentials: NodeCredentials) -> bytes | None:
    """This node's certificate when it may sign membership records (role and certificate HOST)."""
    cert = credentials.certificate
    if cert is None or not config.avrs.role & Role.HOST:
        return None
    if not int(describe_certificate(cert).roles) & Role.HOST:
        return None
    return credentials.certificate_der


def _compose_cluster(
    config: NodeConfig,
    credentials: NodeCredentials,
    directory: ClusterDirectory,
    service: AvrsService,
    stream_node: StreamNode,
    registry: Registry | None,
    listeners: list[Listener],
) -> tuple[ClusterSync, ClusterRequests]:
    avrs = config.avrs
    local = LocalNode(
        address=str(credentials.identity.address),
        roles=Role(int(avrs.role) & 0xFFFF),
        region=avrs.region,
        urls=lambda: tuple(listener.url for listener in listeners),
        sessions=lambda: len(service.sessions),
        bytes_sent=lambda: stream_node.get_stats().bytes_sent,
    )
    host_certificate = _host_certificate(config, credentials)
    if host_certificate is not None and credentials.certificate is not None:
        own_roles = Role(int(describe_certificate(credentials.certificate).roles) & 0xFFFF)
        directory.add_member(identity_of(credentials.identity.public_key), Membership(own_roles))
    verifier = (
        RecordVerifier(avrs.cluster_id, credentials.certificate_verifier)
        if credentials.certificate_verifier is not None
        else None
    )
    sync = ClusterSync(
        directory,
        _registry(config, registry),
        local,
        signer=AvrsSigner(credentials.identity.private_key),
        host_certificate=host_certificate,
        verifier=verifier,
        heartbeat_interval=avrs.heartbeat_interval,
    )

    def allowed(node: NodeRecord) -> bool:
        """Only verified members with the SERVER role get clients: a node record written into
        the registry by someone else is not enough."""
        if not sync.replicates_membership:
            return True
        try:
            identity = bytes.fromhex(node.identity)
        except ValueError:
            return False
        if len(identity) != 32 or str(node_address_of(identity)) != node.address:
            return False
        return bool(directory.info.members.get(identity, Role.NONE) & Role.SERVER)

    balancer: Balancer[int] = Balancer(lambda: sync.state, avrs.region, allowed)
    requests = ClusterRequests(
        directory,
        sync,
        balancer,
        local.roles,
        subscribers=lambda: list(service.bindings.values()),
    )
    directory.observers.append(requests.changed)
    if local.roles & Role.BALANCER:
        sync.refreshed.append(requests.rebalance)
    requests.autoscaler = _autoscaler(config)
    if requests.autoscaler is not None:
        scaler = requests.autoscaler
        sync.refreshed.append(lambda: scaler.check(sync.state))
    service.requests = requests
    return sync, requests


def build_node(
    config: NodeConfig,
    *,
    now: float | None = None,
    content_callbacks: ContentCallbacks | None = None,
    avrs_config: AvrsConfig | None = None,
    register_channels: bool = True,
    registry: Registry | None = None,
) -> AvrsNode:
    """Build (not start) the node ``config`` describes. Raises ``ConfigError`` for bad security
    files. ``register_channels=False`` leaves the AVRS channels for ``avrs_ch_init`` to register.
    ``registry`` shares a registry between nodes of one process (default: ``redis_url``'s Redis,
    else an embedded one of this node's own)."""
    if config.avrs.debug_more:
        set_avrs_debug(True)
    credentials = load_node_credentials(config, now=time.time() if now is None else now)
    identity = credentials.identity
    directory = ClusterDirectory(
        config.avrs.cluster_id,
        identity_of(identity.public_key),
        token_verifier=credentials.token_verifier,
        certificate_verifier=credentials.certificate_verifier,
        algorithm=_ALGORITHMS[config.avrs.signature_algorithm],
        region=config.avrs.region or None,
    )
    avrs = avrs_config or AvrsConfig(resume_timeout=config.avrs.reconnect_timeout)
    stream_config = config.stream_config(
        certificate=credentials.certificate_der,
        peer_verifier=_peer_verifier(credentials, directory),
    )
    stream_node = StreamNode(
        identity,
        stream_config,
        max_connections=config.avrs.max_connections,
        accept_unknown_channels=False,
    )
    admin = credentials.admin
    service = AvrsService(
        directory,
        avrs,
        content_callbacks=content_callbacks,
        second_factor=(
            None if admin is None else TotpSecondFactor(admin, config.avrs.totp_secret_file)
        ),
    )
    if register_channels:
        service.register(stream_node)
    SessionLog(service).install()
    own_roles = Role(int(config.avrs.role) & 0xFFFF)

    def privileged(peer: PeerIdentity) -> bool:
        """Full status for the node itself and for members holding host or operator."""
        if peer.address == identity.address:
            return True
        roles = directory.info.members.get(identity_of(peer.public_key), 0)
        return bool(int(roles) & (Role.HOST | Role.OPERATOR))

    def public() -> dict[str, object]:
        return {
            "version": _version(),
            "roles": format_roles(own_roles),
            "load": {
                "streams": len(stream_node.streams),
                "max_connections": config.avrs.max_connections,
            },
        }

    http = HttpService(stream_node, privileged=privileged, public=public).install()
    hub = MediaHub(HubConfig(max_bitrate=config.avrs.max_bitrate))
    hub.listeners.append(_directory_follower(directory))
    store = None if config.avrs.data_dir is None else VodStore(config.avrs.data_dir / "vod")
    media = MediaBridge(service, hub, vod=store)
    for item in [] if store is None else store.items():
        info = item.info
        directory.put_content(
            ContentInfo(item.content_id, item.signed.signer, info.flows(),
                        tuple(t.codec for t in info.tracks), info.title[:255])
        )  # fmt: skip
    listeners: list[Listener] = []
    sync, requests = _compose_cluster(
        config, credentials, directory, service, stream_node, registry, listeners
    )
    return AvrsNode(
        config,
        credentials,
        stream_node,
        directory,
        service,
        http,
        hub,
        media,
        sync=sync,
        requests=requests,
        listeners=listeners,
        ingest=_compose_ingest(config, credentials, hub, http),
    )


def _compose_ingest(
    config: NodeConfig, credentials: NodeCredentials, hub: MediaHub, http: HttpService
) -> IngestService | None:
    """RTMP ingest for a node whose roles include host or server and that has ``rtmp_listen``;
    its policy comes from the loopback/token rules, ``supported_formats``,
    ``adaptive_streaming`` and ``rendition_ladder``."""
    avrs = config.avrs
    if not (Role(int(avrs.role) & 0xFFFF) & (Role.HOST | Role.SERVER)) or not avrs.rtmp_listen:
        return None
    try:
        formats = format_policy(avrs.supported_formats)
    except ValueError as exc:
        raise key_error(config, "supported_formats", str(exc)) from None
    policy = IngestPolicy(
        loopback_no_credentials=avrs.loopback_no_credentials,
        token_required=avrs.token_required,
        token_verifier=credentials.token_verifier,
        formats=formats,
        adaptive=avrs.adaptive_streaming,
        ladder=parse_ladder(",".join(avrs.rendition_ladder)),
    )
    ingest = IngestService(hub, AvrsSigner(credentials.identity.private_key), policy)

    async def status(request: HttpRequest) -> HttpResponse:
        """``GET /api/v1/ingest``: RTMP publishers and live transcoders (host/operator only)."""
        if http.privileged is not None and not http.privileged(request.peer):
            return HttpResponse.from_json(403, {"error": "NOT_AUTHORIZED"})
        return HttpResponse.from_json(200, ingest.status())

    http.route("GET", "/api/v1/ingest", status)
    return ingest


def _directory_follower(directory: ClusterDirectory) -> Callable[[bytes, LiveContent | None], None]:
    """Keep the cluster's contents in step with the hub: a live content an in-process publisher
    starts is declared (owned by its signer), and a content whose publisher stopped is marked
    unavailable (new viewers get CONTENT_UNAVAILBLE until it publishes again)."""

    def follow(content_id: bytes, live: LiveContent | None) -> None:
        existing = directory.info.contents.get(content_id)
        if live is None:
            if existing is not None and existing.available:
                directory.put_content(replace(existing, available=False))
            return
        if existing is None:
            info = live.info
            directory.put_content(
                ContentInfo(content_id, live.owner, info.flows(),
                            tuple(t.codec for t in info.tracks), info.title[:255])
            )  # fmt: skip
        elif not existing.available:
            directory.put_content(replace(existing, available=True))

    return follow


def _version() -> str:
    try:
        return importlib.metadata.version("dapsdk")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
