"""The AVRS core is sans-IO: no module under dapsdk.avrs imports an IO, clock or RNG module."""

from __future__ import annotations

import ast
from pathlib import Path

import dapsdk.avrs

FORBIDDEN = {"asyncio", "socket", "time", "random", "selectors", "threading", "ssl"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_io_imports() -> None:
    package = Path(dapsdk.avrs.__file__).parent
    files = sorted(package.glob("*.py"))
    assert len(files) > 10
    for path in files:
        assert not imported_modules(path) & FORBIDDEN, path.name


def test_modules_stay_small() -> None:
    for path in Path(dapsdk.avrs.__file__).parent.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) < 600, path.name


def test_public_api_is_importable() -> None:
    for name in dapsdk.avrs.__all__:
        assert getattr(dapsdk.avrs, name) is not None
