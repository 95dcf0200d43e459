"""`avrs bench transcode --json` runs the real ladder and reports each rendition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_transcode_reports_each_rendition() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dapsdk.cli", "bench", "transcode", "--json", "--seconds", "1",
         "--height", "480", "--ladder", "360p:600k,240p:300k,720p:2000k"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=os.environ.copy(), check=True,
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert set(data["renditions"]) == {"360p", "240p"}  # capped below the 480p source
    assert data["renditions"]["360p"]["size"] == "640x360"
    assert data["renditions"]["240p"]["frames"] == 30
    assert all(r["speed_x_realtime"] > 0 for r in data["renditions"].values())
    assert data["ladder"]["speed_x_realtime"] > 0


def test_bench_transcode_refuses_a_bad_ladder() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dapsdk.cli", "bench", "transcode", "--ladder", "720:1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2 and "HEIGHTp:BITRATE" in result.stderr
