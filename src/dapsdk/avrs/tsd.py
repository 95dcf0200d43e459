"""TSD sections (``dap_tsd_t``): ``type u16, size u32, data[size]``, little-endian, 6-byte header.

A request's arguments are a list of TSDs. The parser is strict: every declared size is checked
against the bytes that remain before anything is read, the item count and the total size are
capped, and any violation is an :class:`AvrsProtocolError` with ARG_INCORRECT (never a stray
``struct.error`` or ``IndexError``). Typed accessors on :class:`TsdList` turn a wrong size into the
same coded error, so handlers never index raw bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from .buffer import Reader, Writer
from .errors import AvrsError, AvrsProtocolError

TSD_HEADER: Final = struct.Struct("<HI")
TSD_HEADER_SIZE: Final = TSD_HEADER.size  # 6

#: Defaults of the parser limits (AvrsConfig overrides them). 64 arguments is twice what the
#: largest request (a member profile) needs; 1 MiB bounds a request body including an avatar.
DEFAULT_MAX_TSD_ITEMS: Final = 64
DEFAULT_MAX_TSD_TOTAL: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Tsd:
    """One TSD item."""

    type: int
    """u16 argument type."""
    data: bytes
    """The item's payload (``size`` bytes)."""

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFFFF:
            raise ValueError(f"TSD type {self.type} is not a u16")
        if len(self.data) > 0xFFFFFFFF:
            raise ValueError("TSD data longer than a u32 size")

    @property
    def wire_size(self) -> int:
        """Header plus data: what ``dap_tsd_size()`` returns."""
        return TSD_HEADER_SIZE + len(self.data)

    def __repr__(self) -> str:
        return f"Tsd(type=0x{self.type:04x}, size={len(self.data)})"


def push_tsd(writer: Writer, item: Tsd) -> None:
    writer.push_u16(item.type)
    writer.push_u32(len(item.data))
    writer.push_bytes(item.data)


def pull_tsd(reader: Reader) -> Tsd:
    """Read one TSD; the cursor does not move if the header or the data is truncated."""
    start = reader.tell()
    if reader.remaining() < TSD_HEADER_SIZE:
        raise AvrsProtocolError(
            AvrsError.ARG_INCORRECT,
            f"TSD header at {start} truncated: {reader.remaining()} of {TSD_HEADER_SIZE} bytes",
        )
    view = reader.pull_view(TSD_HEADER_SIZE)
    tsd_type, size = TSD_HEADER.unpack(view)
    if size > reader.remaining():
        # Undo the header read so the failed pull leaves the cursor where it was.
        reader.seek(start)
        raise AvrsProtocolError(
            AvrsError.ARG_INCORRECT,
            f"TSD 0x{tsd_type:04x} at {start} declares {size} bytes, only {reader.remaining()} left",
        )
    return Tsd(tsd_type, reader.pull_bytes(size))


def encode_tsds(items: Iterable[Tsd]) -> bytes:
    writer = Writer()
    for item in items:
        push_tsd(writer, item)
    return writer.data()


@dataclass(frozen=True, slots=True)
class TsdList:
    """Parsed arguments: the items in wire order and each item's offset in the argument area."""

    items: tuple[Tsd, ...]
    offsets: tuple[int, ...]

    def __iter__(self) -> Iterator[Tsd]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def types(self) -> list[int]:
        return [item.type for item in self.items]

    def all(self, tsd_type: int) -> list[bytes]:
        return [item.data for item in self.items if item.type == tsd_type]

    def get(self, tsd_type: int) -> bytes | None:
        """The data of the only item of this type, None if absent, ARG_INCORRECT if repeated."""
        found = self.all(tsd_type)
        if not found:
            return None
        if len(found) > 1:
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"argument 0x{tsd_type:04x} repeated")
        return found[0]

    def require(self, tsd_type: int) -> bytes:
        data = self.get(tsd_type)
        if data is None:
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"argument 0x{tsd_type:04x} missing")
        return data

    # Typed accessors: a wrong size is a coded error, not an IndexError.

    def fixed(self, tsd_type: int, size: int, *, required: bool = True) -> bytes | None:
        data = self.require(tsd_type) if required else self.get(tsd_type)
        if data is not None and len(data) != size:
            raise AvrsProtocolError(
                AvrsError.ARG_INCORRECT,
                f"argument 0x{tsd_type:04x} has {len(data)} bytes, expected {size}",
            )
        return data

    def uint(self, tsd_type: int, size: int, *, required: bool = True) -> int | None:
        data = self.fixed(tsd_type, size, required=required)
        return None if data is None else int.from_bytes(data, "little")

    def sint(self, tsd_type: int, size: int, *, required: bool = True) -> int | None:
        data = self.fixed(tsd_type, size, required=required)
        return None if data is None else int.from_bytes(data, "little", signed=True)

    def text(
        self,
        tsd_type: int,
        max_size: int,
        *,
        required: bool = True,
        code: AvrsError = AvrsError.ARG_INCORRECT,
    ) -> str | None:
        """UTF-8 text of at most ``max_size`` bytes. A trailing NUL (the C convention) is dropped."""
        data = self.require(tsd_type) if required else self.get(tsd_type)
        if data is None:
            return None
        if data.endswith(b"\x00"):
            data = data[:-1]
        if len(data) > max_size or b"\x00" in data:
            raise AvrsProtocolError(
                code, f"argument 0x{tsd_type:04x} is not a string of <= {max_size}"
            )
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise AvrsProtocolError(code, f"argument 0x{tsd_type:04x} is not UTF-8") from None


def parse_tsds(
    data: bytes | bytearray | memoryview,
    *,
    max_items: int = DEFAULT_MAX_TSD_ITEMS,
    max_total: int = DEFAULT_MAX_TSD_TOTAL,
) -> TsdList:
    """Parse a whole argument area. Every byte must belong to an item."""
    if len(data) > max_total:
        raise AvrsProtocolError(
            AvrsError.ARG_INCORRECT, f"arguments are {len(data)} bytes, limit {max_total}"
        )
    reader = Reader(data)
    items: list[Tsd] = []
    offsets: list[int] = []
    while not reader.eof():
        if len(items) >= max_items:
            raise AvrsProtocolError(AvrsError.ARG_INCORRECT, f"more than {max_items} arguments")
        offsets.append(reader.tell())
        items.append(pull_tsd(reader))
    return TsdList(tuple(items), tuple(offsets))
