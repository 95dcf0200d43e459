"""The generated clips are what the media tests assume they are."""

from __future__ import annotations

import pytest

from tests.media.clips import CLIPS, ClipSet
from tests.media.probe import ffprobe, frame_md5s, streams


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_clip_has_the_promised_streams(clips: ClipSet, name: str) -> None:
    clip = clips[name]
    spec = clip.spec
    found = {stream.kind: stream for stream in streams(clip.path)}
    assert set(found) == {
        kind for kind, codec in (("video", spec.video), ("audio", spec.audio)) if codec
    }
    if spec.video:
        video = found["video"]
        assert video.codec == spec.video_codec
        assert (video.width, video.height) == (spec.width, spec.height)
        assert abs(video.frames - spec.frames) <= 1
        assert abs(video.duration - spec.duration) <= 0.05
    if spec.audio:
        audio = found["audio"]
        assert audio.codec == spec.audio_codec
        assert abs(audio.duration - spec.duration) <= 0.05


def test_h264_clip_has_b_frames_and_distinct_frames(clips: ClipSet) -> None:
    clip = clips.h264_aac
    packets = ffprobe(clip.path, "-select_streams", "v:0", "-show_entries", "packet=pts,dts,flags")
    reordered = [p for p in packets["packets"] if p["pts"] != p["dts"]]
    assert reordered, "expected B-frames (pts != dts)"
    keyframes = [p for p in packets["packets"] if "K" in p["flags"]]
    assert len(keyframes) == 2  # GOP 1 s in a 2 s clip
    md5s = frame_md5s(clip.path)
    assert len(md5s) == 60 and len(set(md5s)) == 60  # the picture moves every frame
