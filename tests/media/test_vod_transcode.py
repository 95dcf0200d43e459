"""VoD transcoded at import: `avrs vod add` makes the rendition ladder and converts formats, and a
real node process serves each rendition to `avrs play`."""

from __future__ import annotations

from pathlib import Path

from dapsdk.node.sandbox import Sandbox
from tests.media.clips import ClipSet
from tests.media.probe import frame_md5s, streams
from tests.playback.procs import avrs, last_json, node_process
from tests.playback.test_media_cli import viewer_args


def test_vod_import_makes_renditions_and_converts(clips: ClipSet, tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    data_dir = tmp_path / "avrs-data"
    hd = clips.h264_1080p
    added = last_json(avrs("vod", "add", str(hd.path), "--content", "hd", "--data-dir",
                           str(data_dir), "--quiet", "--ladder", "360p:600k,240p:300k").stdout)  # fmt: skip
    assert added["packets"] > 0
    hevc = clips.hevc_aac
    avrs("vod", "add", str(hevc.path), "--content", "hevc", "--data-dir", str(data_dir),
         "--quiet", "--formats", "mp4")  # fmt: skip
    outs = {name: tmp_path / f"{name}.mp4" for name in ("source", "360p", "240p", "hevc")}
    with node_process(sandbox.server_config()) as url:
        for name in ("source", "360p", "240p"):
            avrs("play", "hd", "--node", url, "-o", str(outs[name]), "--rendition", name,
                 "--quiet", *viewer_args(sandbox))  # fmt: skip
        avrs("play", "hevc", "--node", url, "-o", str(outs["hevc"]), "--quiet",
             *viewer_args(sandbox))  # fmt: skip
    sizes = {}
    for name in ("source", "360p", "240p"):
        video = {s.kind: s for s in streams(outs[name])}["video"]
        sizes[name] = (video.width, video.height)
        assert video.codec == "h264" and abs(video.frames - hd.spec.frames) <= 1
        assert abs(video.duration - hd.spec.duration) <= 0.05
    assert sizes == {"source": (1920, 1080), "360p": (640, 360), "240p": (426, 240)}
    assert frame_md5s(outs["source"]) == frame_md5s(hd.path)  # the source rendition is a copy
    found = {s.kind: s for s in streams(outs["hevc"])}
    assert (found["video"].codec, found["audio"].codec) == ("h264", "aac")
    assert abs(found["video"].frames - hevc.spec.frames) <= 1
