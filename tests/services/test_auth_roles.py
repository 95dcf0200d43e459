from __future__ import annotations

import pytest

from dapsdk.services.auth import Role, format_roles, parse_roles, roles_from_int


def test_seed_values() -> None:
    assert (Role.CLIENT, Role.HOST, Role.OPERATOR) == (0x0001, 0x0002, 0x0004)
    assert (Role.SERVER, Role.BALANCER, Role.ALL) == (0x0100, 0x0200, 0xFFFF)


@pytest.mark.parametrize(
    ("text", "mask"),
    [
        ("server", 0x0100),
        ("server,operator", 0x0104),
        (" Host , BALANCER ", 0x0202),
        ("all", 0xFFFF),
        ("client,client", 0x0001),
    ],
)
def test_parse(text: str, mask: int) -> None:
    assert parse_roles(text) == mask


@pytest.mark.parametrize("text", ["", "  ", "servr", "server,", "server,,host", "root"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="allowed: client, host, operator, server, balancer, all"):
        parse_roles(text)


def test_format_round_trip() -> None:
    for mask in (0x0001, 0x0104, 0x0302, 0xFFFF):
        assert parse_roles(format_roles(Role(mask))) == mask
    assert format_roles(Role.NONE) == "none"
    assert format_roles(roles_from_int(0x0108)) == "server,0x0008"
    with pytest.raises(ValueError):
        roles_from_int(0x10000)
