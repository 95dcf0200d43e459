"""The node's INI configuration (the seed's ``avrs_config.cfg``): load, validate, and turn it into
a frozen tree of dataclasses.

Every key of the seed's ``[avrs]`` section is supported, plus keys of our own and a ``[stream]``
section that maps onto :class:`~dapsdk.stream.config.StreamConfig`. Each key is declared once, as a
dataclass field whose metadata holds its parser and its documentation: the field default is the
key's default, and the same table drives the loader, the error messages and the reference in
docs/operations.md (:func:`reference_rows`).

Errors raise :class:`ConfigError` naming the file, section, key, bad value and what is allowed::

    avrs_config.cfg [avrs] max_connections = 'lots': must be an integer between 1 and 1000000
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from dapsdk.runtime.endpoint import Endpoint
from dapsdk.services.auth.roles import Role, format_roles
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.constants import SUPPORTED_FEATURES, Feature
from dapsdk.stream.errors import DapError

from .values import (
    Address,
    BadValue,
    Boolean,
    Choice,
    ClusterId,
    Command,
    Context,
    DirPath,
    FilePath,
    HostPort,
    HttpUrl,
    Integer,
    Ladder,
    ListenAddress,
    ListenUrls,
    Parser,
    PathList,
    RedisUrl,
    Roles,
    Seconds,
    Words,
)

#: Codecs and containers a node may declare in ``supported_formats``.
KNOWN_FORMATS: Final = (
    "h264", "h265", "hevc", "vp8", "vp9", "av1",
    "aac", "opus", "mp3", "vorbis", "flac", "pcm",
    "webm", "mp4", "mpegts", "flv", "mkv", "ogg",
)  # fmt: skip

#: Where a node listens when ``listen`` is not set and its roles serve others (loopback only:
#: serving other machines is a decision written in the file).
DEFAULT_LISTEN: Final = (Endpoint("tcp", "127.0.0.1", 8079),)
DEFAULT_RTMP: Final = HostPort("127.0.0.1", 1935)
DEFAULT_HTTP: Final = HostPort("127.0.0.1", 8080)
DEFAULT_DATA_DIR: Final = Path("avrs-data")
#: The file in ``data_dir`` that holds the node's identity key when no key file is configured.
IDENTITY_FILE_NAME: Final = "node.key"

#: Keys that parse but that the node does not act on yet: setting one in a file is refused at load
#: with "not supported yet" and the reason, never silently ignored. A helper who implements a
#: key removes its row here (and the docs' key reference is regenerated from this table).
NOT_SUPPORTED_YET: Final[Mapping[tuple[str, str], str]] = {
    ("avrs", "loopback_no_credentials"): "only false is accepted (every address then needs "
    "credentials); true, the default when the key is absent, is applied by RTMP ingest and HTTP "
    "playback, while dap_stream publishers and players need a token or certificate from every "
    "address",
    ("avrs", "token_required"): "RTMP ingest applies the default (true); dap_stream publishers "
    "and players always need a token or certificate",
}
#: The one value of a :data:`NOT_SUPPORTED_YET` key that every part of the node honours: a file
#: may set the key to it (any other value stays refused).
HONOURED_VALUES: Final[Mapping[tuple[str, str], object]] = {
    ("avrs", "loopback_no_credentials"): False,
}
_SERVING_ROLES: Final = Role.HOST | Role.SERVER | Role.BALANCER
_MIB: Final = 1024 * 1024


class ConfigError(DapError):
    """A configuration file is missing, does not parse, or holds a value that is not allowed."""

    def __init__(
        self,
        message: str,
        *,
        path: str,
        section: str | None = None,
        key: str | None = None,
        value: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.section = section
        self.key = key
        self.value = value


def _meta(parser: Parser, doc: str) -> dict[str, Any]:
    """Field metadata of a configuration key: its parser and one line of documentation."""
    return {"parser": parser, "doc": doc}


@dataclass(frozen=True, slots=True, kw_only=True)
class AvrsSection:
    """``[avrs]``: the seed's keys first, then ours."""

    role: Role = field(
        default=Role.CLIENT,
        metadata=_meta(Roles(), "Roles of this node (the u16 bitmask avrs_role_t), e.g. server"),
    )
    cluster_id: str = field(
        default="main_cluster", metadata=_meta(ClusterId(), "Cluster this node belongs to")
    )
    host_address: Endpoint | None = field(
        default=None,
        metadata=_meta(
            Address(),
            "Where the cluster host listens; required unless role includes host or "
            "balancer_address is set. `?node=XXXX::XXXX::XXXX::XXXX` pins the host's identity",
        ),
    )
    certificate_file: Path | None = field(
        default=None,
        metadata=_meta(FilePath(), "PEM certificate of this node, issued by the cluster CA"),
    )
    private_key_file: Path | None = field(
        default=None,
        metadata=_meta(
            FilePath(), "PEM Ed25519 private key of this node (the key the certificate binds)"
        ),
    )
    ca_certificate_file: Path | None = field(
        default=None,
        metadata=_meta(
            FilePath(),
            "PEM certificate of the cluster CA; peers must present certificates it issued",
        ),
    )
    max_connections: int = field(
        default=10000,
        metadata=_meta(
            Integer(1, 1_000_000),
            "Established peer streams accepted at once; beyond, ERROR CONNECTION_LIMIT",
        ),
    )
    buffer_size: int = field(
        default=65536,
        metadata=_meta(
            Integer(512, 16 * _MIB, size=True),
            "Largest packet body in bytes (default of [stream] max_packet_payload)",
        ),
    )
    thread_pool_size: int = field(
        default=8,
        metadata=_meta(
            Integer(1, 1024),
            "Worker threads of the event loop's default executor, which runs the node's blocking "
            "work (media decoding, file I/O)",
        ),
    )
    supported_formats: tuple[str, ...] = field(
        default=("h264", "aac", "webm"),
        metadata=_meta(
            Words(KNOWN_FORMATS),
            "Codecs and containers this node handles (a container stands for its codecs: mp4 = "
            "h264,aac; webm = vp9,vp8,opus). Ingested tracks in another codec are converted to the "
            "first listed codec of their kind that has an encoder; needs one video and one audio",
        ),
    )
    max_bitrate: int = field(
        default=10_000_000,
        metadata=_meta(
            Integer(1000, 100_000_000_000, unit="bits/s"),
            "Highest bitrate of one stream this node accepts or sends",
        ),
    )
    adaptive_streaming: bool = field(
        default=True,
        metadata=_meta(
            Boolean(),
            "Offer several renditions, switch by bandwidth: live ingest encodes the "
            "rendition_ladder renditions below the source height (x264 ultrafast)",
        ),
    )
    rendition_ladder: tuple[str, ...] = field(
        default=("1080p:5000k", "720p:2800k", "480p:1400k", "360p:800k"),
        metadata=_meta(
            Ladder(),
            "Renditions of adaptive streaming (height and video bitrate); only those below the "
            "source height are made",
        ),
    )
    balancer_address: Endpoint | None = field(
        default=None,
        metadata=_meta(
            Address(), "Balancer to ask for a server (clients), or to report load to (servers)"
        ),
    )
    heartbeat_interval: float = field(
        default=StreamConfig().keepalive_interval,
        metadata=_meta(
            Seconds(0, 3600),
            "Idle seconds before a keepalive PING on each stream: the default of [stream] "
            "keepalive_interval (keepalive_timeout then defaults to 3 times it)",
        ),
    )
    reconnect_timeout: float = field(
        default=60.0,
        metadata=_meta(
            Seconds(0, 86400),
            "Seconds without heartbeat before a member is considered gone; >= heartbeat_interval",
        ),
    )
    listen: tuple[Endpoint, ...] | None = field(
        default=None,
        metadata=_meta(
            ListenUrls(),
            "Where to accept dap_stream peers; unset: tcp://127.0.0.1:8079 for "
            "host/server/balancer, nothing for other roles. wss:// needs tls_certificate_file",
        ),
    )
    tls_certificate_file: Path | None = field(
        default=None,
        metadata=_meta(
            FilePath(),
            "PEM certificate (chain) served by wss:// listeners (checked at load with its key)",
        ),
    )
    tls_private_key_file: Path | None = field(
        default=None,
        metadata=_meta(FilePath(), "PEM private key of tls_certificate_file"),
    )
    data_dir: Path | None = field(
        default=DEFAULT_DATA_DIR,
        metadata=_meta(
            DirPath(),
            f"Node state directory (created on first start): the identity key "
            f"{IDENTITY_FILE_NAME} when neither identity_file nor private_key_file is set; "
            f"empty: none (a new identity on every start)",
        ),
    )
    rtmp_listen: HostPort | None = field(
        default=DEFAULT_RTMP,
        metadata=_meta(
            ListenAddress(),
            "Where RTMP ingest listens (rtmp://HOST:PORT/live/NAME); validated, bound only by a "
            "node that serves RTMP",
        ),
    )
    http_listen: HostPort | None = field(
        default=DEFAULT_HTTP,
        metadata=_meta(
            ListenAddress(),
            "Where the HTTP gateway listens; validated, bound only by a node that serves HTTP",
        ),
    )
    loopback_no_credentials: bool = field(
        default=True,
        metadata=_meta(
            Boolean(),
            "Publishers and players connecting from a loopback address need no credentials",
        ),
    )
    token_required: bool = field(
        default=True,
        metadata=_meta(
            Boolean(),
            "Publishers and players from other addresses need an access token (in the join)",
        ),
    )
    identity_file: Path | None = field(
        default=None,
        metadata=_meta(
            FilePath(),
            "PEM Ed25519 identity key (created on first start if missing); "
            "defaults to private_key_file",
        ),
    )
    crl_file: Path | None = field(
        default=None,
        metadata=_meta(
            FilePath(), "PEM revocation list of the cluster CA (re-read when it changes)"
        ),
    )
    redis_url: str | None = field(
        default=None,
        metadata=_meta(
            RedisUrl(), "Shared cluster registry for several machines; unset: embedded registry"
        ),
    )
    region: str = field(
        default="",
        metadata=_meta(
            ClusterId(),
            "Geographic region of this node; balancers prefer servers in the client's region, "
            "and access tokens whose attr.region names other regions are refused",
        ),
    )
    scale_up_sessions: int | None = field(
        default=None,
        metadata=_meta(
            Integer(1, 1_000_000),
            "Balancer: signal scale-up when live servers average more sessions than this",
        ),
    )
    scale_down_sessions: int | None = field(
        default=None,
        metadata=_meta(
            Integer(0, 1_000_000),
            "Balancer: signal scale-down when live servers average fewer sessions than this",
        ),
    )
    scale_command: tuple[str, ...] | None = field(
        default=None,
        metadata=_meta(
            Command(),
            "Balancer: command run on a scaling signal (AVRS_SCALE=up|down, AVRS_SERVERS, "
            "AVRS_MEAN_SESSIONS in its environment)",
        ),
    )
    scale_webhook: str | None = field(
        default=None,
        metadata=_meta(HttpUrl(), "Balancer: URL a scaling signal is POSTed to (JSON)"),
    )
    scale_cooldown: float = field(
        default=30.0,
        metadata=_meta(Seconds(0, 86400, low_inclusive=True), "Seconds between scaling signals"),
    )
    signature_algorithm: str = field(
        default="ed25519",
        metadata=_meta(Choice("ed25519", "ml-dsa-65"), "Signature of AVRS requests (TSD SIGN)"),
    )
    token_issuers: tuple[Path, ...] = field(
        default=(),
        metadata=_meta(
            PathList(),
            "Certificates of hosts/operators whose access tokens are accepted (needs "
            "ca_certificate_file)",
        ),
    )
    token_leeway: float = field(
        default=30.0,
        metadata=_meta(
            Seconds(0, 600, low_inclusive=True), "Clock skew in seconds tolerated on token times"
        ),
    )
    totp_secret_file: Path | None = field(
        default=None,
        metadata=_meta(
            FilePath(),
            "Administrators' TOTP secrets (`avrs token totp-enroll`); without it the node refuses "
            "every administrative request (approve, remove, roles, change, moderation)",
        ),
    )
    debug_more: bool = field(
        default=False,
        metadata=_meta(
            Boolean(), "Extended logging (the seed's g_avrs_debug_more): dapsdk.avrs at DEBUG"
        ),
    )

    @property
    def identity_key_file(self) -> Path | None:
        """The node's identity key: ``identity_file``, else ``private_key_file``, else
        ``data_dir/node.key``; None only when all three are unset (an ephemeral identity)."""
        if self.identity_file or self.private_key_file:
            return self.identity_file or self.private_key_file
        return None if self.data_dir is None else self.data_dir / IDENTITY_FILE_NAME

    @property
    def tls_listen(self) -> bool:
        """Whether a listener needs the TLS certificate (``wss://``)."""
        return any(endpoint.scheme == "wss" for endpoint in self.listen_endpoints)

    @property
    def listen_endpoints(self) -> tuple[Endpoint, ...]:
        """``listen``, or the role-dependent default when it is not set."""
        if self.listen is not None:
            return self.listen
        return DEFAULT_LISTEN if self.role & _SERVING_ROLES else ()


_SC: Final = StreamConfig()
_STREAM_SIZE: Final = Integer(0, 1 << 40, size=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSection:
    """``[stream]``: the transport limits of :class:`StreamConfig` (its defaults are ours)."""

    max_packet_payload: int = field(
        default=_SC.max_packet_payload,
        metadata=_meta(
            Integer(512, 16 * _MIB, size=True),
            "Largest plaintext packet body; unset: [avrs] buffer_size",
        ),
    )
    max_message_size: int = field(
        default=_SC.max_message_size,
        metadata=_meta(_STREAM_SIZE, "Largest reassembled message; >= max_packet_payload"),
    )
    handshake_timeout: float = field(
        default=_SC.handshake_timeout,
        metadata=_meta(Seconds(0, 600), "Seconds from connection to a completed handshake"),
    )
    keepalive_interval: float = field(
        default=_SC.keepalive_interval,
        metadata=_meta(Seconds(0, 3600), "Idle seconds before a KEEPALIVE is sent"),
    )
    keepalive_timeout: float = field(
        default=_SC.keepalive_timeout,
        metadata=_meta(
            Seconds(0, 3600), "Seconds of silence after which a peer is dead; > keepalive_interval"
        ),
    )
    initial_channel_window: int = field(
        default=_SC.initial_channel_window,
        metadata=_meta(_STREAM_SIZE, "Initial per-channel flow-control credit"),
    )
    initial_connection_window: int = field(
        default=_SC.initial_connection_window,
        metadata=_meta(_STREAM_SIZE, "Initial per-connection credit"),
    )
    max_channel_window: int = field(
        default=_SC.max_channel_window,
        metadata=_meta(_STREAM_SIZE, "Largest channel window after growth"),
    )
    connection_memory_budget: int = field(
        default=_SC.connection_memory_budget,
        metadata=_meta(_STREAM_SIZE, "Upper bound of one peer's inbound buffering"),
    )
    max_channels: int = field(
        default=_SC.max_channels, metadata=_meta(Integer(1, 65536), "Open channels per stream")
    )
    send_high_water: int = field(
        default=_SC.send_high_water,
        metadata=_meta(_STREAM_SIZE, "Queued bytes per channel at which writers wait"),
    )
    send_low_water: int = field(
        default=_SC.send_low_water,
        metadata=_meta(_STREAM_SIZE, "Queued bytes below which writers resume"),
    )
    rekey_after_packets: int = field(
        default=_SC.rekey_after_packets,
        metadata=_meta(Integer(1, 1 << 32), "Packets sealed with one key before rekey"),
    )
    compression: tuple[str, ...] = field(
        default=tuple(
            name
            for name, bit in (("zstd", Feature.COMPRESSION_ZSTD), ("lz4", Feature.COMPRESSION_LZ4))
            if SUPPORTED_FEATURES & bit
        ),
        metadata=_meta(
            Words(("zstd", "lz4"), min_items=0),
            "Compression offered to peers (empty: none; media does not compress)",
        ),
    )

    def features(self) -> Feature:
        """The :class:`Feature` set to offer, with compression as configured."""
        wanted = {"zstd": Feature.COMPRESSION_ZSTD, "lz4": Feature.COMPRESSION_LZ4}
        features = SUPPORTED_FEATURES & ~(Feature.COMPRESSION_ZSTD | Feature.COMPRESSION_LZ4)
        for name in self.compression:
            features |= wanted[name] & SUPPORTED_FEATURES
        return Feature(features)


#: Stream section keys copied one to one into :class:`StreamConfig`.
_STREAM_FIELDS: Final = tuple(
    f.name for f in dataclasses.fields(StreamSection) if f.name != "compression"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    avrs: AvrsSection = field(default_factory=AvrsSection)
    stream: StreamSection = field(default_factory=StreamSection)
    source: str = "<defaults>"
    """The file this configuration came from."""

    def stream_config(self, **overrides: Any) -> StreamConfig:
        """A :class:`StreamConfig` from ``[stream]``; ``overrides`` adds what a file cannot hold
        (``certificate``, ``peer_verifier``, ``rng``). Raises ``ValueError`` on inconsistent limits."""
        values: dict[str, Any] = {name: getattr(self.stream, name) for name in _STREAM_FIELDS}
        values["features"] = self.stream.features()
        values.update(overrides)
        return StreamConfig(**values)


SECTIONS: Final[Mapping[str, type[AvrsSection] | type[StreamSection]]] = {
    "avrs": AvrsSection,
    "stream": StreamSection,
}


#: How the key reference marks a key of :data:`NOT_SUPPORTED_YET` (tests look for it in the docs).
NOT_SUPPORTED_MARK: Final = "**not supported yet**"


def reference_rows() -> Iterator[tuple[str, str, str, str, str, str]]:
    """``(section, key, type, default, allowed, meaning)`` for every key, in declaration order.
    The meaning of a key the node refuses starts with :data:`NOT_SUPPORTED_MARK` and the reason."""
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            parser: Parser = f.metadata["parser"]
            meaning = f.metadata["doc"]
            why = NOT_SUPPORTED_YET.get((section, f.name))
            if why is not None:
                meaning = f"{NOT_SUPPORTED_MARK} (refused at load: {why}). {meaning}"
            yield (section, f.name, parser.type_name, parser.format(f.default), parser.allowed,
                   meaning)  # fmt: skip


def load_node_config(path: str | Path, *, check_files: bool = True) -> NodeConfig:
    """Load and validate an INI file (``dap_config_load`` followed by ``avrs_plugin_init``'s
    checks; ``dapsdk.compat.dap_config_load`` only reads, as the seed's does).

    Relative paths in it are relative to its directory. With ``check_files`` the files a key names
    must exist (``identity_file`` may be created later: only its directory must exist).
    """
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file does not exist", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read configuration file: {exc}", path=str(path)
        ) from None
    return parse_node_config(
        text, source=str(path), base_dir=target.parent, check_files=check_files
    )


#: Short name of the loader.
load_config = load_node_config


def parse_node_config(
    text: str,
    *,
    source: str = "<string>",
    base_dir: str | Path = ".",
    check_files: bool = True,
) -> NodeConfig:
    """Parse and validate configuration ``text`` (see :func:`load_node_config`)."""
    ini = _read_ini(text, source)
    ctx = Context(base_dir=Path(base_dir))
    unknown = [name for name in ini.sections() if name not in SECTIONS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown section [{unknown[0]}]"
            f"{_suggest(unknown[0], SECTIONS, what='sections')}",
            path=source,
            section=unknown[0],
        )
    if not ini.has_section("avrs"):
        raise ConfigError(f"{source}: no [avrs] section", path=source, section="avrs")
    avrs_values = _section_values(ini, "avrs", AvrsSection, ctx, source)
    stream_values = _section_values(ini, "stream", StreamSection, ctx, source)
    if "data_dir" not in avrs_values:
        avrs_values["data_dir"] = ctx.base_dir / DEFAULT_DATA_DIR
    avrs = AvrsSection(**avrs_values)
    _heartbeat_defaults(avrs, avrs_values, stream_values, source)
    if "max_packet_payload" not in stream_values:
        stream_values["max_packet_payload"] = avrs.buffer_size
    elif "buffer_size" in avrs_values and avrs.buffer_size != stream_values["max_packet_payload"]:
        raise _value_error(
            source, "stream", "max_packet_payload", str(stream_values["max_packet_payload"]),
            f"must equal [avrs] buffer_size = {avrs.buffer_size} (set only one of them)",
        )  # fmt: skip
    config = NodeConfig(avrs=avrs, stream=StreamSection(**stream_values), source=source)
    _check_avrs(config.avrs, source, ini)
    _check_stream(config, source, ini)
    if check_files:
        _check_files(config.avrs, source, ini)
    return config


def _read_ini(text: str, source: str) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(
        interpolation=None,
        default_section="\0no-defaults\0",  # a [DEFAULT] section is just an unknown section
        strict=True,
        inline_comment_prefixes=("#", ";"),
        empty_lines_in_values=False,
    )
    try:
        ini.read_string(text, source=source)
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(
            f"{source}:{exc.lineno} [{exc.section}] {exc.option} is set twice",
            path=source,
            section=exc.section,
            key=exc.option,
        ) from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(
            f"{source}:{exc.lineno} section [{exc.section}] appears twice",
            path=source,
            section=exc.section,
        ) from None
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(
            f"{source}:{exc.lineno} {exc.line.strip()!r} comes before any [section] header; "
            f"start the file with [avrs]",
            path=source,
        ) from None
    except configparser.Error as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(
            f"{source}: does not parse as INI: {' '.join(first[:3])}", path=source
        ) from None
    return ini


def _section_values(
    ini: configparser.ConfigParser,
    section: str,
    cls: type[AvrsSection] | type[StreamSection],
    ctx: Context,
    source: str,
) -> dict[str, Any]:
    if not ini.has_section(section):
        return {}
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in ini.items(section, raw=True):
        spec = known.get(key)
        if spec is None:
            raise ConfigError(
                f"{source} [{section}] unknown key {key!r}{_suggest(key, known)}",
                path=source,
                section=section,
                key=key,
                value=raw,
            )
        parser: Parser = spec.metadata["parser"]
        try:
            values[key] = parser.parse(raw, ctx)
        except BadValue as exc:
            raise _value_error(source, section, key, raw, exc.allowed) from None
        why = NOT_SUPPORTED_YET.get((section, key))
        honoured = (section, key) in HONOURED_VALUES and HONOURED_VALUES[section, key] == values[
            key
        ]
        if why is not None and not honoured:
            raise _value_error(
                source, section, key, raw, f"not supported yet ({why}); remove the key"
            )
    return values


def _suggest(name: str, known: Mapping[str, object], *, what: str = "keys") -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    names = (f"[{n}]" for n in known) if what == "sections" else iter(known)
    return f"; known {what}: {', '.join(names)}"


def _heartbeat_defaults(
    avrs: AvrsSection, avrs_values: dict[str, Any], stream_values: dict[str, Any], source: str
) -> None:
    """``[avrs] heartbeat_interval`` is the default of ``[stream] keepalive_interval`` (the PING
    interval of every stream); ``keepalive_timeout`` then defaults to three intervals."""
    if "heartbeat_interval" not in avrs_values:
        return
    if "keepalive_interval" in stream_values:
        if stream_values["keepalive_interval"] != avrs.heartbeat_interval:
            raise _value_error(
                source, "stream", "keepalive_interval", str(stream_values["keepalive_interval"]),
                f"must equal [avrs] heartbeat_interval = {avrs.heartbeat_interval:g} "
                f"(set only one of them)",
            )  # fmt: skip
        return
    stream_values["keepalive_interval"] = avrs.heartbeat_interval
    stream_values.setdefault("keepalive_timeout", 3 * avrs.heartbeat_interval)


def key_error(config: NodeConfig, key: str, problem: str, *, section: str = "avrs") -> ConfigError:
    """A :class:`ConfigError` about ``key`` of a loaded ``config``, in the loader's form
    ``FILE [SECTION] KEY = 'VALUE': PROBLEM`` (the value as it would be written in the file)."""
    cls = SECTIONS[section]
    spec = next(f for f in dataclasses.fields(cls) if f.name == key)
    parser: Parser = spec.metadata["parser"]
    value = parser.format(getattr(getattr(config, section), key))
    return _value_error(config.source, section, key, value, problem)


def _value_error(source: str, section: str, key: str, raw: str, problem: str) -> ConfigError:
    return ConfigError(
        f"{source} [{section}] {key} = {raw!r}: {problem}",
        path=source,
        section=section,
        key=key,
        value=raw,
    )


def _raw(ini: configparser.ConfigParser, section: str, key: str, fallback: str) -> str:
    return ini.get(section, key, raw=True, fallback=fallback)


def _check_avrs(avrs: AvrsSection, source: str, ini: configparser.ConfigParser) -> None:
    def missing(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source} [avrs] {key} is required {why}", path=source, section="avrs",
                           key=key)  # fmt: skip

    if not avrs.role & Role.HOST and avrs.host_address is None and avrs.balancer_address is None:
        raise missing(
            "host_address",
            f"(or balancer_address) when role does not include host "
            f"(role = {format_roles(avrs.role)!r})",
        )
    if avrs.reconnect_timeout < avrs.heartbeat_interval:
        raise _value_error(
            source, "avrs", "reconnect_timeout", _raw(ini, "avrs", "reconnect_timeout", "60"),
            f"must be >= heartbeat_interval ({avrs.heartbeat_interval:g})",
        )  # fmt: skip
    if avrs.certificate_file is not None:
        if avrs.identity_file is None and avrs.private_key_file is None:
            raise missing("private_key_file", "when certificate_file is set")
        if avrs.ca_certificate_file is None:
            raise missing("ca_certificate_file", "when certificate_file is set")
    for key in ("crl_file", "token_issuers"):
        if getattr(avrs, key) and avrs.ca_certificate_file is None:
            raise missing("ca_certificate_file", f"when {key} is set")
    if (
        avrs.identity_file is not None
        and avrs.private_key_file is not None
        and avrs.identity_file.resolve() != avrs.private_key_file.resolve()
    ):
        raise _value_error(
            source, "avrs", "identity_file", _raw(ini, "avrs", "identity_file", ""),
            f"names another file than private_key_file ({avrs.private_key_file}); the certificate "
            f"binds the identity key, so set only one of them",
        )  # fmt: skip
    tls_keys = (avrs.tls_certificate_file is not None, avrs.tls_private_key_file is not None)
    if avrs.tls_listen and not all(tls_keys):
        key = "tls_private_key_file" if tls_keys[0] else "tls_certificate_file"
        raise missing(key, "when listen has a wss:// URL")
    if any(tls_keys) and not all(tls_keys):
        key = "tls_private_key_file" if tls_keys[0] else "tls_certificate_file"
        raise missing(key, "with the other tls_* key")
    if any(tls_keys) and not avrs.tls_listen:
        key = "tls_certificate_file" if tls_keys[0] else "tls_private_key_file"
        raise _value_error(
            source, "avrs", key, _raw(ini, "avrs", key, ""),
            "is used only by wss:// listeners, and listen has none",
        )  # fmt: skip


_FIELD_RE: Final = re.compile(r"StreamConfig\.(\w+) = .*?: (must .*)$")


def _check_stream(config: NodeConfig, source: str, ini: configparser.ConfigParser) -> None:
    try:
        config.stream_config()
    except ValueError as exc:
        match = _FIELD_RE.search(str(exc))
        key = match.group(1) if match else None
        if key is not None and match is not None:
            if key == "max_packet_payload" and not ini.has_option("stream", key):
                section, raw = "avrs", _raw(ini, "avrs", "buffer_size", "")
                key = "buffer_size"
            else:
                section = "stream"
                raw = _raw(ini, "stream", key, str(getattr(config.stream, key, "")))
            problem = match.group(2)
            if not ini.has_option(section, key):
                problem += f" (this is the default; set {key} in [{section}])"
            raise _value_error(source, section, key, raw, problem) from None
        raise ConfigError(f"{source} [stream] {exc}", path=source, section="stream") from None


def _check_files(avrs: AvrsSection, source: str, ini: configparser.ConfigParser) -> None:
    def absent(key: str, path: Path, what: str) -> ConfigError:
        raw = _raw(ini, "avrs", key, str(path))
        return _value_error(source, "avrs", key, raw, f"{what} {path} does not exist")

    for key in (
        "certificate_file", "private_key_file", "ca_certificate_file", "crl_file",
        "totp_secret_file", "tls_certificate_file", "tls_private_key_file",
    ):  # fmt: skip
        path = getattr(avrs, key)
        if path is not None and not path.is_file():
            raise absent(key, path, "file")
    for path in avrs.token_issuers:
        if not path.is_file():
            raise absent("token_issuers", path, "file")
    if avrs.identity_file is not None and not avrs.identity_file.parent.is_dir():
        raise absent("identity_file", avrs.identity_file.parent, "directory")
    if avrs.data_dir is not None and avrs.data_dir.exists() and not avrs.data_dir.is_dir():
        raw = _raw(ini, "avrs", "data_dir", str(avrs.data_dir))
        raise _value_error(source, "avrs", "data_dir", raw, f"{avrs.data_dir} is not a directory")
    if avrs.tls_certificate_file is not None and avrs.tls_private_key_file is not None:
        try:
            tls_server_context(avrs)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raw = _raw(ini, "avrs", "tls_certificate_file", str(avrs.tls_certificate_file))
            raise _value_error(
                source, "avrs", "tls_certificate_file", raw,
                f"does not load with tls_private_key_file {avrs.tls_private_key_file}: {exc}",
            ) from None  # fmt: skip


def tls_server_context(avrs: AvrsSection) -> ssl.SSLContext:
    """The server TLS context of ``wss://`` listeners, from ``tls_certificate_file`` and
    ``tls_private_key_file``; raises ``ssl.SSLError``/``OSError`` when they do not load."""
    if avrs.tls_certificate_file is None or avrs.tls_private_key_file is None:
        raise ValueError("tls_certificate_file and tls_private_key_file are not set")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(avrs.tls_certificate_file, avrs.tls_private_key_file)
    return context
