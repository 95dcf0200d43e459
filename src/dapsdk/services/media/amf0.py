"""AMF0, the value encoding of RTMP commands (connect, createStream, publish, onStatus, ...).

Only the subset RTMP publishers send is decoded: number, boolean, string, object, null,
undefined, ECMA array, strict array, date and long string. Decoding is bounded (nesting depth,
element count) and every malformed input raises :class:`AmfError`.
"""

from __future__ import annotations

import struct
from typing import Final

AmfValue = float | bool | str | dict[str, "AmfValue"] | list["AmfValue"] | None

NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
NULL: Final = 0x05
UNDEFINED: Final = 0x06
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C

MAX_DEPTH: Final = 8
MAX_ITEMS: Final = 1024


class AmfError(ValueError):
    """Malformed or unsupported AMF0 data."""


class _Reader:
    __slots__ = ("data", "items", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.items = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise AmfError(f"AMF0 value truncated at offset {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def utf8(self, size: int) -> str:
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError:
            raise AmfError("AMF0 string is not UTF-8") from None

    def count(self) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise AmfError(f"AMF0 data has more than {MAX_ITEMS} values")

    def value(self, depth: int = 0) -> AmfValue:
        if depth > MAX_DEPTH:
            raise AmfError(f"AMF0 nesting deeper than {MAX_DEPTH}")
        self.count()
        marker = self.u8()
        if marker == NUMBER:
            return float(struct.unpack(">d", self.take(8))[0])
        if marker == BOOLEAN:
            return self.u8() != 0
        if marker == STRING:
            return self.utf8(self.u16())
        if marker == LONG_STRING:
            return self.utf8(self.u32())
        if marker in (NULL, UNDEFINED):
            return None
        if marker == OBJECT:
            return self.properties(depth)
        if marker == ECMA_ARRAY:
            self.u32()  # approximate count; the object-end marker terminates
            return self.properties(depth)
        if marker == STRICT_ARRAY:
            size = self.u32()
            if size > MAX_ITEMS:
                raise AmfError(f"AMF0 strict array of {size} items")
            return [self.value(depth + 1) for _ in range(size)]
        if marker == DATE:
            stamp = float(struct.unpack(">d", self.take(8))[0])
            self.take(2)  # time zone, unused
            return stamp
        raise AmfError(f"unsupported AMF0 marker 0x{marker:02x}")

    def properties(self, depth: int) -> dict[str, AmfValue]:
        result: dict[str, AmfValue] = {}
        while True:
            key = self.utf8(self.u16())
            if not key and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return result
            result[key] = self.value(depth + 1)


def decode_all(data: bytes) -> list[AmfValue]:
    """Every AMF0 value in ``data`` (a command or data message body)."""
    reader = _Reader(data)
    values: list[AmfValue] = []
    while reader.pos < len(data):
        values.append(reader.value())
    return values


def encode(value: AmfValue) -> bytes:
    if value is None:
        return bytes([NULL])
    if isinstance(value, bool):
        return bytes([BOOLEAN, int(value)])
    if isinstance(value, int | float):
        return bytes([NUMBER]) + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return bytes([LONG_STRING]) + len(raw).to_bytes(4, "big") + raw
        return bytes([STRING]) + len(raw).to_bytes(2, "big") + raw
    if isinstance(value, dict):
        body = b"".join(
            len(key.encode()).to_bytes(2, "big") + key.encode() + encode(item)
            for key, item in value.items()
        )
        return bytes([OBJECT]) + body + b"\x00\x00" + bytes([OBJECT_END])
    if isinstance(value, list):
        return (
            bytes([STRICT_ARRAY])
            + len(value).to_bytes(4, "big")
            + b"".join(encode(item) for item in value)
        )
    raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode_all(*values: AmfValue) -> bytes:
    return b"".join(encode(value) for value in values)
