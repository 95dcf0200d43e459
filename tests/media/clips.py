"""Short test clips generated with PyAV, so the repository holds no media files.

Every clip is made from FFmpeg's own sources through a PyAV filter graph: ``testsrc2`` (a moving
picture with a burnt-in frame counter, every frame different) for video and ``sine`` with a beep
every second for audio, then encoded with the FFmpeg encoders bundled in the PyAV wheel. PyAV 18.1
(FFmpeg 8.1) ships all the encoders the clips need, checked with ``av.codec.Codec(name, "w")``:
``libx264``, ``libx265``, ``libvpx-vp9``, ``libopus``, ``aac`` (FFmpeg's native encoder; there is
no ``libfdk_aac``), ``libmp3lame`` and ``mpeg2video``. The encoders are chosen for speed on a
2-core machine (x264/x265 ultrafast or veryfast, libvpx-vp9 realtime with ``cpu-used=8``), so the
whole set takes a few seconds; only the 1080p clip is large.

The clips (each 2 s, 320x240 at 30 fps unless stated; GOP 1 s, so every clip has two keyframes):

========================  =========  ===================================================
name                      container  streams
========================  =========  ===================================================
``h264_aac``              mp4        H.264 High with 2 B-frames (non-zero composition
                                     offsets) + AAC-LC 48 kHz stereo
``hevc_aac``              mkv        HEVC (x265) + AAC-LC
``vp9_opus``              webm       VP9 + Opus 48 kHz
``audio_only``            m4a        AAC-LC only, 2.5 s
``mp3_audio``             mp3        MP3 only (format-conversion source)
``video_ts``              ts         H.264 only, in MPEG-TS
``mpeg2_ts``              ts         MPEG-2 video only (format-conversion source)
``h264_1080p``            mp4        H.264 1920x1080 (ultrafast, no B-frames) + AAC
========================  =========  ===================================================

:class:`ClipSet` makes a clip the first time a test asks for it and keeps it for the test session
(``tests/media/conftest.py`` provides the ``clips`` fixture).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.filter

#: Bump when a clip's recipe changes (the cache directory name includes it).
RECIPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """How a clip is made, and what a reader of it must find."""

    name: str
    suffix: str
    """File name suffix; FFmpeg picks the muxer from it."""
    video: str | None = None
    """Video encoder name (None: no video)."""
    audio: str | None = None
    """Audio encoder name (None: no audio)."""
    width: int = 320
    height: int = 240
    fps: int = 30
    duration: float = 2.0
    gop: int = 30
    video_options: dict[str, str] = field(default_factory=dict)
    audio_rate: int = 48000
    audio_bitrate: int = 96_000
    b_frames: bool = False
    """The video has B-frames (pts != dts for some packets)."""

    @property
    def video_codec(self) -> str | None:
        """The codec name ffprobe reports for the video stream."""
        return _PROBE_NAMES.get(self.video) if self.video else None

    @property
    def audio_codec(self) -> str | None:
        return _PROBE_NAMES.get(self.audio) if self.audio else None

    @property
    def frames(self) -> int:
        """Number of video frames."""
        return round(self.duration * self.fps) if self.video else 0


_PROBE_NAMES = {
    "libx264": "h264",
    "libx265": "hevc",
    "libvpx-vp9": "vp9",
    "libopus": "opus",
    "aac": "aac",
    "libmp3lame": "mp3",
    "mpeg2video": "mpeg2video",
}

_X264 = {"preset": "veryfast", "x264-params": "keyint=30:min-keyint=30:scenecut=0:bframes=2"}

CLIPS: dict[str, ClipSpec] = {
    spec.name: spec
    for spec in (
        ClipSpec("h264_aac", ".mp4", "libx264", "aac", video_options=_X264, b_frames=True),
        ClipSpec(
            "hevc_aac",
            ".mkv",
            "libx265",
            "aac",
            video_options={
                "preset": "ultrafast",
                "x265-params": "keyint=30:min-keyint=30:scenecut=0:bframes=0:log-level=error",
            },
        ),
        ClipSpec(
            "vp9_opus",
            ".webm",
            "libvpx-vp9",
            "libopus",
            video_options={"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
        ),
        ClipSpec("audio_only", ".m4a", None, "aac", duration=2.5),
        ClipSpec("mp3_audio", ".mp3", None, "libmp3lame", audio_rate=44100),
        ClipSpec(
            "video_ts",
            ".ts",
            "libx264",
            None,
            video_options={"preset": "ultrafast", "x264-params": "keyint=30:scenecut=0"},
        ),
        ClipSpec("mpeg2_ts", ".ts", "mpeg2video", None, video_options={"g": "30", "bf": "0"}),
        ClipSpec(
            "h264_1080p",
            ".mp4",
            "libx264",
            "aac",
            width=1920,
            height=1080,
            video_options={
                "preset": "ultrafast",
                "x264-params": "keyint=30:min-keyint=30:scenecut=0",
            },
        ),
    )
}


def _pull_all(sink: av.filter.context.FilterContext) -> Iterator[av.frame.Frame]:
    while True:
        try:
            yield sink.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            return


def _video_frames(spec: ClipSpec) -> Iterator[av.VideoFrame]:
    graph = av.filter.Graph()
    source = graph.add(
        "testsrc2", f"size={spec.width}x{spec.height}:rate={spec.fps}:duration={spec.duration}"
    )
    pixels = graph.add("format", "pix_fmts=yuv420p")
    sink = graph.add("buffersink")
    source.link_to(pixels)
    pixels.link_to(sink)
    graph.configure()
    for frame in _pull_all(sink):
        assert isinstance(frame, av.VideoFrame)
        yield frame


def _audio_frames(spec: ClipSpec) -> Iterator[av.AudioFrame]:
    graph = av.filter.Graph()
    source = graph.add(
        "sine",
        f"frequency=440:beep_factor=4:sample_rate={spec.audio_rate}:duration={spec.duration}"
        ":samples_per_frame=1024",
    )
    stereo = graph.add("aformat", "sample_fmts=s16:channel_layouts=stereo")
    sink = graph.add("abuffersink")
    source.link_to(stereo)
    stereo.link_to(sink)
    graph.configure()
    for frame in _pull_all(sink):
        assert isinstance(frame, av.AudioFrame)
        yield frame


def make_clip(spec: ClipSpec, path: Path) -> Path:
    """Encode ``spec`` into ``path`` (written to a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=spec.suffix, dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp_name, "w") as output:
            video_stream = audio_stream = None
            if spec.video:
                video_stream = output.add_stream(spec.video, rate=spec.fps)
                video_stream.width = spec.width
                video_stream.height = spec.height
                video_stream.pix_fmt = "yuv420p"
                video_stream.codec_context.time_base = Fraction(1, spec.fps)
                video_stream.codec_context.gop_size = spec.gop
                video_stream.options = dict(spec.video_options)
                if spec.video == "mpeg2video":
                    video_stream.bit_rate = 1_000_000
            if spec.audio:
                audio_stream = output.add_stream(spec.audio, rate=spec.audio_rate)
                audio_stream.layout = "stereo"
                audio_stream.bit_rate = spec.audio_bitrate
            # Interleave by time so the muxer does not buffer one whole stream.
            video = _video_frames(spec) if video_stream else iter(())
            audio = _audio_frames(spec) if audio_stream else iter(())
            pending_video = next(video, None)
            pending_audio = next(audio, None)
            while pending_video is not None or pending_audio is not None:
                video_first = pending_audio is None or (
                    pending_video is not None
                    and float(pending_video.pts * pending_video.time_base)
                    <= float(pending_audio.pts * pending_audio.time_base)
                )
                if video_first:
                    assert video_stream is not None and pending_video is not None
                    pending_video.pict_type = av.video.frame.PictureType.NONE
                    output.mux(video_stream.encode(pending_video))
                    pending_video = next(video, None)
                else:
                    assert audio_stream is not None and pending_audio is not None
                    output.mux(audio_stream.encode(pending_audio))
                    pending_audio = next(audio, None)
            for stream in (video_stream, audio_stream):
                if stream is not None:
                    output.mux(stream.encode(None))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True, slots=True)
class Clip:
    spec: ClipSpec
    path: Path

    @property
    def name(self) -> str:
        return self.spec.name


class ClipSet:
    """Clips made on first use into ``directory`` and reused afterwards (also by other pytest-xdist
    workers that share the directory: files appear atomically, by rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / f"clips-v{RECIPE_VERSION}"

    def path(self, name: str) -> Path:
        spec = CLIPS[name]
        target = self.directory / f"{spec.name}{spec.suffix}"
        if not target.exists():
            make_clip(spec, target)
        return target

    def __getitem__(self, name: str) -> Clip:
        return Clip(CLIPS[name], self.path(name))

    def __getattr__(self, name: str) -> Clip:
        if name in CLIPS:
            return self[name]
        raise AttributeError(name)
