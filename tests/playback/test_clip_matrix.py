"""Every generated test clip (tests/media/clips.py) through a real node process: imported with
`avrs vod add` and played with `avrs play` into the same container, then compared with the source
by ffprobe (streams, frame counts, duration ±50 ms) and per-packet MD5 (nothing is transcoded);
one non-H.264 clip also published live with `avrs publish`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dapsdk.node.sandbox import Sandbox
from dapsdk.services.auth import Role
from tests.media.clips import ClipSet

from .procs import avrs, last_json, node_process, spawn, stop, wait_line
from .test_media_cli import assert_same_media, camera_args, probe, viewer_args

#: clip -> output suffix `avrs play` writes (the source's container where it has a muxer here).
CLIPS = {
    "h264_aac": ".mp4",  # B-frames
    "hevc_aac": ".mkv",
    "vp9_opus": ".webm",
    "audio_only": ".mp4",
    "video_ts": ".ts",
    "h264_1080p": ".mp4",
}


@pytest.fixture(scope="module")
def clip_set(tmp_path_factory: pytest.TempPathFactory) -> ClipSet:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return ClipSet(Path(base))


def test_every_clip_imported_and_played_bit_exact(clip_set: ClipSet, tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    data_dir = tmp_path / "avrs-data"
    for name in CLIPS:
        added = last_json(avrs("vod", "add", str(clip_set.path(name)), "--content", name,
                               "--data-dir", str(data_dir), "--quiet").stdout)  # fmt: skip
        assert added["packets"] > 0 and added["segments"] >= 1
    outputs = {}
    with node_process(sandbox.server_config()) as url:
        for name, suffix in CLIPS.items():
            out = tmp_path / f"{name}{suffix}"
            result = last_json(avrs("play", name, "--node", url, "-o", str(out), "--quiet",
                                    *viewer_args(sandbox)).stdout)  # fmt: skip
            assert result["forged"] == 0 and result["converted"] is False
            outputs[name] = out
    for name, out in outputs.items():
        assert_same_media(out, clip_set.path(name))


def test_hevc_mkv_published_live_and_played(clip_set: ClipSet, tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    sandbox.identity("camera", Role.SERVER)
    source = clip_set.path("hevc_aac")
    out = tmp_path / "live.mkv"
    with node_process(sandbox.server_config()) as url:
        player = spawn("play", "hevc-live", "--node", url, "-o", str(out), "--quiet",
                       *viewer_args(sandbox))  # fmt: skip
        try:
            wait_line(player, "playing hevc-live", stderr=True)
            avrs("publish", str(source), "--content", "hevc-live", "--node", url,
                 "--as-fast-as-possible", *camera_args(sandbox))  # fmt: skip
            stdout, stderr = player.communicate(timeout=60)
        finally:
            stop(player)
    assert player.returncode == 0, stderr
    assert last_json(stdout)["first_video_keyframe"] is True
    assert_same_media(out, source)
    codecs = sorted(s["codec_name"] for s in probe(out)["streams"])  # type: ignore[attr-defined]
    assert codecs == ["aac", "hevc"]
