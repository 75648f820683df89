"""Integer pixels of upscaled images: the one rounding rule from float to uint8/uint16 (`quantize`), output sizes,
Lanczos resizing, and the final layouts (gray, alpha, 8-bit PIL images), built band by band so no float copy of a
whole output is ever made. Pure numpy/Pillow; no torch here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from PIL import Image

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, what JPEG and Pillow's convert("L") use
_BAND_PIXELS = 1 << 21  # pixels per band when composing or resizing: small next to a 192 MP output


def quantize(
    values: np.ndarray,
    dtype: np.dtype | type,
    *,
    scale: float | None = None,
    out: np.ndarray | None = None,
    in_place: bool = False,
) -> np.ndarray:
    """Float values (any shape) -> `dtype` (uint8 or uint16): times `scale`, rounded to nearest (ties to even),
    clipped to [0, the dtype's maximum]; NaN becomes 0. Every float-to-integer pixel conversion in realsr uses it.

    `scale` defaults to the dtype's maximum, for values in [0, 1]; values already in integer levels pass 1 or the
    ratio of two maxima. The arithmetic is float32. Writes into `out` (same shape, `dtype`) when given, e.g. a band
    of a preallocated output; `in_place` lets it work in `values` itself (float32) instead of a copy. Works on the
    given values only, so call it per band for large images.
    """
    top = np.iinfo(dtype).max
    levels = values if in_place else np.empty(values.shape, np.float32)
    np.multiply(values, np.float32(top if scale is None else scale), out=levels, dtype=np.float32)
    np.rint(levels, out=levels)
    # fmax/fmin rather than clip: they also map NaN (a diverged fp16 tile) to a valid value
    np.fmax(levels, 0, out=levels)
    np.fmin(levels, top, out=levels)
    if out is None:
        return levels.astype(dtype)
    out[...] = levels
    return out


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos-resize (H, W) or (H, W, C) uint8/uint16 pixels to `size` = (width, height); same dtype and channels.

    For scales below the model's native one: the native output is resized down. Each channel is resampled in
    float32 band by band (no float copy of the whole image, 16 bits kept), then quantized.
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
            quantize(np.asarray(resized), dtype, scale=1, out=out[y0:y1, :, c])  # already in integer levels
    return out


def compose(pixels: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False) -> np.ndarray:
    """The final array of an upscaled image: (H, W) gray, (H, W, 2) gray+alpha, (H, W, 3) RGB or (H, W, 4) RGBA.

    `pixels` (H, W, 3) uint8/uint16; `alpha` (H, W) of the same dtype or None; `grayscale` turns RGB into
    BT.601 luma. Same dtype as `pixels`. Returns `pixels` itself when nothing needs composing.
    """
    if alpha is None and not grayscale:
        return pixels
    out = np.empty(_layout_shape(pixels, alpha, grayscale), pixels.dtype)
    for y0, band in bands(pixels, alpha, grayscale, pixels.dtype):
        out[y0 : y0 + len(band)] = band
    return out


def to_pil(
    pixels: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False, *, flatten: bool = False
) -> Image.Image:
    """An 8-bit PIL image (L, LA, RGB or RGBA) of upscaled pixels, as `compose` lays them out; `flatten`
    composites alpha onto white (L or RGB). 16-bit input is rounded to 8 bits: PIL has no 16-bit colour mode.
    Built band by band."""
    has_alpha = alpha is not None and not flatten
    mode = ("LA" if has_alpha else "L") if grayscale else ("RGBA" if has_alpha else "RGB")
    image = Image.new(mode, (pixels.shape[1], pixels.shape[0]))
    for y0, band in bands(pixels, alpha, grayscale, np.uint8, flatten=flatten):
        image.paste(Image.fromarray(band), (0, y0))
    return image


def _layout_shape(pixels, alpha, grayscale) -> tuple[int, ...]:
    channels = (1 if grayscale else 3) + (alpha is not None)
    return pixels.shape[:2] if channels == 1 else (*pixels.shape[:2], channels)


def bands(
    pixels: np.ndarray, alpha: np.ndarray | None, grayscale: bool, dtype, *, flatten: bool = False
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, band) pairs of the composed image (`compose`'s layout) in `dtype`; `flatten` composites alpha
    onto white."""
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
        if color.dtype != dtype:  # float32, made above for this band: quantized where it lies
            color = quantize(color, dtype, scale=top_out / top_in, in_place=True)
        if a is not None and top_in != top_out:
            a = quantize(a, dtype, scale=top_out / top_in)
        if a is not None:
            color = np.concatenate([color if color.ndim == 3 else color[..., None], a[..., None]], axis=2)
        yield y0, color
