"""``avrs bench transport --json``: a short real run (worker processes, loopback sockets).

Only the shape of the report is checked; speed is never asserted in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

AVRS = Path(sys.executable).with_name("avrs")

REQUIRED_KEYS = {
    "bulk_mb_s",
    "vs_plain_tcp",
    "vs_tls",
    "vs_websockets",
    "small_pps",
    "small_vs_websockets",
    "control_p99_ms",
}


def _numbers(obj: Any, path: str = "") -> list[tuple[str, float]]:
    """Every int/float leaf of a JSON object (booleans excluded), with its path."""
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [(path, float(obj))]
    if isinstance(obj, dict):
        return [n for key, value in obj.items() for n in _numbers(value, f"{path}.{key}")]
    return []


def _run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AVRS), "bench", "transport", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_bench_transport_json_report() -> None:
    proc = _run("--json", "--duration", "0.3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is exactly one JSON object

    assert report.keys() >= REQUIRED_KEYS
    assert set(report["bulk_mb_s"]) >= {"dapsdk", "plain_tcp", "tls", "websockets"}
    assert set(report["small_pps"]) >= {"dapsdk", "websockets"}
    for key in ("vs_plain_tcp", "vs_tls", "vs_websockets", "small_vs_websockets"):
        assert isinstance(report[key], float), key
    assert isinstance(report["control_p99_ms"], float)
    for group in ("bulk_mb_s", "small_pps"):
        for name, value in report[group].items():
            assert isinstance(value, int | float) and not isinstance(value, bool), (group, name)

    numbers = _numbers({k: report[k] for k in REQUIRED_KEYS})
    assert len(numbers) == 11
    for path, value in numbers:
        assert value > 0, path
    # Ratios are consistent with the rates they come from.
    bulk = report["bulk_mb_s"]
    assert report["vs_tls"] == pytest.approx(bulk["dapsdk"] / bulk["tls"], rel=0.01)
    assert report["targets"]["control_p99_ms"]["target"] == "<= 2"
    assert report["meta"]["transport"] == "tcp"
    assert report["meta"]["tls"]["tls_version"] == "TLSv1.3"


def test_bench_transport_rejects_unknown_transport() -> None:
    proc = _run("--transport", "carrier-pigeon", "--duration", "0.1", timeout=30)
    assert proc.returncode == 2
    assert "not an available dapsdk transport" in proc.stderr
    assert "tcp" in proc.stderr
