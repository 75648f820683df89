"""Training data for the method: source HR photos with their bicubic x4 LR (paired, x_s and y_s) and target LR
photos (x_t, unpaired). Validation pairs come from `realsr_cli.quality.datasets.load_val_pairs`.

Every image is decoded once and kept in memory as uint8, and each source photo is downscaled once, whole, with
PIL's bicubic (the same resampling as the bicubic baseline `realsr eval` reports), so a step's batch is only
slicing: a few microseconds per crop. Each step's batch is a pure function of (seed, step), so a resumed run
draws exactly the batches an uninterrupted run would, with no sampler state to save.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realsr_cli.config import DegradationConfig
from realsr_cli.errors import InputError
from realsr_cli.host import cpu_count
from realsr_cli.quality.datasets import bicubic_downscale, list_images, read_rgb8
from realsr_cli.quality.degrade import degrade


def read_all(paths: list[Path], workers: int = 0) -> list[np.ndarray]:
    """Decode every file in parallel threads (Pillow releases the GIL), keeping the order of `paths`."""
    workers = workers or cpu_count()
    if workers <= 1 or len(paths) <= 1:
        return [read_rgb8(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read_rgb8, paths))


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations of an (H, W, C) array: rotate k % 4 times, then mirror if k >= 4."""
    img = np.rot90(img, k % 4, axes=(0, 1))
    return img[:, ::-1] if k >= 4 else img


@dataclass
class Batch:
    """One step's crops, uint8, shaped NCHW with NHWC memory (channels_last), for the trainer to move to the device."""

    source_lr: np.ndarray  # (N, 3, P, P): x_s, bicubic downscale of source_hr (or its synthetic degradation)
    source_hr: np.ndarray  # (N, 3, P*s, P*s): y_s
    target_lr: np.ndarray | None  # (N, 3, P, P): x_t, drawn independently of the source crops


class TrainingData:
    """In-memory source pairs and target images; `batch(step)` draws that step's random crops deterministically.

    `source_hr` are (H, W, 3) uint8 HR photos, `target_lr` (H, W, 3) uint8 LR photos (or None: baseline).
    Each image is picked uniformly, then a uniform crop position and one of 8 dihedral transforms.
    """

    def __init__(
        self,
        source_hr: list[np.ndarray],
        target_lr: list[np.ndarray] | None,
        *,
        lr_patch: int,
        batch_size: int,
        scale: int = 4,
        seed: int = 0,
        degradation: DegradationConfig = DegradationConfig(),
    ) -> None:
        self.files: list[str] = []  # "source/<relative path>\t<bytes>" per file read from folders, for fingerprint()
        self.scale = scale
        self.lr_patch = lr_patch
        self.batch_size = batch_size
        self.seed = seed
        # crop HR to a multiple of the scale so HR pixel (s*i .. s*i+s-1) covers LR pixel i exactly
        self.source_hr = [hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale] for hr in source_hr]
        self.source_lr = [bicubic_downscale(hr, scale) for hr in self.source_hr]
        self.target_lr = target_lr
        self.degradation = degradation

    @classmethod
    def from_folders(
        cls,
        source_dir: str | os.PathLike,
        target_dir: str | os.PathLike | None,
        *,
        lr_patch: int,
        batch_size: int,
        scale: int = 4,
        seed: int = 0,
        degradation: DegradationConfig = DegradationConfig(),
        workers: int = 0,
        warn=None,
    ) -> TrainingData:
        """Read both folders once. Images too small for one crop are skipped with a warning naming them
        (a photo folder often holds a stray thumbnail); InputError when a folder is missing, empty, holds an
        unreadable file, or has no image large enough.

        `warn(message)` receives the warnings; default `warnings.warn`.
        """
        warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
        source, source_files = _load_usable(source_dir, "source HR", lr_patch * scale, workers, warn)
        target, target_files = (
            _load_usable(target_dir, "target LR", lr_patch, workers, warn) if target_dir else (None, [])
        )
        data = cls(
            source, target, lr_patch=lr_patch, batch_size=batch_size, scale=scale, seed=seed, degradation=degradation
        )
        data.files = [f"source/{p.relative_to(source_dir).as_posix()}\t{p.stat().st_size}" for p in source_files]
        data.files += [f"target/{p.relative_to(target_dir).as_posix()}\t{p.stat().st_size}" for p in target_files]
        return data

    def fingerprint(self) -> str:
        """sha256 over the used files' names (relative to their folder) and sizes: a resumed run draws the same
        crops only from the same files. Moving the folders keeps it."""
        return hashlib.sha256("\n".join(self.files).encode()).hexdigest()

    def batch(self, step: int) -> Batch:
        """The crops of step `step`: a pure function of (seed, step)."""
        p, s, n = self.lr_patch, self.scale, self.batch_size
        rng = np.random.default_rng([self.seed, step, 0])
        source_lr, source_hr = [], []
        for _ in range(n):
            i = int(rng.integers(len(self.source_lr)))
            lr, hr = self.source_lr[i], self.source_hr[i]
            top, left = int(rng.integers(lr.shape[0] - p + 1)), int(rng.integers(lr.shape[1] - p + 1))
            k = int(rng.integers(8))
            source_lr.append(dihedral(lr[top : top + p, left : left + p], k))
            source_hr.append(dihedral(hr[top * s : (top + p) * s, left * s : (left + p) * s], k))
        if self.degradation.enabled:
            # a third stream, so turning degradations on keeps every crop position and target draw
            rng = np.random.default_rng([self.seed, step, 2])
            source_lr = [degrade(np.ascontiguousarray(hr), s, self.degradation, rng) for hr in source_hr]
        target_lr = None
        if self.target_lr is not None:
            # its own stream: the target draws never shift the source draws (a baseline sees the same source crops)
            rng = np.random.default_rng([self.seed, step, 1])
            crops = []
            for _ in range(n):
                img = self.target_lr[int(rng.integers(len(self.target_lr)))]
                top, left = int(rng.integers(img.shape[0] - p + 1)), int(rng.integers(img.shape[1] - p + 1))
                crops.append(dihedral(img[top : top + p, left : left + p], int(rng.integers(8))))
            target_lr = _nchw(crops)
        return Batch(source_lr=_nchw(source_lr), source_hr=_nchw(source_hr), target_lr=target_lr)


def _nchw(crops: list[np.ndarray]) -> np.ndarray:
    # an NCHW view of NHWC memory: torch.from_numpy keeps the strides, which is torch's channels_last layout
    return np.stack(crops).transpose(0, 3, 1, 2)


def _load_usable(folder, what: str, min_size: int, workers: int, warn) -> tuple[list[np.ndarray], list[Path]]:
    paths = list(list_images(folder, what).values())
    images = read_all(paths, workers)
    usable, used = [], []
    for path, img in zip(paths, images, strict=True):
        if min(img.shape[:2]) < min_size:
            warn(
                f"skipping {what} image {path}: {img.shape[1]}x{img.shape[0]} is smaller than one "
                f"{min_size}x{min_size} crop"
            )
        else:
            usable.append(img)
            used.append(path)
    if not usable:
        raise InputError(
            f"{what} folder {folder}: no image is at least {min_size}x{min_size} pixels, the crop size "
            "(use a smaller lr_patch / --patch)"
        )
    return usable, used
