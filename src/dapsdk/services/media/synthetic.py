"""Generated content, so demos and tests need no media files: a moving test pattern encoded to
H.264 with the FFmpeg libraries through PyAV."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    data: bytes
    """One H.264 access unit (Annex B)."""
    pts: int
    """Presentation time in frames."""
    keyframe: bool


def _pattern(index: int, width: int, height: int) -> av.VideoFrame:
    """A frame whose luma ramps with the frame index and whose chroma drifts: cheap, and every
    frame differs, so the encoder produces real P-frames."""
    frame = av.VideoFrame(width, height, "yuv420p")
    for number, plane in enumerate(frame.planes):
        row = bytes((x + index * (3 + number)) % 256 for x in range(plane.line_size))
        plane.update(row * (plane.buffer_size // plane.line_size))
    frame.pts = index
    return frame


def synthetic_h264(
    frames: int = 60, *, width: int = 320, height: int = 180, fps: int = 30, gop: int = 30
) -> Iterator[EncodedFrame]:
    """Encode ``frames`` frames of the test pattern (libx264, ultrafast, zero latency)."""
    if frames < 1 or width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError("need frames >= 1 and even width/height >= 16")
    codec = av.CodecContext.create("libx264", "w")
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuv420p"
    codec.framerate = Fraction(fps)
    codec.gop_size = gop
    codec.options = {"preset": "ultrafast", "tune": "zerolatency"}
    for index in range(frames):
        for packet in codec.encode(_pattern(index, width, height)):
            yield EncodedFrame(bytes(packet), int(packet.pts or 0), bool(packet.is_keyframe))
    for packet in codec.encode(None):
        yield EncodedFrame(bytes(packet), int(packet.pts or 0), bool(packet.is_keyframe))


def decode_h264(access_units: Iterable[bytes]) -> list[tuple[int, int]]:
    """Decode H.264 access units; return (width, height) of every picture (proves real video)."""
    codec = av.CodecContext.create("h264", "r")
    sizes: list[tuple[int, int]] = []
    for unit in access_units:
        for frame in codec.decode(av.Packet(unit)):
            sizes.append((frame.width, frame.height))
    for frame in codec.decode(None):
        sizes.append((frame.width, frame.height))
    return sizes
