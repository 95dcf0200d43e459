"""The node's VoD store: imported contents kept as the publisher's signed envelopes, so serving is
a read and a forward (subscribers verify the importer's signature end to end, nothing is re-signed).

Layout under ``<data_dir>/vod/<content-id hex>/``::

    info.bin      the signed content info envelope (kind VoD, duration)
    packets.bin   records: u32 little-endian length + one signed media envelope
    index.json    name, title, signer, duration, and per packet [offset, size, track, pts, dts,
                  duration, keyframe]; segments [start_us, duration_us, first packet index]

Segments (what HLS needs) start at keyframes of the first video track and last at least
``segment_us`` (2 s; audio-only contents are cut every 2 s). An import is written to
``<hex>.partial/`` and renamed when complete, so a crash never leaves a half item visible.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from dapsdk.avrs.constants import NO_TIMESTAMP, MediaFlag
from dapsdk.avrs.errors import AvrsError

from ..avrs_media import KIND_INFO, parse_signed_media
from .hub import MediaError, SignedInfo
from .model import ContentKind, MediaInfo, MediaPacket

SEGMENT_US: Final = 2_000_000
_LEN: Final = struct.Struct("<I")
#: Largest stored envelope (a content packet's payload limit).
MAX_RECORD: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PacketEntry:
    offset: int
    size: int
    track: int
    pts: int
    dts: int
    duration: int
    keyframe: bool

    @property
    def time(self) -> int:
        return self.dts if self.dts != NO_TIMESTAMP else self.pts

    @property
    def shown(self) -> int:
        return self.pts if self.pts != NO_TIMESTAMP else self.dts


@dataclass(frozen=True, slots=True)
class Segment:
    start_us: int
    duration_us: int
    first_packet: int


@dataclass(slots=True)
class VodItem:
    content_id: bytes
    name: str
    path: Path
    signed: SignedInfo
    packets: list[PacketEntry]
    segments: list[Segment]
    origin_us: int
    """Time of the first packet: positions (START_POSITION) count from here."""

    @property
    def info(self) -> MediaInfo:
        return self.signed.info

    @property
    def duration_us(self) -> int:
        return self.info.duration_us

    @property
    def size(self) -> int:
        return sum(p.size for p in self.packets)

    def start_index(self, start_us: int, tracks: set[int]) -> int:
        """Index of the keyframe at or before ``start_us`` (of the first wanted video track)."""
        video = [t for t in sorted(tracks) if self.info.tracks[t].is_video]
        target = self.origin_us + max(0, start_us)
        best = 0
        for index, entry in enumerate(self.packets):
            if video and (entry.track != video[0] or not entry.keyframe):
                continue
            if not video and entry.track not in tracks:
                continue
            if entry.pts != NO_TIMESTAMP and entry.pts > target:
                break
            best = index
        return best

    def read(self, handle: BinaryIO, entry: PacketEntry) -> bytes:
        handle.seek(entry.offset)
        (size,) = _LEN.unpack(handle.read(4))
        if size != entry.size:
            raise MediaError(AvrsError.CONTENT_CORRUPTED, "stored record does not match index")
        return handle.read(size)

    def describe(self) -> dict[str, Any]:
        return {
            "content": self.name,
            "content_id": self.content_id.hex(),
            "title": self.info.title,
            "duration_s": round(self.duration_us / 1e6, 3),
            "tracks": [f"{t.kind}:{t.codec}" for t in self.info.tracks],
            "packets": len(self.packets),
            "segments": len(self.segments),
            "bytes": self.size,
            "signer": self.signed.signer.hex(),
        }


class VodReader:
    """Reads one item from a position; the interface of a hub subscription (``wait_info``,
    ``get``, ``close``), plus ``index`` (the next packet) for resuming after a pause."""

    def __init__(
        self, item: VodItem, *, start_us: int | None, index: int | None, rendition: str | None
    ) -> None:
        self.item = item
        self.tracks = item.info.tracks_for(rendition)
        self._file = (item.path / "packets.bin").open("rb")
        self.index = index if index is not None else 0
        self._skip_before: int | None = None
        if index is None and start_us is not None:
            self._key_index = item.start_index(start_us, self.tracks)
            key = item.packets[self._key_index] if item.packets else None
            self._skip_before = None if key is None else key.shown
            # audio sounding at or after the keyframe may be stored before it (interleaving)
            first = self._key_index
            scan = first
            while (
                scan > 0 and key is not None and item.packets[scan - 1].time > key.time - 2_000_000
            ):
                scan -= 1
                entry = item.packets[scan]
                if (
                    not item.info.tracks[entry.track].is_video
                    and entry.shown + entry.duration > key.shown
                ):
                    first = scan
            self.index = first
        else:
            self._key_index = self.index

    async def wait_info(self, timeout: float | None = None) -> SignedInfo:
        return self.item.signed

    async def get(self, timeout: float | None = None) -> MediaPacket | None:
        return self.get_nowait()

    def get_nowait(self) -> MediaPacket | None:
        packets = self.item.packets
        info = self.item.info
        while self.index < len(packets):
            entry = packets[self.index]
            self.index += 1
            if entry.track not in self.tracks:
                continue
            if self._skip_before is not None:
                if info.tracks[entry.track].is_video:
                    if self.index - 1 < self._key_index:
                        continue
                elif entry.shown + entry.duration <= self._skip_before:
                    continue  # audio that ends before the keyframe
            envelope = self.item.read(self._file, entry)
            return MediaPacket(
                track=entry.track, data=b"", pts=entry.pts, dts=entry.dts,
                duration=entry.duration, keyframe=entry.keyframe, seq=self.index - 1,
                envelope=envelope,
            )  # fmt: skip
        return None

    def close(self) -> None:
        self._file.close()


class VodWriter:
    """An import in progress (``add`` each verified packet, then ``commit``)."""

    def __init__(self, store: VodStore, content_id: bytes, name: str, signed: SignedInfo) -> None:
        self.store = store
        self.content_id = content_id
        self.name = name
        self.signed = signed
        self.partial = store.root / f"{content_id.hex()}.partial"
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        (self.partial / "info.bin").write_bytes(signed.envelope)
        self._file = (self.partial / "packets.bin").open("wb")
        self._offset = 0
        self.entries: list[PacketEntry] = []
        self.ended: set[int] = set()

    @property
    def complete(self) -> bool:
        return len(self.ended) >= len(self.signed.info.tracks)

    def add(self, packet: MediaPacket) -> None:
        if packet.end:
            self.ended.add(packet.track)
        if not packet.envelope or (packet.end and not packet.data):
            return
        size = len(packet.envelope)
        if size > MAX_RECORD:
            raise MediaError(AvrsError.CONTENT_CORRUPTED, "packet too large to store")
        self._file.write(_LEN.pack(size))
        self._file.write(packet.envelope)
        self.entries.append(PacketEntry(self._offset, size, packet.track, packet.pts,
                                        packet.dts, packet.duration, packet.keyframe))  # fmt: skip
        self._offset += 4 + size

    def commit(self) -> VodItem:
        self._file.close()
        info = self.signed.info
        origin = min((e.time for e in self.entries if e.time != NO_TIMESTAMP), default=0)
        end = max((e.time + e.duration for e in self.entries if e.time != NO_TIMESTAMP), default=0)
        segments = _segments(self.entries, info, origin)
        index = {
            "name": self.name,
            "signer": self.signed.signer.hex(),
            "origin_us": origin,
            "media_us": end - origin,
            "packets": [
                [e.offset, e.size, e.track, e.pts, e.dts, e.duration, int(e.keyframe)]
                for e in self.entries
            ],
            "segments": [[s.start_us, s.duration_us, s.first_packet] for s in segments],
        }
        (self.partial / "index.json").write_text(json.dumps(index))
        final = self.store.root / self.content_id.hex()
        if final.exists():
            shutil.rmtree(final)
        self.partial.rename(final)
        return self.store.get(self.content_id)

    def abort(self) -> None:
        self._file.close()
        shutil.rmtree(self.partial, ignore_errors=True)


def _segments(entries: list[PacketEntry], info: MediaInfo, origin: int) -> list[Segment]:
    video = info.video_tracks[:1]
    segments: list[Segment] = []
    start: tuple[int, int] | None = None
    for index, entry in enumerate(entries):
        if entry.time == NO_TIMESTAMP:
            continue
        cut = entry.keyframe and entry.track in video if video else True
        if start is None:
            if cut or not video:
                start = (entry.time, index)
            continue
        if cut and entry.time - start[0] >= SEGMENT_US:
            segments.append(Segment(start[0] - origin, entry.time - start[0], start[1]))
            start = (entry.time, index)
    if start is not None:
        end = max(e.time + e.duration for e in entries if e.time != NO_TIMESTAMP)
        segments.append(Segment(start[0] - origin, end - start[0], start[1]))
    return segments


class VodStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[bytes, VodItem] = {}

    def ids(self) -> list[bytes]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and len(entry.name) == 32 and (entry / "index.json").exists():
                try:
                    found.append(bytes.fromhex(entry.name))
                except ValueError:
                    continue
        return found

    def items(self) -> Iterator[VodItem]:
        for content_id in self.ids():
            try:
                yield self.get(content_id)
            except MediaError:
                continue

    def has(self, content_id: bytes) -> bool:
        return (self.root / content_id.hex() / "index.json").exists()

    def get(self, content_id: bytes) -> VodItem:
        cached = self._cache.get(content_id)
        path = self.root / content_id.hex()
        if cached is not None and path.exists():
            return cached
        try:
            index = json.loads((path / "index.json").read_text())
            envelope = (path / "info.bin").read_bytes()
        except (OSError, ValueError):
            raise MediaError(AvrsError.CONTENT_NOT_FOUND, "no such VoD item") from None
        signed = parse_signed_media(envelope)
        if signed is None or signed.kind != KIND_INFO or not signed.verify():
            raise MediaError(AvrsError.CONTENT_INFO_CORRUPTED, "stored content info is invalid")
        info = MediaInfo.decode(signed.media)
        item = VodItem(
            content_id=content_id,
            name=str(index.get("name", content_id.hex())),
            path=path,
            signed=SignedInfo(info, envelope, signed.signer or b""),
            packets=[
                PacketEntry(o, s, t, p, d, du, bool(k)) for o, s, t, p, d, du, k in index["packets"]
            ],
            segments=[Segment(*s) for s in index["segments"]],
            origin_us=int(index.get("origin_us", 0)),
        )
        self._cache[content_id] = item
        return item

    def remove(self, content_id: bytes) -> bool:
        self._cache.pop(content_id, None)
        path = self.root / content_id.hex()
        if not path.exists():
            return False
        shutil.rmtree(path)
        return True

    def writer(self, content_id: bytes, name: str, signed: SignedInfo) -> VodWriter:
        if signed.info.kind != ContentKind.VOD:
            raise MediaError(AvrsError.CONTENT_INFO_CORRUPTED, "not a VoD content info")
        self.root.mkdir(parents=True, exist_ok=True)
        return VodWriter(self, content_id, name, signed)

    def open_reader(
        self, content_id: bytes, *, start_us: int | None, index: int | None, rendition: str | None
    ) -> VodReader:
        return VodReader(self.get(content_id), start_us=start_us, index=index, rendition=rendition)


def flags_of(packet: MediaPacket) -> MediaFlag:
    flags = MediaFlag.KEYFRAME if packet.keyframe else MediaFlag.NONE
    return flags | MediaFlag.END_OF_FLOW if packet.end else flags
