"""The `realsr eval` job: upscale every LR image of a folder with a model and with bicubic, score both against the HR
partners (PSNR-Y, SSIM-Y, PSNR-RGB) and on naturalness (NIQE), per image and on average. The model comes in as a
plain `upscale` callable, so anything that upscales an array can be scored.

No torch here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import numpy as np

from realsr_cli.errors import InputError
from realsr_cli.quality.datasets import bicubic_upscale, list_pairs, read_rgb8
from realsr_cli.quality.metrics import colour_bias, grid_score, psnr, ssim
from realsr_cli.quality.niqe import niqe

__all__ = ["Scores", "ImageResult", "EvalReport", "evaluate", "evaluate_images"]

T = TypeVar("T")
BORDER = 4  # pixels cropped from each side before PSNR/SSIM: the usual x4 SR protocol


@dataclass(frozen=True)
class Scores:
    """One image's (or the mean) scores for one method; None where not measured (no HR, NIQE off or undefined)."""

    psnr_y: float | None = None  # dB, BT.601 Y channel, 4-pixel border crop
    ssim_y: float | None = None
    psnr_rgb: float | None = None  # dB, all three channels, same crop
    niqe: float | None = None  # lower is more natural
    grid: float | None = None  # sub-pixel grid score (metrics.grid_score): natural images ~0.1, a checkerboard far more
    # mean signed difference from the HR per channel, 8-bit levels, same crop: a colour cast
    bias_r: float | None = None
    bias_g: float | None = None
    bias_b: float | None = None


@dataclass(frozen=True)
class ImageResult:
    """The scores of one LR image: the model's output, bicubic x`scale`, and the HR's own NIQE (when an HR is given)."""

    name: str  # path relative to the LR folder, which is also the HR partner's
    model: Scores
    bicubic: Scores
    hr: Scores | None = None  # niqe only


@dataclass(frozen=True)
class EvalReport:
    """Per-image results and their means. `to_dict()` is what `realsr eval --json` prints."""

    images: tuple[ImageResult, ...]
    has_reference: bool  # HR images were given, so the full-reference scores are there

    def mean(self) -> dict[str, Scores]:
        """Mean of each score over the images that have it: {"model": ..., "bicubic": ..., "hr": ...}."""
        out = {
            "model": _mean_scores([r.model for r in self.images]),
            "bicubic": _mean_scores([r.bicubic for r in self.images]),
        }
        if self.has_reference:
            out["hr"] = _mean_scores([r.hr for r in self.images if r.hr is not None])
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite numbers (inf PSNR of a perfect match) become None, as JSON has no infinity."""
        images = []
        for r in self.images:
            item = {"name": r.name, "model": _clean(asdict(r.model)), "bicubic": _clean(asdict(r.bicubic))}
            if r.hr is not None:
                item["hr"] = _clean(asdict(r.hr))
            images.append(item)
        return {
            "count": len(self.images),
            "has_reference": self.has_reference,
            "border": BORDER,
            "mean": {k: _clean(asdict(v)) for k, v in self.mean().items()},
            "images": images,
        }


def _mean_scores(scores: list[Scores]) -> Scores:
    values = {}
    for f in fields(Scores):
        vals = [getattr(s, f.name) for s in scores if getattr(s, f.name) is not None]
        values[f.name] = float(np.mean(vals)) if vals else None
    return Scores(**values)


def _clean(d: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (v if v is not None and math.isfinite(v) else None) for k, v in d.items()}


def _niqe_or_none(img: np.ndarray) -> float | None:
    """NIQE, or None where it is undefined (an image under two 96x96 blocks, or a flat one)."""
    try:
        score = niqe(img)
    except InputError:
        return None
    return score if math.isfinite(score) else None


def _score(sr: np.ndarray, hr: np.ndarray | None, with_niqe: bool, scale: int) -> Scores:
    nat = _niqe_or_none(sr) if with_niqe else None
    grid = grid_score(sr, scale) if scale > 1 else None
    if hr is None:
        return Scores(niqe=nat, grid=grid)
    bias_r, bias_g, bias_b = colour_bias(sr, hr, border=BORDER)
    return Scores(
        psnr_y=psnr(sr, hr, border=BORDER),
        ssim_y=ssim(sr, hr, border=BORDER),
        psnr_rgb=psnr(sr, hr, border=BORDER, y_channel=False),
        niqe=nat,
        grid=grid,
        bias_r=bias_r,
        bias_g=bias_g,
        bias_b=bias_b,
    )


def evaluate_images(
    upscale: Callable[[np.ndarray], np.ndarray],
    items: Iterable[tuple[str, np.ndarray, np.ndarray | None]],
    *,
    scale: int = 4,
    with_niqe: bool = True,
) -> Iterator[ImageResult]:
    """Score images already in memory: `items` yields (name, LR (h, w, 3) uint8, HR (h*s, w*s, 3) uint8 or None).

    `upscale` maps an (h, w, 3) uint8 LR to its (h*scale, w*scale, 3) uint8 SR. Yields one ImageResult per item.
    Raises InputError naming the image when the model's output or the bicubic upscale differs in size from the HR.
    """
    for name, lr, hr in items:
        sr = np.asarray(upscale(lr))
        if hr is not None and sr.shape != hr.shape:
            raise InputError(
                f"{name}: the model's output is {sr.shape[1]}x{sr.shape[0]} but its HR is {hr.shape[1]}x{hr.shape[0]}"
            )
        if sr.dtype != np.uint8:
            raise InputError(f"{name}: the model's output is {sr.dtype}, expected uint8")
        bicubic = bicubic_upscale(lr, scale)
        if hr is not None and bicubic.shape != hr.shape:
            raise InputError(
                f"{name}: bicubic x{scale} of its {lr.shape[1]}x{lr.shape[0]} LR is "
                f"{bicubic.shape[1]}x{bicubic.shape[0]} but its HR is {hr.shape[1]}x{hr.shape[0]}"
            )
        yield ImageResult(
            name=name,
            model=_score(sr, hr, with_niqe, scale),
            bicubic=_score(bicubic, hr, with_niqe, scale),
            hr=Scores(niqe=_niqe_or_none(hr) if with_niqe else None) if hr is not None else None,
        )


def evaluate(
    upscale: Callable[[np.ndarray], np.ndarray],
    lr_dir: str | os.PathLike,
    hr_dir: str | os.PathLike | None = None,
    *,
    scale: int = 4,
    with_niqe: bool = True,
    progress: Callable[[Iterable[T]], Iterable[T]] = iter,
) -> EvalReport:
    """Score a model against bicubic on a folder of LR images, with HR partners of the same names or without.

    With `hr_dir`: PSNR-Y, SSIM-Y, PSNR-RGB and the colour bias (4-pixel border crop), NIQE and the grid score of
    model and bicubic, and the HR's NIQE; without: NIQE and the grid score. Images are read one at a time. Raises
    InputError for a missing or empty folder, an image without its partner, an unreadable file, or a model output
    whose size differs from the HR's (each naming the file).
    """
    pairs = list_pairs(lr_dir, hr_dir)

    def items() -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for name, lr_path, hr_path in progress(pairs):
            yield name, read_rgb8(lr_path), (read_rgb8(hr_path) if hr_path is not None else None)

    results = tuple(evaluate_images(upscale, items(), scale=scale, with_niqe=with_niqe))
    return EvalReport(images=results, has_reference=hr_dir is not None)
