"""`avrs publish`, `avrs play` and `avrs vod` as real processes against a real `avrs node`
process, on generated clips; what play writes is checked with ffprobe and PyAV."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import av
import pytest

from dapsdk.node.sandbox import Sandbox
from dapsdk.services.auth import Role

from .procs import avrs, avrs_binary, last_json, node_process, spawn, stop, wait_line

FFPROBE = shutil.which("ffprobe")


def probe(path: Path | str, data: bytes | None = None) -> dict[str, object]:
    if FFPROBE is None:
        pytest.skip("ffprobe is not installed")
    cmd = [FFPROBE, "-v", "error", "-show_streams", "-show_format", "-count_packets",
           "-of", "json", str(path)]  # fmt: skip
    out = subprocess.run(cmd, input=data, capture_output=True, check=True, timeout=60)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def packet_md5s(path: Path) -> dict[str, list[str]]:
    """Per stream kind, the MD5 of every packet's bytes (what a remux must keep)."""
    result: dict[str, list[str]] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                result.setdefault(packet.stream.type, []).append(
                    hashlib.md5(bytes(packet)).hexdigest()
                )
    return result


def streams(info: dict[str, object]) -> list[tuple[str, str, int]]:
    return sorted(
        (s["codec_type"], s["codec_name"], int(s["nb_read_packets"]))  # type: ignore[index]
        for s in info["streams"]  # type: ignore[attr-defined]
    )


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Sandbox, Path]:
    sandbox = Sandbox(tmp_path)
    sandbox.identity("camera", Role.SERVER)
    return sandbox, sandbox.server_config()


def camera_args(sandbox: Sandbox) -> list[str]:
    return ["--key", str(sandbox.root / "camera.key"), "--cert", str(sandbox.root / "camera.crt")]


def viewer_args(sandbox: Sandbox) -> list[str]:
    return ["--token", sandbox.token("viewer-1")]


def assert_same_media(out: Path, source: Path) -> None:
    """Same streams, frame counts (exact, so also within ±1), duration within 50 ms, and every
    packet byte-identical (nothing was transcoded)."""
    got, want = probe(out), probe(source)
    assert streams(got) == streams(want)
    got_d = float(got["format"]["duration"])  # type: ignore[index]
    want_d = float(want["format"]["duration"])  # type: ignore[index]
    assert abs(got_d - want_d) <= 0.05, (got_d, want_d)
    assert packet_md5s(out) == packet_md5s(source)


def test_live_file_published_and_played(cluster: tuple[Sandbox, Path], h264_aac_clip: Path,
                                        tmp_path: Path) -> None:  # fmt: skip
    """A player started before the publisher waits, then gets every packet (B-frames kept)."""
    sandbox, config = cluster
    out = tmp_path / "live.mp4"
    with node_process(config) as url:
        player = spawn("play", "live1", "--node", url, "-o", str(out), "--quiet",
                       *viewer_args(sandbox))  # fmt: skip
        try:
            wait_line(player, "playing live1", stderr=True)  # subscribed, waiting
            sent = avrs("publish", str(h264_aac_clip), "--content", "live1", "--node", url,
                        "--as-fast-as-possible", *camera_args(sandbox))  # fmt: skip
            stdout, stderr = player.communicate(timeout=60)
        finally:
            stop(player)
        assert player.returncode == 0, stderr
    result = last_json(stdout)
    assert last_json(sent.stdout)["packets"] == result["packets"] + 2  # + END per track
    assert result["forged"] == 0 and result["first_video_keyframe"] is True
    assert_same_media(out, h264_aac_clip)


def test_testsrc_late_joiner_pipes_mpegts_starting_at_keyframe(
    cluster: tuple[Sandbox, Path],
) -> None:
    sandbox, config = cluster
    with node_process(config) as url:
        publisher = spawn("publish", "testsrc", "--content", "cam", "--node", url,
                          "--duration", "60", *camera_args(sandbox))  # fmt: skip
        try:
            wait_line(publisher, "publishing cam")
            player = avrs_binary("play", "cam", "--node", url, "-o", "-", "--duration", "1.5",
                                 "--quiet", *viewer_args(sandbox), timeout=60)  # fmt: skip
        finally:
            stop(publisher)
    ts = player.stdout
    result = last_json(player.stderr.decode())
    assert result["first_video_keyframe"] is True and result["forged"] == 0
    assert result["latency_ms"] is not None
    info = probe("-", ts)
    kinds = sorted(s["codec_name"] for s in info["streams"])  # type: ignore[attr-defined]
    assert kinds == ["aac", "h264"]


def first_video_pts(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is not None:
                assert packet.is_keyframe
                return float(packet.pts * stream.time_base)
    raise AssertionError("no video packet")


def test_vod_imported_offline_played_whole_and_from_a_position(
    cluster: tuple[Sandbox, Path], h264_aac_clip: Path, tmp_path: Path
) -> None:
    sandbox, config = cluster
    data_dir = tmp_path / "avrs-data"
    added = last_json(avrs("vod", "add", str(h264_aac_clip), "--content", "lecture",
                           "--data-dir", str(data_dir), "--quiet").stdout)  # fmt: skip
    assert added["segments"] >= 1 and added["packets"] > 0
    listed = [json.loads(line) for line in avrs("vod", "list", "--data-dir",
                                                 str(data_dir)).stdout.splitlines()]  # fmt: skip
    assert [item["content"] for item in listed] == ["lecture"]
    whole, late = tmp_path / "whole.mp4", tmp_path / "late.ts"
    with node_process(config) as url:
        avrs("play", "lecture", "--node", url, "-o", str(whole), "--quiet", *viewer_args(sandbox))
        avrs("play", "lecture", "--node", url, "-o", str(late), "--start", "1.2", "--quiet",
             *viewer_args(sandbox))  # fmt: skip
    assert_same_media(whole, h264_aac_clip)
    # GOP is 1 s: the keyframe at or before 1.2 s is the one at 1.0 s
    start = first_video_pts(late) - first_video_pts(whole)
    assert abs(start - 1.0) < 0.05, start
    late_info = probe(late)
    assert 0.9 < float(late_info["format"]["duration"]) < 1.2  # type: ignore[index]
    assert avrs("vod", "rm", "lecture", "--data-dir", str(data_dir)).returncode == 0
    assert avrs("vod", "list", "--data-dir", str(data_dir)).stdout == ""


def test_vod_imported_through_a_running_node(
    cluster: tuple[Sandbox, Path], h264_aac_clip: Path, tmp_path: Path
) -> None:
    sandbox, config = cluster
    out = tmp_path / "remote.mkv"
    with node_process(config) as url:
        avrs("vod", "add", str(h264_aac_clip), "--content", "upload", "--node", url, "--quiet",
             *camera_args(sandbox))  # fmt: skip
        avrs("play", "upload", "--node", url, "-o", str(out), "--quiet", *viewer_args(sandbox))
        webm = tmp_path / "converted.webm"
        converted = last_json(avrs("play", "upload", "--node", url, "-o", str(webm), "--quiet",
                                   *viewer_args(sandbox)).stdout)  # fmt: skip
        assert converted["converted"] is True
        listed = avrs("vod", "list", "--data-dir", str(tmp_path / "avrs-data")).stdout
        assert '"content": "upload"' in listed
        avrs("vod", "rm", "upload", "--node", url, *camera_args(sandbox))
        assert avrs("vod", "list", "--data-dir", str(tmp_path / "avrs-data")).stdout == ""
    assert packet_md5s(out) == packet_md5s(h264_aac_clip)
    # a format the content is not in: converted on the player (webm = VP9 + Opus)
    codecs = sorted(s["codec_name"] for s in probe(webm)["streams"])  # type: ignore[attr-defined]
    assert codecs == ["opus", "vp9"]
