"""Decoding: image files, PIL images and arrays into a `Photo`, upright, with what a faithful output needs.

Owns the reading policy: EXIF orientation applied (and reset to 1 in the EXIF carried over), ICC profile and
EXIF kept, alpha kept, 16-bit PNG/TIFF kept at 16 bits, grayscale kept, palette/CMYK converted, animated images
reduced to their first frame, decompression bombs refused before decoding. Pure numpy/Pillow/pypng/tifffile; no
torch here.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import Image, ImageCms

from realsr_cli.errors import InputError
from realsr_cli.photo.pixels import quantize

ORIENTATION_TAG = 0x0112
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
# IFD0 tags that describe the photo rather than a TIFF file's layout (strip offsets etc. must not travel):
# description, make, model, software, datetime, artist, copyright
DESCRIPTIVE_TAGS = (270, 271, 272, 305, 306, 315, 33432)
_ANIMATED = "animated or multi-page image: only the first frame is upscaled"


# Pillow decodes 16-bit colour PNGs to their high bytes; its C decoder still unfilters whole 16-bit rows, so a
# second decode with the little-endian rawmode yields the low bytes (~20x faster than pypng's pure-Python unfilter)
_PNG16_LOW_BYTES = {("RGB", "RGB;16B"): "RGB;16L", ("RGBA", "RGBA;16B"): "RGBA;16L"}

# Image.MAX_IMAGE_PIXELS is a Pillow global: one lock so concurrent reads cannot restore each other's value
_PILLOW_LIMIT_LOCK = threading.Lock()


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
