"""The seed's ``g_avrs_debug_more`` as a switch on Python logging."""

from __future__ import annotations

import logging
from typing import Final

AVRS_LOGGER: Final = "dapsdk.avrs"


def set_avrs_debug(enabled: bool) -> None:
    """Extended AVRS logging on or off: the ``dapsdk.avrs`` logger (and its children) at DEBUG,
    or back to inheriting its level from its parents."""
    logging.getLogger(AVRS_LOGGER).setLevel(logging.DEBUG if enabled else logging.NOTSET)


def avrs_debug_more() -> bool:
    """Whether extended AVRS logging is on (cheap enough to guard costly debug messages)."""
    return logging.getLogger(AVRS_LOGGER).isEnabledFor(logging.DEBUG)
