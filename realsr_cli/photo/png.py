"""PNG encoding fast enough not to dominate an upscale: the Up filter, and bands of rows deflated in parallel by
zlib-ng into one zlib stream, as pigz does for gzip.

A x4 PNG holds 16 times the input's pixels, and Pillow's encoder (adaptive filtering, one zlib thread) took
longer to write a 1 MP photo's 16 MP output than the model took to make it. Measured on such an output (a
Wikimedia photo, 4608x3432 RGB, see the README's performance section): Pillow at level 4, 14.1 MB in 2.3 s;
here at level 4, 14.5 MB in 0.77 s on one thread and 0.38 s on two. The Up filter (each byte minus the one above
it) is one numpy subtraction and compresses an upscaled photo within 3% of per-row adaptive filtering; zlib-ng
deflates two to three times faster than zlib at the same level.

Each band is filtered, deflated and checksummed on its own (its first row filtered against the previous band's
last row), ends with a sync flush on a byte boundary, and becomes one IDAT chunk; the stream's Adler-32 is
combined from the bands'. Rows go in as they are ready, so a band is compressed while the caller prepares the
next. No torch here.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import numpy as np
from zlib_ng import zlib_ng

from realsr_cli.host import cpu_count

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: gray, gray+alpha, RGB, RGBA
_UP = 2  # the PNG filter type of every row
_FINAL_BLOCK = b"\x03\x00"  # an empty final fixed-Huffman block: ends the deflate stream after the last sync flush
_BAND_BYTES = 1 << 20  # filtered bytes per band: big enough to compress as well as one stream, small enough to spread
_ADLER_BASE = 65521


def zlib_header(level: int) -> bytes:
    """The two-byte zlib stream header zlib itself writes at `level`: deflate with a 32 KB window, and the level's
    class (0 fastest for 0-1, 1 fast for 2-5, 2 default for 6, 3 best for 7-9), which decoders ignore."""
    flevel = 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3
    cmf, flg = 0x78, flevel << 6
    return bytes([cmf, flg + 31 - (cmf * 256 + flg) % 31])


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data and the CRC of tag and data."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


class PngWriter:
    """Writes one PNG to an open binary file, band by band: `write` takes rows in order as they are ready, `close`
    ends the file. Bands are deflated on `threads` worker threads (default: one per core) while the caller goes on;
    at most two bands per thread are held at once.

    `channels` 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA); `bit_depth` 8 or 16 (uint8 or uint16 rows);
    `level` 0-9 is zlib's compression level. `icc_profile` is written as an iCCP chunk, `exif` (with or without
    its "Exif\\0\\0" prefix) as an eXIf chunk.
    """

    def __init__(
        self,
        fh: BinaryIO,
        width: int,
        height: int,
        channels: int,
        bit_depth: int,
        *,
        level: int = 4,
        icc_profile: bytes | None = None,
        exif: bytes | None = None,
        threads: int | None = None,
    ) -> None:
        if channels not in _COLOUR_TYPES or bit_depth not in (8, 16) or not 0 <= level <= 9:
            raise ValueError(f"PngWriter takes 1-4 channels, bit depth 8 or 16, level 0-9; got {channels}, {bit_depth}")
        self.fh = fh
        self.width, self.height, self.channels, self.bit_depth, self.level = width, height, channels, bit_depth, level
        self.row_bytes = width * channels * bit_depth // 8
        self.rows_written = 0
        self.previous = np.zeros(self.row_bytes, np.uint8)  # the row above the next band's first row (none: zeros)
        self.adler = 1  # Adler-32 of the filtered bytes so far
        self.threads = threads or cpu_count()
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="realsr-png")
        self.pending: deque[Future] = deque()
        self.band_rows = max(1, _BAND_BYTES // (self.row_bytes + 1))
        header = struct.pack(">IIBBBBB", width, height, bit_depth, _COLOUR_TYPES[channels], 0, 0, 0)
        fh.write(SIGNATURE + png_chunk(b"IHDR", header))
        if icc_profile:
            fh.write(png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
        if exif:
            fh.write(png_chunk(b"eXIf", exif.removeprefix(b"Exif\0\0")))
        fh.write(png_chunk(b"IDAT", zlib_header(level)))  # IDAT chunks concatenate: the stream starts here

    def write(self, rows: np.ndarray) -> None:
        """Add the next rows: (n, width) for one channel or (n, width, channels), of the writer's bit depth."""
        expected = np.uint8 if self.bit_depth == 8 else np.uint16
        shapes = ((self.width,), (self.width, 1)) if self.channels == 1 else ((self.width, self.channels),)
        if rows.dtype != expected or rows.shape[1:] not in shapes:
            raise ValueError(f"rows of {rows.shape} {rows.dtype} do not fit a {self.width}-wide {self._kind()}")
        if self.rows_written + len(rows) > self.height:
            raise ValueError(f"more than the {self.height} rows of the image")
        for start in range(0, len(rows), self.band_rows):
            band = rows[start : start + self.band_rows]
            raw = band.astype(">u2") if self.bit_depth == 16 else band  # PNG samples are big-endian
            raw = np.ascontiguousarray(raw).view(np.uint8).reshape(len(band), self.row_bytes)
            previous, self.previous = self.previous, raw[-1].copy()
            self.pending.append(self.pool.submit(_compress_band, raw, previous, self.level))
            self.rows_written += len(band)
            while len(self.pending) > 2 * self.threads:
                self._write_oldest()

    def close(self) -> None:
        """Write the rest and end the file. Raises ValueError when fewer rows than the height were written."""
        try:
            while self.pending:
                self._write_oldest()
            if self.rows_written != self.height:
                raise ValueError(f"{self.rows_written} of the image's {self.height} rows were written")
            self.fh.write(png_chunk(b"IDAT", _FINAL_BLOCK + struct.pack(">I", self.adler)))
            self.fh.write(png_chunk(b"IEND", b""))
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop without finishing the file (the caller removes it): drop the bands not yet written."""
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True)

    def _write_oldest(self) -> None:
        deflated, adler, length = self.pending.popleft().result()
        self.adler = _adler32_combine(self.adler, adler, length)
        self.fh.write(png_chunk(b"IDAT", deflated))

    def _kind(self) -> str:
        return f"{self.bit_depth}-bit {self.channels}-channel PNG"


def _compress_band(raw: np.ndarray, previous: np.ndarray, level: int) -> tuple[bytes, int, int]:
    """(deflated bytes ending in a sync flush, Adler-32, length) of a band's Up-filtered scanlines."""
    rows, row_bytes = raw.shape
    filtered = np.empty((rows, row_bytes + 1), np.uint8)
    filtered[:, 0] = _UP
    np.subtract(raw[0], previous, out=filtered[0, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's filters do
    np.subtract(raw[1:], raw[:-1], out=filtered[1:, 1:])
    data = memoryview(filtered).cast("B")
    # raw deflate (no header of its own): the bands are parts of one zlib stream
    deflater = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15, 9)
    deflated = deflater.compress(data) + deflater.flush(zlib_ng.Z_SYNC_FLUSH)
    return deflated, zlib.adler32(data), len(data)


def _adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """The Adler-32 of A + B from those of A and B and B's length (zlib's adler32_combine)."""
    remainder = length2 % _ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (remainder * sum1) % _ADLER_BASE
    sum1 += (adler2 & 0xFFFF) + _ADLER_BASE - 1
    sum2 += (adler1 >> 16) + (adler2 >> 16) + _ADLER_BASE - remainder
    sum1 %= _ADLER_BASE
    sum2 %= _ADLER_BASE
    return (sum2 << 16) | sum1
