"""Adaptive per-packet compression (zstd, lz4) for channels that ask for it.

Policy (docs/protocol.md §5, "Compression"):

* Off by default; enabled per channel by the application, and only with an algorithm both peers
  offered in the handshake.
* Each packet body is compressed on its own, with no dictionary or context shared between packets,
  so a secret in one message cannot be probed with attacker-chosen data in another (CRIME/BREACH);
  mixing secrets and attacker data inside one message is the application's choice.
* Never on channels with an end-to-end key (ciphertext does not compress) nor on the SECURITY
  channel.
* Adaptive: a body that does not shrink by at least 1/8 is sent uncompressed, and the channel then
  skips compression for a growing number of packets (16, 32, ... 1024), so media costs almost nothing.

Compressed body: ``algorithm u8 | original_length u32 | compressed bytes``. The receiver refuses
an ``original_length`` above its ``max_packet_payload`` before decompressing, and decompresses with
that bound, so a compression bomb cannot allocate more than one packet.
"""

from __future__ import annotations

import struct

import lz4.block
import zstandard

from .constants import Feature
from .errors import ErrorCode, ProtocolError

NONE = 0
ZSTD = 1
LZ4 = 2
NAMES = {"none": NONE, "zstd": ZSTD, "lz4": LZ4}
FEATURE_OF = {ZSTD: Feature.COMPRESSION_ZSTD, LZ4: Feature.COMPRESSION_LZ4}
_PREFIX = struct.Struct("<BI")
PREFIX_SIZE = _PREFIX.size
#: Bodies shorter than this are never worth compressing.
MIN_SIZE = 256
_MIN_SKIP = 16
_MAX_SKIP = 1024

_zstd_c = zstandard.ZstdCompressor(level=1)
_zstd_d = zstandard.ZstdDecompressor()


def algorithm_from_name(name: str) -> int:
    try:
        return NAMES[name.lower()]
    except KeyError:
        raise ValueError(f"compression {name!r} is not one of {', '.join(NAMES)}") from None


class AdaptiveCompressor:
    """One channel's compression state: its algorithm and the back-off after failures."""

    __slots__ = ("algorithm", "compressed", "skip", "skipped_after_failure", "tried")

    def __init__(self, algorithm: int) -> None:
        self.algorithm = algorithm
        self.skip = 0
        self.skipped_after_failure = _MIN_SKIP
        self.compressed = 0
        self.tried = 0

    def maybe_compress(self, body: bytes | memoryview) -> bytes | None:
        """Compressed body with its prefix, or None to send ``body`` as it is."""
        if self.algorithm == NONE or len(body) < MIN_SIZE:
            return None
        if self.skip:
            self.skip -= 1
            return None
        self.tried += 1
        if self.algorithm == ZSTD:
            packed = _zstd_c.compress(body)
        else:
            packed = lz4.block.compress(body, store_size=False)
        if len(packed) + PREFIX_SIZE > len(body) - len(body) // 8:
            self.skip = self.skipped_after_failure
            self.skipped_after_failure = min(self.skipped_after_failure * 2, _MAX_SKIP)
            return None
        self.skipped_after_failure = _MIN_SKIP
        self.compressed += 1
        return _PREFIX.pack(self.algorithm, len(body)) + packed


def decompress(body: bytes | memoryview, limit: int, allowed: int) -> bytes:
    """Undo :meth:`AdaptiveCompressor.maybe_compress`; every failure is a COMPRESSION_ERROR."""
    if len(body) < PREFIX_SIZE:
        raise ProtocolError(
            "compressed body shorter than its prefix", code=ErrorCode.COMPRESSION_ERROR
        )
    algorithm, size = _PREFIX.unpack_from(body, 0)
    feature = FEATURE_OF.get(algorithm)
    if feature is None or not allowed & feature:
        raise ProtocolError(
            f"compression algorithm {algorithm} was not negotiated",
            code=ErrorCode.COMPRESSION_ERROR,
        )
    if size > limit:
        raise ProtocolError(
            f"compressed packet expands to {size} bytes, limit is {limit}",
            code=ErrorCode.COMPRESSION_ERROR,
        )
    data = memoryview(body)[PREFIX_SIZE:]
    try:
        if algorithm == ZSTD:
            # A zstd frame carries its own content size, which the library trusts over
            # max_output_size: it must match the bound we already checked.
            declared = zstandard.frame_content_size(data)
            if declared not in (size, -1):
                raise ProtocolError(
                    f"zstd frame declares {declared} bytes, packet announced {size}",
                    code=ErrorCode.COMPRESSION_ERROR,
                )
            out = _zstd_d.decompress(data, max_output_size=size)
        else:
            out = lz4.block.decompress(data, uncompressed_size=size)
    except (zstandard.ZstdError, lz4.block.LZ4BlockError, ValueError) as exc:
        raise ProtocolError(
            f"decompression failed: {exc}", code=ErrorCode.COMPRESSION_ERROR
        ) from None
    if len(out) != size:
        raise ProtocolError(
            f"decompressed {len(out)} bytes, announced {size}", code=ErrorCode.COMPRESSION_ERROR
        )
    return out
