"""Cursor Reader and append-only Writer for AVRS wire structs (STYLE.md §5).

The Reader checks bounds *before* it moves, so a failed read leaves :meth:`Reader.tell` unchanged
and raises :class:`BufferReadError` (an :class:`AvrsProtocolError`), never ``struct.error`` or
``IndexError``. All integers are little-endian.
"""

from __future__ import annotations

import struct
from typing import Final

from .errors import AvrsError, AvrsProtocolError

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_I64: Final = struct.Struct("<q")


class BufferReadError(AvrsProtocolError):
    """A read ran past the end of the data. Carries ARG_INCORRECT unless the caller re-codes it."""

    def __init__(self, reason: str, code: AvrsError = AvrsError.ARG_INCORRECT) -> None:
        super().__init__(code, reason)


class Reader:
    """A cursor over immutable bytes. Views stay internal; ``pull_bytes`` returns a copy."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = (
            memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
        )
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def seek(self, position: int) -> None:
        """Move the cursor (to undo a partial read of a composite struct)."""
        if not 0 <= position <= len(self._data):
            raise ValueError(f"seek to {position} outside 0..{len(self._data)}")
        self._pos = position

    def eof(self) -> bool:
        return self._pos >= len(self._data)

    def _need(self, size: int, what: str) -> int:
        if size < 0 or size > len(self._data) - self._pos:
            raise BufferReadError(f"{what}: need {size} bytes, {self.remaining()} left")
        start = self._pos
        self._pos = start + size
        return start

    def pull_u8(self) -> int:
        start = self._need(1, "u8")
        return self._data[start]

    def pull_u16(self) -> int:
        start = self._need(2, "u16")
        value: int = _U16.unpack_from(self._data, start)[0]
        return value

    def pull_u32(self) -> int:
        start = self._need(4, "u32")
        value: int = _U32.unpack_from(self._data, start)[0]
        return value

    def pull_u64(self) -> int:
        start = self._need(8, "u64")
        value: int = _U64.unpack_from(self._data, start)[0]
        return value

    def pull_i64(self) -> int:
        start = self._need(8, "i64")
        value: int = _I64.unpack_from(self._data, start)[0]
        return value

    def pull_bytes(self, size: int) -> bytes:
        start = self._need(size, "bytes")
        return bytes(self._data[start : start + size])

    def pull_view(self, size: int) -> memoryview:
        """A zero-copy view of the next ``size`` bytes (keep it internal)."""
        start = self._need(size, "bytes")
        return self._data[start : start + size]

    def pull_rest(self) -> bytes:
        return self.pull_bytes(self.remaining())


class Writer:
    """Append-only little-endian writer. ``push_*`` validate ranges with ValueError (API misuse)."""

    __slots__ = ("_buf",)

    def __init__(self, capacity_hint: int = 0) -> None:
        self._buf = bytearray()
        del capacity_hint  # bytearray grows geometrically; the hint documents intent only

    def tell(self) -> int:
        return len(self._buf)

    def data(self) -> bytes:
        return bytes(self._buf)

    def push_u8(self, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise ValueError(f"u8 out of range: {value}")
        self._buf.append(value)

    def push_u16(self, value: int) -> None:
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"u16 out of range: {value}")
        self._buf += _U16.pack(value)

    def push_u32(self, value: int) -> None:
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"u32 out of range: {value}")
        self._buf += _U32.pack(value)

    def push_u64(self, value: int) -> None:
        if not 0 <= value < 1 << 64:
            raise ValueError(f"u64 out of range: {value}")
        self._buf += _U64.pack(value)

    def push_i64(self, value: int) -> None:
        if not -(1 << 63) <= value < 1 << 63:
            raise ValueError(f"i64 out of range: {value}")
        self._buf += _I64.pack(value)

    def push_bytes(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
