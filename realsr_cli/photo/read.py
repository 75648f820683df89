"""Decoding: image files, PIL images and arrays into a `Photo`, upright, with what a faithful output needs.

Owns the reading policy: EXIF orientation applied (and reset to 1 in the EXIF carried over), ICC profile and
EXIF kept, alpha kept, 16-bit PNG/TIFF kept at 16 bits, grayscale kept, palette/CMYK converted, animated images
reduced to their first frame, decompression bombs refused before decoding, and a file with less pixel data than
its header claims refused (Pillow and pypng fill or stop quietly), at a cost bounded by the file's size. Python
warnings raised while decoding (Pillow's, on odd metadata) become the photo's warnings. Pure
numpy/Pillow/pypng/tifffile; no torch here.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import threading
import warnings as py_warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import Image, ImageCms, JpegImagePlugin

from realsr_cli.errors import InputError
from realsr_cli.photo.formats import ANIMATED_SOURCES, register_codecs
from realsr_cli.photo.pixels import quantize

ORIENTATION_TAG = 0x0112
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
# IFD0 tags that describe the photo rather than a TIFF file's layout (strip offsets etc. must not travel):
# description, make, model, software, datetime, artist, copyright
DESCRIPTIVE_TAGS = (270, 271, 272, 305, 306, 315, 33432)
_ANIMATED = "animated or multi-page image: only the first frame is upscaled"

# the IJG (libjpeg) base quantization tables in natural order, luma and chroma: nearly every encoder (libjpeg,
# Pillow, phones, web tools) scales these by its quality setting, so the scale gives the quality back
_IJG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_IJG_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *(99,) * 32,
)  # fmt: skip
_JPEG_SAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}  # JpegImagePlugin.get_sampling's codes


# Pillow decodes 16-bit colour PNGs to their high bytes; its C decoder still unfilters whole 16-bit rows, so a
# second decode with the little-endian rawmode yields the low bytes (~20x faster than pypng's pure-Python unfilter)
_PNG16_LOW_BYTES = {("RGB", "RGB;16B"): "RGB;16L", ("RGBA", "RGBA;16B"): "RGBA;16L"}

# Image.MAX_IMAGE_PIXELS is a Pillow global: one lock so concurrent reads cannot restore each other's value
_PILLOW_LIMIT_LOCK = threading.Lock()

# the list a decoding thread collects Python warnings into (None: not decoding)
_COLLECTING = threading.local()

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# deflate's ceiling: a 258-byte match costs at least 2 bits, so no stream expands more than 1032-fold
_DEFLATE_MAX_RATIO = 1032
_INFLATE_STEP = 1 << 20  # bytes inflated at a time while counting a PNG's pixel data

_JPEG_HUFFMAN_SOF = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive
# Huffman coding spends at least one bit on every 8x8 block (a 1-bit DC code), so a byte holds at most 512 pixels
_JPEG_MAX_PIXELS_PER_BYTE = 512
_JPEG_MARKER = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")  # stuffed FF 00 and restart markers are scan data
# libjpeg fills a scan that meets a marker early with zero bits (then grey) and only warns. Scan data followed by
# these bytes instead decodes exactly as the whole file when its data is complete: libjpeg reads them only as
# lookahead (57 bits) behind its last code. When blocks are missing it decodes them from these bits, which gives
# pixels that differ between the fill and its inverse, or runs out and reports a truncated file. No FF (a marker).
_JPEG_FILL = bytes.fromhex("5a3c96e1c3a5695a0f783ca5d2b4e196")
_JPEG_FILL_INVERTED = bytes(b ^ 0xFF for b in _JPEG_FILL)  # every bit the other way (still no FF)
_JPEG_EOI = b"\xff\xd9"


@dataclass
class Photo:
    """A decoded photo, upright, with everything needed to write the upscaled result back faithfully."""

    rgb: np.ndarray
    """(H, W, 3) uint8 or uint16 as decoded (uint16 for 16-bit sources), EXIF orientation applied; grayscale is
    replicated to three channels. Possibly a read-only view: integer pixels are a quarter (uint8) of a float copy's
    memory, and the tiler converts them tile by tile."""
    alpha: np.ndarray | None
    """(H, W), the dtype of `rgb` (its maximum = opaque), or None when the source has no transparency."""
    bit_depth: int
    """8 or 16: the integer depth the output keeps (16 for 16-bit PNG/TIFF and uint16/float arrays)."""
    grayscale: bool
    """The source is grayscale, so the output should be too."""
    icc_profile: bytes | None
    """The source's ICC profile; None when absent or when the pixels were converted out of it (CMYK)."""
    exif: bytes | None
    """EXIF block as `Image.Exif.tobytes()` gives it (starting b"Exif\\0\\0"), Orientation reset to 1; or None."""
    format: str
    """Source format as Pillow names it ("PNG", "JPEG", "WEBP", "TIFF", "GIF", ...); "" for in-memory images."""
    warnings: list[str] = field(default_factory=list)
    """What was lost or changed on the way in, one sentence each (e.g. an animated image's other frames)."""
    jpeg_quality: int | None = None
    """A JPEG source's quality on the IJG 1-100 scale, estimated from its quantization tables; None otherwise."""
    jpeg_subsampling: str | None = None
    """A colour JPEG source's chroma subsampling ("4:4:4", "4:2:2" or "4:2:0"); None otherwise."""
    animation: Animation | None = None
    """The other frames of an animated GIF or WebP and how it plays (`rgb`/`alpha` are the first frame); None
    for a still photo."""

    def first_frame(self, warning: str) -> Photo:
        """This photo without its animation, `warning` added to its warnings (it says why)."""
        return replace(self, animation=None, warnings=[*self.warnings, warning])


@dataclass
class Animation:
    """An animation's frames after the first, and how it plays, as its source file says."""

    frames: list[tuple[np.ndarray, np.ndarray | None]]
    """Frames 2..n, each whole (the source's partial frames already composed onto the canvas), upright, as
    (rgb (H, W, 3), alpha (H, W) or None) with the dtype and alpha presence of the first frame's."""
    durations: list[int]
    """Milliseconds each frame shows, the first included."""
    disposals: list[int] | None
    """A GIF's disposal method of each frame, the first included (0-3; kept so a GIF output plays the same way);
    None for WebP, whose encoder chooses its own."""
    loop: int | None
    """The source's loop count (0: forever); None when it has none (a GIF without one plays once)."""


def read_image(path: str | os.PathLike, *, max_pixels: int) -> Photo:
    """Decode an image file into a `Photo`.

    The pixel count is checked against `max_pixels` from the header, before any pixel is decoded.
    Raises InputError (one line naming the file) for a missing, empty, unreadable, unidentifiable, corrupt,
    truncated or too large file, one with less pixel data than its header claims, or a pixel format realsr cannot
    represent. Python warnings raised while reading it (Pillow's) become the photo's `warnings`.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from err
    warnings: list[str] = []
    animation = None
    with _collect_warnings(warnings), _open(path) as im:
        _check_pixels(path, im.size, max_pixels)
        try:
            with _pillow_limit_off():  # GIF and APNG seek to find out, and Pillow checks its limit on each seek
                # multi-picture JPEGs (MPO) carry a preview or depth map as frame 2: photos, not animations
                animated = im.format != "MPO" and getattr(im, "is_animated", False)
            if animated and im.format in ANIMATED_SOURCES:
                _check_pixels(path, im.size, max_pixels, frames=im.n_frames)
                with _pillow_limit_off():
                    color, alpha, animation = _decode_animation(im)
                gray = False
            else:
                if animated:
                    warnings.insert(0, _ANIMATED)
                color, alpha, gray = _decode(path, im, warnings)
            # after decoding: Pillow's TIFF load applies the orientation itself and drops the tag
            orientation, exif = _read_exif(im, warnings)
        except (InputError, MemoryError):
            raise
        except Exception as err:  # decoders of untrusted bytes raise anything from OSError to struct.error
            raise InputError(f"{path}: corrupt or truncated image ({err})") from err
        icc = None if im.mode == "CMYK" else im.info.get("icc_profile") or None
        quality, subsampling = _jpeg_coding(im) if im.format in ("JPEG", "MPO") else (None, None)
    photo = _finish(color, alpha, gray, orientation, exif, icc, _source_format(im), warnings)
    if animation is not None:  # every frame upright, as the first
        animation.frames = [
            (_orient(rgb, orientation), None if a is None else _orient(a, orientation)) for rgb, a in animation.frames
        ]
    return replace(photo, jpeg_quality=quality, jpeg_subsampling=subsampling, animation=animation)


def upright_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file as `read_image` would return it (EXIF rotations applied), from its header
    alone: nothing is decoded. Raises InputError for a file that cannot be opened."""
    path = Path(path)
    with _open(path) as im:
        width, height = im.size
        try:
            orientation = im.getexif().get(ORIENTATION_TAG, 1)
        except Exception:  # unreadable EXIF: decoding will warn and keep the stored orientation
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)  # the four that turn by 90 degrees


def _open(path: Path) -> Image.Image:
    """Open an image file, reading its header only. Raises InputError."""
    register_codecs()  # HEIF
    try:
        with _pillow_limit_off():
            return Image.open(path)
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not an image realsr can read (unknown or unsupported format)") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from err
    except Exception as err:  # a plugin choking on a malformed header
        raise InputError(f"{path}: corrupt image header ({err})") from err


def photo_from_pil(image: Image.Image) -> Photo:
    """A `Photo` from a PIL image, with the same policy as `read_image` (orientation, alpha, palette, CMYK).

    16-bit grayscale ("I;16") keeps 16 bits; PIL has no 16-bit colour mode, so colour is 8-bit.
    Raises InputError when the image cannot be decoded or has a mode realsr cannot represent ("I", "F").
    """
    warnings = [_ANIMATED] if getattr(image, "is_animated", False) else []
    name = getattr(image, "filename", "") or "image"
    try:
        color, alpha, gray = _pillow_pixels(name, image, warnings)
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise InputError(f"{name}: corrupt or truncated image ({err})") from err
    orientation, exif = _read_exif(image, warnings)
    icc = None if image.mode == "CMYK" else image.info.get("icc_profile") or None
    return _finish(color, alpha, gray, orientation, exif, icc, _source_format(image), warnings)


def photo_from_array(array: np.ndarray) -> Photo:
    """A `Photo` from an (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4) array (gray, gray+alpha, RGB, RGBA).

    uint8 gives bit_depth 8; uint16 and float (values in [0, 1], clipped) give 16. Raises InputError for
    another shape or dtype, or for NaN values.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or 0 in array.shape:
        raise InputError(f"array of shape {array.shape} is not an image (expected HxW, HxWx1/2/3/4)")
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise InputError("array contains NaN values")
        array = quantize(array, np.uint16)
    elif array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"array of dtype {array.dtype} is not an image (expected uint8, uint16 or float in [0, 1])")
    gray = array.shape[2] <= 2
    alpha = array[..., -1] if array.shape[2] in (2, 4) else None
    color = array[..., :1] if gray else array[..., :3]
    return _finish(color, alpha, gray, 1, None, None, "", [])


def _source_format(im: Image.Image) -> str:
    # Pillow calls camera JPEGs with an embedded preview or depth map "MPO": they are JPEGs to a user
    return "JPEG" if im.format == "MPO" else im.format or ""


@contextmanager
def _pillow_limit_off() -> Iterator[None]:
    """Pillow's own bomb check off while opening, so the --max-pixels check and its message are the ones users see."""
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int, frames: int = 1) -> None:
    """Refuse an image (an animation: all its frames together) of more than `max_pixels` pixels."""
    width, height = size
    total = width * height * frames
    if total > max_pixels:
        what = f"{width}x{height} is" if frames == 1 else f"{frames} frames of {width}x{height} are"
        raise InputError(f"{path}: {what} {total:,} pixels, above the limit of {max_pixels:,} (--max-pixels)")


def _decode_animation(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, Animation]:
    """(first frame's rgb, its alpha or None, the rest) of an animated GIF or WebP, not yet oriented.

    Pillow composes each frame onto the canvas as the source's disposal says, so every frame is whole; alpha is
    kept for all frames when any frame has a pixel that is not opaque.
    """
    pixels, durations, disposals = [], [], []
    for index in range(im.n_frames):
        im.seek(index)
        pixels.append(np.asarray(im.convert("RGBA")))
        durations.append(int(im.info.get("duration", 0)))
        disposals.append(getattr(im, "disposal_method", 0))
    loop = im.info.get("loop")
    im.seek(0)
    transparent = any((frame[..., 3] < 255).any() for frame in pixels)
    frames = [(frame[..., :3], frame[..., 3] if transparent else None) for frame in pixels]
    animation = Animation(frames[1:], durations, disposals if im.format == "GIF" else None, loop)
    return frames[0][0], frames[0][1], animation


def _jpeg_coding(im: Image.Image) -> tuple[int | None, str | None]:
    """(quality on the IJG scale, chroma subsampling) of a JPEG, from its header.

    The quality is the one whose IJG tables, scaled as libjpeg scales them, lie nearest the file's: exact for
    files written by libjpeg-based encoders, the nearest equivalent for cameras' own tables.
    """
    tables = getattr(im, "quantization", None) or {}
    luma, chroma = tables.get(0), tables.get(1)
    quality = None
    if luma is not None and len(luma) == 64:

        def distance(q: int) -> int:
            scale = 5000 // q if q < 50 else 200 - 2 * q
            error = 0
            for base, table in ((_IJG_LUMA, luma), (_IJG_CHROMA, chroma)):
                if table is not None and len(table) == 64:
                    error += sum(
                        abs(min(max((b * scale + 50) // 100, 1), 255) - t) for b, t in zip(base, table, strict=True)
                    )
            return error

        quality = min(range(1, 101), key=lambda q: (distance(q), -q))
    sampling = JpegImagePlugin.get_sampling(im) if im.mode != "L" else -1
    return quality, _JPEG_SAMPLING.get(sampling)


def _decode(path: Path, im: Image.Image, warnings: list[str]) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(color (H, W, 1|3) uint8/uint16, alpha (H, W) of the same dtype or None, grayscale), not yet oriented."""
    png_depth = _check_png_data(path) if im.format == "PNG" else None
    if im.format == "TIFF":
        _check_tiff_layout(path)
    if im.format in ("JPEG", "MPO"):
        return _decode_jpeg(path, im, warnings)
    if png_depth == 16:
        low_rawmode = _PNG16_LOW_BYTES.get((im.mode, im.tile[0][3])) if len(im.tile) == 1 else None
        if low_rawmode and "transparency" not in im.info:
            return _decode_png16_pillow(path, im, low_rawmode)
        return _decode_png16_pypng(path)
    # Pillow keeps 16-bit gray TIFFs (I;16, any compression) but cuts 16-bit colour to 8 bits
    if im.format == "TIFF" and not im.mode.startswith("I;16") and 16 in np.atleast_1d(im.tag_v2.get(258, 8)):
        return _decode_tiff16(path)
    return _pillow_pixels(path, im, warnings)


def _check_png_data(path: Path) -> int:
    """Refuse a PNG whose pixel data cannot fill the image its header claims, or whose IDAT checksum is wrong;
    return its bit depth (from the IHDR this check reads anyway).

    Pillow takes a zlib stream that ends early as the end of the image (black rows follow) and skips IDAT
    checksums, while pypng rejects them: one strict rule for every PNG path. A claim no file of this size can
    hold is refused before inflating anything; otherwise the data is inflated a megabyte at a time and counted.
    """
    with open(path, "rb") as fh:
        ihdr, idats = _png_chunks(fh)
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
        needed = _png_raw_size(width, height, depth * _PNG_CHANNELS.get(colour, 1), interlace)
        if needed > _DEFLATE_MAX_RATIO * (sum(length for _, length in idats) + 1):
            raise InputError(
                f"{path}: corrupt PNG: its header claims {width}x{height}, more than its pixel data can hold"
            )
        inflater, inflated = zlib.decompressobj(), 0
        for offset, length in idats:
            fh.seek(offset)
            chunk, crc = fh.read(4 + length), fh.read(4)
            if len(crc) < 4:
                break  # the file ends inside its pixel data
            if zlib.crc32(chunk) != int.from_bytes(crc, "big"):
                raise InputError(f"{path}: corrupt PNG: checksum error in its pixel data (IDAT)")
            inflated += _inflated_size(path, inflater, chunk[4:], needed - inflated)
            if inflated >= needed:
                return depth
    raise InputError(
        f"{path}: truncated PNG: its pixel data fills {100 * inflated // needed}% of the {width}x{height} "
        "its header claims"
    )


def _png_chunks(fh) -> tuple[bytes, list[tuple[int, int]]]:
    """(IHDR's 13 bytes, (offset of the type, data length) of each IDAT chunk), read up to IEND or the file's end."""
    fh.seek(8)  # the signature, checked by Pillow
    ihdr, idats = b"", []
    while len(head := fh.read(8)) == 8:
        length, kind = int.from_bytes(head[:4], "big"), head[4:]
        if kind == b"IHDR":
            ihdr = fh.read(13)
            fh.seek(length - 13 + 4, os.SEEK_CUR)
        else:
            if kind == b"IDAT":
                idats.append((fh.tell() - 4, length))
            elif kind == b"IEND":
                break
            fh.seek(length + 4, os.SEEK_CUR)
    return ihdr.ljust(13, b"\0"), idats


def _png_raw_size(width: int, height: int, bits_per_pixel: int, interlace: int) -> int:
    """Bytes of filtered pixel data a PNG of this size holds: a filter byte and the packed pixels of each row."""
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            total += h * (1 + -(-w * bits_per_pixel // 8))
    return total


def _inflated_size(path: Path, inflater, data: bytes, wanted: int) -> int:
    """Bytes `data` inflates to, counted up to `wanted`, a bounded piece at a time."""
    produced = 0
    try:
        while data and produced < wanted:
            produced += len(inflater.decompress(data, _INFLATE_STEP))
            data = inflater.unconsumed_tail
    except zlib.error as err:
        raise InputError(f"{path}: corrupt PNG: its pixel data does not decompress ({err})") from err
    return produced


def _check_tiff_layout(path: Path) -> None:
    """Refuse a TIFF whose strips or tiles cannot fill the image its header claims: fewer than its size needs,
    reaching past the end of the file, or uncompressed and short (Pillow and tifffile fill the rest with black)."""
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            needed, offsets, counts = math.prod(page.chunked), page.dataoffsets, page.databytecounts
            whole_bytes = page.compression == 1 and page.bitspersample % 8 == 0
            short = (
                min(len(offsets), len(counts)) < needed
                or any(offset + count > size for offset, count in zip(offsets, counts, strict=False))
                or (whole_bytes and sum(counts) < page.nbytes)
                or (page.compression == 7 and _tiff_jpeg_short(tif.filehandle, page))
            )
            width, height = page.imagewidth, page.imagelength
    except (tifffile.TiffFileError, ValueError, IndexError, AttributeError, OSError):
        return  # a layout tifffile cannot parse: Pillow's decoder has the last word
    if short:
        raise InputError(f"{path}: truncated TIFF: its pixel data cannot fill the {width}x{height} its header claims")


def _tiff_jpeg_short(fh, page) -> bool:
    """Whether a JPEG-compressed TIFF strip or tile codes fewer columns or rows than its place in the image needs
    (its JPEG frame header says how many; libtiff only warns and fills the rest)."""
    if page.is_tiled:
        sizes = [(page.tilewidth, page.tilelength)] * len(page.dataoffsets)
    else:
        rows = min(page.rowsperstrip or page.imagelength, page.imagelength)
        per_plane = -(-page.imagelength // rows)
        sizes = [(page.imagewidth, min(rows, page.imagelength - i % per_plane * rows)) for i in range(per_plane)]
        sizes *= -(-len(page.dataoffsets) // per_plane)
    for offset, count, (width, height) in zip(page.dataoffsets, page.databytecounts, sizes, strict=False):
        fh.seek(offset)
        frame = _jpeg_frame_size(fh.read(min(count, 1 << 16)))
        if frame is not None and (frame[0] < width or frame[1] < height):
            return True
    return False


def _jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG stream's SOF segment, or None when its headers do not reach one."""
    pos = 2
    while pos + 9 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 1 if marker == 0xFF else 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker in (0xDA, 0xD9):
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _decode_jpeg(path: Path, im: Image.Image, warnings: list[str]):
    """Decode a JPEG, refusing one whose image data ends before the size its header claims.

    A single-scan Huffman JPEG (most cameras', and what realsr writes) is decoded with its end marker replaced by
    fill bits, twice, with every fill bit the other way round the second time: complete data decodes to Pillow's
    pixels both times (the fill is only lookahead), while missing blocks decode from the fill (pixels that differ)
    or make libjpeg ask for more data (a truncation error) instead of being filled with grey. A progressive JPEG's
    first DC scan, which spends at least one code on every block, is checked the same way at 1/8 scale (DC only,
    an end marker after the fill). The cost is one more decode (an eighth of the work for progressive files);
    other JPEGs only get the bound on pixels per byte.
    """
    data = path.read_bytes()
    sof, kind, scan_end = _jpeg_scan(data)
    width, height = im.size
    if sof in _JPEG_HUFFMAN_SOF and width * height > _JPEG_MAX_PIXELS_PER_BYTE * len(data):
        raise InputError(f"{path}: corrupt JPEG: its header claims {width}x{height}, more than its data can hold")
    if kind == "dc":
        head = data[:scan_end]
        if not np.array_equal(
            _jpeg_dc_pixels(head + _JPEG_FILL + _JPEG_EOI), _jpeg_dc_pixels(head + _JPEG_FILL_INVERTED + _JPEG_EOI)
        ):
            raise _jpeg_short(path, width, height)
    if kind != "scan":
        return _pillow_pixels(path, im, warnings)
    strict = _jpeg_strict(path, data[:scan_end] + _JPEG_FILL, width, height)
    with strict, _jpeg_strict(path, data[:scan_end] + _JPEG_FILL_INVERTED, width, height) as inverted:
        if not np.array_equal(np.asarray(strict), np.asarray(inverted)):
            raise _jpeg_short(path, width, height)
        return _pillow_pixels(path, strict, warnings)


def _jpeg_short(path: Path, width: int, height: int) -> InputError:
    return InputError(f"{path}: truncated JPEG: its image data ends before the {width}x{height} its header claims")


def _jpeg_strict(path: Path, data: bytes, width: int, height: int) -> Image.Image:
    """The JPEG in `data` opened and decoded; a truncation error (its data ran out) is an InputError."""
    with _pillow_limit_off():
        im = Image.open(io.BytesIO(data), formats=["JPEG"])
    try:
        im.load()
    except OSError as err:
        im.close()
        if "truncated" not in str(err):
            raise
        raise _jpeg_short(path, width, height) from err
    return im


def _jpeg_dc_pixels(data: bytes) -> np.ndarray:
    """The pixels of a JPEG decoded at 1/8 scale, where each 8x8 block is its DC coefficient."""
    with _pillow_limit_off():
        im = Image.open(io.BytesIO(data), formats=["JPEG"])
    with im:
        im.draft(im.mode, (1, 1))
        im.load()
        return np.asarray(im)


def _jpeg_scan(data: bytes) -> tuple[int | None, str | None, int]:
    """(the frame's SOF marker or None, what to check, where the scan data to check ends).

    "scan": a sequential Huffman JPEG whose one scan holds every component and ends at the end of image; "dc": a
    progressive JPEG whose first scan is a first DC scan of every component; None (and 0) for anything else.
    """
    pos, sof, components = 2, None, -1
    while pos + 10 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # fill byte or a marker without a length
            pos += 1 if marker == 0xFF else 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            sof, components = marker, data[pos + 9]
        elif marker == 0xDA:
            count = data[pos + 4]
            header_end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            end = _JPEG_MARKER.search(data, header_end)
            if end is None or count != components:
                return sof, None, 0
            if sof in (0xC0, 0xC1) and data[end.end() - 1] == 0xD9:  # more scans (or DNL) may not follow
                return sof, "scan", end.start()
            spectral = data[pos + 5 + 2 * count : pos + 8 + 2 * count]  # Ss, Se, Ah|Al
            if sof == 0xC2 and len(spectral) == 3 and spectral[0] == spectral[1] == 0 and spectral[2] >> 4 == 0:
                return sof, "dc", end.start()
            return sof, None, 0
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return sof, None, 0


@contextmanager
def _collect_warnings(into: list[str]) -> Iterator[None]:
    """Python warnings this thread raises meanwhile (Pillow's, on odd metadata) are appended to `into`, one line
    each, instead of printed; other threads' warnings go where they went before."""
    if not getattr(py_warnings.showwarning, "realsr_collector", False):
        py_warnings.showwarning = _collector(py_warnings.showwarning)
    _COLLECTING.into = into
    try:
        yield
    finally:
        _COLLECTING.into = None


def _collector(previous):
    """A `warnings.showwarning` that feeds the decoding thread's list and passes anything else to `previous`."""

    def show(message, category, filename, lineno, file=None, line=None):
        into = getattr(_COLLECTING, "into", None)
        if into is None:
            return previous(message, category, filename, lineno, file, line)
        text = " ".join(str(message).split())
        if text not in into:
            into.append(text)

    show.realsr_collector = True
    return show


def _decode_png16_pillow(path: Path, im: Image.Image, low_rawmode: str):
    im.load()
    high = np.asarray(im)
    with _pillow_limit_off():
        again = Image.open(path)
    with again:
        again.tile = [tuple(again.tile[0][:3]) + (low_rawmode,)]
        again.load()
        low = np.asarray(again)
    pixels = (high.astype(np.uint16) << 8) | low
    alpha = pixels[..., 3] if pixels.shape[2] == 4 else None
    return pixels[..., :3], alpha, False


def _decode_png16_pypng(path: Path):
    """16-bit gray, gray+alpha, and colour with a tRNS colour key, read with pypng (raw values, no sBIT rescale)."""
    with open(path, "rb") as fh:  # pypng would leave a file it opened to the garbage collector
        width, height, rows, info = png.Reader(file=fh).read()
        planes = info["planes"]
        pixels = np.empty((height, width * planes), np.uint16)
        count = 0
        for count, row in enumerate(rows, start=1):
            pixels[count - 1] = np.frombuffer(row, np.uint16)
    if count != height:  # pypng stops quietly when the compressed stream ends early
        raise InputError(f"{path}: corrupt or truncated image ({count} of {height} rows)")
    pixels = pixels.reshape(height, width, planes)
    color_planes = 1 if info["greyscale"] else 3
    alpha = pixels[..., color_planes] if info["alpha"] else None
    if "transparent" in info:
        key = np.array(info["transparent"], np.uint16)
        alpha = np.where((pixels[..., :color_planes] == key).all(axis=2), 0, 65535).astype(np.uint16)
    return pixels[..., :color_planes], alpha, info["greyscale"]


def _decode_tiff16(path: Path):
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        photometric = page.photometric
        if page.sampleformat != tifffile.SAMPLEFORMAT.UINT:
            raise InputError(f"{path}: 16-bit TIFF with {page.sampleformat.name} samples is not supported")
        if photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
            raise InputError(f"{path}: 16-bit TIFF in {photometric.name} colour is not supported (only gray and RGB)")
        try:
            pixels = page.asarray()
        except ValueError as err:
            if "imagecodecs" not in str(err):
                raise
            raise InputError(
                f"{path}: reading a 16-bit {page.compression.name} TIFF needs the imagecodecs package "
                "(pip install imagecodecs)"
            ) from err
        axes = page.axes
        extras = page.extrasamples
    if axes.startswith("S"):  # planar configuration: one plane per sample
        pixels = np.moveaxis(pixels, 0, -1)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    color_planes = 1 if photometric == tifffile.PHOTOMETRIC.MINISBLACK else 3
    alpha = pixels[..., color_planes] if extras else None
    color = pixels[..., :color_planes]
    if extras and extras[0] == tifffile.EXTRASAMPLE.ASSOCALPHA:
        # premultiplied: divide it out, since every writer here stores straight alpha
        a = np.maximum(alpha, 1).astype(np.float32)[..., None]
        color = quantize(color.astype(np.float32) / a, np.uint16)
    return color, alpha, color_planes == 1


def _pillow_pixels(name, im: Image.Image, warnings: list[str]):
    """Decode a PIL image to integer arrays, converting palette, CMYK and other modes to gray, RGB or RGBA."""
    im.load()
    mode = im.mode
    transparent = "transparency" in im.info
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[..., None], None, True
    if mode in ("I", "F"):
        raise InputError(f"{name}: 32-bit {'integer' if mode == 'I' else 'float'} pixels are not supported")
    if mode == "CMYK":
        im = _cmyk_to_rgb(im, warnings)
    elif mode in ("1", "L", "LA", "La"):
        im = im.convert("LA" if mode in ("LA", "La") or transparent else "L")
    elif mode in ("RGBA", "RGBa", "PA") or transparent:
        im = im.convert("RGBA")
    elif mode != "RGB":
        im = im.convert("RGB")
    pixels = np.asarray(im)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    gray = im.mode in ("L", "LA")
    has_alpha = im.mode in ("LA", "RGBA")
    alpha = pixels[..., -1] if has_alpha else None
    return (pixels[..., :-1] if has_alpha else pixels), alpha, gray


def _cmyk_to_rgb(im: Image.Image, warnings: list[str]) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError) as err:
            warnings.append(f"CMYK colour profile unusable ({err}): converted to RGB without it")
    return im.convert("RGB")


def _read_exif(im: Image.Image, warnings: list[str]) -> tuple[int, bytes | None]:
    """(EXIF orientation, EXIF bytes with Orientation reset to 1 or None); unreadable EXIF is dropped with a warning.

    Orientation comes from `getexif()`, as in ImageOps.exif_transpose (which also falls back to XMP's).
    """
    source = im.getexif()
    if not len(source):
        if im.info.get("exif"):  # Pillow hides what it could not parse
            warnings.append("EXIF unreadable: not carried over")
        return 1, None
    orientation = source.get(ORIENTATION_TAG, 1)
    try:
        exif = Image.Exif()  # a copy: the caller's image keeps its own EXIF untouched
        if im.format == "TIFF":
            # a TIFF's EXIF is its own IFD0: keep the descriptive tags, not those describing this file's layout
            for tag in (*DESCRIPTIVE_TAGS, ORIENTATION_TAG):
                if tag in source:
                    exif[tag] = source[tag]
            for ifd in (EXIF_IFD, GPS_IFD):
                if source.get_ifd(ifd):
                    exif[ifd] = source.get_ifd(ifd)
        else:
            exif.load(source.tobytes())
        if not len(exif):
            return orientation, None
        if ORIENTATION_TAG in exif:
            exif[ORIENTATION_TAG] = 1
        return orientation, exif.tobytes()
    except Exception as err:  # EXIF is written by every camera and app in its own way; the pixels are still good
        warnings.append(f"EXIF unreadable ({err}): not carried over")
        return orientation, None


def _finish(color, alpha, gray, orientation, exif, icc, fmt, warnings) -> Photo:
    """Orient integer pixels (H, W, 1|3) and alpha (H, W) of the same dtype; gray is replicated as a view."""
    rgb = _orient(color, orientation)
    if rgb.shape[2] == 1:
        rgb = np.broadcast_to(rgb, (*rgb.shape[:2], 3))
    if alpha is not None:
        alpha = _orient(alpha, orientation)
    return Photo(
        rgb=rgb,
        alpha=alpha,
        bit_depth=16 if color.dtype == np.uint16 else 8,
        grayscale=gray,
        icc_profile=icc,
        exif=exif,
        format=fmt,
        warnings=warnings,
    )


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Make (H, W, ...) pixels upright for an EXIF orientation, as ImageOps.exif_transpose does; a view."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return np.rot90(pixels, 2).swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels  # 1, and out-of-range values some cameras write
