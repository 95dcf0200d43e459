"""Fixtures of the media playback tests: short clips made by the real ffmpeg (lavfi sources), a
sandboxed cluster (CA, host/server node, publisher and viewer credentials)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FFMPEG = shutil.which("ffmpeg")


def make_clip(path: Path, *, seconds: float = 2.0, size: str = "320x240", video: str | None =
              "libx264", audio: str | None = "aac", extra: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """A clip of ``seconds`` with a moving picture (testsrc2, frame counter) and a tone."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    cmd = [FFMPEG, "-loglevel", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", str(seconds)]
    if video:
        cmd += ["-c:v", video, "-pix_fmt", "yuv420p", "-g", "30"]
        if video == "libx264":
            cmd += ["-preset", "ultrafast", "-bf", "2", "-x264-params", "b-adapt=0"]
    if audio:
        cmd += ["-c:a", audio]
    cmd += [*extra, str(path)]
    subprocess.run(cmd, check=True, timeout=60)
    return path


@pytest.fixture(scope="session")
def h264_aac_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """H.264 (High, 2 B-frames, GOP 1 s) + AAC in MP4, 2 s, 320x240."""
    return make_clip(tmp_path_factory.mktemp("clips") / "h264_aac.mp4")


@pytest.fixture(scope="session")
def large_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 MB in 2 s (lossless H.264 of noise, GOP 1 s, + AAC): more than the flow-control windows,
    so a VoD delivery is still running when a viewer pauses."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    path = tmp_path_factory.mktemp("clips") / "large.mp4"
    subprocess.run(
        [FFMPEG, "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "nullsrc=s=320x240:r=30,geq=lum='random(1)*255':cb=128:cr=128",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2",
         "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", "30", "-pix_fmt", "yuv420p",
         "-c:a", "aac", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path
