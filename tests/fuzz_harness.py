"""Mutation fuzzing of realsr's image reader, shared by tests/test_fuzz.py (a few seconds in CI) and longer runs.

Small valid PNG (8 and 16 bits, interlaced, palette, APNG), JPEG (baseline, progressive, gray, CMYK, EXIF + ICC),
WebP (lossy, lossless, VP8X) and TIFF (8 and 16 bits, compressed, planar) files are made in memory, then mutated:
bit flips, byte edits, truncations, range duplication and deletion, and format-aware edits (PNG chunks duplicated,
deleted, swapped or edited with their CRC fixed, IHDR fields and the IDAT stream rewritten; JPEG segments
duplicated or deleted, SOF sizes edited, entropy-coded data cut; WebP RIFF chunks and VP8/VP8L/VP8X sizes; TIFF IFD
entries and IFD links). Each case is decoded by `realsr_cli.photo.read.read_image`, and must

- succeed with a plausible `Photo` (its size the header's, within --max-pixels, dtypes consistent), or raise a
  `RealSRError` -- never another exception, never a hang;
- finish within 2 s + 4 us per claimed pixel (the header's size, capped at max_pixels);
- fail when the file certainly holds less pixel data than its header claims (issue 11, item 2): a PNG whose IDAT
  inflates to fewer bytes than its IHDR needs, or a single edit that enlarged the size in a JPEG SOF, a WebP
  VP8/VP8L frame header or a TIFF IFD while leaving the data alone, or that cut a baseline JPEG's entropy data.

Case `index` under `seed` is a pure function of both (random.Random(f"{seed}/{index}")), so any case can be rerun
alone:

    python tests/fuzz_harness.py --cases 20000 --seed 1 --seconds 1800 --save /tmp/findings
    python tests/fuzz_harness.py --seed 1 --case 4711 --save /tmp/findings   # one case, with its traceback

A decoder stuck in C code cannot be interrupted: after bound + 30 s faulthandler dumps every thread's stack and
exits; the stuck frame's file name reads "<fuzz case seed=S index=I ...>".
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import logging
import math
import os
import random
import re
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import Image, ImageCms

from realsr_cli.errors import RealSRError
from realsr_cli.photo import read as read_module
from realsr_cli.photo.read import read_image

MAX_PIXELS = 1 << 20
"""The --max-pixels every case is read with: large enough for header edits to claim real work, small enough that
the time bound stays a few seconds."""
BASE_SECONDS = 2.0
SECONDS_PER_PIXEL = 4e-6
"""Generous: 16-bit PNGs through pypng decode at ~1 us per pixel on an idle core."""
HARD_MARGIN = 30.0
"""Beyond the bound, a case still running in C code (where SIGALRM cannot reach) is a hang: dump and exit."""

INTERESTING16 = (0, 1, 2, 7, 8, 15, 16, 17, 127, 128, 255, 256, 1023, 4096, 16383, 32767, 32768, 65535)
INTERESTING32 = (*INTERESTING16, 65536, 1 << 24, (1 << 31) - 1, 1 << 31, (1 << 32) - 1)
INTERESTING8 = (0, 1, 2, 3, 4, 6, 7, 8, 15, 16, 17, 127, 128, 254, 255)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


# ---------------------------------------------------------------------------------------------------- seed files


@dataclass(frozen=True)
class SeedFile:
    name: str
    kind: str  # "png", "jpeg", "webp", "tiff"
    ext: str
    data: bytes


def _pixels(height: int, width: int, channels: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: compresses like a photo, not like flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    top = np.iinfo(dtype).max
    planes = [(x * (c + 1) * 7 + y * (3 - c % 3) * 5) % 256 for c in range(channels)]
    img = np.stack(planes, axis=-1).astype(np.float64) / 255
    img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    return np.round(img * top).astype(dtype)


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    exif[0x010F] = "fuzz"
    return exif.tobytes()


def _pil_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _pypng_bytes(rows: np.ndarray, **kwargs) -> bytes:
    height, width = rows.shape[:2]
    buf = io.BytesIO()
    writer = png.Writer(width, height, bitdepth=16, **kwargs)
    writer.write(buf, rows.reshape(height, -1).tolist())
    return buf.getvalue()


def _tifffile_bytes(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)
    return buf.getvalue()


@lru_cache(maxsize=1)
def seed_files() -> tuple[SeedFile, ...]:
    """The valid files every case starts from; deterministic for a given Pillow/pypng/tifffile."""
    h, w = 16, 24
    rgb, rgba, gray = _pixels(h, w, 3), _pixels(h, w, 4, seed=1), _pixels(h, w, 1, seed=2)[..., 0]
    rgb16, rgba16 = _pixels(h, w, 3, np.uint16, 3), _pixels(h, w, 4, np.uint16, 4)
    gray16 = _pixels(h, w, 1, np.uint16, 5)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    jrgb = Image.fromarray(_pixels(24, 32, 3, seed=6))
    palette = Image.fromarray(rgb).quantize(16)
    palette.info["transparency"] = 3
    frames = [Image.fromarray(rgb), Image.fromarray(rgb[::-1].copy())]
    seeds: list[tuple[str, str, Callable[[], bytes]]] = [
        ("png8_rgb", "png", lambda: _pil_bytes(Image.fromarray(rgb), "PNG")),
        ("png8_rgba", "png", lambda: _pil_bytes(Image.fromarray(rgba), "PNG")),
        ("png8_gray", "png", lambda: _pil_bytes(Image.fromarray(gray), "PNG")),
        ("png8_palette_trns", "png", lambda: _pil_bytes(palette, "PNG", transparency=3)),
        (
            "png8_exif_icc",
            "png",
            lambda: _pil_bytes(Image.fromarray(rgb), "PNG", exif=_exif_orientation(6), icc_profile=icc),
        ),
        ("png8_interlaced", "png", lambda: _png8_interlaced(rgb)),
        ("png8_apng", "png", lambda: _pil_bytes(frames[0], "PNG", save_all=True, append_images=frames[1:])),
        ("png16_rgb", "png", lambda: _pypng_bytes(rgb16, greyscale=False)),
        ("png16_rgba", "png", lambda: _pypng_bytes(rgba16, greyscale=False, alpha=True)),
        ("png16_gray", "png", lambda: _pypng_bytes(gray16, greyscale=True)),
        ("png16_gray_alpha", "png", lambda: _pypng_bytes(_pixels(h, w, 2, np.uint16, 7), greyscale=True, alpha=True)),
        (
            "png16_rgb_trns",
            "png",
            lambda: _pypng_bytes(rgb16, greyscale=False, transparent=tuple(rgb16[0, 0].tolist())),
        ),
        ("png16_interlaced", "png", lambda: _pypng_bytes(rgb16, greyscale=False, interlace=True)),
        ("jpeg_baseline", "jpeg", lambda: _pil_bytes(jrgb, "JPEG", quality=90)),
        ("jpeg_444", "jpeg", lambda: _pil_bytes(jrgb, "JPEG", quality=95, subsampling=0)),
        ("jpeg_progressive", "jpeg", lambda: _pil_bytes(jrgb, "JPEG", quality=85, progressive=True)),
        ("jpeg_gray", "jpeg", lambda: _pil_bytes(jrgb.convert("L"), "JPEG", quality=90)),
        ("jpeg_cmyk", "jpeg", lambda: _pil_bytes(jrgb.convert("CMYK"), "JPEG", quality=90)),
        (
            "jpeg_exif_icc",
            "jpeg",
            lambda: _pil_bytes(jrgb, "JPEG", quality=90, exif=_exif_orientation(6), icc_profile=icc),
        ),
        ("webp_lossy", "webp", lambda: _pil_bytes(Image.fromarray(rgb), "WEBP", quality=80)),
        ("webp_lossless_rgba", "webp", lambda: _pil_bytes(Image.fromarray(rgba), "WEBP", lossless=True)),
        (
            "webp_vp8x_exif",
            "webp",
            lambda: _pil_bytes(Image.fromarray(rgb), "WEBP", quality=80, exif=_exif_orientation(3), icc_profile=icc),
        ),
        ("webp_lossy_alpha", "webp", lambda: _pil_bytes(Image.fromarray(rgba), "WEBP", quality=80)),
        ("tiff8_rgb", "tiff", lambda: _pil_bytes(Image.fromarray(rgb), "TIFF")),
        ("tiff8_lzw", "tiff", lambda: _pil_bytes(Image.fromarray(rgba), "TIFF", compression="tiff_lzw")),
        (
            "tiff8_deflate_exif",
            "tiff",
            lambda: _pil_bytes(Image.fromarray(rgb), "TIFF", compression="tiff_deflate", exif=_exif_orientation(8)),
        ),
        ("tiff8_packbits_gray", "tiff", lambda: _pil_bytes(Image.fromarray(gray), "TIFF", compression="packbits")),
        ("tiff8_jpeg", "tiff", lambda: _pil_bytes(Image.fromarray(rgb), "TIFF", compression="jpeg")),
        ("tiff16_rgb", "tiff", lambda: _tifffile_bytes(rgb16, photometric="rgb", rowsperstrip=4)),
        (
            "tiff16_rgba_planar",
            "tiff",
            lambda: _tifffile_bytes(
                np.moveaxis(rgba16, -1, 0), photometric="rgb", planarconfig="separate", extrasamples=["unassalpha"]
            ),
        ),
        ("tiff16_gray", "tiff", lambda: _tifffile_bytes(gray16, photometric="minisblack")),
        ("tiff16_rgb_deflate", "tiff", lambda: _tifffile_bytes(rgb16, photometric="rgb", compression="zlib")),
    ]
    out = []
    for name, kind, make in seeds:
        try:
            data = make()
        except Exception:  # an optional codec this Pillow/tifffile lacks (libtiff JPEG, zlib in tifffile)
            continue
        out.append(SeedFile(name, kind, {"jpeg": "jpg", "tiff": "tif"}.get(kind, kind), data))
    return tuple(out)


def _png8_interlaced(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    png.Writer(rgb.shape[1], rgb.shape[0], greyscale=False, bitdepth=8, interlace=True).write(
        buf, rgb.reshape(rgb.shape[0], -1).tolist()
    )
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- PNG


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def png_chunks(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
    """[(type, payload)] of the well-framed chunks, and whatever trails them; None for no PNG signature."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if end > len(data):
            break
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos = end
    return chunks, data[pos:]


def png_build(chunks: list[tuple[bytes, bytes]], trailing: bytes = b"") -> bytes:
    return PNG_SIGNATURE + b"".join(png_chunk(t, p) for t, p in chunks) + trailing


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_raw_size(width: int, height: int, bits_per_pixel: int, interlace: int) -> int:
    """Bytes of filtered scanlines (filter byte included) that IDAT must inflate to."""

    def rows(w: int, h: int) -> int:
        return 0 if w <= 0 or h <= 0 else h * (1 + (w * bits_per_pixel + 7) // 8)

    if not interlace:
        return rows(width, height)
    return sum(rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in _ADAM7)


def png_data_shortfall(data: bytes, max_pixels: int) -> str | None:
    """Why a successful decode of this PNG would be wrong (IDAT inflates to less than the IHDR needs), or None.

    Only claimed for the plain shape: one IHDR, first; consecutive IDATs; no APNG frames; a valid IHDR.
    """
    parsed = png_chunks(data)
    if not parsed or not parsed[0] or parsed[0][0][0] != b"IHDR" or len(parsed[0][0][1]) != 13:
        return None
    chunks = parsed[0]
    types = [t for t, _ in chunks]
    if types.count(b"IHDR") != 1 or b"acTL" in types or b"fdAT" in types or b"IDAT" not in types:
        return None
    idat = [i for i, t in enumerate(types) if t == b"IDAT"]
    if idat[-1] - idat[0] + 1 != len(idat) or b"IEND" in types[: idat[0]]:
        return None
    width, height, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth not in _PNG_DEPTHS.get(ctype, ()) or comp or filt or interlace > 1:
        return None
    if not 0 < width < 1 << 31 or not 0 < height < 1 << 31 or width * height > max_pixels:
        return None
    need = png_raw_size(width, height, depth * _PNG_CHANNELS[ctype], interlace)
    try:
        raw = zlib.decompressobj().decompress(b"".join(chunks[i][1] for i in idat), need)
    except zlib.error:
        return None  # a corrupt stream: nothing is claimed about how much it holds
    if len(raw) >= need:
        return None
    shape = f"{width}x{height} {depth}-bit colour type {ctype}{' interlaced' if interlace else ''}"
    return f"IDAT inflates to {len(raw)} of the {need} bytes its IHDR ({shape}) needs"


# ---------------------------------------------------------------------------------------------------- JPEG


@dataclass
class Segment:
    marker: int | None  # None: entropy-coded data after an SOS
    start: int
    end: int


def jpeg_segments(data: bytes) -> list[Segment] | None:
    """SOI, marker segments, entropy-coded runs (marker None) and EOI, as far as they parse; None for no SOI."""
    if not data.startswith(b"\xff\xd8"):
        return None
    segs, pos = [Segment(0xD8, 0, 2)], 2
    while pos + 1 < len(data) and data[pos] == 0xFF:
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= len(data):
            break
        marker = data[pos + 1]
        if marker == 0xD9 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            segs.append(Segment(marker, pos, pos + 2))
            pos += 2
            if marker == 0xD9:
                break
            continue
        if pos + 4 > len(data):
            break
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if end > len(data):
            break
        segs.append(Segment(marker, pos, end))
        pos = end
        if marker == 0xDA:
            scan = pos
            while True:
                scan = data.find(b"\xff", scan)
                if scan < 0 or scan + 1 >= len(data):
                    scan = len(data)
                    break
                following = data[scan + 1]
                if following == 0 or 0xD0 <= following <= 0xD7:
                    scan += 2
                    continue
                break
            segs.append(Segment(None, pos, scan))
            pos = scan
    return segs


def _sof_counts(payload: bytes) -> tuple[int, int, int, list[tuple[int, int]]] | None:
    """(height, width, MCU or block count of a full scan, sampling factors) from an SOF payload (after length)."""
    if len(payload) < 6:
        return None
    height, width, ncomp = struct.unpack(">HHB", payload[1:6])
    if ncomp == 0 or len(payload) < 6 + 3 * ncomp:
        return None
    factors = [(payload[7 + 3 * i] >> 4, payload[7 + 3 * i] & 15) for i in range(ncomp)]
    hmax, vmax = max(f[0] for f in factors), max(f[1] for f in factors)
    if hmax == 0 or vmax == 0:
        return None
    if ncomp == 1:
        count = math.ceil(width / 8) * math.ceil(height / 8)
    else:
        count = math.ceil(width / (8 * hmax)) * math.ceil(height / (8 * vmax))
    return height, width, count, factors


# ---------------------------------------------------------------------------------------------------- WebP, TIFF


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        end = pos + 8 + size
        if end > len(data):
            break
        chunks.append((data[pos : pos + 4], data[pos + 8 : end]))
        pos = end + (size & 1)
    return chunks


def riff_build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(t + struct.pack("<I", len(p)) + p + (b"\0" if len(p) & 1 else b"") for t, p in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def webp_frame_size(ctype: bytes, payload: bytes) -> tuple[int, int] | None:
    if ctype == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", payload[6:10])
        return w & 0x3FFF, h & 0x3FFF
    if ctype == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = struct.unpack("<I", payload[1:5])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}


@dataclass
class IfdEntry:
    pos: int  # offset of the 12-byte entry
    tag: int
    type: int
    count: int


def tiff_ifd0(data: bytes) -> tuple[str, int, list[IfdEntry]] | None:
    """(byte order "<"/">", IFD0 offset, its entries) of a classic TIFF, or None."""
    if data[:4] == b"II*\0":
        order = "<"
    elif data[:4] == b"MM\0*":
        order = ">"
    else:
        return None
    if len(data) < 8:
        return None
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    entries = []
    for i in range(count):
        pos = offset + 2 + 12 * i
        if pos + 12 > len(data):
            break
        tag, typ, n = struct.unpack(order + "HHI", data[pos : pos + 8])
        entries.append(IfdEntry(pos, tag, typ, n))
    return order, offset, entries


# ---------------------------------------------------------------------------------------------------- mutations


@dataclass
class Mutated:
    data: bytes
    step: str
    expect_failure: str | None = None
    kind: str = ""  # the mutator's name, set by make_case


Mutator = Callable[[random.Random, bytes], Mutated | None]


def _pos(rng: random.Random, data: bytes, head_bias: bool = True) -> int:
    if head_bias and rng.random() < 0.5:
        return rng.randrange(min(len(data), 64))
    return rng.randrange(len(data))


def m_bitflip(rng, data):
    out = bytearray(data)
    flips = [(_pos(rng, data), rng.randrange(8)) for _ in range(rng.choice((1, 1, 1, 2, 3, 4, 8, 16)))]
    for pos, bit in flips:
        out[pos] ^= 1 << bit
    return Mutated(bytes(out), "bitflip " + ",".join(f"{p}:{b}" for p, b in flips))


def m_byteset(rng, data):
    out = bytearray(data)
    edits = [(_pos(rng, data), rng.choice(INTERESTING8)) for _ in range(rng.randint(1, 4))]
    for pos, value in edits:
        out[pos] = value
    return Mutated(bytes(out), "byteset " + ",".join(f"{p}={v}" for p, v in edits))


def m_intset(rng, data):
    size = rng.choice((2, 4))
    if len(data) <= size:
        return None
    pos = _pos(rng, data[:-size])
    value = rng.choice(INTERESTING16 if size == 2 else INTERESTING32)
    order = rng.choice("<>")
    packed = struct.pack(order + ("H" if size == 2 else "I"), value)
    return Mutated(data[:pos] + packed + data[pos + size :], f"int{8 * size}{order} @{pos}={value}")


def m_truncate(rng, data):
    if len(data) < 2:
        return None
    cut = rng.choice((rng.randrange(1, len(data)), len(data) - rng.randint(1, min(64, len(data) - 1))))
    return Mutated(data[:cut], f"truncate to {cut} of {len(data)} bytes")


def m_dup_range(rng, data):
    start = rng.randrange(len(data))
    length = rng.randint(1, min(256, len(data) - start))
    times = rng.choice((1, 1, 2, 16))
    piece = data[start : start + length]
    return Mutated(
        data[: start + length] + piece * times + data[start + length :], f"dup bytes {start}+{length} x{times}"
    )


def m_delete_range(rng, data):
    start = rng.randrange(len(data))
    length = rng.randint(1, min(64, len(data) - start))
    return Mutated(data[:start] + data[start + length :], f"delete bytes {start}+{length}")


def m_insert(rng, data):
    pos = rng.randrange(len(data) + 1)
    piece = bytes(rng.choice((0, 255, rng.randrange(256))) for _ in range(rng.randint(1, 32)))
    return Mutated(data[:pos] + piece + data[pos:], f"insert {len(piece)} bytes @{pos}")


GENERIC: tuple[Mutator, ...] = (m_bitflip, m_byteset, m_intset, m_truncate, m_dup_range, m_delete_range, m_insert)


def _edit_value(rng: random.Random, old: int, limit: int) -> int:
    choices = [old * 2, old + 1, old - 1, old + 16, old * 16, old * 64, old // 2, *INTERESTING32]
    return min(max(rng.choice(choices), 0), limit)


def m_png_ihdr(rng, data):
    parsed = png_chunks(data)
    if not parsed or not parsed[0] or parsed[0][0][0] != b"IHDR" or len(parsed[0][0][1]) != 13:
        return None
    chunks, trailing = parsed
    fields = list(struct.unpack(">IIBBBBB", chunks[0][1]))
    names = ("width", "height", "bit depth", "colour type", "compression", "filter", "interlace")
    i = rng.choice((0, 0, 1, 1, 2, 3, 4, 5, 6))
    old = fields[i]
    if i < 2:
        fields[i] = _edit_value(rng, old, (1 << 32) - 1)
    elif i == 2:
        fields[i] = rng.choice((1, 2, 4, 8, 16, 0, 3, 32, 255))
    elif i == 3:
        fields[i] = rng.choice((0, 2, 3, 4, 6, 1, 5, 7, 255))
    else:
        fields[i] = rng.choice((0, 1, 2, 255))
    chunks[0] = (b"IHDR", struct.pack(">IIBBBBB", *fields))
    return Mutated(png_build(chunks, trailing), f"IHDR {names[i]} {old}->{fields[i]} (CRC fixed)")


def m_png_chunk_dup(rng, data):
    parsed = png_chunks(data)
    if not parsed or not parsed[0]:
        return None
    chunks, trailing = parsed
    i = rng.randrange(len(chunks))
    at = rng.choice((i + 1, rng.randrange(len(chunks) + 1)))
    times = rng.choice((1, 1, 1, 8))
    chunks[at:at] = [chunks[i]] * times
    return Mutated(
        png_build(chunks, trailing), f"chunk {chunks[i][0].decode('latin1')}#{i} duplicated x{times} at {at}"
    )


def m_png_chunk_del(rng, data):
    parsed = png_chunks(data)
    if not parsed or not parsed[0]:
        return None
    chunks, trailing = parsed
    i = rng.randrange(len(chunks))
    ctype = chunks.pop(i)[0]
    return Mutated(png_build(chunks, trailing), f"chunk {ctype.decode('latin1')}#{i} deleted")


def m_png_chunk_swap(rng, data):
    parsed = png_chunks(data)
    if not parsed or len(parsed[0]) < 2:
        return None
    chunks, trailing = parsed
    i, j = rng.sample(range(len(chunks)), 2)
    chunks[i], chunks[j] = chunks[j], chunks[i]
    return Mutated(png_build(chunks, trailing), f"chunks #{i} and #{j} swapped")


def m_png_chunk_edit(rng, data):
    """Bytes inside one chunk's payload changed, CRC fixed: past the CRC check, into the parser."""
    parsed = png_chunks(data)
    if not parsed or not parsed[0]:
        return None
    chunks, trailing = parsed
    candidates = [i for i, (_, p) in enumerate(chunks) if p]
    if not candidates:
        return None
    i = rng.choice(candidates)
    ctype, payload = chunks[i]
    inner = (m_bitflip, m_byteset, m_intset, m_truncate, m_dup_range)[rng.randrange(5)](rng, payload)
    if inner is None:
        return None
    chunks[i] = (ctype, inner.data)
    return Mutated(png_build(chunks, trailing), f"chunk {ctype.decode('latin1')}#{i} payload: {inner.step} (CRC fixed)")


def m_png_idat_rewrite(rng, data):
    """The inflated IDAT stream edited and recompressed into a valid zlib stream, in one or many IDATs."""
    parsed = png_chunks(data)
    if not parsed:
        return None
    chunks, trailing = parsed
    idat = [i for i, (t, _) in enumerate(chunks) if t == b"IDAT"]
    if not idat:
        return None
    try:
        raw = zlib.decompress(b"".join(chunks[i][1] for i in idat))
    except zlib.error:
        return None
    if not raw:
        return None
    how = rng.choice(("cut", "cut", "filter", "extend", "garbage", "split"))
    if how == "cut":
        keep = rng.choice((rng.randrange(len(raw)), len(raw) - rng.randint(1, 8), len(raw) // 2))
        raw, step = raw[: max(keep, 0)], f"IDAT inflated stream cut to {max(keep, 0)} of {len(raw)} bytes"
    elif how == "filter":
        pos = rng.randrange(len(raw))
        value = rng.choice((5, 6, 127, 255))
        raw, step = raw[:pos] + bytes([value]) + raw[pos + 1 :], f"IDAT inflated byte {pos}={value}"
    elif how == "extend":
        extra = rng.choice((1, 100, 100_000))
        raw, step = raw + bytes(extra), f"IDAT inflated stream extended by {extra} zero bytes"
    elif how == "garbage":
        pos = rng.randrange(len(raw))
        raw = raw[:pos] + rng.randbytes(len(raw) - pos)
        step = f"IDAT inflated stream random from byte {pos}"
    else:
        step = "IDAT split"
    stream = zlib.compress(raw, 9)
    size = rng.choice((len(stream) or 1, 1, 7, 64))
    pieces = [(b"IDAT", stream[k : k + size]) for k in range(0, len(stream), size)] or [(b"IDAT", b"")]
    chunks[idat[0] : idat[-1] + 1] = pieces
    return Mutated(png_build(chunks, trailing), f"{step}, recompressed into {len(pieces)} IDAT(s)")


PNG_MUTATORS: tuple[Mutator, ...] = (
    m_png_ihdr,
    m_png_ihdr,
    m_png_chunk_dup,
    m_png_chunk_del,
    m_png_chunk_swap,
    m_png_chunk_edit,
    m_png_chunk_edit,
    m_png_idat_rewrite,
    m_png_idat_rewrite,
)


def m_jpeg_sof(rng, data):
    segs = jpeg_segments(data)
    sof = next((s for s in segs or () if s.marker in SOF_MARKERS and s.end - s.start >= 10), None)
    if sof is None:
        return None
    payload = bytearray(data[sof.start + 4 : sof.end])
    before = _sof_counts(bytes(payload))
    what = rng.choice(("height", "height", "width", "width", "precision", "components", "sampling", "table"))
    if what in ("height", "width"):
        pos = 1 if what == "height" else 3
        old = struct.unpack(">H", payload[pos : pos + 2])[0]
        new = _edit_value(rng, old, 65535)
        payload[pos : pos + 2] = struct.pack(">H", new)
        step = f"SOF{sof.marker - 0xC0} {what} {old}->{new}"
    elif what == "precision":
        old, payload[0] = payload[0], rng.choice((0, 1, 12, 16, 255))
        step = f"SOF precision {old}->{payload[0]}"
    elif what == "components":
        old, payload[5] = payload[5], rng.choice((0, 1, 2, 3, 4, 5, 255))
        step = f"SOF component count {old}->{payload[5]}"
    else:
        comp = rng.randrange(max(1, min(payload[5], (len(payload) - 6) // 3)))
        pos = 7 + 3 * comp if what == "sampling" else 8 + 3 * comp
        if pos >= len(payload):
            return None
        old = payload[pos]
        payload[pos] = (
            rng.choice((0x11, 0x22, 0x44, 0x41, 0x14, 0x00, 0xFF)) if what == "sampling" else rng.choice((0, 1, 3, 4))
        )
        step = f"SOF component {comp} {what} {old:#x}->{payload[pos]:#x}"
    out = data[: sof.start + 4] + bytes(payload) + data[sof.end :]
    expect = None
    after = _sof_counts(bytes(payload))
    if before and after and what in ("height", "width") and after[2] >= before[2] + 8:
        expect = f"SOF claims {after[1]}x{after[0]} ({after[2]} MCUs) but the scan data codes {before[2]} MCUs"
    return Mutated(out, step, expect)


def m_jpeg_seg_dup(rng, data):
    segs = [s for s in jpeg_segments(data) or () if s.marker not in (None, 0xD8, 0xD9)]
    if not segs:
        return None
    seg = rng.choice(segs)
    times = rng.choice((1, 1, 2, 8))
    piece = data[seg.start : seg.end]
    at = seg.end if rng.random() < 0.7 else rng.choice(segs).start
    return Mutated(
        data[:at] + piece * times + data[at:], f"segment {seg.marker:#04x}@{seg.start} duplicated x{times} at {at}"
    )


def m_jpeg_seg_del(rng, data):
    segs = [s for s in jpeg_segments(data) or () if s.marker != 0xD8]
    if not segs:
        return None
    seg = rng.choice(segs)
    name = "entropy data" if seg.marker is None else f"segment {seg.marker:#04x}"
    return Mutated(data[: seg.start] + data[seg.end :], f"{name}@{seg.start} deleted")


def m_jpeg_seg_edit(rng, data):
    """Bytes inside one marker segment's payload (DQT, DHT, SOF, SOS, DRI, APPn) changed; or its length field."""
    segs = [s for s in jpeg_segments(data) or () if s.marker not in (None, 0xD8, 0xD9) and s.end - s.start > 4]
    if not segs:
        return None
    seg = rng.choice(segs)
    if rng.random() < 0.25:
        old = struct.unpack(">H", data[seg.start + 2 : seg.start + 4])[0]
        new = _edit_value(rng, old, 65535)
        out = data[: seg.start + 2] + struct.pack(">H", new) + data[seg.start + 4 :]
        return Mutated(out, f"segment {seg.marker:#04x}@{seg.start} length {old}->{new}")
    payload = data[seg.start + 4 : seg.end]
    inner = (m_bitflip, m_byteset, m_intset)[rng.randrange(3)](rng, payload)
    if inner is None:
        return None
    return Mutated(
        data[: seg.start + 4] + inner.data + data[seg.end :],
        f"segment {seg.marker:#04x}@{seg.start} payload: {inner.step}",
    )


def m_jpeg_entropy(rng, data):
    """The entropy-coded data of one scan cut (its marker kept after it), corrupted, or given a stray RST marker."""
    segs = jpeg_segments(data) or []
    scans = [s for s in segs if s.marker is None and s.end - s.start > 4]
    if not scans:
        return None
    scan = rng.choice(scans)
    length = scan.end - scan.start
    how = rng.choice(("cut", "cut", "rst", "noise"))
    if how == "cut":
        cut = rng.choice((rng.randint(2, length), rng.randint(2, min(8, length)), length // 2))
        out = data[: scan.end - cut] + data[scan.end :]
        baseline = len(scans) == 1 and any(s.marker in (0xC0, 0xC1) for s in segs)
        expect = f"entropy-coded data cut by {cut} of {length} bytes" if baseline else None
        return Mutated(out, f"scan@{scan.start} entropy data cut by {cut} of {length} bytes", expect)
    pos = rng.randrange(scan.start, scan.end)
    if how == "rst":
        marker = bytes((0xFF, rng.choice((0xD0, 0xD3, 0xD7, 0xD9, 0xDA, 0xC4))))
        return Mutated(data[:pos] + marker + data[pos:], f"marker {marker.hex()} inserted in scan data @{pos}")
    noise = rng.randbytes(rng.randint(1, 16)).replace(b"\xff", b"\xfe")
    out = data[:pos] + noise + data[pos + len(noise) :]
    return Mutated(out[: len(data)], f"{len(noise)} random bytes in scan data @{pos}")


JPEG_MUTATORS: tuple[Mutator, ...] = (
    m_jpeg_sof,
    m_jpeg_sof,
    m_jpeg_seg_dup,
    m_jpeg_seg_del,
    m_jpeg_seg_edit,
    m_jpeg_seg_edit,
    m_jpeg_entropy,
    m_jpeg_entropy,
)


def m_webp_size(rng, data):
    """A VP8X canvas size, a VP8/VP8L frame size, the RIFF size or one chunk's size edited."""
    chunks = riff_chunks(data)
    if not chunks:
        return None
    i = rng.randrange(len(chunks))
    ctype, payload = chunks[i]
    frame = webp_frame_size(ctype, payload)
    if rng.random() < 0.25 or (frame is None and ctype != b"VP8X"):
        where = rng.choice(("riff", "chunk"))
        pos = 4 if where == "riff" else 12 + sum(8 + len(p) + (len(p) & 1) for _, p in chunks[:i]) + 4
        old = struct.unpack("<I", data[pos : pos + 4])[0]
        new = _edit_value(rng, old, (1 << 32) - 1)
        name = "RIFF" if where == "riff" else ctype.decode("latin1")
        return Mutated(data[:pos] + struct.pack("<I", new) + data[pos + 4 :], f"{name} size {old}->{new}")
    payload = bytearray(payload)
    what = rng.choice(("width", "height"))
    expect = None
    if ctype == b"VP8X":
        if len(payload) < 10:
            return None
        pos = 4 if what == "width" else 7
        old = int.from_bytes(payload[pos : pos + 3], "little") + 1
        new = max(1, _edit_value(rng, old, 1 << 24))
        payload[pos : pos + 3] = (new - 1).to_bytes(3, "little")
        step = f"VP8X canvas {what} {old}->{new}"
    elif ctype == b"VP8 ":
        pos = 6 if what == "width" else 8
        word = struct.unpack("<H", payload[pos : pos + 2])[0]
        old = word & 0x3FFF
        new = _edit_value(rng, old, 0x3FFF)
        payload[pos : pos + 2] = struct.pack("<H", (word & 0xC000) | new)
        step = f"VP8 frame {what} {old}->{new}"
        w, h = frame
        w2, h2 = (new, h) if what == "width" else (w, new)
        if math.ceil(w2 / 16) * math.ceil(h2 / 16) > math.ceil(w / 16) * math.ceil(h / 16) and w2 >= w and h2 >= h:
            expect = f"VP8 frame claims {w2}x{h2} but its partitions code {w}x{h}"
    else:
        bits = struct.unpack("<I", payload[1:5])[0]
        shift = 0 if what == "width" else 14
        old = ((bits >> shift) & 0x3FFF) + 1
        new = max(1, _edit_value(rng, old, 0x4000))
        bits = (bits & ~(0x3FFF << shift)) | ((new - 1) << shift)
        payload[1:5] = struct.pack("<I", bits)
        step = f"VP8L {what} {old}->{new}"
        w, h = frame
        w2, h2 = (new, h) if what == "width" else (w, new)
        if w2 * h2 > w * h and w2 >= w and h2 >= h:
            expect = f"VP8L claims {w2}x{h2} but codes {w}x{h}"
    chunks[i] = (ctype, bytes(payload))
    return Mutated(riff_build(chunks), step, expect)


def m_webp_chunk(rng, data):
    chunks = riff_chunks(data)
    if not chunks:
        return None
    i = rng.randrange(len(chunks))
    ctype = chunks[i][0].decode("latin1")
    how = rng.choice(("dup", "del", "edit", "edit"))
    if how == "dup":
        chunks.insert(rng.randrange(len(chunks) + 1), chunks[i])
        step = f"chunk {ctype}#{i} duplicated"
    elif how == "del":
        chunks.pop(i)
        step = f"chunk {ctype}#{i} deleted"
    else:
        if not chunks[i][1]:
            return None
        inner = (m_bitflip, m_byteset, m_intset, m_truncate)[rng.randrange(4)](rng, chunks[i][1])
        if inner is None:
            return None
        chunks[i] = (chunks[i][0], inner.data)
        step = f"chunk {ctype}#{i} payload: {inner.step} (sizes fixed)"
    return Mutated(riff_build(chunks), step)


WEBP_MUTATORS: tuple[Mutator, ...] = (m_webp_size, m_webp_size, m_webp_chunk, m_webp_chunk)

_TIFF_TAGS = {
    256: "ImageWidth",
    257: "ImageLength",
    258: "BitsPerSample",
    259: "Compression",
    262: "Photometric",
    273: "StripOffsets",
    274: "Orientation",
    277: "SamplesPerPixel",
    278: "RowsPerStrip",
    279: "StripByteCounts",
    284: "PlanarConfig",
    317: "Predictor",
    320: "ColorMap",
    338: "ExtraSamples",
    339: "SampleFormat",
    34665: "ExifIFD",
    34675: "ICCProfile",
    530: "YCbCrSubsampling",
    347: "JPEGTables",
}


def m_tiff_entry(rng, data):
    """One IFD0 entry's value (inline), count, type or tag edited; or the IFD's entry count or next-IFD link."""
    parsed = tiff_ifd0(data)
    if not parsed or not parsed[2]:
        return None
    order, offset, entries = parsed
    how = rng.choice(("value", "value", "value", "count", "type", "tag", "ifd count", "next ifd"))
    if how == "ifd count":
        old = len(entries)
        new = min(max(rng.choice((0, 1, old - 1, old + 1, 255, 65535)), 0), 65535)
        return Mutated(
            data[:offset] + struct.pack(order + "H", new) + data[offset + 2 :], f"IFD0 entry count {old}->{new}"
        )
    if how == "next ifd":
        pos = offset + 2 + 12 * len(entries)
        if pos + 4 > len(data):
            return None
        new = rng.choice((offset, 8, len(data) - 2, pos, (1 << 32) - 1))
        return Mutated(data[:pos] + struct.pack(order + "I", new) + data[pos + 4 :], f"IFD0 next-IFD offset ->{new}")
    weighted = [e for e in entries if e.tag in (256, 257)] * 3 + entries
    entry = rng.choice(weighted)
    name = _TIFF_TAGS.get(entry.tag, str(entry.tag))
    if how == "count":
        new = min(rng.choice((0, 1, entry.count + 1, entry.count * 2, 1 << 16, (1 << 32) - 1)), (1 << 32) - 1)
        out = data[: entry.pos + 4] + struct.pack(order + "I", new) + data[entry.pos + 8 :]
        return Mutated(out, f"{name} count {entry.count}->{new}")
    if how == "type":
        new = rng.choice((0, 1, 2, 3, 4, 5, 7, 12, 16, 255))
        out = data[: entry.pos + 2] + struct.pack(order + "H", new) + data[entry.pos + 4 :]
        return Mutated(out, f"{name} type {entry.type}->{new}")
    if how == "tag":
        new = rng.choice((256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 338, 339, 65535))
        out = data[: entry.pos] + struct.pack(order + "H", new) + data[entry.pos + 2 :]
        return Mutated(out, f"tag {name} renamed {new}")
    size = _TIFF_TYPE_SIZES.get(entry.type, 4)
    pos = entry.pos + 8
    if entry.count * size > 4 or entry.type not in (3, 4):  # an offset: point it elsewhere
        old = struct.unpack(order + "I", data[pos : pos + 4])[0]
        new = min(max(rng.choice((0, 8, old + 1, old - 1, len(data) - 1, len(data), (1 << 32) - 1)), 0), (1 << 32) - 1)
        out = data[:pos] + struct.pack(order + "I", new) + data[pos + 4 :]
        return Mutated(out, f"{name} value offset {old}->{new}")
    fmt = order + ("H" if entry.type == 3 else "I")
    old = struct.unpack(fmt, data[pos : pos + size])[0]
    new = _edit_value(rng, old, 65535 if entry.type == 3 else (1 << 32) - 1)
    out = data[:pos] + struct.pack(fmt, new) + data[pos + size :]
    expect = None
    if entry.tag in (256, 257) and new > old and entry.count == 1:
        expect = f"{name} raised {old}->{new} with the strip data unchanged"
    return Mutated(out, f"{name} {old}->{new}", expect)


TIFF_MUTATORS: tuple[Mutator, ...] = (m_tiff_entry,)
FORMAT_MUTATORS = {"png": PNG_MUTATORS, "jpeg": JPEG_MUTATORS, "webp": WEBP_MUTATORS, "tiff": TIFF_MUTATORS}


# ---------------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    seed: int
    index: int
    source: SeedFile
    steps: list[str]
    data: bytes
    expect_failure: str | None
    kinds: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"seed={self.seed} index={self.index} {self.source.name}"

    def describe(self) -> str:
        return f"[{self.label}] {' | '.join(self.steps) or 'unmutated'} ({len(self.data)} bytes)"


def make_case(seed: int, index: int) -> Case:
    """Case `index` of `seed`: a pure function of the two (and of the seed files)."""
    rng = random.Random(f"{seed}/{index}")
    sources = seed_files()
    source = sources[rng.randrange(len(sources))]
    data, steps, kinds, expect = source.data, [], [], None
    rounds = rng.choices((1, 2, 3), weights=(7, 2, 1))[0]
    for _ in range(rounds):
        for _attempt in range(4):
            pool = FORMAT_MUTATORS[source.kind] if rng.random() < 0.6 else GENERIC
            mutator = rng.choice(pool)
            mutated = mutator(rng, data) if data else None
            if mutated is not None and mutated.data != data:
                break
        else:
            continue
        data, expect = mutated.data, mutated.expect_failure if not steps else None
        steps.append(mutated.step)
        kinds.append(mutator.__name__.removeprefix("m_"))
    if len(steps) > 1:
        expect = None  # a later edit may have undone what made the first one certain to fail
    if source.kind == "png" and steps and not steps[-1].endswith("(CRC fixed)") and rng.random() < 0.3:
        parsed = png_chunks(data)
        if parsed:
            data = png_build(*parsed)
            steps.append("all CRCs fixed")
            kinds.append("png_fix_crcs")
    return Case(seed, index, source, steps, data, expect, kinds)


# ---------------------------------------------------------------------------------------------------- running


class CaseTimeout(BaseException):
    """Raised by SIGALRM in the decoding thread; a BaseException so read_image's `except Exception` passes it."""


@dataclass
class Outcome:
    case: Case
    status: str  # ok, refused, escaped, slow, implausible, accepted_short
    seconds: float
    bound: float
    claimed: tuple[int, int] | None
    detail: str = ""
    rss_growth_mb: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status not in ("ok", "refused")

    def describe(self) -> str:
        claimed = f"{self.claimed[0]}x{self.claimed[1]}" if self.claimed else "no header size"
        return (
            f"{self.status.upper()}: {self.case.describe()}\n"
            f"    claims {claimed}; {self.seconds:.3f} s of {self.bound:.1f} s allowed; {self.detail}\n"
            f"    reproduce: python tests/fuzz_harness.py --seed {self.case.seed} --case {self.case.index}"
        )


@dataclass
class Report:
    seed: int
    outcomes_run: int = 0
    seconds: float = 0.0
    failures: list[Outcome] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # first words of RealSRError messages, a coverage hint
    warnings: dict[str, list] = field(default_factory=dict)  # text -> [count, label of the first case]
    log_records: dict[str, list] = field(default_factory=dict)  # the same for decoders' logging records
    slowest: list[Outcome] = field(default_factory=list)
    memory: list[Outcome] = field(default_factory=list)
    by_source: Counter = field(default_factory=Counter)

    def summary(self, limit: int = 40) -> str:
        """Counts, failures grouped by (status, seed file, mutation), then the first `limit` failures in full."""
        lines = [
            f"fuzz seed {self.seed}: {self.outcomes_run} cases in {self.seconds:.1f} s; "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        ]
        groups = Counter((o.status, o.case.source.name, "+".join(o.case.kinds)) for o in self.failures)
        if groups:
            lines.append("failures by status, seed file and mutation:")
            lines += [f"  {n:5}  {status} {source} {kinds}" for (status, source, kinds), n in sorted(groups.items())]
        lines += [f.describe() for f in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"... and {len(self.failures) - limit} more failures")
        return "\n".join(lines)


def claimed_size(data: bytes) -> tuple[int, int] | None:
    """The (width, height) Pillow reads from the header, as read_image checks it; None when it cannot open."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def time_bound(claimed: tuple[int, int] | None, max_pixels: int) -> float:
    pixels = min(claimed[0] * claimed[1], max_pixels) if claimed else 0
    return BASE_SECONDS + SECONDS_PER_PIXEL * pixels


def implausible(photo, claimed: tuple[int, int] | None, max_pixels: int) -> str | None:
    rgb = photo.rgb
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        return f"rgb is {rgb.dtype} {rgb.shape}, not (H, W, 3) uint8/uint16"
    height, width = rgb.shape[:2]
    if height * width == 0 or height * width > max_pixels:
        return f"decoded {width}x{height}, outside 1..max_pixels={max_pixels}"
    if claimed is not None and (width, height) not in (claimed, claimed[::-1]):
        return f"decoded {width}x{height} but the header that --max-pixels checked says {claimed[0]}x{claimed[1]}"
    if photo.bit_depth != (16 if rgb.dtype == np.uint16 else 8):
        return f"bit_depth {photo.bit_depth} for {rgb.dtype} pixels"
    if photo.alpha is not None and (photo.alpha.shape != (height, width) or photo.alpha.dtype != rgb.dtype):
        return f"alpha {photo.alpha.dtype} {photo.alpha.shape} beside rgb {rgb.dtype} {rgb.shape}"
    return None


_hang_file = sys.stderr
"""Where faulthandler writes a hung case's stacks (the command points it past its silenced stderr)."""


def _on_alarm(signum, frame):
    raise CaseTimeout


def _decode_in_named_frame(case: Case) -> Callable:
    """read_image called from a frame whose file name is the case, so a faulthandler dump of a hang names it."""
    namespace: dict = {}
    code = compile(
        "def run(read, path, limit):\n    return read(path, max_pixels=limit)\n", f"<fuzz case {case.label}>", "exec"
    )
    exec(code, namespace)
    return namespace["run"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: Case, workdir: Path, max_pixels: int = MAX_PIXELS) -> Outcome:
    """Decode one case under its time bound and judge the result."""
    path = workdir / f"case.{case.source.ext}"
    path.write_bytes(case.data)
    claimed = claimed_size(case.data)
    bound = time_bound(claimed, max_pixels)
    expect = case.expect_failure
    if case.source.kind == "png":
        expect = png_data_shortfall(case.data, max_pixels) or expect
    decode = _decode_in_named_frame(case)
    previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
    rss_before = _rss_mb()
    pillow_limit = Image.MAX_IMAGE_PIXELS
    status, detail = "ok", ""
    faulthandler.dump_traceback_later(bound + HARD_MARGIN, exit=True, file=_hang_file)
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, bound)
    try:
        photo = decode(read_image, path, max_pixels)
    except CaseTimeout:
        status, detail = "slow", f"still decoding at the {bound:.1f} s bound (stopped by SIGALRM)"
        _recover_after_timeout(pillow_limit)
    except RealSRError as err:
        status, detail = "refused", f"{type(err).__name__}: {err}"
    except BaseException as err:  # noqa: B036 - the point: anything else escaping the reader is a finding
        if isinstance(err, KeyboardInterrupt):
            raise
        frames = traceback.extract_tb(err.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
        status, detail = "escaped", f"{type(err).__module__}.{type(err).__qualname__}: {err} (raised at {where})"
    else:
        detail = implausible(photo, claimed, max_pixels) or ""
        if detail:
            status = "implausible"
        elif expect:
            status, detail = "accepted_short", f"decoded as {photo.rgb.shape[1]}x{photo.rgb.shape[0]} but {expect}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous_handler)
    seconds = time.perf_counter() - start
    if status in ("ok", "refused", "accepted_short") and seconds > bound:
        status, detail = "slow", f"took {seconds:.2f} s, over the {bound:.1f} s bound; {detail}"
    return Outcome(case, status, seconds, bound, claimed, detail, _rss_mb() - rss_before)


def _recover_after_timeout(pillow_limit: int | None) -> None:
    """An exception thrown into Pillow may have skipped read.py's restores: put the shared state back."""
    lock = getattr(read_module, "_PILLOW_LIMIT_LOCK", None)
    if lock is not None and lock.locked():
        lock.release()
    Image.MAX_IMAGE_PIXELS = pillow_limit


def run(
    seed: int,
    cases: int,
    *,
    seconds: float | None = None,
    min_cases: int = 0,
    start: int = 0,
    max_pixels: int = MAX_PIXELS,
    workdir: Path | None = None,
    save: Path | None = None,
    progress: Callable[[int, Report], None] | None = None,
) -> Report:
    """Cases start .. start + cases - 1 of `seed`; stop after `seconds` once at least `min_cases` have run."""
    report = Report(seed)
    began = time.perf_counter()
    tmp = None
    counter = _LogCounter(report)
    quieted = [(logging.getLogger(name), logging.getLogger(name).propagate) for name in DECODER_LOGGERS]
    for logger, _ in quieted:
        logger.addHandler(counter)
        logger.propagate = False
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="realsr-fuzz-")
        workdir = Path(tmp.name)
    try:
        for index in range(start, start + cases):
            done = index - start
            if seconds is not None and done >= min_cases and time.perf_counter() - began > seconds:
                break
            case = make_case(seed, index)
            counter.case = case.label
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                outcome = run_case(case, workdir, max_pixels)
            for w in caught:
                text = str(w.message).replace(str(workdir), "")[:90]
                report.warnings.setdefault(f"{w.category.__name__}: {text}", [0, case.label])[0] += 1
            _record(report, outcome, save)
            if progress is not None:
                progress(done + 1, report)
    finally:
        for logger, propagate in quieted:
            logger.removeHandler(counter)
            logger.propagate = propagate
        if tmp is not None:
            tmp.cleanup()
    report.seconds = time.perf_counter() - began
    return report


DECODER_LOGGERS = ("tifffile", "PIL")
"""Loggers the decoders write to; tifffile logs an ERROR per malformed tag, which a CLI without logging configured
prints raw on stderr (Python's last-resort handler). Counted in the report, kept out of pytest's log capture."""


class _LogCounter(logging.Handler):
    def __init__(self, report: Report) -> None:
        super().__init__(logging.WARNING)
        self.report = report
        self.case = ""

    def emit(self, record: logging.LogRecord) -> None:
        text = re.sub(r"\d+", "N", record.getMessage())[:90]
        self.report.log_records.setdefault(f"{record.name} {record.levelname}: {text}", [0, self.case])[0] += 1


def _record(report: Report, outcome: Outcome, save: Path | None) -> None:
    report.outcomes_run += 1
    report.statuses[outcome.status] += 1
    report.by_source[outcome.case.source.name] += 1
    if outcome.status == "refused":
        report.errors[outcome.detail.split(": ", 2)[-1][:40]] += 1
    if outcome.failed:
        report.failures.append(outcome)
        if save is not None:
            save_case(outcome, save)
    report.slowest = sorted([*report.slowest, outcome], key=lambda o: -o.seconds / o.bound)[:10]
    if outcome.rss_growth_mb > 100:
        report.memory.append(outcome)


def save_case(outcome: Outcome, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    case = outcome.case
    path = folder / f"{outcome.status}-s{case.seed}-i{case.index}-{case.source.name}.{case.source.ext}"
    path.write_bytes(case.data)
    with open(folder / "findings.txt", "a") as fh:
        fh.write(f"{path.name}\n{outcome.describe()}\n\n")
    return path


# ---------------------------------------------------------------------------------------------------- command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz realsr's image reader with mutated PNG/JPEG/WebP/TIFF files.")
    parser.add_argument("--cases", type=int, default=20_000, help="number of cases (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="run seed; case I of seed S is always the same file")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: no limit)")
    parser.add_argument("--start", type=int, default=0, help="first case index (default 0)")
    parser.add_argument("--case", type=int, default=None, help="run this one case and print its traceback")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS)
    parser.add_argument("--save", type=Path, default=None, help="write each failing case's file here")
    parser.add_argument("--json", type=Path, default=None, help="write the failures and statistics here")
    parser.add_argument("--verbose", action="store_true", help="keep libtiff's and libjpeg's messages on stderr")
    args = parser.parse_args(argv)
    if args.case is not None:
        return _one(args)

    def progress(done: int, report: Report) -> None:
        if done % 1000 == 0:
            print(f"  {done} cases, {len(report.failures)} failures", flush=True)

    with _quiet_c_stderr(args.verbose):
        report = run(
            args.seed,
            args.cases,
            seconds=args.seconds,
            start=args.start,
            max_pixels=args.max_pixels,
            save=args.save,
            progress=progress,
        )
    print(report.summary())
    print("\nslowest (time / bound):")
    for o in report.slowest:
        print(f"  {o.seconds:7.3f} s / {o.bound:4.1f} s  {o.status:8} {o.case.describe()[:150]}")
    if report.memory:
        print("\npeak RSS raised by more than 100 MB:")
        for o in report.memory:
            print(f"  +{o.rss_growth_mb:.0f} MB  {o.status} {o.case.describe()[:150]}")
    print("\nwarnings raised while decoding:")
    for text, (n, first) in sorted(report.warnings.items(), key=lambda kv: -kv[1][0])[:20]:
        print(f"  {n:6}  {text}  (first: {first})")
    print("\nlogging records from the decoders (level WARNING and up):")
    for text, (n, first) in sorted(report.log_records.items(), key=lambda kv: -kv[1][0])[:20]:
        print(f"  {n:6}  {text}  (first: {first})")
    print("\nmost common refusals:")
    for text, n in report.errors.most_common(15):
        print(f"  {n:6}  {text}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "seed": args.seed,
                    "cases": report.outcomes_run,
                    "seconds": report.seconds,
                    "statuses": report.statuses,
                    "failures": [
                        {
                            "index": o.case.index,
                            "source": o.case.source.name,
                            "steps": o.case.steps,
                            "status": o.status,
                            "detail": o.detail,
                            "seconds": o.seconds,
                            "claimed": o.claimed,
                        }
                        for o in report.failures
                    ],
                },
                indent=1,
            )
        )
    return 1 if report.failures else 0


@contextlib.contextmanager
def _quiet_c_stderr(verbose: bool) -> Iterator[None]:
    """libtiff prints a line per bad strip straight to fd 2: send fd 2 to /dev/null, hang dumps to the real one."""
    global _hang_file
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _hang_file = os.fdopen(os.dup(saved), "w")
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        _hang_file.close()
        _hang_file = sys.stderr


def _one(args) -> int:
    case = make_case(args.seed, args.case)
    print(case.describe())
    if case.expect_failure:
        print(f"  must fail: {case.expect_failure}")
    with tempfile.TemporaryDirectory(prefix="realsr-fuzz-") as tmp:
        outcome = run_case(case, Path(tmp), args.max_pixels)
        print(outcome.describe())
        if outcome.status == "escaped":
            path = Path(tmp) / f"case.{case.source.ext}"
            path.write_bytes(case.data)
            try:
                read_image(path, max_pixels=args.max_pixels)
            except Exception:
                traceback.print_exc()
    if args.save:
        print(f"saved {save_case(outcome, args.save)}")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
