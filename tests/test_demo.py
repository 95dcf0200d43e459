"""`avrs demo` (what `make demo` runs) works end to end and reports what really happened."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_a_stream_exchange_and_a_whole_avrs_cluster() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dapsdk.cli",
            "demo",
            "--json",
            "--file-size",
            "1000000",
            "--frames",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(count > 0 for count in report["callbacks"].values()), report["callbacks"]
    assert report["client_stats"]["bytes_sent"] > 1_000_000
    # everything but packets still in flight when the stats were taken (a keepalive)
    assert (
        1_000_000 < report["server_stats"]["bytes_received"] <= report["client_stats"]["bytes_sent"]
    )
    avrs = report["avrs"]
    assert avrs["frames_published"] == 30
    assert avrs["frames_received"] == avrs["signatures_verified"] == 30
    assert avrs["pictures_decoded"] == 30 and avrs["picture_size"] == [320, 180]
    assert avrs["keyframes"] >= 1
    assert avrs["expired_token"].startswith("MEMBER_SECURITY_ISSUE")
