"""Data sets of photos for training, evaluation and degradation: the images of a folder, LR/HR pairs matched by
name, 8-bit reads, and PIL's bicubic resampling (how x4 bicubic test sets and baselines are made). Torch-free, so
`eval` and `degrade` never import torch; training reads its data through these too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from realsr_cli.errors import InputError
from realsr_cli.inference.inputs import folder_images
from realsr_cli.photo.formats import image_extensions
from realsr_cli.photo.pixels import quantize
from realsr_cli.photo.read import read_image

# decoded pixels at most for data-set images (training, evaluation): refuses only absurd files (decompression bombs)
DATASET_MAX_PIXELS = 64_000_000


def list_images(folder: str | os.PathLike, what: str) -> dict[str, Path]:
    """Image files under `folder` (subfolders included, hidden files and folders skipped), keyed by their path
    relative to it (POSIX form, so pairs match across folders) and sorted by that key.

    Raises InputError naming the folder when it is missing or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} does not exist or is not a folder")
    found = {p.relative_to(folder).as_posix(): p for p in folder_images(folder, recursive=True) if p.is_file()}
    if not found:
        raise InputError(
            f"{what} folder {folder} holds no images (no file with one of the {len(image_extensions())} image "
            "extensions realsr reads, such as .jpg, .png, .heic, subfolders included)"
        )
    return dict(sorted(found.items()))


def list_pairs(
    lr_dir: str | os.PathLike, hr_dir: str | os.PathLike | None = None
) -> list[tuple[str, Path, Path | None]]:
    """(name, LR path, HR path or None) for every LR image, matched to the HR of the same relative name.

    Raises InputError naming the file when an image on either side has no partner, or a folder is missing or empty.
    """
    lr_dir = Path(lr_dir)
    lr_paths = list_images(lr_dir, "LR")
    if hr_dir is None:
        return [(name, path, None) for name, path in lr_paths.items()]
    hr_dir = Path(hr_dir)
    hr_paths = list_images(hr_dir, "HR")
    for name in sorted(set(lr_paths) ^ set(hr_paths)):
        have, lack = (lr_paths[name], hr_dir) if name in lr_paths else (hr_paths[name], lr_dir)
        raise InputError(f"{have} has no partner of the same name in {lack}")
    return [(name, path, hr_paths[name]) for name, path in lr_paths.items()]


def load_val_pairs(
    lr_dir: str | os.PathLike, hr_dir: str | os.PathLike, scale: int = 4
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Validation pairs (name, LR (h, w, 3) uint8, HR (h*s, w*s, 3) uint8), matched by file name.

    An HR larger than scale x its LR is cropped to it (top-left, the usual "modcrop"). Raises InputError naming
    the file when a partner is missing or an HR is smaller than scale x its LR.
    """
    pairs = []
    for name, lr_path, hr_path in list_pairs(lr_dir, hr_dir):
        lr, hr = read_rgb8(lr_path), read_rgb8(hr_path)
        h, w = lr.shape[0] * scale, lr.shape[1] * scale
        if hr.shape[0] < h or hr.shape[1] < w:
            raise InputError(
                f"validation HR {hr_path} is {hr.shape[1]}x{hr.shape[0]}, smaller than {scale} x its LR ({w}x{h})"
            )
        pairs.append((name, lr, np.ascontiguousarray(hr[:h, :w])))
    return pairs


def read_rgb8(path: str | os.PathLike) -> np.ndarray:
    """Decode a data-set image to (H, W, 3) uint8 RGB with realsr's reading policy (EXIF orientation applied,
    grayscale replicated, 16 bits rounded to 8: the networks see 8-bit photos). Transparency is composited onto
    white, as a JPEG output flattens it. Raises InputError naming the file when it cannot be read.
    """
    photo = read_image(path, max_pixels=DATASET_MAX_PIXELS)
    if photo.rgb.dtype == np.uint8 and photo.alpha is None:
        return np.array(photo.rgb)  # an own, writable copy: the decoded pixels may be a read-only view
    scale = np.float32(1 / np.iinfo(photo.rgb.dtype).max)
    rgb = np.multiply(photo.rgb, scale, dtype=np.float32)
    if photo.alpha is not None:
        alpha = np.multiply(photo.alpha, scale, dtype=np.float32)[..., None]
        rgb = rgb * alpha + (1.0 - alpha)
    return quantize(rgb, np.uint8)


def bicubic_upscale(lr: np.ndarray, scale: int = 4) -> np.ndarray:
    """(h, w, 3) uint8 -> (h*scale, w*scale, 3) uint8 with PIL's bicubic: the baseline the reference figures use."""
    img = Image.fromarray(np.ascontiguousarray(lr))
    return np.asarray(img.resize((lr.shape[1] * scale, lr.shape[0] * scale), Image.BICUBIC), dtype=np.uint8)


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H // scale, W // scale, 3) uint8, PIL's antialiased bicubic of the top-left
    (H // scale * scale, W // scale * scale) region: exactly how x4 bicubic LR test sets are made."""
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    img = Image.fromarray(np.ascontiguousarray(hr[: h * scale, : w * scale]))
    return np.asarray(img.resize((w, h), Image.BICUBIC), dtype=np.uint8)
