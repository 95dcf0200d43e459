"""``avrs bench sessions --json`` run small: a real node process, client worker processes,
sessions held with keepalive running. Only the report's shape and counts are checked (speed is
never asserted in tests); the full 10,000-session run is manual (docs/performance.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.servers import ROOT

REQUIRED_KEYS = {
    "sessions",
    "rss_kb_per_session",
    "keepalive_cpu_pct",
    "handshakes_per_s",
    "connect_p99_ms_at_full",
}


def test_bench_sessions_json_small_run() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dapsdk.cli",
            "bench",
            "sessions",
            "--json",
            "--sessions",
            "100",
            "--workers",
            "2",
            "--idle",
            "1",
            "--probe",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report.keys() >= REQUIRED_KEYS
    assert report["sessions"] == 100 and report["connect_failures"] == 0
    assert report["sessions_alive_at_end"] == 100  # keepalive held every session
    assert report["probe_connects"] == 10
    for key in REQUIRED_KEYS:
        assert isinstance(report[key], int | float) and math.isfinite(report[key]), key
    assert report["rss_kb_at_full"] >= report["rss_kb_before"] > 0
    assert report["handshakes_per_s"] > 0 and report["connect_p99_ms_at_full"] > 0
    assert set(report["targets"]) == REQUIRED_KEYS - {"sessions"}
