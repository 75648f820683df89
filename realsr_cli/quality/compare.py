"""Side-by-side crops of several upscalers on the same images (bicubic | model A | model B | ... | HR), so people can
look rather than read numbers: `compare_images` picks each image's crop and cuts it from every column (scoring each
column as `realsr eval` does when asked), `compare` lays them out as one PNG grid, and
`realsr_cli.quality.compare_page` as an HTML page with sliders. The models come in as plain `upscale` callables, as
in `realsr_cli.quality.evaluate`.

No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from realsr_cli.config import CompareConfig
from realsr_cli.errors import InputError
from realsr_cli.quality.datasets import bicubic_upscale, list_pairs, read_rgb8
from realsr_cli.quality.evaluate import ImageResult, Scores, evaluate_images

Upscale = Callable[[np.ndarray], np.ndarray]  # (h, w, 3) uint8 -> (h*s, w*s, 3) uint8

# LR pixels of context around a crop when it is upscaled on its own: more than any shipped model's receptive
# field (compact: 19), so the crop's pixels equal those of the whole image upscaled
CONTEXT = 32
LABEL_HEIGHT = 22
GAP = 4


@dataclass(frozen=True)
class CompareRow:
    """One image of a comparison: the same crop of every column, and each column's scores when scored."""

    name: str  # path relative to the LR folder, which is also the HR partner's
    cells: tuple[np.ndarray, ...]  # (crop*s, crop*s, 3) uint8 per column: bicubic, each model, HR
    # per column, the whole image's scores as `realsr eval` gives them (HR: its NIQE); empty when not scored
    scores: tuple[Scores, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """What `compare_images` found: the columns and one row per image, for the PNG grid or the HTML page."""

    labels: tuple[str, ...]  # column titles: "bicubic", each model's label, then "HR" when HR images were given
    rows: tuple[CompareRow, ...]
    has_reference: bool  # HR images were given: the last column is the ground truth and full-reference scores exist


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
    """A labelled grid, one row per image: bicubic, each model, then HR when `hr_dir` is given; (H, W, 3) uint8.
    The images and crops are `compare_images`'s (which says what it raises)."""
    return grid_image(compare_images(lr_dir, hr_dir, models, cfg, names), cfg.zoom)


def compare_images(
    lr_dir: str | os.PathLike,
    hr_dir: str | os.PathLike | None,
    models: Sequence[tuple[str, Upscale]],
    cfg: CompareConfig = CompareConfig(),
    names: Sequence[str] | None = None,
    *,
    scored: bool = False,
) -> Comparison:
    """The most detailed crop of each image as bicubic, each model and HR (when `hr_dir` is given) show it.

    `names` picks images by their path relative to `lr_dir` (default: the first `cfg.count`). `scored` also scores
    every column on the whole image as `realsr eval` does (so each model upscales whole images rather than crops
    with context). Raises InputError for a missing image or partner, or an image smaller than the crop.
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
    labels = ("bicubic", *(label for label, _ in models)) + (("HR",) if hr_dir is not None else ())
    rows = []
    for name, lr_path, hr_path in pairs:
        lr = read_rgb8(lr_path)
        if min(lr.shape[:2]) < crop:
            raise InputError(f"{lr_path} is {lr.shape[1]}x{lr.shape[0]}, smaller than a {crop}-pixel crop (--crop)")
        hr = read_rgb8(hr_path) if hr_path is not None else None
        bicubic = bicubic_upscale(lr, s)
        if hr is not None and hr.shape[:2] != bicubic.shape[:2]:
            raise InputError(
                f"{hr_path} is {hr.shape[1]}x{hr.shape[0]}, not {s} x its LR ({lr.shape[1]}x{lr.shape[0]})"
            )
        # choose the window on the ground truth where there is one: its detail is real, not an upscaler's
        hy, hx = detail_window(hr if hr is not None else bicubic, crop * s, s)
        y, x = hy // s, hx // s

        def cut(image: np.ndarray, y: int = y, x: int = x) -> np.ndarray:
            return image[y * s : (y + crop) * s, x * s : (x + crop) * s]

        if scored:
            outputs = [_checked(fn(lr), lr, s) for _, fn in models]
            results = [_eval_scores(name, lr, hr, sr, s) for sr in outputs or [bicubic]]
            model_cells = [cut(sr) for sr in outputs]
            scores = (results[0].bicubic, *(r.model for r in results[: len(models)]))
            scores += (results[0].hr,) if hr is not None else ()
        else:
            model_cells = [_upscale_crop(fn, lr, y, x, crop, s) for _, fn in models]
            scores = ()
        cells = (cut(bicubic), *model_cells) + ((cut(hr),) if hr is not None else ())
        rows.append(CompareRow(name, cells, scores))
    return Comparison(labels, tuple(rows), has_reference=hr_dir is not None)


def _checked(sr: np.ndarray, lr: np.ndarray, scale: int) -> np.ndarray:
    if sr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
        raise InputError(
            f"an upscaler returned {sr.shape[1]}x{sr.shape[0]} for a {lr.shape[1]}x{lr.shape[0]} input at x{scale}"
        )
    return sr


def _eval_scores(name: str, lr: np.ndarray, hr: np.ndarray | None, sr: np.ndarray, scale: int) -> ImageResult:
    """The scores `realsr eval` gives `sr` (the whole image upscaled), bicubic and the HR."""
    return next(evaluate_images(lambda _lr: sr, [(name, lr, hr)], scale=scale))


def grid_image(comparison: Comparison, zoom: int) -> np.ndarray:
    """The comparison as one labelled PNG-ready grid: a row per image, a column per upscaler, each crop magnified
    `zoom` times (nearest neighbour); (H, W, 3) uint8."""
    labels, rows = comparison.labels, [row.cells for row in comparison.rows]
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
