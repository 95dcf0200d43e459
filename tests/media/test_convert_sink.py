"""A player that asks for another supported format gets it (ConvertingSink around the player's
remuxing FileSink), and VoD import's TranscodedSource gives the ladder and the target format."""

from __future__ import annotations

from pathlib import Path

from dapsdk.services.media.convert_sink import ConvertingSink
from dapsdk.services.media.model import MediaPacket, from_av_packet
from dapsdk.services.media.player import FileSink
from dapsdk.services.media.transcode import FORMATS, KEEP_SOURCE, Rendition, open_source
from dapsdk.services.media.transcoded_source import TranscodedSource
from tests.media.clips import Clip, ClipSet
from tests.media.probe import frame_md5s, streams


def play_into(clip: Clip, target: Path) -> ConvertingSink:
    """Feed the clip's packets to a converting sink as the player would."""
    container, info, templates = open_source(str(clip.path))
    index = {s.index: n for n, s in enumerate(templates)}
    packets: list[MediaPacket] = [
        from_av_packet(p, index[p.stream.index]) for p in container.demux(templates) if p.size
    ]
    container.close()
    sink = ConvertingSink(FileSink(str(target)), str(target))
    sink.start(info, set(range(len(info.tracks))))
    for packet in packets:
        sink.write(packet)
    sink.close()
    return sink


def test_webm_request_of_h264_content_is_converted(clips: ClipSet, tmp_path: Path) -> None:
    clip = clips.h264_aac
    out = tmp_path / "out.webm"
    assert play_into(clip, out).converting
    found = {s.kind: s for s in streams(out)}
    assert (found["video"].codec, found["audio"].codec) == ("vp9", "opus")
    assert abs(found["video"].frames - clip.spec.frames) <= 1
    assert abs(found["video"].duration - clip.spec.duration) <= 0.05


def test_mp4_request_of_h264_content_is_a_bit_exact_remux(clips: ClipSet, tmp_path: Path) -> None:
    clip = clips.h264_aac
    out = tmp_path / "out.mp4"
    assert not play_into(clip, out).converting
    assert frame_md5s(out) == frame_md5s(clip.path)


def test_mp4_request_of_vp9_content_is_converted(clips: ClipSet, tmp_path: Path) -> None:
    out = tmp_path / "out.ts"
    play_into(clips.vp9_opus, out)
    assert {s.kind: s.codec for s in streams(out)} == {"video": "h264", "audio": "aac"}


def test_transcoded_source_for_vod_import(clips: ClipSet) -> None:
    source = TranscodedSource(
        str(clips.hevc_aac.path), ladder=(Rendition("160p", 160, 200_000),), target=FORMATS["mp4"]
    )
    try:
        assert source.info.renditions == ["source", "160p"]
        assert [(t.codec, t.height) for t in source.info.tracks] == [
            ("h264", 240), ("h264", 160), ("aac", 0),
        ]  # fmt: skip
        assert source.info.duration_us > 1_900_000
        counts: dict[int, int] = {}
        for packet in source.packets():
            counts[packet.track] = counts.get(packet.track, 0) + 1
        assert abs(counts[0] - 60) <= 1 and abs(counts[1] - 60) <= 1 and counts[2] > 90
    finally:
        source.close()


def test_keep_source_codecs_and_add_h264_renditions(clips: ClipSet) -> None:
    source = TranscodedSource(
        str(clips.vp9_opus.path), ladder=(Rendition("160p", 160, 200_000),), target=KEEP_SOURCE
    )
    try:
        assert [(t.codec, t.rendition) for t in source.info.tracks] == [
            ("vp9", "source"), ("h264", "160p"), ("opus", "source"),
        ]  # fmt: skip
        assert source.transcodes
    finally:
        source.close()
