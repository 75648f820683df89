"""Full-reference image metrics for x4 SR, to the usual protocol (BasicSR `calculate_psnr`/`calculate_ssim`, MATLAB
`ssim.m`): PSNR and SSIM on the BT.601 Y channel or on RGB, after a border crop. NIQE (no reference) is implemented
in `realsr_cli.quality.niqe` and re-exported here.

numpy only; no torch here.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from realsr_cli.errors import InputError
from realsr_cli.quality.niqe import niqe  # re-exported, so every score imports from here

__all__ = ["psnr", "ssim", "rgb_to_y", "niqe", "grid_score", "colour_bias"]

# MATLAB rgb2ycbcr, Y row: Y = 16 + (65.481 R + 128.553 G + 24.966 B) on RGB in [0, 1], i.e. Y in [16, 235]
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma (MATLAB `rgb2ycbcr`) of an HxWx3 RGB image on the 0-255 scale: float64 HxW in [16, 235]."""
    img = np.asarray(img, dtype=np.float64)
    return img @ _Y_WEIGHTS + 16.0


def _prepare(a: np.ndarray, b: np.ndarray, border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair, crop `border` pixels from each side and return float64 arrays (HxW for Y, HxWx3 for RGB)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"expected HxWx3 RGB images, got shape {a.shape}")
    if border < 0:
        raise InputError(f"border must be >= 0, got {border}")
    h, w = a.shape[:2]
    if h <= 2 * border or w <= 2 * border:
        raise InputError(f"image of {w}x{h} is too small for a {border}-pixel border crop")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    if border:
        a = a[border:-border, border:-border]
        b = b[border:-border, border:-border]
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, *, border: int = 4, y_channel: bool = True) -> float:
    """PSNR in dB between two HxWx3 RGB images on the 0-255 scale (uint8, or float in [0, 255]).

    The Y channel (BT.601, unrounded) or all RGB channels, after cropping `border` pixels from every side;
    peak 255. Identical images give `inf`. Raises `InputError` on mismatched or non-RGB shapes.
    """
    a, b = _prepare(a, b, border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


@cache
def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """cv2.getGaussianKernel / MATLAB fspecial('gaussian') in 1-D, normalized to sum 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def _filter_valid(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of an HxW float64 image with outer(kernel, kernel): (H-k+1, W-k+1)."""
    k = kernel.size
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ kernel  # (H-k+1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ kernel  # (H-k+1, W-k+1)


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    kernel = _gaussian_1d()
    mu_a = _filter_valid(a, kernel)
    mu_b = _filter_valid(b, kernel)
    mu_a_sq, mu_b_sq, mu_ab = mu_a**2, mu_b**2, mu_a * mu_b
    var_a = _filter_valid(a * a, kernel) - mu_a_sq
    var_b = _filter_valid(b * b, kernel) - mu_b_sq
    cov_ab = _filter_valid(a * b, kernel) - mu_ab
    ssim_map = ((2 * mu_ab + c1) * (2 * cov_ab + c2)) / ((mu_a_sq + mu_b_sq + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(a: np.ndarray, b: np.ndarray, *, border: int = 4, y_channel: bool = True) -> float:
    """SSIM between two HxWx3 RGB images on the 0-255 scale (uint8, or float in [0, 255]).

    MATLAB `ssim.m` / BasicSR conventions: 11x11 Gaussian window (sigma 1.5), C1 = (0.01*255)^2,
    C2 = (0.03*255)^2, 'valid' filtering, mean of the SSIM map; on the Y channel, or the mean over R, G and B.
    `border` pixels are cropped from every side first; what is left must be at least 11x11.
    Raises `InputError` on mismatched, non-RGB or too small images.
    """
    a, b = _prepare(a, b, border, y_channel)
    if min(a.shape[:2]) < 11:
        raise InputError(f"SSIM needs at least 11x11 pixels after the border crop, got {a.shape[1]}x{a.shape[0]}")
    if y_channel:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c]) for c in range(3)]))


def grid_score(img: np.ndarray, period: int = 4) -> float:
    """The sub-pixel grid of an x`period` SR output, as the shared data set's grid-score tool measures it: high-pass
    the 8-bit luma (PIL's "L", minus its 5x5 box mean with mirrored edges), average it over each of the period x
    period output positions and take the standard deviation of those means. Natural images score about 0.1; a
    PixelShuffle checkerboard far more. No reference needed."""
    from PIL import Image

    luma = np.asarray(Image.fromarray(np.ascontiguousarray(img)).convert("L"), dtype=np.float64)
    high = luma - _box5(luma)
    h, w = high.shape[0] // period * period, high.shape[1] // period * period
    phases = high[:h, :w].reshape(h // period, period, w // period, period).mean(axis=(0, 2))
    return float(phases.std())


def _box5(a: np.ndarray) -> np.ndarray:
    """5x5 mean with mirrored edges (numpy's "symmetric" padding), by summed-area table."""
    c = np.cumsum(np.cumsum(np.pad(a, 2, mode="symmetric"), 0), 1)
    c = np.pad(c, ((1, 0), (1, 0)))
    return (c[5:, 5:] - c[:-5, 5:] - c[5:, :-5] + c[:-5, :-5]) / 25.0


def colour_bias(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> tuple[float, float, float]:
    """Mean signed difference sr - hr per channel (R, G, B) in 8-bit levels, after a border crop: a colour cast
    shows here while PSNR-Y barely moves."""
    a, b = _prepare(sr, hr, border, y_channel=False)
    return tuple(float(v) for v in (a - b).reshape(-1, 3).mean(axis=0))
