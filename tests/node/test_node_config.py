"""The INI loader: the seed's file loads; every kind of bad value is refused, naming the key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dapsdk.node.config import (
    NOT_SUPPORTED_YET,
    AvrsSection,
    ConfigError,
    NodeConfig,
    load_node_config,
    parse_node_config,
    reference_rows,
)
from dapsdk.node.config_doc import render_reference
from dapsdk.node.debug import AVRS_LOGGER, avrs_debug_more, set_avrs_debug
from dapsdk.runtime.endpoint import Endpoint
from dapsdk.services.auth import Role
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.constants import Feature

#: The seed's example file, verbatim (section "Конфигурация").
SEED_CONFIG = """\
[avrs]
# Основные настройки
role = server
cluster_id = main_cluster
host_address = 192.168.1.100:8080

# Настройки безопасности
certificate_file = /etc/avrs/server.crt
private_key_file = /etc/avrs/server.key
ca_certificate_file = /etc/avrs/ca.crt

# Настройки производительности
max_connections = 10000
buffer_size = 65536
thread_pool_size = 8

# Настройки контента
supported_formats = h264,aac,webm
max_bitrate = 10000000
adaptive_streaming = true

# Настройки кластера
balancer_address = 192.168.1.101:8081
heartbeat_interval = 30
reconnect_timeout = 60
"""

BASE = "[avrs]\nrole = host\n"


def parse(text: str, **kwargs: object) -> NodeConfig:
    return parse_node_config(text, source="avrs_config.cfg", **kwargs)  # type: ignore[arg-type]


def refuse(text: str, pattern: str) -> ConfigError:
    with pytest.raises(ConfigError, match=pattern) as err:
        parse(text)
    return err.value


def _without_unsupported(text: str) -> str:
    """The file minus the keys the node refuses as not supported yet (NOT_SUPPORTED_YET)."""
    refused = {key for section, key in NOT_SUPPORTED_YET if section == "avrs"}
    return "".join(
        line for line in text.splitlines(keepends=True) if line.split("=")[0].strip() not in refused
    )


def test_seed_file_refuses_keys_the_node_does_not_act_on() -> None:
    refused = [
        line.split("=")[0].strip()
        for line in SEED_CONFIG.splitlines()
        if ("avrs", line.split("=")[0].strip()) in NOT_SUPPORTED_YET
    ]
    if refused:
        err = refuse(
            SEED_CONFIG.replace("/etc/avrs", "/nonexistent"),
            rf"avrs_config\.cfg \[avrs\] {refused[0]} = .*: not supported yet",
        )
        assert (err.section, err.key) == ("avrs", refused[0])
    else:  # every key of the seed's file is acted on
        parse(SEED_CONFIG, check_files=False)
    defaults = {(row[0], row[1]): row[3] for row in reference_rows()}
    for (section, key), why in NOT_SUPPORTED_YET.items():
        line = f"{key} = {defaults[section, key] or 'redis://localhost:6379'}\n"
        text = BASE + line if section == "avrs" else f"{BASE}[{section}]\n{line}"
        with pytest.raises(ConfigError, match=rf"\[{section}\] {key} = .*not supported yet") as e:
            parse(text)
        assert why in str(e.value) and e.value.key == key


def test_seed_file_loads_without_file_checks() -> None:
    config = parse(_without_unsupported(SEED_CONFIG), check_files=False)
    avrs = config.avrs
    assert avrs.role == Role.SERVER
    assert avrs.cluster_id == "main_cluster"
    assert avrs.host_address == Endpoint("tcp", "192.168.1.100", 8080)
    assert avrs.certificate_file == Path("/etc/avrs/server.crt")
    assert avrs.private_key_file == Path("/etc/avrs/server.key")
    assert avrs.ca_certificate_file == Path("/etc/avrs/ca.crt")
    assert (avrs.max_connections, avrs.buffer_size, avrs.thread_pool_size) == (10000, 65536, 8)
    assert avrs.balancer_address == Endpoint("tcp", "192.168.1.101", 8081)
    assert (avrs.heartbeat_interval, avrs.reconnect_timeout) == (30.0, 60.0)
    assert config.stream_config().keepalive_interval == 30.0  # the heartbeat is the keepalive
    assert config.stream_config().keepalive_timeout == 90.0
    assert avrs.listen_endpoints == (Endpoint("tcp", "127.0.0.1", 8079),)
    assert avrs.identity_key_file == Path("/etc/avrs/server.key")


def test_seed_file_checks_that_files_exist() -> None:
    refuse(
        _without_unsupported(SEED_CONFIG),
        r"avrs_config\.cfg \[avrs\] certificate_file = '/etc/avrs/server\.crt': "
        r"file /etc/avrs/server\.crt does not exist",
    )


def test_load_from_disk_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "secrets").write_text("")
    path = tmp_path / "avrs_config.cfg"
    path.write_text(BASE + "identity_file = keys/node.key\ntotp_secret_file = secrets\n")
    config = load_node_config(path)
    assert config.avrs.identity_file == tmp_path / "keys" / "node.key"
    assert config.source == str(path)
    with pytest.raises(ConfigError, match="configuration file does not exist"):
        load_node_config(tmp_path / "missing.cfg")


def test_defaults_in_one_place() -> None:
    config = parse(BASE)
    assert config.avrs == AvrsSection(role=Role.HOST)
    assert config.stream_config() == StreamConfig()
    assert NodeConfig().avrs.role == Role.CLIENT
    assert parse("[avrs]\nhost_address = h:1\n").avrs.listen_endpoints == ()


def test_our_keys_and_stream_section() -> None:
    config = parse(
        "[avrs]\nrole = host, operator, server\n"
        "listen = tcp://0.0.0.0:8080, ws://[::]:8081/avrs, quic://127.0.0.1:0\n"
        "signature_algorithm = ML-DSA-65\n"
        "debug_more = yes\nbuffer_size = 128k\n"
        "[stream]\nkeepalive_timeout = 10\nkeepalive_interval = 2.5\nmax_channels = 64\n"
        "compression = lz4\n"
    )
    avrs = config.avrs
    assert avrs.role == Role.HOST | Role.OPERATOR | Role.SERVER
    assert [e.scheme for e in avrs.listen_endpoints] == ["tcp", "ws", "quic"]
    assert avrs.listen_endpoints[1].host == "::" and avrs.listen_endpoints[1].path == "/avrs"
    assert avrs.signature_algorithm == "ml-dsa-65"
    assert avrs.debug_more is True
    stream = config.stream_config()
    assert stream.max_packet_payload == 128 * 1024  # from buffer_size
    assert (stream.keepalive_timeout, stream.keepalive_interval) == (10.0, 2.5)
    assert stream.max_channels == 64
    assert stream.features & Feature.COMPRESSION_LZ4
    assert not stream.features & Feature.COMPRESSION_ZSTD
    assert (
        parse(BASE + "[stream]\ncompression =\n").stream.features()
        & (Feature.COMPRESSION_LZ4 | Feature.COMPRESSION_ZSTD)
        == Feature.NONE
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "max_connections = lots",
            r"avrs_config\.cfg \[avrs\] max_connections = 'lots': must be an integer between 1 "
            r"and 1000000$",
        ),
        ("max_connections = 0", r"max_connections = '0': must be an integer between 1"),
        ("max_connections = 1e3", r"max_connections = '1e3'"),
        ("buffer_size = 100", r"buffer_size = '100': must be an integer between 512 and 16777216"),
        ("buffer_size = 64q", r"buffer_size = '64q'"),
        ("thread_pool_size = -1", r"thread_pool_size = '-1'"),
        ("max_bitrate = fast", r"max_bitrate = 'fast': .* bits/s"),
        ("adaptive_streaming = maybe", r"adaptive_streaming = 'maybe': must be true or false"),
        ("heartbeat_interval = 0", r"heartbeat_interval = '0': must be a number of seconds > 0"),
        ("heartbeat_interval = nan", r"heartbeat_interval = 'nan'"),
        ("heartbeat_interval = soon", r"heartbeat_interval = 'soon'"),
        (
            "heartbeat_interval = 30\nreconnect_timeout = 10",
            r"reconnect_timeout = '10': must be >= heartbeat_interval",
        ),
        ("role = admin", r"role = 'admin': unknown role 'admin'; allowed: client, host"),
        ("role =", r"role = '': no role given"),
        ("cluster_id = main cluster", r"cluster_id = 'main cluster': must be 1 to 64"),
        (
            "balancer_address = 192.168.1.100",
            r"balancer_address = '192\.168\.1\.100': must be host:port",
        ),
        ("balancer_address = 192.168.1.100:99999", r"balancer_address = .*port is not a number"),
        ("balancer_address = h:0", r"balancer_address = 'h:0'.*port 0"),
        ("balancer_address = http://b:80", r"balancer_address = .*scheme 'http'"),
        ("supported_formats = h264,divx", r"supported_formats = 'h264,divx': 'divx' is unknown"),
        ("supported_formats =", r"supported_formats = '': .*at least 1"),
        ("listen = 0.0.0.0:8080", r"listen = '0\.0\.0\.0:8080': .*has no scheme"),
        ("listen = udp://0.0.0.0:1", r"listen = .*scheme 'udp' is not one of tcp, ws, wss, quic"),
        ("redis_url = http://x", r"redis_url = 'http://x': must be redis://"),
        ("redis_url = redis://:6379", r"redis_url = .*no host"),
        ("signature_algorithm = rsa", r"signature_algorithm = 'rsa': must be one of ed25519"),
        ("token_leeway = -1", r"token_leeway = '-1': must be a number of seconds >= 0"),
        ("debug_more = 2", r"debug_more = '2': must be true or false"),
    ],
)
def test_bad_values_name_the_key(line: str, message: str) -> None:
    err = refuse("[avrs]\nhost_address = h:1\n" + line + "\n", message)
    key = line.splitlines()[-1].split("=")[0].strip()
    assert err.key == key and err.section == "avrs" and err.path == "avrs_config.cfg"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("max_channels = 0", r"\[stream\] max_channels = '0': must be an integer between 1"),
        (
            "keepalive_interval = 5",
            r"\[stream\] keepalive_interval = '5': must be > 0 and < "
            r"keepalive_timeout",
        ),
        (
            "send_low_water = 2m",
            r"\[stream\] send_low_water = '2m': must be >= 0 and < "
            r"send_high_water",
        ),
        (
            "max_message_size = 1k",
            r"\[stream\] max_message_size = '1k': must be >= "
            r"max_packet_payload",
        ),
        (
            "max_packet_payload = 4096",
            r"\[stream\] max_packet_payload = '4096': must equal "
            r"\[avrs\] buffer_size",
        ),
        ("compression = gzip", r"\[stream\] compression = 'gzip': 'gzip' is unknown"),
    ],
)
def test_bad_stream_values(lines: str, message: str) -> None:
    refuse(BASE + "buffer_size = 65536\n[stream]\n" + lines + "\n", message)


def test_buffer_size_inconsistent_with_stream_limits_names_buffer_size() -> None:
    refuse(
        BASE + "buffer_size = 16m\n",
        r"\[avrs\] buffer_size = '16m': must be >= max_packet_payload|"
        r"\[stream\] initial_channel_window",
    )


def test_unknown_keys_and_sections_suggest() -> None:
    err = refuse(BASE + "max_conections = 5\n", r"unknown key 'max_conections'; did you mean "
                 r"'max_connections'\?")  # fmt: skip
    assert err.key == "max_conections"
    refuse(BASE + "[stream]\nkeepalive = 1\n", r"\[stream\] unknown key 'keepalive'; did you mean")
    refuse(BASE + "colour = blue\n", r"unknown key 'colour'; known keys: role, cluster_id")
    err = refuse(
        BASE + "[colour]\n", r"unknown section \[colour\]; known sections: \[avrs\], \[stream\]$"
    )
    assert str(err).count("known sections") == 1 and err.section == "colour"
    refuse(BASE + "[steam]\n", r"unknown section \[steam\]; did you mean 'stream'\?")
    refuse(BASE + "[DEFAULT]\nrole = host\n", r"unknown section \[DEFAULT\]")


def test_structure_errors() -> None:
    refuse("role = host\n", r"avrs_config\.cfg:1 'role = host' comes before any \[section\]")
    refuse(BASE + "role = server\n", r"avrs_config\.cfg:3 \[avrs\] role is set twice")
    refuse(BASE + "[avrs]\n", r"section \[avrs\] appears twice")
    refuse("[stream]\n", r"no \[avrs\] section")
    refuse("[avrs]\nthis line has no equals sign\n", r"does not parse as INI")


def test_required_keys() -> None:
    refuse("[avrs]\nrole = server\n", r"\[avrs\] host_address is required \(or balancer_address\)")
    parse("[avrs]\nrole = client\nbalancer_address = b:1\n")
    refuse(
        BASE + "certificate_file = a.crt\n",
        r"\[avrs\] private_key_file is required when certificate_file is set",
    )
    refuse(
        BASE + "certificate_file = a.crt\nprivate_key_file = a.key\n",
        r"ca_certificate_file is required when certificate_file is set",
    )
    refuse(BASE + "crl_file = crl.pem\n", r"ca_certificate_file is required when crl_file is set")
    refuse(
        BASE + "token_issuers = host.crt\n",
        r"ca_certificate_file is required when token_issuers is set",
    )
    refuse(
        BASE + "identity_file = a.key\nprivate_key_file = b.key\n",
        r"identity_file = 'a\.key': names another file than private_key_file",
    )
    # Any node that accepts administrative requests may verify TOTP codes (issue 8): the key is
    # checked like every file key.
    refuse(
        "[avrs]\nrole = server\nhost_address = h:1\ntotp_secret_file = s\n",
        r"totp_secret_file = 's': file s does not exist",
    )


def test_missing_files(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    base = BASE + f"ca_certificate_file = {tmp_path / 'ca.crt'}\n"
    parse(base)
    refuse(base + "crl_file = nope.pem\n", r"crl_file = 'nope\.pem': file .*nope\.pem does not")
    refuse(
        base + f"token_issuers = {tmp_path / 'ca.crt'}, other.crt\n",
        r"token_issuers = .*other\.crt does not exist",
    )
    refuse(
        BASE + "identity_file = /no/such/dir/node.key\n",
        r"identity_file = '/no/such/dir/node\.key': directory /no/such/dir does not exist",
    )


def test_reference_covers_every_key() -> None:
    rows = list(reference_rows())
    keys = {(section, key) for section, key, *_ in rows}
    for line in SEED_CONFIG.splitlines():
        if "=" in line:
            assert ("avrs", line.split("=")[0].strip()) in keys
    assert ("stream", "keepalive_timeout") in keys
    assert all(row[4] and row[5] for row in rows)


def test_docs_table_is_current() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
    assert render_reference() in docs.read_text(encoding="utf-8"), (
        "the key reference in docs/operations.md is stale; paste the output of "
        "`python -m dapsdk.node.config_doc` into it"
    )


def test_debug_flag_drives_logging() -> None:
    logger = logging.getLogger(AVRS_LOGGER)
    old = logger.level
    try:
        set_avrs_debug(True)
        assert logger.level == logging.DEBUG and avrs_debug_more()
        assert logging.getLogger(AVRS_LOGGER + ".session").isEnabledFor(logging.DEBUG)
        set_avrs_debug(False)
        assert logger.level == logging.NOTSET
    finally:
        logger.setLevel(old)


def test_bad_host_address() -> None:
    err = refuse("[avrs]\nhost_address = 192.168.1.100\n", r"host_address = '192\.168\.1\.100'")
    assert err.key == "host_address"


def test_docs_example_file_loads() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
    text = docs.read_text(encoding="utf-8")
    example = text.split("```ini\n", 1)[1].split("```", 1)[0]
    config = parse(example, check_files=False)
    assert config.avrs.role == Role.SERVER
    assert [e.url for e in config.avrs.listen_endpoints] == [
        "tcp://0.0.0.0:8080",
        "ws://0.0.0.0:8081/avrs",
    ]
    assert config.stream.compression == ()
    assert config.avrs.host_address is not None and config.avrs.host_address.port == 8080
