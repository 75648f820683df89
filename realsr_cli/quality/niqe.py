"""NIQE, the no-reference naturalness score SR papers report (Mittal et al. 2013; lower is more natural), to the
protocol of pyiqa's `niqe`, with the LIVE pristine model bundled in
`realsr_cli/assets/`. Also MATLAB's antialiased bicubic `imresize`, which NIQE's second scale needs.

numpy only; no torch, no scipy here.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources

import numpy as np

from realsr_cli.errors import InputError

__all__ = ["niqe", "niqe_luma", "imresize", "BLOCK_SIZE"]

BLOCK_SIZE = 96  # NIQE's patch edge at full scale; the half scale uses 48

# the shape search grid of estimate_aggd_param, 0.2:0.001:10 as in MATLAB, BasicSR and pyiqa (9801 values)
_GAM = np.arange(0.2, 10.001, 0.001)


@cache
def _gamma_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per grid shape g: r(g) = G(2/g)^2 / (G(1/g) G(3/g)), sqrt(G(1/g) / G(3/g)) and G(2/g) / G(1/g)."""
    lg1 = np.array([math.lgamma(1 / g) for g in _GAM])
    lg2 = np.array([math.lgamma(2 / g) for g in _GAM])
    lg3 = np.array([math.lgamma(3 / g) for g in _GAM])
    r_gam = np.exp(2 * lg2 - lg1 - lg3)
    return r_gam, np.sqrt(np.exp(lg1 - lg3)), np.exp(lg2 - lg1)


@cache
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """The LIVE pristine natural-scene model: mean (36,) and covariance (36, 36), float64 (see assets/NOTICE.md)."""
    ref = resources.files("realsr_cli") / "assets" / "niqe_pris_params.npz"
    with resources.as_file(ref) as path, np.load(path) as params:
        mu = params["mu_pris_param"].reshape(-1).astype(np.float64)
        cov = params["cov_pris_param"].astype(np.float64)
    mu.flags.writeable = cov.flags.writeable = False  # cached and shared
    return mu, cov


def niqe_luma(img: np.ndarray) -> np.ndarray:
    """The luma NIQE scores: Y = 0.299 R + 0.587 G + 0.114 B on the 0-255 scale, rounded to integers (pyiqa's
    'yiq' Y channel); a 2-D image is taken as luma already and only rounded. Returns float64 HxW."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        # pyiqa works on float32 RGB in [0, 1]: the same float32 steps round the many exact .5 ties as it does
        # (up to its matmul's summation order)
        rgb = img.astype(np.float32) / np.float32(255)
        y = rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)
        return np.round(y * np.float32(255)).astype(np.float64)
    if img.ndim == 2:
        return np.round(img.astype(np.float64))
    raise InputError(f"NIQE expects an HxWx3 RGB or HxW gray image, got shape {img.shape}")


def _cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (a = -0.5)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def _resize_weights(in_length: int, out_length: int, scale: float, antialiasing: bool) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB imresize's bicubic along one axis: (out_length, taps) source indices (0-based, symmetric boundary)
    and their weights."""
    kernel_width = 4.0
    shrink = scale < 1 and antialiasing
    if shrink:
        kernel_width /= scale  # widen the kernel to low-pass before decimating
    x = np.arange(1, out_length + 1, dtype=np.float64)  # 1-based output coordinates, as MATLAB
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # (out, taps), 1-based, may fall outside the image
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if shrink else _cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    # out-of-range taps mirror back in, edge pixel repeated (MATLAB's aux = [1:n, n:-1:1])
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    return mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)], weights


def imresize(img: np.ndarray, scale: float, *, antialiasing: bool = True) -> np.ndarray:
    """MATLAB `imresize(img, scale, 'bicubic')` of a float HxW image (antialiased when shrinking, as MATLAB's
    default); output is ceil(H*scale) x ceil(W*scale), float64, not clipped."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2:
        raise InputError(f"imresize expects an HxW image, got shape {img.shape}")
    h, w = img.shape
    # rows first, then columns, as MATLAB does for equal scales; gathers, not matrix products, so no BLAS threads
    idx, wts = _resize_weights(h, math.ceil(h * scale), scale, antialiasing)
    img = np.einsum("otw,ot->ow", img[idx], wts)  # (h', w)
    idx, wts = _resize_weights(w, math.ceil(w * scale), scale, antialiasing)
    return np.einsum("hot,ot->ho", img[:, idx], wts)  # (h', w')


@cache
def _mscn_window() -> tuple[np.ndarray, float]:
    """MATLAB fspecial('gaussian', 7, 7/6) as its 1-D factor (float64, sum 1) and the gain of pyiqa's 2-D window.

    pyiqa normalizes the 7x7 window in float64 and then stores it in float32, so its weights sum to 1 + 1.1e-8.
    That gain decides the sign of the MSCN coefficients in flat areas (a blurred constant comes out slightly above
    it), which moves the scores of smooth images by ~0.002; applying the same gain reproduces the published
    scores. The rest of the float32 rounding (~1e-9 per weight) is far below anything that matters.
    """
    x = np.arange(7, dtype=np.float64) - 3
    g = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    window = np.outer(g, g)
    gain = float((window / window.sum()).astype(np.float32).astype(np.float64).sum())
    return g / g.sum(), gain


def _blur(img: np.ndarray) -> np.ndarray:
    """7x7 Gaussian filter of an HxW float64 image, same size, replicate ('nearest') padding."""
    g, gain = _mscn_window()
    h, w = img.shape
    padded = np.pad(img, 3, mode="edge")  # (H+6, W+6)
    rows = sum(g[i] * padded[i : i + h] for i in range(7))  # (H, W+6)
    return sum(g[j] * rows[:, j : j + w] for j in range(7)) * gain  # (H, W)


def _mscn(img: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalized coefficients: (I - mu) / (sigma + 1)."""
    mu = _blur(img)
    sigma = np.sqrt(np.abs(_blur(img * img) - mu * mu))
    return (img - mu) / (sigma + 1)


def _aggd(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalized Gaussian fit (moment matching on the 0.2:0.001:10 grid) of each (N, h, w) block:
    shape alpha, left and right scales and G(2/alpha) / G(1/alpha), each (N,). A block without negative or
    positive values has no fit: NaN scales and alpha 0.2."""
    flat = blocks.reshape(blocks.shape[0], -1)
    sq = flat * flat
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((sq * (flat < 0)).sum(1) / (flat < 0).sum(1))
        right_std = np.sqrt((sq * (flat > 0)).sum(1) / (flat > 0).sum(1))
        gammahat = left_std / right_std
        rhat = np.abs(flat).mean(1) ** 2 / sq.mean(1)
        rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    r_gam, beta_factor, mean_factor = _gamma_tables()
    # r_gam increases with the shape, so the nearest grid value is one of the two around the insertion point;
    # ties go to the lower index, as argmin over the whole grid does
    hi = np.clip(np.searchsorted(r_gam, rhatnorm), 1, r_gam.size - 1)
    lo = hi - 1
    pos = np.where(np.abs(r_gam[hi] - rhatnorm) < np.abs(r_gam[lo] - rhatnorm), hi, lo)
    undefined = ~np.isfinite(rhatnorm)
    # an undefined fit keeps the first grid shape, as argmin over NaNs does in BasicSR and pyiqa
    pos = np.where(undefined, 0, pos)
    alpha = _GAM[pos]
    factor = np.where(undefined, np.nan, beta_factor[pos])
    return alpha, left_std * factor, right_std * factor, np.where(undefined, np.nan, mean_factor[pos])


def _features(mscn: np.ndarray, block: int) -> np.ndarray:
    """The 18 NIQE features of each block x block tile of an MSCN map (whose size is a multiple of block): (N, 18)."""
    h, w = mscn.shape
    blocks = mscn.reshape(h // block, block, w // block, block).swapaxes(1, 2).reshape(-1, block, block)
    alpha, beta_l, beta_r, _ = _aggd(blocks)
    feats = [alpha, (beta_l + beta_r) / 2]
    # products with the right, lower, lower-right and lower-left neighbour, wrapping around inside the block
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pair = blocks * np.roll(blocks, shift, axis=(1, 2))
        alpha, beta_l, beta_r, mean_factor = _aggd(pair)
        feats.extend([alpha, (beta_r - beta_l) * mean_factor, beta_l, beta_r])
    return np.stack(feats, axis=1)


def niqe(img: np.ndarray) -> float:
    """NIQE of one image (lower is more natural), to the pyiqa protocol.

    `img`: HxWx3 RGB (or HxW luma) on the 0-255 scale, uint8 or float. Luma is 0.299R + 0.587G + 0.114B,
    rounded; the image is cropped to a multiple of 96 (bottom and right), cut into 96x96 blocks, and 18 features
    per block are taken from its MSCN map at full scale and again at half scale (MATLAB antialiased bicubic,
    48x48 blocks). The distance between the MVG fitted to the 36-D features (NaN-ignoring mean; covariance of
    the blocks whose features are all defined) and the LIVE pristine model is returned; NaN when fewer than two
    blocks have defined features (a flat image). Raises `InputError` for an image smaller than two 96x96 blocks
    or of a wrong shape.
    """
    luma = niqe_luma(img)
    h, w = luma.shape
    n_h, n_w = h // BLOCK_SIZE, w // BLOCK_SIZE
    if n_h * n_w < 2:
        raise InputError(f"NIQE needs an image of at least two {BLOCK_SIZE}x{BLOCK_SIZE} blocks, got {w}x{h}")
    luma = luma[: n_h * BLOCK_SIZE, : n_w * BLOCK_SIZE]

    full = _features(_mscn(luma), BLOCK_SIZE)  # (N, 18)
    half_luma = imresize(luma / 255.0, 0.5) * 255.0  # not re-rounded, as BasicSR and pyiqa
    half = _features(_mscn(half_luma), BLOCK_SIZE // 2)  # (N, 18)
    feats = np.concatenate([full, half], axis=1)  # (N, 36)

    # the MVG fitted to the image's blocks: mean ignoring NaNs, covariance over the blocks without any
    complete = feats[~np.isnan(feats).any(axis=1)]
    if len(complete) < 2:
        return math.nan
    mu = np.nanmean(feats, axis=0)
    cov = np.cov(complete, rowvar=False)
    mu_pris, cov_pris = pristine_model()
    diff = mu_pris - mu
    # Eq. 10 of the paper: distance between the two MVGs with the pooled covariance
    quality = diff @ np.linalg.pinv((cov_pris + cov) / 2) @ diff
    return float(np.sqrt(quality))
