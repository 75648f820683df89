"""Side-by-side comparison crops: window choice, crop exactness, layout, and the `realsr compare` command."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from realsr_cli.cli import cli
from realsr_cli.config import CompareConfig
from realsr_cli.errors import InputError
from realsr_cli.quality.compare import GAP, LABEL_HEIGHT, compare, detail_window
from realsr_cli.quality.datasets import bicubic_upscale


def test_detail_window_finds_the_textured_patch(rng):
    image = np.full((120, 160, 3), 128, np.uint8)
    image[64:96, 96:128] = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert detail_window(image, 32, 4) == (64, 96)


@pytest.fixture
def pairs(tmp_path, rng):
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    lr_dir.mkdir(), hr_dir.mkdir()
    for name in ("a.png", "b.png"):
        hr = rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)
        Image.fromarray(hr).save(hr_dir / name)
        Image.fromarray(hr).resize((50, 40), Image.BICUBIC).save(lr_dir / name)
    return lr_dir, hr_dir


def test_grid_columns_hold_bicubic_models_and_hr(pairs):
    lr_dir, hr_dir = pairs
    cfg = CompareConfig(crop=16, zoom=1, count=2)
    # a "model" that is bicubic itself: upscaled crop by crop with context, it must equal the bicubic column
    grid = compare(lr_dir, hr_dir, [("same", bicubic_upscale)], cfg)
    cell = 16 * 4
    assert grid.shape == (LABEL_HEIGHT + 2 * cell + 3 * GAP, 3 * cell + 4 * GAP, 3)
    top = LABEL_HEIGHT + GAP
    bicubic_cell = grid[top : top + cell, GAP : GAP + cell]
    model_cell = grid[top : top + cell, 2 * GAP + cell : 2 * GAP + 2 * cell]
    np.testing.assert_array_equal(model_cell, bicubic_cell)
    hr = np.asarray(Image.open(hr_dir / "a.png"))
    hr_cell = grid[top : top + cell, 3 * GAP + 2 * cell : 3 * GAP + 3 * cell]
    y, x = detail_window(hr, cell, 4)
    np.testing.assert_array_equal(hr_cell, hr[y : y + cell, x : x + cell])


def test_named_images_and_errors(pairs):
    lr_dir, hr_dir = pairs
    grid = compare(lr_dir, None, [], CompareConfig(crop=8, zoom=2), names=["b.png"])
    assert grid.shape == (LABEL_HEIGHT + 64 + 2 * GAP, 64 + 2 * GAP, 3)
    with pytest.raises(InputError, match="no image named c.png"):
        compare(lr_dir, hr_dir, [], CompareConfig(crop=8), names=["c.png"])
    with pytest.raises(InputError, match="smaller than a 64-pixel crop"):
        compare(lr_dir, hr_dir, [], CompareConfig(crop=64))


def test_compare_command_writes_a_png(pairs, tmp_path, tiny_exports):
    lr_dir, hr_dir = pairs
    out = tmp_path / "cmp.png"
    result = CliRunner().invoke(
        cli,
        [
            "compare",
            "--lr",
            str(lr_dir),
            "--hr",
            str(hr_dir),
            "--model",
            str(tiny_exports["onnx"]),
            "--label",
            "tiny",
            "-o",
            str(out),
            "--crop",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.size == (3 * 16 * 4 * 2 + 4 * GAP, LABEL_HEIGHT + 2 * 16 * 4 * 2 + 3 * GAP)
    result = CliRunner().invoke(
        cli,
        [
            "compare",
            "--lr",
            str(lr_dir),
            "--model",
            str(tiny_exports["onnx"]),
            "--label",
            "a",
            "--label",
            "b",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 2
    assert "--label was given 2 times for 1 --model" in result.output
