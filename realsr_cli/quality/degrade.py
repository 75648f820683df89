"""Synthetic real-world degradations for the source LR x_s: blur, resizing, sensor noise and JPEG, applied twice
(a "second-order" model after Real-ESRGAN, Wang et al. 2021), so G_SR learns to remove the noise and the
8x8 blocks real photos carry instead of sharpening them into view. No torch here: numpy and Pillow, on uint8
crops, from a caller-supplied `numpy.random.Generator` (training draws are a pure function of seed and step).

Also the recipe of the degraded validation set (`degrade_for_validation`): bicubic x4, Gaussian noise, JPEG.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from realsr_cli._files import atomic_write
from realsr_cli.config import DegradationConfig
from realsr_cli.photo.pixels import quantize
from realsr_cli.photo.write import write_image
from realsr_cli.quality.datasets import list_images, read_rgb8

# PIL resampling filters a camera pipeline or a web resize may have used; drawn uniformly
_RESAMPLERS = (Image.BICUBIC, Image.BILINEAR, Image.BOX, Image.LANCZOS)


def degrade(hr: np.ndarray, scale: int, cfg: DegradationConfig, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 HR crop, H and W multiples of `scale` -> (H / scale, W / scale, 3) uint8 degraded LR.

    Draws only from `rng`, a fixed number of times whatever the branches, so one crop's choices never shift
    the next crop's."""
    draws = rng.random(16)  # 0-8: branch coins and uniform positions; the noise fields draw from rng below
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    noise_rng = np.random.default_rng(rng.integers(2**63))
    if draws[0] < cfg.clean:
        return _resize(hr, (w, h), Image.BICUBIC)
    img = hr.astype(np.float32)
    if draws[1] < cfg.blur:
        img = _gaussian_blur(img, _between(cfg.blur_sigma, draws[2]))
    first = 1.0 + draws[3]  # first resize lands between 1x and 2x the LR size
    img = _resize(img, (round(w * first), round(h * first)), _RESAMPLERS[int(draws[4] * 4)])
    if draws[5] < cfg.noise:
        img = _add_noise(img, _between(cfg.noise_sigma, draws[6]), draws[7] < cfg.gray_noise, noise_rng)
    second = draws[8] < cfg.second_order
    if second and draws[9] < cfg.jpeg:
        img = _jpeg(img, round(_between(cfg.jpeg_quality, draws[10])))
    if second and draws[11] < cfg.blur:
        img = _gaussian_blur(img, _between((0.2, 1.5), draws[12]))
    img = _resize(img, (w, h), _RESAMPLERS[int(draws[13] * 4)])
    if second and draws[5] < cfg.noise:
        # the second noise is milder: most of a photo's noise is made once, at the sensor
        img = _add_noise(img, _between(cfg.noise_sigma, draws[6]) * 0.5, draws[7] < cfg.gray_noise, noise_rng)
    if draws[14] < cfg.jpeg:
        img = _jpeg(img, round(_between(cfg.jpeg_quality, draws[15])))
    return _to_uint8(img)


def degrade_for_validation(hr: np.ndarray, scale: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The degraded validation recipe (the model card's): PIL bicubic x`scale` down, Gaussian noise of sigma
    2-15 levels (half luminance-only, half colour), then JPEG of quality 30-90. Returns the LR and its draws."""
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    sigma = float(rng.uniform(2.0, 15.0))
    gray = bool(rng.random() < 0.5)
    quality = int(rng.integers(30, 91))
    img = _resize(hr[: h * scale, : w * scale], (w, h), Image.BICUBIC).astype(np.float32)
    img = _add_noise(img, sigma, gray, rng)
    lr = _to_uint8(_jpeg(img, quality))
    return lr, {"noise_sigma": round(sigma, 3), "gray_noise": gray, "jpeg_quality": quality}


def make_degraded_pairs(
    hr_dir: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int = 0, scale: int = 4
) -> list[dict]:
    """A full-reference test set of real-world-like degradation from clean HR photos: for each image under
    `hr_dir`, `out_dir/hr/NAME.png` (the HR cropped to a multiple of `scale`) and `out_dir/lr/NAME.png`
    (`degrade_for_validation`, drawn from a generator seeded by (seed, image index)), plus `out_dir/recipe.json`
    with every image's draws. Same seed, same files. Returns the recipe's per-image records."""
    out_dir = Path(out_dir)
    records = []
    for index, (name, path) in enumerate(list_images(hr_dir, "HR").items()):
        hr = read_rgb8(path)
        h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
        lr, draws = degrade_for_validation(hr, scale, np.random.default_rng([seed, index]))
        stem = str(Path(name).with_suffix(".png"))
        write_image(out_dir / "hr" / stem, np.ascontiguousarray(hr[:h, :w]))
        write_image(out_dir / "lr" / stem, lr)
        records.append({"name": stem, **draws})
    recipe = {
        "recipe": f"PIL bicubic x{scale} down; Gaussian noise sigma U(2, 15) levels, luminance-only with p 0.5; "
        "JPEG quality U{30..90} (Pillow, 4:2:0)",
        "seed": seed,
        "scale": scale,
        "source": str(hr_dir),
        "images": records,
    }
    with atomic_write(out_dir / "recipe.json") as fh:
        fh.write((json.dumps(recipe, indent=2) + "\n").encode())
    return records


def _between(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * float(u)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    return quantize(img, np.uint8, scale=1.0)  # values are 8-bit levels already


def _resize(img: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 or float image to `size` (width, height); floats go through 8-bit, as a camera
    pipeline stores its intermediate images."""
    if (img.shape[1], img.shape[0]) == size:
        return img
    out = Image.fromarray(np.ascontiguousarray(_to_uint8(img))).resize(size, resample)
    return np.asarray(out)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    out = Image.fromarray(np.ascontiguousarray(_to_uint8(img))).filter(ImageFilter.GaussianBlur(sigma))
    return np.asarray(out).astype(np.float32)


def _add_noise(img: np.ndarray, sigma: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    shape = (*img.shape[:2], 1) if gray else img.shape
    return img.astype(np.float32) + rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip with Pillow's default 4:2:0 chroma subsampling, as cameras and the web store photos."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(_to_uint8(img))).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))
