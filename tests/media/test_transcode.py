"""The rendition ladder and format conversion (MediaPipeline), read back with ffprobe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from dapsdk.services.media.live_transcode import LiveTranscoder
from dapsdk.services.media.model import (
    MediaPacket,
    from_av_packet,
    open_setup,
    template_streams,
    to_av_packet,
)
from dapsdk.services.media.transcode import (
    DEFAULT_LADDER,
    FORMATS,
    MediaPipeline,
    Rendition,
    ladder_for,
    open_source,
    parse_ladder,
)
from tests.media.clips import Clip, ClipSet
from tests.media.probe import ffprobe, frame_md5s, streams


def run_pipeline(clip: Clip, **options: object) -> tuple[MediaPipeline, list[MediaPacket]]:
    container, info, templates = open_source(str(clip.path))
    try:
        pipeline = MediaPipeline(info, templates, **options)  # type: ignore[arg-type]
        index = {s.index: n for n, s in enumerate(templates)}
        out: list[MediaPacket] = []
        for packet in container.demux(templates):
            if packet.size:
                out += pipeline.process(from_av_packet(packet, index[packet.stream.index]))
        out += pipeline.flush()
    finally:
        container.close()
    return pipeline, out


def write(pipeline: MediaPipeline, packets: list[MediaPacket], rendition: str, path: Path) -> Path:
    """Mux ``rendition`` of the pipeline's output, with templates from the content info's setup
    (as a player does; the source container is closed by now)."""
    tracks = pipeline.info.tracks_for(rendition)
    setup = open_setup(pipeline.info)
    templates = template_streams(setup, pipeline.info)
    with setup, av.open(str(path), "w") as output:
        streams = {i: output.add_stream_from_template(templates[i]) for i in sorted(tracks)}
        for packet in sorted((p for p in packets if p.track in tracks), key=lambda p: p.time):
            stream = streams[packet.track]
            output.mux(to_av_packet(packet, stream, stream.time_base))
    return path


def keyframe_times(path: Path) -> list[float]:
    data = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags")
    times = [float(p["pts_time"]) for p in data["packets"] if "K" in p["flags"]]
    return [round(t - times[0], 3) for t in times]  # containers differ in their start offset


def test_ladder_is_capped_to_the_source() -> None:
    assert [r.name for r in ladder_for(1080, DEFAULT_LADDER)] == ["720p", "480p", "360p"]
    assert [r.name for r in ladder_for(480, DEFAULT_LADDER)] == ["360p"]
    assert ladder_for(240, DEFAULT_LADDER) == []


def test_parse_ladder() -> None:
    assert parse_ladder("360p:800k, 720p:2.8M".replace("2.8M", "2800k")) == (
        Rendition("720p", 720, 2_800_000),
        Rendition("360p", 360, 800_000),
    )
    for bad in ("", "720:1000k", "720p:1000k,720p:900k", "15p:100k"):
        with pytest.raises(ValueError):
            parse_ladder(bad)


def test_1080p_ladder_has_the_right_resolutions_and_aligned_keyframes(
    clips: ClipSet, tmp_path: Path
) -> None:
    clip = clips.h264_1080p
    pipeline, packets = run_pipeline(clip, ladder=DEFAULT_LADDER, preset="ultrafast")
    assert pipeline.info.renditions == ["source", "720p", "480p", "360p"]
    expected = {"source": (1920, 1080), "720p": (1280, 720), "480p": (854, 480), "360p": (640, 360)}
    source_keys = keyframe_times(clip.path)
    for name, size in expected.items():
        path = write(pipeline, packets, name, tmp_path / f"{name}.mkv")
        found = {s.kind: s for s in streams(path)}
        video = found["video"]
        assert (video.width, video.height) == size
        assert video.codec == "h264"
        assert abs(video.frames - clip.spec.frames) <= 1
        assert abs(video.duration - clip.spec.duration) <= 0.05
        assert found["audio"].codec == "aac"
        assert keyframe_times(path) == source_keys  # renditions switch at the same instants
    # The source rendition is a copy: every decoded frame is bit-identical.
    assert frame_md5s(tmp_path / "source.mkv") == frame_md5s(clip.path)


@pytest.mark.parametrize(
    ("name", "target", "video", "audio"),
    [
        ("hevc_aac", "mp4", "h264", "aac"),
        ("vp9_opus", "mp4", "h264", "aac"),
        ("mpeg2_ts", "mp4", "h264", None),
        ("mp3_audio", "mp4", None, "aac"),
        ("h264_aac", "webm", "vp9", "opus"),
    ],
)
def test_format_conversion(
    clips: ClipSet, tmp_path: Path, name: str, target: str, video: str | None, audio: str | None
) -> None:
    clip = clips[name]
    pipeline, packets = run_pipeline(clip, target=FORMATS[target], preset="ultrafast")
    assert pipeline.transcodes
    path = write(pipeline, packets, "source", tmp_path / "out.mkv")
    found = {s.kind: s for s in streams(path)}
    assert {k: s.codec for k, s in found.items()} == {
        k: c for k, c in (("video", video), ("audio", audio)) if c
    }
    if video:
        assert abs(found["video"].frames - clip.spec.frames) <= 1
        assert abs(found["video"].duration - clip.spec.duration) <= 0.05
        assert len(frame_md5s(path)) == len(frame_md5s(clip.path))  # every frame decodes
    if audio:
        # An audio encoder adds its priming delay and pads to whole frames (AAC: 1024 samples).
        assert abs(found["audio"].duration - clip.spec.duration) <= 0.05 + 1024 / 44100


def test_supported_source_is_copied_untouched(clips: ClipSet, tmp_path: Path) -> None:
    clip = clips.h264_aac
    pipeline, packets = run_pipeline(clip, target=FORMATS["mp4"])
    assert not pipeline.transcodes
    path = write(pipeline, packets, "source", tmp_path / "copy.mp4")
    assert frame_md5s(path) == frame_md5s(clip.path)


async def test_live_transcoder_drops_to_the_next_keyframe_when_behind(clips: ClipSet) -> None:
    """A backlog of 5 packets cannot hold a 2 s clip submitted at once: video is dropped up to a
    keyframe, the drops are counted, copies still flow, and what is encoded decodes."""
    clip = clips.h264_1080p
    container, info, templates = open_source(str(clip.path))
    index = {s.index: n for n, s in enumerate(templates)}
    pipeline = MediaPipeline(
        info, templates, ladder=(Rendition("360p", 360, 800_000),), preset="ultrafast"
    )
    source = [
        from_av_packet(p, index[p.stream.index]) for p in container.demux(templates) if p.size
    ]
    container.close()
    emitted: list[MediaPacket] = []
    transcoder = LiveTranscoder(pipeline, emitted.append, max_backlog=5, lag_warning=0.0)
    for packet in source:
        transcoder.submit(packet)  # no await in between: the worker cannot run
    stats = transcoder.stats()
    assert stats.dropped > 0 and stats.backlog == 5 and stats.lagging
    await transcoder.finish()
    copied = [p for p in emitted if p.track == 0]
    assert len(copied) == clip.spec.frames  # the source rendition is never held back
    rendition = [p for p in emitted if p.track == 1]
    assert 0 < len(rendition) < clip.spec.frames
    assert rendition[0].keyframe
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = pipeline.info.tracks[1].extradata
    frames = [f for p in rendition for f in decoder.decode(av.Packet(p.data))]
    assert frames and all(f.height == 360 for f in frames)
    await asyncio.sleep(0)
