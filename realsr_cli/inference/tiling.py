"""Seamless tiling: plan fixed-shape tiles, pad at the image border, run a model on batches of tiles, blend.

Pure numpy; the model is any `run(batch) -> batch` callable mapping (N, C, th, tw) float32 in [0, 1] to
(N, C, th*s, tw*s). No torch here.

Why the output is exact: an output pixel depends only on input pixels within the model's receptive-field
radius R. Inside a tile, a pixel at least R pixels from the tile's *interior* edges (edges that are not the
image border) sees exactly what it sees in the whole image, so its output is exact. The blend gives every
interior edge zero weight for its first R pixels and a raised-cosine ramp after that, and neighbouring tiles
overlap by at least 2R + ramp, so every output pixel is a weighted mean of exact values with weights that sum
to 1: tiled equals whole up to float rounding.

Memory: the tile grid is a product grid, so the blend weights and their normaliser are separable (two 1-D
arrays per tile, no full-size weight buffer). Float accumulators exist only for the output rows shared with
the next tile row (overlap * scale rows, full width) and the columns shared with the next tile (one tile high,
overlap * scale wide); everything else is quantised straight into the integer output array as soon as it is
final.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from realsr_cli.config import TileConfig
from realsr_cli.errors import ModelError
from realsr_cli.photo.pixels import quantize
from realsr_cli.spec import ModelSpec

# input pixels of raised-cosine cross-fade after the receptive-field margin (x scale output pixels). Both tiles
# are exact there, so the fade only hides float rounding; each pixel of it adds to every tile's redundant work
RAMP = 4
UNKNOWN_RF_OVERLAP = 32  # default overlap for models whose receptive field is unknown (models made elsewhere)

Run = Callable[[np.ndarray], np.ndarray]  # (N, C, th, tw) float32 -> (N, C, th*s, tw*s) float32
TileProgress = Callable[[int, int], None]  # (tiles done, tiles total)


def default_overlap(spec: ModelSpec) -> int:
    """Overlap that makes tiling exact: both neighbours' receptive-field margins plus the cross-fade ramp."""
    if spec.receptive_field is None:
        return _round_up(UNKNOWN_RF_OVERLAP, spec.size_multiple)
    return _round_up(2 * spec.receptive_field + RAMP, spec.size_multiple)


def padded_size(size: int, multiple: int, fixed: int | None = None) -> int:
    """The extent a model sees for an image axis of `size` pixels: up to a multiple, or at least the fixed size."""
    if fixed is not None:
        return max(size, fixed)
    return _round_up(size, multiple)


def pad_indices(size: int, padded: int) -> np.ndarray:
    """Source index for each of `padded` positions along an axis of `size` pixels, padded at the end.

    Reflection (without repeating the border pixel, like numpy's "reflect"), and where reflection cannot reach
    (padding of `size` or more) the far end is replicated: reflect padding only reaches size - 1 pixels.
    """
    idx = np.arange(padded)
    over = idx >= size
    idx[over] = np.maximum(2 * (size - 1) - idx[over], 0)
    return idx


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis, in input pixels. Starts increase; every tile is `tile` long; the last ends at `padded`."""

    size: int  # real image extent
    padded: int  # extent after end padding (the virtual image the tiles live in)
    tile: int
    starts: tuple[int, ...]
    margin: int  # zero-weight pixels at each interior tile edge (the receptive field when known)
    ramp: int  # raised-cosine pixels after the margin

    def weights(self, scale: int) -> list[np.ndarray]:
        """Per tile, its blend weight along this axis at output resolution (tile * scale,), float32.

        Normalised: the weights of all tiles covering an output pixel sum to 1 (the 2-D weight of a tile is the
        outer product of its row and column weights, and the 2-D sums factor the same way).
        """
        n, length = len(self.starts), self.tile * scale
        d = np.arange(length, dtype=np.float64)  # distance in output pixels from the tile's first edge
        rise = _ramp(d, self.margin * scale, self.ramp * scale)
        raw = []
        for k in range(n):
            w = np.ones(length)
            if k > 0:  # interior first edge
                w *= rise
            if k < n - 1:  # interior last edge
                w *= rise[::-1]
            raw.append(w)
        total = np.zeros(self.padded * scale)
        for start, w in zip(self.starts, raw, strict=True):
            total[start * scale : start * scale + length] += w
        # every output pixel must be covered by some tile's non-zero weight; the plan guarantees it
        assert total.min() > 0, "tile plan leaves output pixels without weight"
        return [
            (w / total[s * scale : s * scale + length]).astype(np.float32)
            for s, w in zip(self.starts, raw, strict=True)
        ]


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image go. Every tile has shape `tile_shape`; the grid is rows x cols."""

    rows: AxisPlan
    cols: AxisPlan
    overlap: int  # the requested minimum overlap, input pixels

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self.rows.tile, self.cols.tile

    @property
    def count(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)

    def tiles(self) -> Iterator[tuple[int, int, int, int]]:
        """(row index, col index, y, x) of every tile, row-major: the order `run_tiled` processes them."""
        for i, y in enumerate(self.rows.starts):
            for j, x in enumerate(self.cols.starts):
                yield i, j, y, x


def plan_tiles(height: int, width: int, spec: ModelSpec, cfg: TileConfig, *, balance: bool = True) -> TilePlan:
    """Plan equal-shape tiles for a (height, width) image.

    The tile size (`cfg.tile_for(height * width)`; 0 = whole image) is rounded up to `spec.size_multiple` and to
    at least twice the overlap; `spec.fixed_size` overrides it. Without `balance` every tile is exactly tile x tile
    (clipped to the padded image): one input shape for a whole batch of images. With `balance`, the grid
    (rows x cols) and tile shape are chosen to do the least work: of all grids whose equal tiles cover the image
    and hold at most tile x tile pixels (the memory bound), the one with the fewest tile pixels in total. A 1 MP
    photo (1155x866) at tile 576 and overlap 40 becomes 2x2 tiles of 598x453 (8% redundant work) rather than 2x3
    tiles of 453x412 (12%), the best grid of tiles no longer than 576 on either side. Starts are spread evenly, so
    neighbours overlap by at least the overlap and the last tile ends at the border.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image must have at least one pixel, got {height}x{width}")
    overlap = default_overlap(spec) if cfg.overlap is None else cfg.overlap
    m = spec.size_multiple
    if spec.fixed_size is not None:
        (fh, fw), rf = spec.fixed_size, spec.receptive_field
        return TilePlan(
            rows=_axis(height, padded_size(height, m, fh), fh, min(overlap, fh // 2), rf),
            cols=_axis(width, padded_size(width, m, fw), fw, min(overlap, fw // 2), rf),
            overlap=overlap,
        )
    ph, pw = padded_size(height, m), padded_size(width, m)
    tile = cfg.tile_for(height * width)
    if tile == 0:
        th, tw = ph, pw
    else:
        t = _round_up(max(tile, 2 * overlap), m)
        th, tw = _least_work_tiles(ph, pw, t, overlap, m) if balance else (min(t, ph), min(t, pw))
    return TilePlan(
        rows=_axis(height, ph, th, overlap, spec.receptive_field),
        cols=_axis(width, pw, tw, overlap, spec.receptive_field),
        overlap=overlap,
    )


def _least_work_tiles(ph: int, pw: int, t: int, overlap: int, m: int) -> tuple[int, int]:
    """(th, tw) of the balanced grid with the fewest tile pixels in total, each tile at most t * t pixels."""
    best = None
    for rows in range(1, _tile_count(ph, t, overlap) + 1):
        th = _balanced_tile(ph, rows, overlap, m)
        for cols in range(1, _tile_count(pw, t, overlap) + 1):
            tw = _balanced_tile(pw, cols, overlap, m)
            if th * tw > t * t:
                continue
            key = (rows * cols * th * tw, rows * cols)  # least work, then fewest backend calls
            if best is None or key < best[0]:
                best = (key, (th, tw))
            break  # more columns only add work
    return best[1]


def _tile_count(padded: int, t: int, overlap: int) -> int:
    """Tiles of edge t (overlapping by `overlap`) needed to cover `padded` pixels."""
    return 1 if t >= padded else 1 + math.ceil((padded - t) / (t - overlap))


def _balanced_tile(padded: int, n: int, overlap: int, m: int) -> int:
    """The smallest tile edge (a multiple of m) with which n tiles overlapping by `overlap` cover `padded`."""
    return padded if n == 1 else min(padded, _round_up(math.ceil((padded - overlap) / n) + overlap, m))


def _axis(size: int, padded: int, t: int, overlap: int, receptive_field: int | None) -> AxisPlan:
    """Tiles of edge t along one axis, starts spread evenly so every step is at most t - overlap."""
    if t >= padded:
        return AxisPlan(size, padded, padded, (0,), *_margin_ramp(overlap, receptive_field))
    n = _tile_count(padded, t, overlap)
    starts = tuple(k * (padded - t) // (n - 1) for k in range(n))
    return AxisPlan(size, padded, t, starts, *_margin_ramp(overlap, receptive_field))


def _margin_ramp(overlap: int, receptive_field: int | None) -> tuple[int, int]:
    """Split an overlap into zero-weight margins (one per neighbour) and the cross-fade between them."""
    if receptive_field is not None and overlap >= 2 * receptive_field + 1:
        # exact: each neighbour ignores its outputs within the receptive field of its edge; the rest fades
        return receptive_field, overlap - 2 * receptive_field
    # unknown field or an overlap too small to be exact: drop the worst quarter at each edge, fade the middle half
    margin = overlap // 4
    return margin, overlap - 2 * margin


def _ramp(d: np.ndarray, margin: float, ramp: float) -> np.ndarray:
    """0 before `margin`, a raised cosine over `ramp`, then 1 (d in output pixels from an interior edge)."""
    if ramp <= 0:
        return (d >= margin).astype(np.float64)
    x = np.clip((d - margin + 0.5) / ramp, 0.0, 1.0)
    return np.where(d < margin, 0.0, 0.5 - 0.5 * np.cos(np.pi * x))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def run_tiled(
    image: np.ndarray,
    run: Run,
    plan: TilePlan,
    scale: int,
    *,
    out: np.ndarray | None = None,
    out_dtype: np.dtype | type | None = None,
    batch: int = 1,
    fixed_batch: bool = False,
    progress: TileProgress | None = None,
) -> np.ndarray:
    """Upscale an (H, W, C) image tile by tile into an (H*scale, W*scale, C) array and return it.

    `image` is float32 in [0, 1], or uint8/uint16 (read per tile as value / max, so no float copy of the whole
    input is needed). The output goes into `out` when given (it must have the right shape; uint8, uint16 or a
    float dtype), else into a new array of `out_dtype` (default: the input's dtype). Integer outputs are rounded
    to nearest, floats clipped to [0, 1]. `batch` tiles go to `run` per call; with `fixed_batch` the last call is
    padded with repeats so `run` always sees the same batch size. `progress(done, total)` is called after every
    `run` call. Raises ModelError when `run` returns the wrong shape.
    """
    h, w, c = image.shape
    if (h, w) != (plan.rows.size, plan.cols.size):
        raise ValueError(f"plan is for {plan.rows.size}x{plan.cols.size}, image is {h}x{w}")
    shape = (h * scale, w * scale, c)
    if out is None:
        out = np.empty(shape, dtype=out_dtype or image.dtype)
    elif out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    blender = _Blender(plan, scale, out)
    th, tw = plan.tile_shape
    inputs = np.empty((batch, c, th, tw), dtype=np.float32)
    tiles = list(plan.tiles())
    done = 0
    for first in range(0, len(tiles), batch):
        group = tiles[first : first + batch]
        for n, (_, _, y, x) in enumerate(group):
            inputs[n] = _tile_input(image, plan, y, x)
        count = len(group)
        if fixed_batch and count < batch:
            inputs[count:] = inputs[count - 1]
            count = batch
        result = run(inputs[:count])
        expected = (count, c, th * scale, tw * scale)
        if getattr(result, "shape", None) != expected:
            got = getattr(result, "shape", type(result).__name__)
            raise ModelError(f"model returned {got} for input {inputs[:count].shape}; expected {expected}")
        for n, (i, j, _, _) in enumerate(group):
            blender.add(i, j, result[n])
        done += len(group)
        if progress is not None:
            progress(done, len(tiles))
    return out


def _tile_input(image: np.ndarray, plan: TilePlan, y: int, x: int) -> np.ndarray:
    """(C, th, tw) float32 in [0, 1] for the tile at (y, x) of the virtual padded image."""
    th, tw = plan.tile_shape
    h, w = image.shape[:2]
    rows = slice(y, y + th) if y + th <= h else pad_indices(h, plan.rows.padded)[y : y + th]
    cols = slice(x, x + tw) if x + tw <= w else pad_indices(w, plan.cols.padded)[x : x + tw]
    if isinstance(rows, slice):
        tile = image[rows, cols]  # a view when cols is a slice
    else:
        tile = image[rows][:, cols]
    if image.dtype.kind != "f":
        tile = tile.astype(np.float32)  # before the transpose: a contiguous conversion is faster
        tile *= np.float32(1.0 / np.iinfo(image.dtype).max)
    return tile.transpose(2, 0, 1)  # (C, th, tw)


class _Blender:
    """Accumulates weighted tile outputs in row-major order and writes each output pixel once it is final.

    Output rows [a_i, a_{i+1}) are final after tile row i; within them, columns [p_j, p_{j+1}) are final after
    tile j. So only two float buffers exist: `carry` (rows shared with the next tile row, full width) and
    `xcarry` (the current tile row's final rows, columns shared with the next tile).
    """

    def __init__(self, plan: TilePlan, scale: int, out: np.ndarray) -> None:
        self.out = out
        self.s = scale
        self.ys = [y * scale for y in plan.rows.starts]
        self.xs = [x * scale for x in plan.cols.starts]
        self.th, self.tw = plan.rows.tile * scale, plan.cols.tile * scale
        self.width = plan.cols.padded * scale
        self.wy = plan.rows.weights(scale)
        self.wx = plan.cols.weights(scale)
        self.channels = out.shape[2]
        self.row = -1
        self.carry = np.zeros((0, self.width, self.channels), np.float32)  # rows [a_i, a_i + len)
        if out.dtype.kind not in "uif":
            raise ValueError(f"unsupported output dtype {out.dtype}")
        self.integer = out.dtype.kind in "ui"  # quantized; float outputs are clipped to [0, 1]

    def _begin_row(self, i: int) -> None:
        a = self.ys[i]
        b = a + self.th
        c = self.ys[i + 1] if i + 1 < len(self.ys) else b
        old = self.carry  # rows [a, a + len(old)), from earlier tile rows
        self.next_carry = np.zeros((b - c, self.width, self.channels), np.float32)  # rows [c, b)
        if len(old) > c - a:  # earlier rows reach past this row's final part (tiles overlapping > half)
            self.next_carry[: len(old) - (c - a)] += old[c - a :]
        self.old_final = old[: c - a]  # earlier contributions to rows [a, c)
        self.xcarry = None
        self.row = i

    def add(self, i: int, j: int, tile: np.ndarray) -> None:
        """Blend tile (i, j)'s output (C, th*s, tw*s); tiles must arrive in `TilePlan.tiles()` order."""
        if i != self.row:
            if self.row >= 0:
                self.carry = self.next_carry
            self._begin_row(i)
        a = self.ys[i]
        c = self.ys[i + 1] if i + 1 < len(self.ys) else a + self.th
        p = self.xs[j]
        r = self.xs[j + 1] if j + 1 < len(self.xs) else p + self.tw
        # weight in place when the backend's array is ours to change: a big tile's output is hundreds of MB
        if not (tile.flags.writeable and tile.dtype == np.float32):
            tile = tile.astype(np.float32)
        tile *= np.outer(self.wy[i], self.wx[j])[None]
        weighted = tile.transpose(1, 2, 0)  # (th*s, tw*s, C) view
        if c - a < self.th:
            self.next_carry[:, p : p + self.tw] += weighted[c - a :]
        final = weighted[: c - a]  # rows final after this tile row
        if self.xcarry is not None:
            final[:, : self.xcarry.shape[1]] += self.xcarry
        block = final[:, : r - p]  # columns final after this tile
        k = len(self.old_final)
        if k:
            block[:k] += self.old_final[:, p:r]
        self._write(a, p, block)
        self.xcarry = final[:, r - p :].copy()

    def _write(self, y: int, x: int, block: np.ndarray) -> None:
        h = min(block.shape[0], self.out.shape[0] - y)
        w = min(block.shape[1], self.out.shape[1] - x)
        if h <= 0 or w <= 0:  # entirely in the bottom/right padding
            return
        block = block[:h, :w]
        target = self.out[y : y + h, x : x + w]
        if self.integer:
            quantize(block, target.dtype, out=target, in_place=True)  # the block is scratch: no copy of its size
            return
        # fmax/fmin rather than clip: they also map NaN (a diverged fp16 tile) to a valid value
        np.fmax(block, 0.0, out=block)
        np.fmin(block, 1.0, out=block)
        np.copyto(target, block)
