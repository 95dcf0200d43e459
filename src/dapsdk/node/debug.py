"""The seed's ``g_avrs_debug_more`` as a switch on Python logging."""

from __future__ import annotations

import logging
from typing import Final

AVRS_LOGGER: Final = "dapsdk.avrs"
#: The protocol modules ``debug_more`` puts at DEBUG: the AVRS core and services, the stream wire
#: core and the stream runtime.
PROTOCOL_LOGGERS: Final = (AVRS_LOGGER, "dapsdk.stream", "dapsdk.runtime")


def set_avrs_debug(enabled: bool) -> None:
    """Extended logging on or off: the protocol loggers (:data:`PROTOCOL_LOGGERS`, and their
    children) at DEBUG, or back to inheriting their level from their parents. A handler installed
    by the CLI passes their DEBUG lines whatever ``--log-level`` says."""
    for name in PROTOCOL_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if enabled else logging.NOTSET)


def avrs_debug_more() -> bool:
    """Whether extended AVRS logging is on (cheap enough to guard costly debug messages)."""
    return logging.getLogger(AVRS_LOGGER).isEnabledFor(logging.DEBUG)
