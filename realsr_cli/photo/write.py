"""Encoding: upscaled pixels to PNG, JPEG, WebP, TIFF, AVIF, HEIC or GIF files (animations as animations where
the format holds them), written atomically, with the source's ICC profile and EXIF where the format holds them
(EXIF's pixel size set to the output's, its GPS block dropped on request), and a warning for anything it cannot
keep. Pure numpy/Pillow/tifffile/pillow-heif and realsr's own PNG encoder; no torch here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image

from realsr_cli._files import atomic_write
from realsr_cli.config import DEFAULT_PNG_COMPRESSION, KEPT_QUALITY, EncodeConfig
from realsr_cli.errors import InputError
from realsr_cli.photo.formats import OUTPUT_FORMATS, check_output_size, register_codecs
from realsr_cli.photo.pixels import bands, compose, to_pil
from realsr_cli.photo.png import PngWriter
from realsr_cli.photo.read import DESCRIPTIVE_TAGS, EXIF_IFD, GPS_IFD, ORIENTATION_TAG, Animation

_ICC_TIFF_TAG = 34675
_PIXEL_X_DIMENSION, _PIXEL_Y_DIMENSION = 0xA002, 0xA003  # Exif IFD: the image's width and height
_EIGHT_BIT = ("JPEG", "WEBP", "AVIF", "HEIF", "GIF")  # what Pillow and pillow-heif encode here, 8 bits per channel


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    grayscale: bool = False,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    fmt: str = "PNG",
    quality: int = 90,
    subsampling: str = "4:2:0",
    compress_level: int = DEFAULT_PNG_COMPRESSION,
    strip_gps: bool = False,
    animation: Animation | None = None,
) -> list[str]:
    """Encode upscaled pixels to `path` atomically; returns warnings about what the format could not keep.

    `pixels` (H, W, 3) uint8 or uint16 (the bit depth written: 16 for PNG and TIFF, 8 with a warning for the
    others); `alpha` (H, W) of the same dtype or None (JPEG flattens it onto white, with a warning);
    `grayscale` writes BT.601 luma (WebP and GIF stay RGB). `quality` 1-100 is for JPEG,
    WebP, AVIF and HEIC (WebP 100 = lossless); `subsampling` ("4:4:4", "4:2:2" or "4:2:0") is the chroma
    resolution of JPEG, AVIF and HEIC. `compress_level` 0-9 is for PNG and TIFF deflate (large outputs compress
    slowly: lower it for speed). `exif` is written with its PixelXDimension/PixelYDimension set to the output's
    size, and without its GPS block with `strip_gps`. `animation` (the upscaled frames after `pixels`, see
    `Animation`) is written whole by GIF and WebP; another format writes the first frame, with a warning.
    Missing parent folders are created. The file appears only once complete: an exception or Ctrl-C leaves
    nothing at `path` and no temporary file. Raises InputError when the destination cannot be written,
    ConfigError when `fmt` cannot hold the size.
    """
    path = Path(path)
    if fmt not in OUTPUT_FORMATS or pixels.shape[2:] != (3,) or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_image takes (H, W, 3) uint8/uint16 pixels and one of {list(OUTPUT_FORMATS)}")
    check_output_size(fmt, pixels.shape[1], pixels.shape[0])
    register_codecs()  # HEIF
    warnings: list[str] = []
    if animation is not None and not OUTPUT_FORMATS[fmt].animated:
        warnings.append(animation_notice(fmt))
        animation = None
    if pixels.dtype == np.uint16 and fmt in _EIGHT_BIT:
        warnings.append(f"{fmt} holds 8 bits per channel: the 16-bit result is written with 8")
    flatten = alpha is not None and fmt == "JPEG"
    if flatten:
        warnings.append("JPEG has no transparency: the image is flattened onto white")
    # WebP has no gray mode; Pillow's GIF writer drops the transparency of a gray image (RGB grays keep it)
    grayscale = grayscale and fmt not in ("WEBP", "GIF")
    if fmt == "GIF" and alpha is not None:
        alpha = _opaque_or_clear(alpha)
    icc_profile, exif = _metadata_that_fits(fmt, grayscale, icc_profile, exif, warnings)
    exif = _exif_for_output(exif, pixels.shape[1], pixels.shape[0], strip_gps)
    with _output_file(path) as fh:
        if fmt == "TIFF":
            warnings += _write_tiff(fh, pixels, alpha, grayscale, icc_profile, exif, compress_level)
        elif fmt == "PNG":
            _write_png(fh, pixels, alpha, grayscale, icc_profile, exif, compress_level)
        else:
            image = None
            if fmt == "JPEG" and alpha is None and not grayscale:
                image = _rgbx_image(pixels)  # no copy: JPEG encodes RGBX as RGB
            if image is None:
                image = to_pil(pixels, alpha, grayscale, flatten=flatten)
            options = _pillow_options(fmt, quality, None if grayscale else subsampling, compress_level)
            if animation is not None:
                options.update(_animation_options(fmt, animation))
            if exif:  # pillow-heif refuses an empty EXIF block
                options["exif"] = exif
            image.save(fh, format=fmt, icc_profile=icc_profile, **options)
    return warnings


def encoder_settings(
    encoding: EncodeConfig, fmt: str, jpeg_quality: int | None, jpeg_subsampling: str | None
) -> tuple[int, str]:
    """(quality, subsampling) of an output in `fmt` whose source, when a JPEG, had `jpeg_quality` (estimated) and
    `jpeg_subsampling`: the ones `encoding` asks for; else a JPEG written from a JPEG keeps the source's quality
    (within KEPT_QUALITY: no new blocking, no bytes for nothing) and any output keeps a JPEG source's chroma, so
    the output is coded as the photo was; otherwise the format's default quality and 4:2:0, as cameras write.
    (Quality is unused for lossless formats.)"""
    quality = encoding.quality
    if quality is None:
        low, high = KEPT_QUALITY
        kept = fmt == "JPEG" and jpeg_quality is not None
        quality = min(max(jpeg_quality, low), high) if kept else OUTPUT_FORMATS[fmt].quality or 90
    subsampling = encoding.subsampling
    if subsampling == "keep":
        subsampling = jpeg_subsampling or "4:2:0"
    return quality, subsampling


def animation_notice(fmt: str) -> str:
    """The warning for an animation written in `fmt`, a format without animations: its first frame only."""
    return (
        f"animated image: only the first frame is upscaled ({OUTPUT_FORMATS[fmt].choices[0]} holds no animation; "
        "--format gif or webp keeps every frame)"
    )


def _animation_options(fmt: str, animation: Animation) -> dict[str, object]:
    """Pillow's save options that write `animation`'s frames after the first, and play them as the source did."""
    if fmt == "GIF":
        frames = [to_pil(rgb, None if alpha is None else _opaque_or_clear(alpha)) for rgb, alpha in animation.frames]
    else:
        frames = [to_pil(rgb, alpha) for rgb, alpha in animation.frames]
    options: dict[str, object] = {"save_all": True, "append_images": frames, "duration": animation.durations}
    if fmt == "GIF":
        # every frame is whole (composed when read), so the source's disposals replay it exactly; a WebP source's
        # frames are restored to the background, so transparent areas never show the previous frame
        options["disposal"] = animation.disposals or 2
        if animation.loop is not None:  # no loop count: a GIF plays once
            options["loop"] = animation.loop
    else:
        options["loop"] = 1 if animation.loop is None else animation.loop  # WebP: 0 is forever, 1 plays once
    return options


def _opaque_or_clear(alpha: np.ndarray) -> np.ndarray:
    """Alpha as GIF holds it, each pixel opaque or clear (at half opacity). Pillow's palette would otherwise merge
    clear pixels with the half-clear edges that resizing makes, and lose the transparent colour."""
    top = np.iinfo(alpha.dtype).max
    return np.where(alpha > top // 2, top, 0).astype(alpha.dtype)


def _exif_for_output(exif: bytes | None, width: int, height: int, strip_gps: bool) -> bytes | None:
    """The EXIF block to write: PixelXDimension/PixelYDimension set to the output's size where it has an Exif
    block (viewers and catalogues read the size from them), and without its GPS block when `strip_gps`."""
    if exif is None:
        return None
    data = Image.Exif()
    data.load(exif)
    if strip_gps:
        data.get_ifd(GPS_IFD)  # loaded, so that deleting the pointer also drops the block
        data.pop(GPS_IFD, None)
    if EXIF_IFD in data:  # a camera's: its size tags say the source's size (an EXIF without them has none to fix)
        sizes = data.get_ifd(EXIF_IFD)
        sizes[_PIXEL_X_DIMENSION], sizes[_PIXEL_Y_DIMENSION] = width, height
    return data.tobytes()


def _metadata_that_fits(
    fmt: str, grayscale: bool, icc_profile: bytes | None, exif: bytes | None, warnings: list[str]
) -> tuple[bytes | None, bytes | None]:
    """The ICC profile and EXIF an output in `fmt` can carry; each one dropped adds a warning."""
    if icc_profile is not None and icc_profile[16:20] != (b"GRAY" if grayscale else b"RGB "):
        space = icc_profile[16:20].decode("latin-1").strip()
        output = "gray" if grayscale else "RGB"
        warnings.append(f"the {space} colour profile does not fit a {output} output: not embedded")
        icc_profile = None
    if exif is not None and fmt == "JPEG" and len(exif) > 65533:
        warnings.append("EXIF block too large for JPEG (over 64 KB): not embedded")
        exif = None
    if fmt == "GIF" and (exif is not None or icc_profile is not None):
        warnings.append("GIF holds no EXIF or colour profile: not embedded")
        icc_profile, exif = None, None
    return icc_profile, exif


def _pillow_options(fmt: str, quality: int, subsampling: str | None, compress_level: int) -> dict[str, object]:
    """Pillow's (and pillow-heif's) save options for `write_image`'s quality, chroma subsampling (None: a gray
    image, which has no chroma) and compress_level."""
    chroma = {"subsampling": subsampling} if subsampling else {}
    if fmt == "JPEG":
        return {"quality": quality} | chroma
    if fmt == "AVIF":
        # libavif's fastest speed: on a 16 MP upscale speed 10 takes 4.8 s where 8 takes 15.7 s and Pillow's
        # default 6 takes 51 s (the inference takes 5.5 s), for 10% more bytes than speed 8
        return {"quality": quality, "speed": 10} | chroma
    if fmt == "HEIF":
        # x265's ultrafast preset: 11 s on a 16 MP upscale where libheif's default takes 39 s, 20% more bytes
        return {"quality": quality, "enc_params": {"preset": "ultrafast"}} | chroma
    if fmt == "GIF":
        return {}
    if fmt == "WEBP" and quality >= 100:
        # when lossless, Pillow reads `quality` as compression effort: leave that at its default;
        # exact: keep the colour under fully transparent pixels, which libwebp zeroes otherwise
        return {"lossless": True, "exact": True}
    if fmt == "WEBP":
        return {"quality": quality}
    return {"compress_level": compress_level}


@contextmanager
def _output_file(path: Path) -> Iterator[BinaryIO]:
    """The open file `write_image` encodes into, made atomic and write-checked by `atomic_write` (missing folders
    created); every failure becomes a one-line InputError naming the folder or file."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{folder}: cannot create the output folder ({err.strerror or err})") from err
    try:
        with atomic_write(path) as fh:
            yield fh
    except OSError as err:  # an encoder's own error (atomic_write reports failed writes itself)
        raise InputError(f"{path}: cannot write ({err.strerror or err})") from err


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


def _write_png(fh, pixels, alpha, grayscale, icc_profile, exif, compress_level) -> None:
    """PNG of any layout, 8 or 16 bits, through realsr's parallel band encoder (`realsr_cli.photo.png`)."""
    height, width = pixels.shape[:2]
    channels = (1 if grayscale else 3) + (alpha is not None)
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    writer = PngWriter(fh, width, height, channels, bit_depth, level=compress_level, icc_profile=icc_profile, exif=exif)
    try:
        for _, band in bands(pixels, alpha, grayscale, pixels.dtype):
            writer.write(band)
    except BaseException:
        writer.abort()
        raise
    writer.close()


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
        for tag in DESCRIPTIVE_TAGS:
            value = source.get(tag)
            if isinstance(value, str) and value.isascii():
                tags.append((tag, "s", 0, value, True))
        if ORIENTATION_TAG in source:
            tags.append((ORIENTATION_TAG, "H", 1, 1, True))
        if source.get_ifd(EXIF_IFD) or source.get_ifd(GPS_IFD):
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
