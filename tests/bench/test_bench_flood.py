"""``avrs bench flood --json``: a small real run (node, attacker and client processes).

Only the report's shape is checked here; success ratio and timing are measured by the bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

AVRS = Path(sys.executable).with_name("avrs")

REQUIRED_KEYS = {
    "sockets",
    "quic_initials",
    "legit_attempts",
    "legit_success_ratio",
    "connect_p50_ms",
    "connect_p99_ms",
    "node_peak_rss_kb",
    "attackers",
    "targets",
    "meets_targets",
}


@pytest.mark.slow
def test_bench_flood_json_small() -> None:
    args = ["bench", "flood", "--sockets", "200", "--quic-initials", "100", "--clients", "3"]
    done = subprocess.run(
        [str(AVRS), *args, "--reconnect-delay", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= REQUIRED_KEYS
    assert (report["sockets"], report["quic_initials"], report["legit_attempts"]) == (200, 100, 3)
    kinds = [a["kind"] for a in report["attackers"]]
    assert kinds == ["idle", "partial", "slowloris", "hello", "quic"]
    assert report["attackers"][-1]["initials_sent"] == 100
    assert sum(a["connects"] for a in report["attackers"]) >= 200
    assert report["node_peak_rss_kb"] > 0
    assert 0.0 <= report["legit_success_ratio"] <= 1.0
