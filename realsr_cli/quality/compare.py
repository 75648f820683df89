"""Side-by-side crops of several upscalers on the same images (bicubic | model A | model B | ... | HR), so people can
look rather than read numbers. The models come in as plain `upscale` callables, as in `realsr_cli.quality.evaluate`.

No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from realsr_cli.config import CompareConfig
from realsr_cli.errors import InputError
from realsr_cli.quality.datasets import bicubic_upscale, list_pairs, read_rgb8

Upscale = Callable[[np.ndarray], np.ndarray]  # (h, w, 3) uint8 -> (h*s, w*s, 3) uint8

# LR pixels of context around a crop when it is upscaled on its own: more than any shipped model's receptive
# field (compact: 19), so the crop's pixels equal those of the whole image upscaled
CONTEXT = 32
LABEL_HEIGHT = 22
GAP = 4


def detail_window(image: np.ndarray, size: int, align: int) -> tuple[int, int]:
    """Top-left (y, x) of the size x size window of `image` with the most detail (sum of squared luma gradients),
    on a grid aligned to `align` pixels: the part of a photo where upscalers differ most."""
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    energy = np.zeros_like(luma)
    energy[:, 1:] += np.diff(luma, axis=1) ** 2
    energy[1:, :] += np.diff(luma, axis=0) ** 2
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = luma.shape
    step = max(align, (size // 4) // align * align)
    best, best_yx = -1.0, (0, 0)
    for y in range(0, max(h - size, 0) + 1, step):
        for x in range(0, max(w - size, 0) + 1, step):
            total = integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x]
            if total > best:
                best, best_yx = total, (y, x)
    return best_yx


def _upscale_crop(upscale: Upscale, lr: np.ndarray, y: int, x: int, crop: int, scale: int) -> np.ndarray:
    """Upscale an LR crop with CONTEXT pixels of surrounding image, then cut the crop's own HR pixels."""
    y0, x0 = max(y - CONTEXT, 0), max(x - CONTEXT, 0)
    y1, x1 = min(y + crop + CONTEXT, lr.shape[0]), min(x + crop + CONTEXT, lr.shape[1])
    sr = upscale(np.ascontiguousarray(lr[y0:y1, x0:x1]))
    if sr.shape[:2] != ((y1 - y0) * scale, (x1 - x0) * scale):
        raise InputError(
            f"an upscaler returned {sr.shape[1]}x{sr.shape[0]} for a {x1 - x0}x{y1 - y0} input at x{scale}"
        )
    top, left = (y - y0) * scale, (x - x0) * scale
    return sr[top : top + crop * scale, left : left + crop * scale]


def compare(
    lr_dir: str | os.PathLike,
    hr_dir: str | os.PathLike | None,
    models: Sequence[tuple[str, Upscale]],
    cfg: CompareConfig = CompareConfig(),
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """A labelled grid, one row per image: bicubic, each model, then HR when `hr_dir` is given.

    `names` picks images by their path relative to `lr_dir` (default: the first `cfg.count`). Each row shows the
    most detailed crop of that image. Returns (H, W, 3) uint8. Raises InputError for a missing image or partner,
    or an image smaller than the crop.
    """
    pairs = list_pairs(lr_dir, hr_dir)
    if names:
        by_name = {name: (name, lr, hr) for name, lr, hr in pairs}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise InputError(f"no image named {', '.join(missing)} in {lr_dir}")
        pairs = [by_name[name] for name in names]
    else:
        pairs = pairs[: cfg.count]
    s, crop = cfg.scale, cfg.crop
    labels = ["bicubic", *(label for label, _ in models)] + (["HR"] if hr_dir is not None else [])
    rows = []
    for _name, lr_path, hr_path in pairs:
        lr = read_rgb8(lr_path)
        if min(lr.shape[:2]) < crop:
            raise InputError(f"{lr_path} is {lr.shape[1]}x{lr.shape[0]}, smaller than a {crop}-pixel crop (--crop)")
        hr = read_rgb8(hr_path) if hr_path is not None else None
        bicubic = bicubic_upscale(lr, s)
        # choose the window on the ground truth where there is one: its detail is real, not an upscaler's
        hy, hx = detail_window(hr if hr is not None else bicubic, crop * s, s)
        y, x = hy // s, hx // s
        cells = [bicubic[y * s : (y + crop) * s, x * s : (x + crop) * s]]
        cells += [_upscale_crop(fn, lr, y, x, crop, s) for _, fn in models]
        if hr is not None:
            if hr.shape[:2] != bicubic.shape[:2]:
                raise InputError(
                    f"{hr_path} is {hr.shape[1]}x{hr.shape[0]}, not {s} x its LR ({lr.shape[1]}x{lr.shape[0]})"
                )
            cells.append(hr[y * s : (y + crop) * s, x * s : (x + crop) * s])
        rows.append(cells)
    return _grid(rows, labels, cfg.zoom)


def _grid(rows: list[list[np.ndarray]], labels: list[str], zoom: int) -> np.ndarray:
    cell = rows[0][0].shape[0] * zoom
    width = len(labels) * cell + (len(labels) + 1) * GAP
    height = LABEL_HEIGHT + len(rows) * cell + (len(rows) + 1) * GAP
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    for col, label in enumerate(labels):
        left = GAP + col * (cell + GAP)
        text_width = draw.textlength(label, font=font)
        draw.text((left + (cell - text_width) / 2, 4), label, fill=(0, 0, 0), font=font)
    for row, cells in enumerate(rows):
        top = LABEL_HEIGHT + GAP + row * (cell + GAP)
        for col, pixels in enumerate(cells):
            tile = Image.fromarray(np.ascontiguousarray(pixels)).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (GAP + col * (cell + GAP), top))
    return np.asarray(canvas)
