"""The checks both backends make of a model: its spec against what realsr runs (RGB, the scale the user expects),
the probe run that finds the spec of a model made elsewhere, and fp16's need for CUDA. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from realsr_cli._files import first_line
from realsr_cli.errors import ConfigError, ModelError
from realsr_cli.spec import ModelSpec

# probe sizes for models made elsewhere: for each candidate size multiple m, odd multiples of m (so an input of
# this size is a multiple of m but not of 2m), at least 16 pixels, and different on the two axes
_PROBE_MULTIPLES = (1, 2, 4, 8, 16, 32, 64)


def fp16_needs_cuda(path: Path) -> ConfigError:
    """The error for fp16 asked for where the run ended up on the CPU."""
    return ConfigError(f"{path.name}: fp16 runs only on CUDA, and this run is on CPU; use --precision auto or fp32")


def check_spec(spec: ModelSpec, path: Path, scale_hint: int | None) -> ModelSpec:
    """`spec` itself, once it describes an RGB model of the scale `scale_hint` expects (when given); else ModelError."""
    if spec.channels != 3:
        raise ModelError(f"{path}: model takes {spec.channels}-channel input; realsr runs RGB (3-channel) models")
    if scale_hint is not None and scale_hint != spec.scale:
        raise ModelError(f"{path}: model upscales x{spec.scale}, not x{scale_hint} as --scale-hint says")
    return spec


def probe_spec(
    run: Callable[[np.ndarray], np.ndarray],
    path: Path,
    *,
    fixed_size: tuple[int, int] | None = None,
    precision: str = "fp32",
) -> ModelSpec:
    """Find a model's scale and size multiple by running it on small inputs (models without realsr metadata).

    Tries 1 x 3 x H x W inputs with H, W odd multiples of 1, 2, 4, ... 64 until one runs and returns
    (1, 3, H*s, W*s) for one integer s; that multiple becomes `size_multiple`. With `fixed_size` only that size
    is tried. The receptive field stays unknown, so tiling falls back to its safe default overlap.
    Raises ModelError when no probe gives a 3-channel output of one integer scale.
    """
    candidates = [(fixed_size, 1)] if fixed_size else [(_probe_size(m), m) for m in _PROBE_MULTIPLES]
    rng = np.random.default_rng(0)
    reasons = []
    for (h, w), multiple in candidates:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        try:
            y = np.asarray(run(x))
        except Exception as err:  # each runtime raises its own types for a shape the model cannot take
            reasons.append(f"{h}x{w}: {first_line(err, 300)}")
            continue
        if y.ndim != 4 or y.shape[0] != 1:
            raise ModelError(
                f"{path}: model returned shape {tuple(y.shape)} for input {x.shape}; expected (1, 3, H, W)"
            )
        if y.shape[1] != 3:
            raise ModelError(f"{path}: model returns {y.shape[1]}-channel images; realsr runs RGB (3-channel) models")
        oh, ow = y.shape[2:]
        if oh % h or ow % w or oh // h != ow // w or oh < h:
            reasons.append(f"{h}x{w} -> {oh}x{ow} is not one integer scale")
            continue
        return ModelSpec(
            scale=oh // h,
            size_multiple=multiple,
            receptive_field=None,
            supports_half=False,
            precision=precision,
            architecture="unknown",
            fixed_size=fixed_size,
        )
    detail = "; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else "")
    raise ModelError(f"{path}: could not find the model's scale by a probe run ({detail})")


def _probe_size(multiple: int) -> tuple[int, int]:
    k = max(1, math.ceil(16 / multiple))
    k += 1 - k % 2  # odd
    return multiple * k, multiple * (k + 2)
