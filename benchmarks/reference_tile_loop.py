"""The baseline realsr's end-to-end speed is measured against: the same network run the way Real-ESRGAN's
`inference_realesrgan.py` runs a model on a CPU. OpenCV reads the photo and writes the PNG (its defaults: level 1,
the RLE strategy), the model runs in PyTorch in fp32 (Real-ESRGAN's half precision is for GPUs), on the whole image
(its default tile 0) or in tiles of `--tile` with its 10-pixel tile padding, and the output is rounded to 8 bits.

Not part of realsr: it needs torch and OpenCV (`pip install opencv-python-headless`). It loads realsr's exported
TorchScript file, which holds the same network as the checkpoint. Prints one JSON line of seconds:

    python benchmarks/reference_tile_loop.py photo.png out.png [--model export/realsr-compact-x4.ts] [--tile 0]
"""

from __future__ import annotations

import argparse
import json
import math
import time

_started = time.perf_counter()

import cv2  # noqa: E402  (the imports are part of what is timed)
import numpy as np  # noqa: E402
import torch  # noqa: E402

TILE_PAD = 10  # Real-ESRGAN's default tile padding


def upscale(model, img: np.ndarray, scale: int, tile: int) -> np.ndarray:
    """Real-ESRGAN's RealESRGANer.enhance for an 8-bit BGR image: float in [0, 1], RGB, the model on the whole
    image or tile by tile (each tile padded by TILE_PAD and cropped back), clamped, rounded, BGR."""
    rgb = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(np.transpose(rgb, (2, 0, 1))).float().unsqueeze(0)
    with torch.no_grad():
        out = model(x) if tile == 0 else _tiles(model, x, scale, tile)
    result = out.data.squeeze().float().cpu().clamp_(0, 1).numpy()
    return (cv2.cvtColor(np.transpose(result, (1, 2, 0)), cv2.COLOR_RGB2BGR) * 255.0).round().astype(np.uint8)


def _tiles(model, x: torch.Tensor, scale: int, tile: int) -> torch.Tensor:
    """RealESRGANer.tile_process: non-overlapping tiles, each run with TILE_PAD pixels of context."""
    _, channels, height, width = x.shape
    out = x.new_zeros((1, channels, height * scale, width * scale))
    for row in range(math.ceil(height / tile)):
        for col in range(math.ceil(width / tile)):
            y0, x0 = row * tile, col * tile
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            py0, px0 = max(y0 - TILE_PAD, 0), max(x0 - TILE_PAD, 0)
            py1, px1 = min(y1 + TILE_PAD, height), min(x1 + TILE_PAD, width)
            result = model(x[:, :, py0:py1, px0:px1])
            top, left = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = result[
                :, :, top : top + (y1 - y0) * scale, left : left + (x1 - x0) * scale
            ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--model", default="export/realsr-compact-x4.ts")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--tile", type=int, default=0, help="0: the whole image (Real-ESRGAN's default)")
    args = parser.parse_args()
    imported = time.perf_counter()
    model = torch.jit.load(args.model).eval()
    loaded = time.perf_counter()
    img = cv2.imread(args.src, cv2.IMREAD_UNCHANGED)
    read = time.perf_counter()
    out = upscale(model, img, args.scale, args.tile)
    inferred = time.perf_counter()
    cv2.imwrite(args.dst, out)
    written = time.perf_counter()
    seconds = {
        "import": imported - _started,
        "load": loaded - imported,
        "read": read - loaded,
        "infer": inferred - read,
        "write": written - inferred,
    }
    print(json.dumps({key: round(value, 3) for key, value in seconds.items()}))


if __name__ == "__main__":
    main()
