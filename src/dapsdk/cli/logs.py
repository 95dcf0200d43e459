"""Logging of the ``avrs`` commands: the one handler the CLI installs on the root logger.

Libraries (everything under ``dapsdk``) only create loggers; a command installs exactly one
handler, on stderr, in text or JSON lines. Structured fields a log call passes with
``extra={...}`` (``event``, ``peer``, ``node``, ``session``, ``code``, ...) become ``key=value``
pairs in text and keys in JSON. Keys and tokens are never passed to a log call.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

LEVELS: Final = ("debug", "info", "warning", "error")
FORMATS: Final = ("text", "json")

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """``2026-11-29T18:40:01.123Z INFO dapsdk.avrs.session: join refused event=refuse code=...``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        text = f"{stamp}.{int(record.msecs):03d}Z {record.levelname} {record.name}: "
        text += record.getMessage()
        fields = _extras(record)
        if fields:
            text += " " + " ".join(f"{k}={_plain(v)}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _plain(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry[key] = value if isinstance(value, int | float | bool | type(None)) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


_HANDLER_NAME: Final = "avrs-cli"
#: Log records waiting for the writer thread at most; beyond, records are dropped (and counted), so
#: a slow or full stderr (a pipe nobody reads) never blocks the event loop.
LOG_QUEUE_RECORDS: Final = 10_000


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread; drops them when its bounded queue is full."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


_listener: logging.handlers.QueueListener | None = None


#: Seconds the writer thread gets at exit to write what is queued (a stderr nobody reads must not
#: keep the process alive).
EXIT_FLUSH_SECONDS: Final = 2.0


def _stop_listener() -> None:
    global _listener
    listener, _listener = _listener, None
    if listener is None:
        return
    try:
        listener.enqueue_sentinel()
    except queue.Full:
        return  # the writer is stuck; its thread is a daemon and dies with the process
    thread = listener._thread
    if thread is not None:
        thread.join(EXIT_FLUSH_SECONDS)


def install_logging(level: str = "info", fmt: str = "text") -> logging.Handler:
    """Install the CLI's single handler (replacing one installed before) and set the ``dapsdk``
    level. Loggers set to DEBUG on their own (``debug_more``) still get through.

    Records go through a bounded queue (:data:`LOG_QUEUE_RECORDS`) to a writer thread that
    formats them onto stderr: logging never blocks the event loop."""
    global _listener
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    _stop_listener()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    records: queue.Queue[logging.LogRecord] = queue.Queue(LOG_QUEUE_RECORDS)
    handler = DroppingQueueHandler(records)
    handler.set_name(_HANDLER_NAME)
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("dapsdk").setLevel(level.upper())
    return handler


atexit.register(_stop_listener)


F = TypeVar("F", bound=Callable[..., Any])


def _apply(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"avrs.log.{param.name}"] = value
    level = ctx.meta.get("avrs.log.log_level") or "info"
    fmt = ctx.meta.get("avrs.log.log_format") or "text"
    if value is not None:
        install_logging(level, fmt)
    return value


def logging_options(command: F) -> F:
    """``--log-level`` (default info) and ``--log-format`` on a serving command (the handler is
    installed when they are parsed)."""
    return _logging_options(command, "info")


def client_logging_options(command: F) -> F:
    """The same with warning as the default level (no connect lines): client commands, and the
    echo peer ``avrs stream-server``, whose callers (tests, scripts) often do not read stderr."""
    return _logging_options(command, "warning")


def _logging_options(command: F, level: str) -> F:
    command = click.option(
        "--log-format",
        type=click.Choice(FORMATS),
        default="text",
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=_apply,
        help="Log lines on stderr as text or JSON (one object per line).",
    )(command)
    return click.option(
        "--log-level",
        type=click.Choice(LEVELS, case_sensitive=False),
        default=level,
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=_apply,
        help="Least severe log level shown for dapsdk.",
    )(command)
