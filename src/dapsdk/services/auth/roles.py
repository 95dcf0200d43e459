"""AVRS roles (the seed's u16 bitmask ``avrs_role_t``, defined in :mod:`dapsdk.avrs.constants`):
parsing and printing for configuration files, certificates and the command line.

The high byte holds infrastructure roles (server, balancer), the low byte human roles (client,
host, operator), as in the C original. A member may hold several roles at once.
"""

from __future__ import annotations

from typing import Final

from dapsdk.avrs.constants import Role

__all__ = [
    "ADMIN_ROLES",
    "ROLE_NAMES",
    "Role",
    "format_roles",
    "parse_roles",
    "roles_from_int",
]

#: Names accepted in configuration files, on the command line and in certificates.
ROLE_NAMES: Final[dict[str, Role]] = {
    "client": Role.CLIENT,
    "host": Role.HOST,
    "operator": Role.OPERATOR,
    "server": Role.SERVER,
    "balancer": Role.BALANCER,
    "all": Role.ALL,
}

#: Roles allowed to administer a cluster (issue tokens, approve members, admin requests).
ADMIN_ROLES: Final = Role.HOST | Role.OPERATOR

_SINGLE_ROLES: Final = (Role.CLIENT, Role.HOST, Role.OPERATOR, Role.SERVER, Role.BALANCER)


def parse_roles(text: str) -> Role:
    """Parse ``"server,operator"`` (names, case-insensitive) into a bitmask.

    Raises ``ValueError`` naming the unknown role and the allowed names. An empty list is refused.
    """
    result = Role.NONE
    names = [part.strip().lower() for part in text.split(",")]
    if not any(names):
        raise ValueError(f"no role given; allowed: {', '.join(ROLE_NAMES)}")
    for name in names:
        if not name:
            raise ValueError(f"empty role name in {text!r}; allowed: {', '.join(ROLE_NAMES)}")
        role = ROLE_NAMES.get(name)
        if role is None:
            raise ValueError(f"unknown role {name!r}; allowed: {', '.join(ROLE_NAMES)}")
        result |= role
    return result


def roles_from_int(value: int) -> Role:
    """A u16 bitmask as :class:`Role`; bits without a name are kept (forward compatibility)."""
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"role bitmask {value!r} is not a u16")
    return Role(value)


def format_roles(roles: Role | int) -> str:
    """``Role.SERVER | Role.OPERATOR`` -> ``"operator,server"``; ``0xFFFF`` -> ``"all"``."""
    value = int(roles)
    if value == Role.ALL:
        return "all"
    names = [name for name, role in ROLE_NAMES.items() if role != Role.ALL and value & role]
    rest = value & ~sum(int(r) for r in _SINGLE_ROLES)
    if rest:
        names.append(f"0x{rest:04x}")
    return ",".join(names) if names else "none"
