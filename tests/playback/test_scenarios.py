"""The seed's live and VoD use cases (examples/avrs_live_scenario.py, avrs_vod_scenario.py) run as
scripts against a real `avrs node` process, checked with `avrs play` and ffprobe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dapsdk.node.sandbox import Sandbox
from dapsdk.services.auth import Role
from dapsdk.stream.channel_key import ChannelKey

from .procs import ROOT, avrs, last_json, node_process, spawn, stop, wait_line
from .test_media_cli import probe

EXAMPLES = ROOT / "examples"


def test_live_scenario_broadcasts_encrypted_adaptive_hd(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    key = ChannelKey.generate()
    out = tmp_path / "live.ts"
    with node_process(sandbox.server_config()) as url:
        sandbox.identity("camera", Role.SERVER)
        camera = sandbox.client_config("camera", url, certificate=True)
        # the viewer subscribes first (it waits for the broadcaster), so no start-up race
        player = spawn("play", "live_channel", "--node", url, "-o", str(out), "--duration", "1",
                       "--rendition", "360p", "--content-key", key.key_bytes.hex(),
                       "--token", sandbox.token("viewer"), "--quiet")  # fmt: skip
        try:
            wait_line(player, "playing live_channel", stderr=True)
            env = dict(os.environ, AVRS_CONTENT_KEY=key.key_bytes.hex())
            example = subprocess.run(
                [sys.executable, str(EXAMPLES / "avrs_live_scenario.py"), str(camera), "3"],
                capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
            )  # fmt: skip
            played, played_err = player.communicate(timeout=60)
        finally:
            stop(player)
    stdout, stderr = example.stdout, example.stderr
    assert player.returncode == 0, played_err
    assert example.returncode == 0, stderr
    assert "broadcast " in stdout
    result = last_json(played)
    assert result["rendition"] == "360p" and result["first_video_keyframe"] is True
    assert result["undecryptable"] == 0 and result["forged"] == 0
    video = [s for s in probe(out)["streams"] if s["codec_type"] == "video"]  # type: ignore[attr-defined]
    assert [(v["codec_name"], v["width"], v["height"]) for v in video] == [("h264", 640, 360)]


def test_vod_scenario_plays_from_a_start_position(tmp_path: Path, h264_aac_clip: Path) -> None:
    sandbox = Sandbox(tmp_path)
    avrs("vod", "add", str(h264_aac_clip), "--content", "movie_123", "--data-dir",
         str(tmp_path / "avrs-data"), "--quiet")  # fmt: skip
    with node_process(sandbox.server_config()) as url:
        sandbox.identity("viewer")
        config = sandbox.client_config("viewer", url)
        token_file = tmp_path / "token"
        token_file.write_text(sandbox.token("viewer-1"))
        runs = {}
        for start in ("0", "1.2"):
            runs[start] = subprocess.run(
                [sys.executable, str(EXAMPLES / "avrs_vod_scenario.py"), str(config), "movie_123",
                 start, str(token_file)],
                capture_output=True, text=True, timeout=60, cwd=tmp_path,
            )  # fmt: skip
    for start, result in runs.items():
        assert result.returncode == 0, (start, result.stderr)
    whole = runs["0"].stdout.strip().splitlines()[-1]
    late = runs["1.2"].stdout.strip().splitlines()[-1]
    first_whole = int(whole.rsplit("first pts ", 1)[1].split()[0])
    first_late = int(late.rsplit("first pts ", 1)[1].split()[0])
    # the keyframe at or before 1.2 s is at 1.0 s (GOP 1 s); audio starts with it
    assert abs((first_late - first_whole) - 1_000_000) < 50_000, (first_whole, first_late)
