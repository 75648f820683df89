"""Photo I/O for the upscaler: decode files, PIL images and arrays into a `Photo`, and encode upscaled pixels back.

Owns the photo policy: EXIF orientation applied on read and reset on write, ICC profile and EXIF carried over,
alpha kept, 16-bit PNG/TIFF kept at 16 bits, grayscale kept, palette/CMYK converted, animated images reduced to
their first frame, decompression bombs refused before decoding, atomic writes. Large outputs are handled band by
band so no float copy of a whole output is ever made. Pure numpy/Pillow/pypng/tifffile; no torch here.
"""

from __future__ import annotations

import io
import math
import os
import secrets
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import Image, ImageCms

from realsr_cli.errors import ConfigError, InputError

EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "TIFF": "tif"}
"""Output formats realsr writes, by Pillow format name, with the extension `output_path` gives each."""

_REQUESTED_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tif": "TIFF", "tiff": "TIFF"}
_MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}  # libjpeg's and libwebp's limits; PNG and (Big)TIFF go far beyond
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, what JPEG and Pillow's convert("L") use
_BAND_PIXELS = 1 << 21  # pixels per band when composing or resizing: small next to a 192 MP output

_ORIENTATION = 0x0112
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
# IFD0 tags that describe the photo rather than a TIFF file's layout (strip offsets etc. must not travel):
# description, make, model, software, datetime, artist, copyright
_DESCRIPTIVE_TAGS = (270, 271, 272, 305, 306, 315, 33432)
_ICC_TIFF_TAG = 34675
_ANIMATED = "animated or multi-page image: only the first frame is upscaled"

# Pillow decodes 16-bit colour PNGs to their high bytes; its C decoder still unfilters whole 16-bit rows, so a
# second decode with the little-endian rawmode yields the low bytes (~20x faster than pypng's pure-Python unfilter)
_PNG16_LOW_BYTES = {("RGB", "RGB;16B"): "RGB;16L", ("RGBA", "RGBA;16B"): "RGBA;16L"}

# Image.MAX_IMAGE_PIXELS is a Pillow global: one lock so concurrent reads cannot restore each other's value
_PILLOW_LIMIT_LOCK = threading.Lock()


IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".tga", ".ppm", ".pgm", ".pnm"}
)
"""File extensions a folder or glob input picks up (an explicitly named file is read whatever its name)."""

# decoded pixels at most for data-set images (training, evaluation): refuses only absurd files (decompression bombs)
DATASET_MAX_PIXELS = 64_000_000


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


# ---- reading


def read_image(path: str | os.PathLike, *, max_pixels: int) -> Photo:
    """Decode an image file into a `Photo`.

    The pixel count is checked against `max_pixels` from the header, before any pixel is decoded.
    Raises InputError (one line naming the file) for a missing, empty, unreadable, unidentifiable, corrupt,
    truncated or too large file, or a pixel format realsr cannot represent.
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
    try:
        with _pillow_limit_off():
            im = Image.open(path)  # reads the header only
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not an image realsr can read (unknown or unsupported format)") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from err
    except Exception as err:  # a plugin choking on a malformed header
        raise InputError(f"{path}: corrupt image header ({err})") from err
    with im:
        _check_pixels(path, im.size, max_pixels)
        try:
            with _pillow_limit_off():  # GIF and APNG seek to find out, and Pillow checks its limit on each seek
                # multi-picture JPEGs (MPO) carry a preview or depth map as frame 2: photos, not animations
                animated = im.format != "MPO" and getattr(im, "is_animated", False)
            warnings = [_ANIMATED] if animated else []
            color, alpha, gray = _decode(path, im, warnings)
            # after decoding: Pillow's TIFF load applies the orientation itself and drops the tag
            orientation, exif = _read_exif(im, warnings)
        except (InputError, MemoryError):
            raise
        except Exception as err:  # decoders of untrusted bytes raise anything from OSError to struct.error
            raise InputError(f"{path}: corrupt or truncated image ({err})") from err
        icc = None if im.mode == "CMYK" else im.info.get("icc_profile") or None
    return _finish(color, alpha, gray, orientation, exif, icc, _source_format(im), warnings)


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
        array = quantize(array, 16)
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


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise InputError(
            f"{path}: {width}x{height} is {width * height / 1e6:.1f} megapixels, "
            f"above the {max_pixels / 1e6:.1f} MP limit (--max-pixels)"
        )


def _decode(path: Path, im: Image.Image, warnings: list[str]) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(color (H, W, 1|3) uint8/uint16, alpha (H, W) of the same dtype or None, grayscale), not yet oriented."""
    if im.format == "PNG" and _png_bit_depth(path) == 16:
        low_rawmode = _PNG16_LOW_BYTES.get((im.mode, im.tile[0][3])) if len(im.tile) == 1 else None
        if low_rawmode and "transparency" not in im.info:
            return _decode_png16_pillow(path, im, low_rawmode)
        return _decode_png16_pypng(path)
    # Pillow keeps 16-bit gray TIFFs (I;16, any compression) but cuts 16-bit colour to 8 bits
    if im.format == "TIFF" and not im.mode.startswith("I;16") and 16 in np.atleast_1d(im.tag_v2.get(258, 8)):
        return _decode_tiff16(path)
    return _pillow_pixels(path, im, warnings)


def _png_bit_depth(path: Path) -> int:
    # signature (8) + chunk length (4) + b"IHDR" (4) + width (4) + height (4), then the bit depth byte
    with open(path, "rb") as fh:
        header = fh.read(25)
    return header[24] if len(header) == 25 else 8


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
    reader = png.Reader(filename=str(path))
    width, height, rows, info = reader.read()
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
        color = quantize(color.astype(np.float32) / a, 16)
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
    orientation = source.get(_ORIENTATION, 1)
    try:
        exif = Image.Exif()  # a copy: the caller's image keeps its own EXIF untouched
        if im.format == "TIFF":
            # a TIFF's EXIF is its own IFD0: keep the descriptive tags, not those describing this file's layout
            for tag in (*_DESCRIPTIVE_TAGS, _ORIENTATION):
                if tag in source:
                    exif[tag] = source[tag]
            for ifd in (_EXIF_IFD, _GPS_IFD):
                if source.get_ifd(ifd):
                    exif[ifd] = source.get_ifd(ifd)
        else:
            exif.load(source.tobytes())
        if not len(exif):
            return orientation, None
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1
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


# ---- pixels: quantise, resize, compose


def quantize(values: np.ndarray, bit_depth: int, out: np.ndarray | None = None) -> np.ndarray:
    """Float values in [0, 1] (any shape) -> uint8 (bit_depth 8) or uint16 (16): scaled, rounded, clipped.

    NaN becomes 0. Writes into `out` (same shape, the matching dtype) when given, e.g. a band of a preallocated
    output. Works in float32 on the given values only, so call it per band for large images.
    """
    top = (1 << bit_depth) - 1
    scaled = np.multiply(values, top, dtype=np.float32)
    np.rint(scaled, out=scaled)
    # fmax/fmin rather than clip: they also map NaN (a diverged fp16 tile) to a valid value
    np.fmax(scaled, 0, out=scaled)
    np.fmin(scaled, top, out=scaled)
    if out is None:
        return scaled.astype(np.uint16 if bit_depth == 16 else np.uint8)
    out[...] = scaled
    return out


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) of an image upscaled by `scale`, rounded to whole pixels, at least 1x1."""
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos-resize (H, W) or (H, W, C) uint8/uint16 pixels to `size` = (width, height); same dtype and channels.

    For scales below the model's native one: the native output is resized down. Each channel is resampled in
    float32 band by band (no float copy of the whole image, 16 bits kept), then rounded and clipped.
    """
    planes = pixels[..., None] if pixels.ndim == 2 else pixels
    out = _resize(planes, size, pixels.dtype)
    return out[..., 0] if pixels.ndim == 2 else out


def _resize(planes: np.ndarray, size: tuple[int, int], dtype) -> np.ndarray:
    src_h, src_w, channels = planes.shape
    width, height = size
    out = np.empty((height, width, channels), dtype)
    step = src_h / height
    # Lanczos-3 reaches 3 source pixels, times the step when shrinking; +2 for the rounding of the box edges
    margin = math.ceil(3 * max(step, 1.0)) + 2
    rows = max(1, _BAND_PIXELS // max(width, src_w))
    top = float(np.iinfo(dtype).max)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        first, last = y0 * step, min(y1 * step, src_h)  # float rounding must not push the box past the image
        s0, s1 = max(0, math.floor(first) - margin), min(src_h, math.ceil(last) + margin)
        for c in range(channels):
            band = planes[s0:s1, :, c].astype(np.float32)
            # a box inside the band gives the same weights as the whole image: the band holds the filter's reach
            resized = Image.fromarray(band).resize(
                (width, y1 - y0), Image.Resampling.LANCZOS, box=(0, first - s0, src_w, last - s0)
            )
            values = np.asarray(resized)
            out[y0:y1, :, c] = np.fmin(np.fmax(np.rint(values), 0), top)
    return out


def compose(pixels: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False) -> np.ndarray:
    """The final array of an upscaled image: (H, W) gray, (H, W, 2) gray+alpha, (H, W, 3) RGB or (H, W, 4) RGBA.

    `pixels` (H, W, 3) uint8/uint16; `alpha` (H, W) of the same dtype or None; `grayscale` turns RGB into
    BT.601 luma. Same dtype as `pixels`. Returns `pixels` itself when nothing needs composing.
    """
    if alpha is None and not grayscale:
        return pixels
    out = np.empty(_layout_shape(pixels, alpha, grayscale), pixels.dtype)
    for y0, band in _bands(pixels, alpha, grayscale, pixels.dtype, flatten=False):
        out[y0 : y0 + len(band)] = band
    return out


def new_canvas(height: int, width: int, dtype, fmt: str | None = None) -> np.ndarray:
    """An uninitialised (H, W, 3) array for upscaled pixels, laid out for the encoder of `fmt` when that saves memory.

    For 8-bit JPEG it is the RGB view of an (H, W, 4) RGBX buffer: Pillow keeps RGB images at 4 bytes per pixel,
    so an (H, W, 3) array would be copied whole before encoding (768 MB more for a 192-megapixel output), while
    RGBX memory is encoded where it lies (`write_image` recognises the view). Other formats get a plain array.
    """
    if fmt == "JPEG" and np.dtype(dtype) == np.uint8:
        return np.empty((height, width, 4), np.uint8)[..., :3]
    return np.empty((height, width, 3), dtype)


def _rgbx_image(pixels: np.ndarray) -> Image.Image | None:
    """A Pillow RGBX image sharing the memory of a `new_canvas` RGBX view, or None when `pixels` is not one."""
    base = pixels.base
    if (
        pixels.dtype != np.uint8
        or not isinstance(base, np.ndarray)
        or base.shape != (*pixels.shape[:2], 4)
        or not base.flags.c_contiguous
        or pixels.__array_interface__["data"][0] != base.__array_interface__["data"][0]
    ):
        return None
    height, width = pixels.shape[:2]
    return Image.frombuffer("RGBX", (width, height), base, "raw", "RGBX", 0, 1)


def to_pil(pixels: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False) -> Image.Image:
    """An 8-bit PIL image (L, LA, RGB or RGBA) of upscaled pixels, as `compose` lays them out.

    16-bit input is rounded to 8 bits: PIL has no 16-bit colour mode. Built band by band.
    """
    return _to_pil(pixels, alpha, grayscale, flatten=False)


def _to_pil(pixels, alpha, grayscale, flatten) -> Image.Image:
    has_alpha = alpha is not None and not flatten
    mode = ("LA" if has_alpha else "L") if grayscale else ("RGBA" if has_alpha else "RGB")
    image = Image.new(mode, (pixels.shape[1], pixels.shape[0]))
    for y0, band in _bands(pixels, alpha, grayscale, np.uint8, flatten):
        image.paste(Image.fromarray(band), (0, y0))
    return image


def _layout_shape(pixels, alpha, grayscale) -> tuple[int, ...]:
    channels = (1 if grayscale else 3) + (alpha is not None)
    return pixels.shape[:2] if channels == 1 else (*pixels.shape[:2], channels)


def _bands(pixels, alpha, grayscale, dtype, flatten) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, band) pairs of the composed image in `dtype`; `flatten` composites alpha onto white."""
    top_in = np.iinfo(pixels.dtype).max
    top_out = np.iinfo(dtype).max
    rows = max(1, _BAND_PIXELS // pixels.shape[1])
    for y0 in range(0, pixels.shape[0], rows):
        rgb = pixels[y0 : y0 + rows]
        a = None if alpha is None else alpha[y0 : y0 + rows]
        if flatten and a is not None:
            weight = np.multiply(a, np.float32(1 / top_in), dtype=np.float32)[..., None]
            color = rgb * weight + np.float32(top_in) * (1 - weight)
            a = None
        elif grayscale or top_in != top_out:
            color = rgb.astype(np.float32)
        else:
            color = rgb
        if grayscale:
            color = color @ _LUMA
        if color.dtype != dtype:
            color = np.multiply(color, np.float32(top_out / top_in), dtype=np.float32)
            color = np.fmin(np.fmax(np.rint(color), 0), top_out).astype(dtype)
        if a is not None and top_in != top_out:
            # exact round(v * 255 / 65535), in integers
            a = ((a.astype(np.uint32) + 128) // 257).astype(dtype)
        if a is not None:
            color = np.concatenate([color if color.ndim == 3 else color[..., None], a[..., None]], axis=2)
        yield y0, color


# ---- output naming and formats


def output_format_for(source_format: str, requested: str) -> str:
    """The output format ("PNG", "JPEG", "WEBP" or "TIFF") for a `--format` value (png, jpg, webp, tiff or same).

    "same" keeps PNG, JPEG, WebP and TIFF sources in their format; anything else (GIF, BMP, ...) becomes PNG.
    Raises ConfigError for an unknown requested format.
    """
    requested = requested.lower()
    if requested == "same":
        return source_format if source_format in EXTENSIONS else "PNG"
    if requested not in _REQUESTED_FORMATS:
        raise ConfigError(f"unknown output format {requested!r} (expected png, jpg, webp, tiff or same)")
    return _REQUESTED_FORMATS[requested]


def check_output_size(fmt: str, width: int, height: int) -> None:
    """Raise ConfigError when `fmt` cannot hold a width x height image (WebP: 16383 per side, JPEG: 65500).

    Call it before upscaling, so the user learns it before the work is done rather than after.
    """
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(width, height) > limit:
        raise ConfigError(
            f"{fmt} cannot hold a {width}x{height} image (at most {limit} pixels per side); "
            "use --format png or tiff, or a smaller --scale"
        )


def output_path(
    src: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    scale: float,
    fmt: str,
    input_root: str | os.PathLike | None = None,
) -> Path:
    """Where the upscaled `src` goes: `<stem>_x<scale>.<ext>` (scale as 4 or 2.5; ext png, jpg, webp or tif).

    Beside `src` when `out_dir` is None, else in `out_dir`; when `src` was found under the folder `input_root`,
    its sub-folder relative to `input_root` is mirrored under `out_dir`.
    """
    src = Path(src)
    name = f"{src.stem}_x{scale:g}.{EXTENSIONS[fmt]}"
    if out_dir is None:
        return src.with_name(name)
    folder = Path(out_dir)
    if input_root is not None:
        folder = folder / src.parent.relative_to(input_root)
    return folder / name


# ---- writing


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    grayscale: bool = False,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    fmt: str = "PNG",
    quality: int = 95,
    compress_level: int = 6,
) -> list[str]:
    """Encode upscaled pixels to `path` atomically; returns warnings about what the format could not keep.

    `pixels` (H, W, 3) uint8 or uint16 (the bit depth written: 16 for PNG and TIFF, 8 with a warning for
    JPEG and WebP); `alpha` (H, W) of the same dtype or None (JPEG flattens it onto white, with a warning);
    `grayscale` writes BT.601 luma (WebP, which has no gray mode, stays RGB). `quality` 1-100 is for JPEG and
    WebP (WebP 100 = lossless; JPEG >= 90 keeps full-resolution colour, 4:4:4). `compress_level` 0-9 is for PNG
    and TIFF deflate (large outputs compress slowly: lower it for speed). Missing parent folders are created.
    The file appears only once complete: an exception or Ctrl-C leaves nothing at `path` and no temporary file.
    Raises InputError when the destination cannot be written, ConfigError when `fmt` cannot hold the size.
    """
    path = Path(path)
    if fmt not in EXTENSIONS or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_image takes (H, W, 3) uint8/uint16 pixels and one of {list(EXTENSIONS)}")
    check_output_size(fmt, pixels.shape[1], pixels.shape[0])
    warnings: list[str] = []
    if pixels.dtype == np.uint16 and fmt in ("JPEG", "WEBP"):
        warnings.append(f"{fmt} holds 8 bits per channel: the 16-bit result is written with 8")
    flatten = alpha is not None and fmt == "JPEG"
    if flatten:
        warnings.append("JPEG has no transparency: the image is flattened onto white")
    grayscale = grayscale and fmt != "WEBP"
    if icc_profile is not None and icc_profile[16:20] != (b"GRAY" if grayscale else b"RGB "):
        space = icc_profile[16:20].decode("latin-1").strip()
        output = "gray" if grayscale else "RGB"
        warnings.append(f"the {space} colour profile does not fit a {output} output: not embedded")
        icc_profile = None
    if exif is not None and fmt == "JPEG" and len(exif) > 65533:
        warnings.append("EXIF block too large for JPEG (over 64 KB): not embedded")
        exif = None
    with _atomic_file(path) as fh:
        if fmt == "TIFF":
            warnings += _write_tiff(fh, pixels, alpha, grayscale, icc_profile, exif, compress_level)
        elif fmt == "PNG" and pixels.dtype == np.uint16:
            _write_png16(fh, pixels, alpha, grayscale, icc_profile, exif, compress_level)
        else:
            image = None
            if fmt == "JPEG" and alpha is None and not grayscale:
                image = _rgbx_image(pixels)  # no copy: JPEG encodes RGBX as RGB
            if image is None:
                image = _to_pil(pixels, alpha, grayscale, flatten)
            options = {"icc_profile": icc_profile, "exif": exif or b""}
            if fmt == "JPEG":
                options.update(quality=quality, subsampling=0 if quality >= 90 else 2)
            elif fmt == "WEBP":
                if quality >= 100:
                    # when lossless, Pillow reads `quality` as compression effort: leave that at its default;
                    # exact: keep the colour under fully transparent pixels, which libwebp zeroes otherwise
                    options.update(lossless=True, exact=True)
                else:
                    options.update(quality=quality)
            elif fmt == "PNG":
                options.update(compress_level=compress_level)
            image.save(fh, format=fmt, **options)
    return warnings


@contextmanager
def _atomic_file(path: Path) -> Iterator[io.BufferedWriter]:
    """A hidden temporary file beside `path`, renamed onto it on success and removed on any exception."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{folder}: cannot create the output folder ({err.strerror or err})") from err
    temp = folder / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        # "xb", not mkstemp: the file gets the user's umask permissions instead of mkstemp's 0600
        fh = open(temp, "xb")
    except OSError as err:
        raise InputError(f"{folder}: cannot write to the output folder ({err.strerror or err})") from err
    try:
        with fh:
            yield fh
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write ({err.strerror or err})") from err
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class _PngWriter(png.Writer):
    """pypng's writer plus iCCP and eXIf chunks, which it has no option for (both must precede IDAT)."""

    def __init__(self, *args, extra_chunks: list[tuple[bytes, bytes]], **kwargs):
        super().__init__(*args, **kwargs)
        self._extra_chunks = extra_chunks

    def write_preamble(self, outfile) -> None:
        super().write_preamble(outfile)
        for tag, data in self._extra_chunks:
            png.write_chunk(outfile, tag, data)


def _write_png16(fh, pixels, alpha, grayscale, icc_profile, exif, compress_level) -> None:
    chunks = []
    if icc_profile:
        chunks.append((b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    if exif:
        chunks.append((b"eXIf", exif.removeprefix(b"Exif\0\0")))
    height, width = pixels.shape[:2]
    writer = _PngWriter(
        width, height, greyscale=grayscale, alpha=alpha is not None, bitdepth=16,
        compression=compress_level, extra_chunks=chunks,
    )

    def rows() -> Iterator[bytes]:
        for _, band in _bands(pixels, alpha, grayscale, np.uint16, flatten=False):
            band = band.astype(">u2")  # PNG samples are big-endian
            for row in band:
                yield row.tobytes()

    # write_packed takes rows already packed to bytes: no per-sample Python work in pypng
    writer.write_packed(fh, rows())


def _write_tiff(fh, pixels, alpha, grayscale, icc_profile, exif, compress_level) -> list[str]:
    """TIFF with deflate and a horizontal predictor via tifffile, 8 or 16 bits; ICC as tag 34675.

    EXIF travels as IFD0 tags: tifffile cannot write the Exif and GPS sub-IFDs (nor can Pillow's compressed
    TIFF writer), so exposure and GPS details are dropped with a warning.
    """
    warnings = []
    tags = []
    if icc_profile:
        tags.append((_ICC_TIFF_TAG, 7, len(icc_profile), icc_profile, True))  # 7 = UNDEFINED (raw bytes)
    if exif:
        source = Image.Exif()
        source.load(exif)
        for tag in _DESCRIPTIVE_TAGS:
            value = source.get(tag)
            if isinstance(value, str) and value.isascii():
                tags.append((tag, "s", 0, value, True))
        if _ORIENTATION in source:
            tags.append((_ORIENTATION, "H", 1, 1, True))
        if source.get_ifd(_EXIF_IFD) or source.get_ifd(_GPS_IFD):
            warnings.append(
                "TIFF output keeps the main EXIF tags (camera, date, author) but not exposure or GPS details"
            )
    data = compose(pixels, alpha, grayscale)
    tifffile.imwrite(
        fh,
        data,
        photometric="minisblack" if grayscale else "rgb",
        extrasamples=["unassalpha"] if alpha is not None else None,
        compression="adobe_deflate",
        compressionargs={"level": compress_level},
        predictor=True,
        extratags=tags,
        metadata=None,
        software=False,
    )
    return warnings



def list_images(folder: str | os.PathLike, what: str) -> dict[str, Path]:
    """Image files under `folder` (subfolders included, hidden files skipped), keyed by their path relative to it
    (POSIX form, so pairs match across folders) and sorted by that key.

    Raises InputError naming the folder when it is missing or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} does not exist or is not a folder")
    found = {
        p.relative_to(folder).as_posix(): p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    }
    if not found:
        raise InputError(
            f"{what} folder {folder} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, "
            "subfolders included)"
        )
    return dict(sorted(found.items()))


def read_rgb8(path: str | os.PathLike) -> np.ndarray:
    """Decode a data-set image to (H, W, 3) uint8 RGB with the reading policy above (EXIF orientation applied,
    grayscale replicated, 16 bits rounded to 8: the networks see 8-bit photos). Transparency is composited onto
    white, as a JPEG output flattens it. Raises InputError naming the file when it cannot be read.
    """
    photo = read_image(path, max_pixels=DATASET_MAX_PIXELS)
    if photo.rgb.dtype == np.uint8 and photo.alpha is None:
        return np.array(photo.rgb)  # an own, writable copy: the decoded pixels may be a read-only view
    scale = np.float32(1 / np.iinfo(photo.rgb.dtype).max)
    rgb = np.multiply(photo.rgb, scale, dtype=np.float32)
    if photo.alpha is not None:
        alpha = np.multiply(photo.alpha, scale, dtype=np.float32)[..., None]
        rgb = rgb * alpha + (1.0 - alpha)
    return quantize(rgb, 8)
