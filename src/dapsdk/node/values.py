"""Value parsers of the INI configuration: each turns the text of one key into a typed value or
raises :class:`BadValue` saying what is allowed. Each also describes itself (``type_name``,
``allowed``) for error messages and for the key reference in docs/operations.md."""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from dapsdk.runtime.endpoint import SCHEMES, Endpoint, parse_endpoint
from dapsdk.services.auth.common import CLUSTER_ID_ALLOWED, validate_cluster_id
from dapsdk.services.auth.roles import ROLE_NAMES, format_roles, parse_roles


class BadValue(ValueError):
    """The text of a key is not acceptable; ``allowed`` says what is."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


@dataclass(frozen=True, slots=True)
class Context:
    base_dir: Path
    """Relative paths in the file are relative to the directory of the file."""


class Parser(abc.ABC):
    type_name: str = "string"
    allowed: str = "any text"

    @abc.abstractmethod
    def parse(self, raw: str, ctx: Context) -> Any:
        """The typed value of ``raw``, or :class:`BadValue`."""

    def format(self, value: Any) -> str:
        """The value as it would be written in the file (for the docs' default column)."""
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(self.format(v) for v in value)
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


_SIZE_SUFFIX: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE_RE: Final = re.compile(r"^(\d+)\s*([kmg]?)(?:i?b)?$", re.IGNORECASE)


class Integer(Parser):
    def __init__(self, low: int, high: int, *, size: bool = False, unit: str = "") -> None:
        self.low, self.high, self.size = low, high, size
        self.type_name = "size" if size else "integer"
        unit_text = f" {unit}" if unit else ""
        self.allowed = f"an integer between {low} and {high}{unit_text}" + (
            " (k, m, g suffixes: 64k = 65536)" if size else ""
        )

    def parse(self, raw: str, ctx: Context) -> int:
        text = raw.strip().replace("_", "")
        match = _SIZE_RE.match(text) if self.size else None
        if match is not None:
            value = int(match.group(1)) * _SIZE_SUFFIX[match.group(2).lower()]
        else:
            try:
                value = int(text, 10)
            except ValueError:
                raise BadValue(f"must be {self.allowed}") from None
        if not self.low <= value <= self.high:
            raise BadValue(f"must be {self.allowed}")
        return value


class Seconds(Parser):
    type_name = "seconds"

    def __init__(self, low: float, high: float, *, low_inclusive: bool = False) -> None:
        self.low, self.high, self.low_inclusive = low, high, low_inclusive
        lower = f">= {low:g}" if low_inclusive else f"> {low:g}"
        self.allowed = f"a number of seconds {lower} and <= {high:g}"

    def parse(self, raw: str, ctx: Context) -> float:
        try:
            value = float(raw.strip().removesuffix("s"))
        except ValueError:
            raise BadValue(f"must be {self.allowed}") from None
        above = value >= self.low if self.low_inclusive else value > self.low
        if not (above and value <= self.high):  # also refuses nan
            raise BadValue(f"must be {self.allowed}")
        return value


class Boolean(Parser):
    type_name = "boolean"
    allowed = "true or false (also yes/no, on/off, 1/0)"
    _VALUES: Final = {
        "true": True, "yes": True, "on": True, "1": True,
        "false": False, "no": False, "off": False, "0": False,
    }  # fmt: skip

    def parse(self, raw: str, ctx: Context) -> bool:
        value = self._VALUES.get(raw.strip().lower())
        if value is None:
            raise BadValue(f"must be {self.allowed}")
        return value


class Choice(Parser):
    type_name = "choice"

    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.allowed = "one of " + ", ".join(choices)

    def parse(self, raw: str, ctx: Context) -> str:
        value = raw.strip().lower()
        if value not in self.choices:
            raise BadValue(f"must be {self.allowed}")
        return value


class Roles(Parser):
    type_name = "role list"
    allowed = "a comma list of " + ", ".join(ROLE_NAMES)

    def parse(self, raw: str, ctx: Context) -> Any:
        try:
            return parse_roles(raw)
        except ValueError as exc:
            raise BadValue(f"{exc}") from None

    def format(self, value: Any) -> str:
        return format_roles(value)


class ClusterId(Parser):
    type_name = "identifier"
    allowed = CLUSTER_ID_ALLOWED

    def parse(self, raw: str, ctx: Context) -> str:
        try:
            return validate_cluster_id(raw.strip())
        except ValueError:
            raise BadValue(f"must be {self.allowed}") from None


class Address(Parser):
    """``host:port`` (optionally ``scheme://host:port?node=ADDR``); empty means unset."""

    type_name = "host:port"
    allowed = "host:port with a port in 1..65535, e.g. 192.168.1.100:8080 (or scheme://host:port)"

    def parse(self, raw: str, ctx: Context) -> Endpoint | None:
        if not raw.strip():
            return None
        try:
            endpoint = parse_endpoint(raw)
        except ValueError as exc:
            raise BadValue(f"must be {self.allowed} ({exc})") from None
        if endpoint.port == 0:
            raise BadValue(f"must be {self.allowed} (port 0)")
        return endpoint

    def format(self, value: Any) -> str:
        return "" if value is None else f"{value.host}:{value.port}"


class ListenUrls(Parser):
    type_name = "URL list"
    allowed = (
        f"a comma list of URLs {', '.join(s + '://host:port' for s in SCHEMES)} "
        "(port 0 picks a free port; empty: do not listen)"
    )

    def parse(self, raw: str, ctx: Context) -> tuple[Endpoint, ...]:
        result = []
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            if "://" not in item:
                raise BadValue(f"must be {self.allowed}; {item!r} has no scheme")
            try:
                result.append(parse_endpoint(item))
            except ValueError as exc:
                raise BadValue(f"must be {self.allowed} ({exc})") from None
        return tuple(result)

    def format(self, value: Any) -> str:
        return "" if value is None else ",".join(endpoint.url for endpoint in value)


@dataclass(frozen=True, slots=True)
class HostPort:
    """A plain ``host:port`` listen address of a non-dap_stream service (RTMP, HTTP)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class ListenAddress(Parser):
    """``host:port`` where a service listens; port 0 picks a free port; empty: the service is off."""

    type_name = "host:port"
    allowed = "host:port with a port in 0..65535 (0 picks a free port); empty: off"

    def parse(self, raw: str, ctx: Context) -> HostPort | None:
        text = raw.strip()
        if not text:
            return None
        if "://" in text or "/" in text or "?" in text:
            raise BadValue(f"must be {self.allowed} (no scheme, path or query)")
        try:
            endpoint = parse_endpoint(text)
        except ValueError as exc:
            raise BadValue(f"must be {self.allowed} ({exc})") from None
        return HostPort(endpoint.host, endpoint.port)

    def format(self, value: Any) -> str:
        return "" if value is None else str(value)


class FilePath(Parser):
    """A file path; relative paths are relative to the config file; empty means unset."""

    type_name = "path"
    allowed = "a file path (relative to the config file's directory)"

    def parse(self, raw: str, ctx: Context) -> Path | None:
        text = raw.strip()
        if not text:
            return None
        path = Path(text).expanduser()
        return path if path.is_absolute() else ctx.base_dir / path


class DirPath(FilePath):
    type_name = "directory"
    allowed = "a directory path (relative to the config file's directory); empty: none"


class PathList(Parser):
    type_name = "path list"
    allowed = "a comma list of file paths (relative to the config file's directory)"

    def parse(self, raw: str, ctx: Context) -> tuple[Path, ...]:
        single = FilePath()
        paths = (single.parse(item, ctx) for item in raw.split(","))
        return tuple(path for path in paths if path is not None)


class Words(Parser):
    """A comma list of names from a fixed set."""

    type_name = "list"

    def __init__(self, known: tuple[str, ...], *, min_items: int = 1) -> None:
        self.known, self.min_items = known, min_items
        self.allowed = f"a comma list of {', '.join(known)}"

    def parse(self, raw: str, ctx: Context) -> tuple[str, ...]:
        items = [part.strip().lower() for part in raw.split(",") if part.strip()]
        unknown = [item for item in items if item not in self.known]
        if unknown:
            raise BadValue(f"{unknown[0]!r} is unknown; must be {self.allowed}")
        if len(items) < self.min_items:
            raise BadValue(f"must be {self.allowed} (at least {self.min_items})")
        return tuple(dict.fromkeys(items))


_RUNG_RE: Final = re.compile(r"^(\d+)p:(\d+)([km]?)$", re.IGNORECASE)


class Ladder(Parser):
    """Renditions as ``HEIGHTp:BITRATE`` (bits/s, ``k`` or ``M`` suffix), comma separated."""

    type_name = "list"
    allowed = "HEIGHTp:BITRATE[k|M] items, e.g. 720p:2800k; even heights 144..4320, distinct"

    def parse(self, raw: str, ctx: Context) -> tuple[str, ...]:
        items = [part.strip().replace(" ", "") for part in raw.split(",") if part.strip()]
        if not items:
            raise BadValue(f"must be {self.allowed}")
        heights = set()
        for item in items:
            match = _RUNG_RE.match(item)
            if match is None:
                raise BadValue(f"{item!r} is not HEIGHTp:BITRATE")
            height = int(match[1])
            if not 144 <= height <= 4320 or height % 2:
                raise BadValue(f"{item!r}: the height must be even, 144..4320")
            if height in heights:
                raise BadValue(f"{item!r}: two renditions of height {height}")
            heights.add(height)
        return tuple(items)


class RedisUrl(Parser):
    type_name = "URL"
    allowed = "redis://host:port[/db], rediss://... or unix:///path/to/socket; empty: embedded"

    def parse(self, raw: str, ctx: Context) -> str | None:
        text = raw.strip()
        if not text:
            return None
        parts = urlsplit(text)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise BadValue(f"must be {self.allowed}")
        if parts.scheme == "unix" and not parts.path:
            raise BadValue(f"must be {self.allowed} (no socket path)")
        if parts.scheme != "unix":
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError:
                raise BadValue(f"must be {self.allowed} (bad port)") from None
            if not parts.hostname:
                raise BadValue(f"must be {self.allowed} (no host)")
        return text


class Command(Parser):
    """A command line, split like a POSIX shell would (no shell runs it)."""

    type_name = "command"
    allowed = "a command line (program and arguments, shell quoting); empty: none"

    def parse(self, raw: str, ctx: Context) -> tuple[str, ...] | None:
        import shlex

        text = raw.strip()
        if not text:
            return None
        try:
            words = tuple(shlex.split(text))
        except ValueError as exc:
            raise BadValue(f"must be {self.allowed} ({exc})") from None
        return words or None

    def format(self, value: Any) -> str:
        import shlex

        return "" if not value else shlex.join(value)


class HttpUrl(Parser):
    type_name = "URL"
    allowed = "http://host[:port]/path or https://...; empty: none"

    def parse(self, raw: str, ctx: Context) -> str | None:
        text = raw.strip()
        if not text:
            return None
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadValue(f"must be {self.allowed}")
        return text
