"""ffprobe/ffmpeg helpers for the media tests: what a real reader finds in a file."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamInfo:
    kind: str
    """"video" or "audio"."""
    codec: str
    width: int
    height: int
    frames: int
    """Decodable packets counted by ffprobe (``-count_packets``)."""
    duration: float
    """Stream duration in seconds (from packet timestamps), 0.0 when unknown."""


def ffprobe(path: Path | str, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def streams(path: Path | str) -> list[StreamInfo]:
    """The audio and video streams of ``path`` with packet counts and durations measured from the
    packets themselves (containers like mkv/webm/ts carry no per-stream duration)."""
    data = ffprobe(
        path,
        "-count_packets",
        "-show_entries",
        "stream=index,codec_type,codec_name,width,height,nb_read_packets",
    )
    packets = ffprobe(path, "-show_entries", "packet=stream_index,pts_time,duration_time")
    ends: dict[int, float] = {}
    starts: dict[int, float] = {}
    for packet in packets.get("packets", []):
        index = int(packet["stream_index"])
        try:
            pts = float(packet["pts_time"])
        except (KeyError, ValueError):
            continue
        length = float(packet.get("duration_time") or 0.0)
        starts[index] = min(starts.get(index, pts), pts)
        ends[index] = max(ends.get(index, 0.0), pts + length)
    result = []
    for stream in data.get("streams", []):
        kind = stream.get("codec_type")
        if kind not in ("video", "audio"):
            continue
        index = int(stream["index"])
        result.append(
            StreamInfo(
                kind=kind,
                codec=stream.get("codec_name", ""),
                width=int(stream.get("width") or 0),
                height=int(stream.get("height") or 0),
                frames=int(stream.get("nb_read_packets") or 0),
                duration=ends.get(index, 0.0) - starts.get(index, 0.0),
            )
        )
    return result


def stream_of(path: Path | str, kind: str) -> StreamInfo:
    found = [stream for stream in streams(path) if stream.kind == kind]
    if len(found) != 1:
        raise AssertionError(f"{path}: expected one {kind} stream, found {found}")
    return found[0]


def frame_md5s(path: Path | str, kind: str = "video") -> list[str]:
    """MD5 of every decoded frame of the first ``kind`` stream (ffmpeg's framemd5 muxer), in
    presentation order: equal lists mean bit-identical pictures."""
    selector = "0:v:0" if kind == "video" else "0:a:0"
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", selector, "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [
        line.rsplit(",", 1)[1].strip()
        for line in result.stdout.splitlines()
        if line and not line.startswith("#")
    ]
