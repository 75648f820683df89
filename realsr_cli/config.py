"""Frozen configuration objects, one per job. Core functions take one of these, never a Click context. No torch here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TileConfig:
    """How an image is cut into fixed-shape tiles for the backend and blended back."""

    tile: int = 512  # tile edge in input pixels; 0 = the whole image in one piece
    overlap: int | None = None  # input pixels shared by neighbouring tiles; None = derived from the model's receptive field
    batch: int = 1  # tiles per forward call; on 2 CPU cores batch 1 is as fast as larger batches


@dataclass(frozen=True)
class ExportConfig:
    """What `realsr export` writes and how strictly it verifies it."""

    formats: tuple[str, ...] = ("onnx", "torchscript")
    half: bool = False  # also write an fp16 ONNX variant for GPUs (fp32 inputs and outputs kept)
    opset: int = 17
    # verification sizes (height, width): odd and non-square, so dynamic axes and padding are exercised
    check_sizes: tuple[tuple[int, int], ...] = ((37, 53), (64, 41))
    tolerance: float = 1e-3  # max abs error against eager PyTorch, fp32 exports
    half_tolerance: float = 2e-2  # the fp16 variant, whose arithmetic is coarser by design
