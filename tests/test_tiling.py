"""Tiling: the plan, the padding, the blend weights, tiled == whole for local operators and the compact preset,
and bounded memory."""

import tracemalloc

import numpy as np
import pytest

from realsr_cli.config import TileConfig
from realsr_cli.errors import ModelError
from realsr_cli.inference.tiling import (
    RAMP,
    UNKNOWN_RF_OVERLAP,
    default_overlap,
    pad_indices,
    padded_size,
    plan_tiles,
    run_tiled,
)
from realsr_cli.spec import ModelSpec


def box_model(radius: int, scale: int):
    """A numpy 'SR model' with a known receptive field: box blur of `radius` (zero padding at the input's edge,
    like a conv net's padding), an affine tweak, then nearest-neighbour x scale."""

    def run(x: np.ndarray) -> np.ndarray:  # (N, C, H, W) -> (N, C, H*s, W*s)
        n, c, h, w = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
        acc = np.zeros_like(x, dtype=np.float64)
        for dy in range(2 * radius + 1):
            for dx in range(2 * radius + 1):
                acc += padded[:, :, dy : dy + h, dx : dx + w]
        acc = acc / (2 * radius + 1) ** 2 * 0.8 + 0.1
        return acc.astype(np.float32).repeat(scale, 2).repeat(scale, 3)

    return run


def whole(image, run, spec):
    return run_tiled(image, run, plan_tiles(*image.shape[:2], spec, TileConfig(tile=0)), spec.scale)


SIZES = [(1, 1), (1, 61), (61, 1), (2, 3), (7, 9), (29, 30), (31, 33), (64, 65), (90, 37)]


@pytest.mark.parametrize("radius, scale", [(1, 1), (2, 4), (3, 2)])
@pytest.mark.parametrize("height, width", SIZES)
def test_tiled_equals_whole_for_a_local_operator(rng, radius, scale, height, width):
    spec = ModelSpec(scale=scale, receptive_field=radius)
    run = box_model(radius, scale)
    image = rng.random((height, width, 3), dtype=np.float32)
    reference = whole(image, run, spec)
    assert reference.shape == (height * scale, width * scale, 3)
    for tile in (1, 8, 16, 20, 29, 32, 100):
        for balance in (True, False):
            for batch in (1, 3):
                plan = plan_tiles(height, width, spec, TileConfig(tile=tile, batch=batch), balance=balance)
                out = run_tiled(image, run, plan, scale, batch=batch, fixed_batch=batch > 1)
                np.testing.assert_allclose(out, reference, atol=1e-6, err_msg=f"tile {tile} balance {balance}")


@pytest.mark.parametrize("multiple", [2, 4, 8])
@pytest.mark.parametrize("height, width", [(1, 1), (1, 30), (13, 1), (17, 23), (40, 41)])
def test_tiled_equals_whole_with_a_size_multiple(rng, multiple, height, width):
    # tiles and the whole image both live in the same reflect-padded virtual image, so they still agree
    spec = ModelSpec(scale=2, receptive_field=2, size_multiple=multiple)
    run = box_model(2, 2)
    seen = []

    def checked(x):
        assert x.shape[2] % multiple == 0 and x.shape[3] % multiple == 0
        seen.append(x.shape[2:])
        return run(x)

    image = rng.random((height, width, 3), dtype=np.float32)
    reference = whole(image, checked, spec)
    for tile in (5, 16, 22):
        plan = plan_tiles(height, width, spec, TileConfig(tile=tile))
        out = run_tiled(image, checked, plan, 2)
        np.testing.assert_allclose(out, reference, atol=1e-6)
    assert seen


def test_integer_output_matches_float_within_one_level(rng):
    spec = ModelSpec(scale=4, receptive_field=2)
    run = box_model(2, 4)
    image = rng.random((45, 70, 3), dtype=np.float32)
    reference = whole(image, run, spec)
    plan = plan_tiles(45, 70, spec, TileConfig(tile=20))
    for dtype in (np.uint8, np.uint16):
        out = run_tiled(image, run, plan, 4, out_dtype=dtype)
        top = np.iinfo(dtype).max
        assert out.dtype == dtype
        assert np.abs(out / top - reference).max() <= 0.5 / top + 1e-6  # rounded to nearest


def test_integer_input_is_read_as_value_over_max(rng):
    spec = ModelSpec(scale=2, receptive_field=1)
    run = box_model(1, 2)
    image8 = rng.integers(0, 256, (20, 25, 3), dtype=np.uint8)
    image16 = image8.astype(np.uint16) * 257
    as_float = image8.astype(np.float32) / 255
    plan = plan_tiles(20, 25, spec, TileConfig(tile=8))
    ref = run_tiled(as_float, run, plan, 2)
    np.testing.assert_allclose(run_tiled(image8, run, plan, 2, out_dtype=np.float32), ref, atol=1e-6)
    np.testing.assert_allclose(run_tiled(image16, run, plan, 2, out_dtype=np.float32), ref, atol=1e-6)


def test_fixed_size_models_get_exactly_their_shape(rng):
    spec = ModelSpec(scale=2, receptive_field=None, fixed_size=(24, 20))
    run = box_model(1, 2)
    shapes = set()

    def checked(x):
        shapes.add(x.shape[2:])
        return run(x)

    for h, w in [(1, 1), (10, 50), (24, 20), (61, 45)]:
        image = rng.random((h, w, 3), dtype=np.float32)
        out = run_tiled(image, checked, plan_tiles(h, w, spec, TileConfig(tile=0)), 2)
        assert out.shape == (2 * h, 2 * w, 3)
    assert shapes == {(24, 20)}


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(scale=4, receptive_field=19),
        ModelSpec(scale=2, size_multiple=4),
        ModelSpec(scale=4, receptive_field=3, size_multiple=8),
    ],
)
@pytest.mark.parametrize("tile", [0, 1, 33, 64, 128, 512])
@pytest.mark.parametrize("balance", [True, False])
def test_plan_tiles_are_equal_and_cover_the_image(spec, tile, balance):
    overlap = default_overlap(spec)
    for height, width in [(1, 1), (1, 300), (300, 1), (95, 97), (256, 257), (511, 1000)]:
        plan = plan_tiles(height, width, spec, TileConfig(tile=tile), balance=balance)
        for axis, size in ((plan.rows, height), (plan.cols, width)):
            assert axis.tile % spec.size_multiple == 0
            assert axis.padded >= size and axis.padded % spec.size_multiple == 0
            assert axis.starts[0] == 0 and axis.starts[-1] == axis.padded - axis.tile  # last tile ends at the border
            steps = np.diff(axis.starts)
            assert (steps > 0).all() and (steps <= axis.tile - overlap).all()  # neighbours overlap enough
            if tile == 0:
                assert axis.starts == (0,) and axis.tile == axis.padded
            elif axis.tile < axis.padded:
                assert axis.tile >= overlap + 1
                if not balance:
                    assert axis.tile <= max(tile, 2 * overlap) + spec.size_multiple - 1
        if tile and balance:  # balanced tiles may be longer on one side, never larger in area
            bound = -(-max(tile, 2 * overlap) // spec.size_multiple) * spec.size_multiple
            assert plan.rows.tile * plan.cols.tile <= bound * bound
        assert plan.count == len(list(plan.tiles()))


def _work(plan) -> int:
    return plan.count * plan.rows.tile * plan.cols.tile


def test_balanced_tiles_do_the_least_work_within_the_tile_area():
    spec = ModelSpec(scale=4, receptive_field=18)  # overlap 2 * 18 + RAMP
    exact = plan_tiles(3000, 4000, spec, TileConfig(tile=512), balance=False)
    balanced = plan_tiles(3000, 4000, spec, TileConfig(tile=512), balance=True)
    assert exact.tile_shape == (512, 512)
    assert balanced.rows.tile * balanced.cols.tile <= 512 * 512 and _work(balanced) < _work(exact)
    # the docstring's 1 MP photo: a 2x2 grid of oblong tiles, 8% redundant work (a 2x3 grid would do 12%)
    photo = plan_tiles(866, 1155, spec, TileConfig(tile=576))
    assert (len(photo.rows.starts), len(photo.cols.starts)) == (2, 2) and photo.tile_shape == (453, 598)
    assert _work(photo) / (866 * 1155) < 1.09


def test_default_tile_follows_the_photo_size():
    spec = ModelSpec(scale=4, receptive_field=19)
    auto = TileConfig()
    assert auto.tile_for(1_000_000) == 544 and auto.tile_for(12_000_000) == 384
    assert TileConfig(tile=200).tile_for(12_000_000) == 200 and TileConfig(tile=0).tile_for(10) == 0
    one_mp, twelve_mp = plan_tiles(866, 1155, spec, auto), plan_tiles(3000, 4000, spec, auto)
    assert one_mp.count == 4  # 2x2 oblong tiles: 9% redundant work
    assert twelve_mp.rows.tile * twelve_mp.cols.tile <= 384 * 384  # small tiles where the output is large


def test_default_overlap_comes_from_the_receptive_field():
    assert default_overlap(ModelSpec(scale=4, receptive_field=19)) == 2 * 19 + RAMP
    assert default_overlap(ModelSpec(scale=4, receptive_field=19, size_multiple=4)) == 44  # 42, rounded up
    assert default_overlap(ModelSpec(scale=4)) == UNKNOWN_RF_OVERLAP


@pytest.mark.parametrize("overlap", [None, 0, 5, 60])
@pytest.mark.parametrize("scale", [1, 4])
def test_blend_weights_sum_to_one_and_ignore_the_receptive_field_margin(overlap, scale):
    spec = ModelSpec(scale=scale, receptive_field=6)
    plan = plan_tiles(150, 333, spec, TileConfig(tile=64, overlap=overlap))
    for axis in (plan.rows, plan.cols):
        weights = axis.weights(scale)
        total = np.zeros(axis.padded * scale)
        for start, w in zip(axis.starts, weights, strict=True):
            assert w.shape == (axis.tile * scale,)
            assert (w >= 0).all()
            total[start * scale : start * scale + len(w)] += w
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
        if len(axis.starts) > 1:
            margin = axis.margin * scale
            assert margin > 0 or overlap == 0
            if overlap is None:
                assert axis.margin == spec.receptive_field  # exact: the whole field is ignored at interior edges
            # interior edges: zero weight within the margin; the image border keeps full weight
            assert (weights[1][:margin] == 0).all() and (weights[0][len(weights[0]) - margin :] == 0).all()
            assert weights[1][margin] > 0
            assert weights[0][0] == 1.0 and weights[-1][-1] == 1.0
    # the 2-D weights are outer products of these, so they sum to one too
    grid = np.zeros((plan.rows.padded * scale, plan.cols.padded * scale))
    for i, j, y, x in plan.tiles():
        w2 = np.outer(plan.rows.weights(scale)[i], plan.cols.weights(scale)[j])
        grid[y * scale : y * scale + w2.shape[0], x * scale : x * scale + w2.shape[1]] += w2
    np.testing.assert_allclose(grid, 1.0, atol=1e-5)


@pytest.mark.parametrize("size, padded", [(1, 1), (1, 5), (2, 7), (5, 5), (5, 8), (5, 9), (5, 13), (10, 16)])
def test_pad_indices_reflect_then_replicate(size, padded):
    idx = pad_indices(size, padded)
    assert len(idx) == padded and (idx[:size] == np.arange(size)).all()
    values = np.arange(size) * 10
    reach = min(padded - size, size - 1)
    # within reflection's reach it is numpy's "reflect"; beyond, the last reflected value repeats
    expected = np.pad(values, (0, reach), mode="reflect")
    expected = np.pad(expected, (0, padded - size - reach), mode="edge")
    assert (values[idx] == expected).all()


def get_padding(height: int, width: int, spec: ModelSpec) -> tuple[int, int]:
    """(bottom, right) padding the model needs for a whole (height, width) image; top and left are never padded."""
    fh, fw = spec.fixed_size or (None, None)
    return (
        padded_size(height, spec.size_multiple, fh) - height,
        padded_size(width, spec.size_multiple, fw) - width,
    )


def pad_image(image: np.ndarray, pad_bottom: int, pad_right: int) -> np.ndarray:
    """(H, W, ...) -> (H + pad_bottom, W + pad_right, ...) with `pad_indices` padding, as a whole image."""
    h, w = image.shape[:2]
    if not pad_bottom and not pad_right:
        return image
    return image[pad_indices(h, h + pad_bottom)][:, pad_indices(w, w + pad_right)]


@pytest.mark.parametrize(
    "height, width, spec, expected",
    [
        (37, 53, ModelSpec(scale=4), (0, 0)),
        (37, 53, ModelSpec(scale=4, size_multiple=4), (3, 3)),
        (32, 33, ModelSpec(scale=2, size_multiple=16), (0, 15)),
        (1, 1, ModelSpec(scale=2, size_multiple=8), (7, 7)),
        (10, 70, ModelSpec(scale=4, fixed_size=(64, 64)), (54, 0)),
    ],
)
def test_get_padding(height, width, spec, expected):
    assert get_padding(height, width, spec) == expected
    image = np.arange(height * width * 3, dtype=np.float32).reshape(height, width, 3)
    padded = pad_image(image, *expected)
    assert padded.shape == (height + expected[0], width + expected[1], 3)
    assert (padded[:height, :width] == image).all()


def test_wrong_model_output_shape_is_a_model_error(rng):
    spec = ModelSpec(scale=4, receptive_field=1)
    plan = plan_tiles(10, 10, spec, TileConfig(tile=0))
    with pytest.raises(ModelError, match="model returned"):
        run_tiled(rng.random((10, 10, 3), dtype=np.float32), lambda x: x.repeat(2, 2).repeat(2, 3), plan, 4)


def test_progress_reports_every_tile(rng):
    spec = ModelSpec(scale=2, receptive_field=1)
    plan = plan_tiles(50, 70, spec, TileConfig(tile=12))
    calls = []
    run_tiled(
        rng.random((50, 70, 3), dtype=np.float32),
        box_model(1, 2),
        plan,
        2,
        batch=2,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (plan.count, plan.count)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == -(-plan.count // 2)


def test_memory_stays_bounded_no_float_copy_of_the_output():
    # a float32 copy of the output would be 4x the uint8 output; the blend holds only overlap rows and one tile
    spec = ModelSpec(scale=4, receptive_field=2)
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    out = np.empty((1200, 1600, 3), np.uint8)
    plan = plan_tiles(300, 400, spec, TileConfig(tile=64))
    tracemalloc.start()
    try:
        run_tiled(image, lambda x: x.repeat(4, 2).repeat(4, 3), plan, 4, out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes  # far below the 23 MB a float output would take


def test_compact_preset_tiled_equals_whole(compact_exports, rng):
    from realsr_cli.config import UpscaleConfig
    from realsr_cli.inference.runtime import open_backend

    backend = open_backend(UpscaleConfig(model=str(compact_exports["onnx"]), backend="onnx", device="cpu"))
    spec = backend.spec
    assert spec.receptive_field == 19
    image = rng.random((120, 101, 3), dtype=np.float32)
    reference = run_tiled(image, backend.run, plan_tiles(120, 101, spec, TileConfig(tile=0)), 4, out_dtype=np.uint8)
    for tile in (16, 60, 100):
        plan = plan_tiles(120, 101, spec, TileConfig(tile=tile))
        assert plan.count > 1
        out = run_tiled(image, backend.run, plan, 4, out_dtype=np.uint8)
        assert np.abs(out.astype(int) - reference).max() <= 1
