"""`realsr quantize`: an exported fp32 ONNX model to an int8 one (`<stem>.int8.onnx`) by realsr's int8 recipe
(`inference.runtime.int8`), calibrated on crops of real photos, and checked against the fp32 model on those crops.

int8 runs on the CPU's VNNI or AMX integer units: on the bundled model the validation pairs' PSNR-Y moved by 0.01
dB while a 1 MP photo ran about twice as fast as fp32 on a CPU without AMX (models/README.md, the README's
performance section). No torch here.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realsr_cli._files import atomic_write, file_sha256
from realsr_cli.errors import ConfigError, InputError, ModelError
from realsr_cli.inference.inputs import expand_inputs
from realsr_cli.inference.runtime.int8 import quantize_int8
from realsr_cli.inference.runtime.onnx import onnx_sibling
from realsr_cli.photo.read import read_image
from realsr_cli.quality.metrics import psnr
from realsr_cli.spec import ModelSpec

CALIBRATION_CROP = 96  # input pixels a side: several receptive fields, and quick to run through the float model
MAX_CALIBRATION_PIXELS = 100_000_000  # a calibration photo larger than this is refused, as upscale refuses one
MAX_CROPS = 32  # calibration crops at most, spread over the photos given (percentile calibration holds them all)


@dataclass(frozen=True)
class QuantizeReport:
    path: Path
    crops: int
    psnr_y_mean: float  # the int8 model's output against the fp32 model's, on the calibration crops (dB)
    psnr_y_min: float
    seconds: float


def quantize_model(model: str | os.PathLike, photos: list[str], out: str | os.PathLike | None = None) -> QuantizeReport:
    """Write an int8 copy of the fp32 ONNX `model` to `out` (default: its `<stem>.int8.onnx`), calibrated on crops of
    the images in `photos` (files, folders or globs), and measure it against the fp32 model on those crops.

    Raises InputError (unreadable model or photos, none usable), ModelError (not a realsr fp32 ONNX model) and
    BackendError (onnxruntime missing).
    """
    import onnx

    from realsr_cli.inference.runtime.onnx import OnnxBackend, _OnnxInfo

    start = time.perf_counter()
    source = Path(model)
    info = _OnnxInfo.read(source)
    if info.spec is None or info.spec.precision != "fp32":
        raise ModelError(f"{source}: quantize takes an fp32 ONNX model exported by realsr (`realsr export`)")
    out = Path(out) if out is not None else onnx_sibling(source, "int8")
    crops = calibration_crops(photos, info.spec.size_multiple)
    reference = OnnxBackend.open(source, "cpu", notice=lambda message: None)
    expected = [reference.run(crop) for crop in crops]
    reference.close()

    with tempfile.TemporaryDirectory(prefix="realsr-quantize-") as tmp:
        quantized = Path(tmp) / "model.int8.onnx"
        quantize_int8(source, quantized, [{info.input_name: crop} for crop in crops])
        int8_model = onnx.load(str(quantized))
    spec = ModelSpec(**{**info.spec.to_dict(), "precision": "int8", "supports_half": False})
    del int8_model.metadata_props[:]
    for key, value in spec.to_metadata().items():
        int8_model.metadata_props.add(key=key, value=value)
    # the fp32 file it was made from, so `realsr models` and a reader can tell which model this is a copy of
    int8_model.metadata_props.add(key="int8_of_sha256", value=file_sha256(source))
    with atomic_write(out) as fh:
        fh.write(int8_model.SerializeToString())
    int8 = OnnxBackend.open(out, "cpu", notice=lambda message: None)
    scores = [_psnr_y(int8.run(crop), reference_out) for crop, reference_out in zip(crops, expected, strict=True)]
    int8.close()
    return QuantizeReport(out, len(crops), float(np.mean(scores)), float(min(scores)), time.perf_counter() - start)


def calibration_crops(photos: list[str], multiple: int = 1) -> list[np.ndarray]:
    """(1, 3, CALIBRATION_CROP, CALIBRATION_CROP) float32 crops in [0, 1] of the images in `photos`: MAX_CROPS at
    most, from photos spread evenly over the list (several folders count alike) and from places spread over each
    photo. Raises InputError when there is no image, ConfigError when every image is smaller than a crop."""
    items = [item for item in expand_inputs(photos) if item.error is None]
    if not items:
        raise InputError(f"no images to calibrate with in {', '.join(photos)}")
    edge = -(-CALIBRATION_CROP // multiple) * multiple
    chosen = [items[round(i)] for i in np.linspace(0, len(items) - 1, min(len(items), MAX_CROPS))]
    grid = max(1, math.isqrt(MAX_CROPS // len(chosen)))  # crops a side from each photo
    crops = []
    for item in chosen:
        rgb = read_image(item.path, max_pixels=MAX_CALIBRATION_PIXELS).rgb
        height, width = rgb.shape[:2]
        if height < edge or width < edge:
            continue
        for i in range(grid):
            for j in range(grid):
                y, x = (height - edge) * (2 * i + 1) // (2 * grid), (width - edge) * (2 * j + 1) // (2 * grid)
                crop = rgb[y : y + edge, x : x + edge].astype(np.float32) / np.iinfo(rgb.dtype).max
                crops.append(crop.transpose(2, 0, 1)[None].copy())
    if not crops:
        raise ConfigError(f"every calibration image is smaller than {edge}x{edge} pixels")
    return crops


def _psnr_y(out: np.ndarray, reference: np.ndarray) -> float:
    """PSNR-Y in dB of one (1, 3, H, W) output against another, both in [0, 1]."""
    return psnr(out[0].transpose(1, 2, 0) * 255, reference[0].transpose(1, 2, 0) * 255, border=0)
