"""Synthetic degradations of x_s (training) and the degraded validation set (`realsr degrade`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from realsr_cli.cli import cli
from realsr_cli.config import DegradationConfig, TrainConfig
from realsr_cli.errors import ConfigError
from realsr_cli.quality.datasets import bicubic_downscale
from realsr_cli.quality.degrade import degrade, degrade_for_validation, make_degraded_pairs
from realsr_cli.training.data import TrainingData


def photo(rng, h: int, w: int, period: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / period
    base = np.stack([np.sin(x / 5 + y / 9), np.cos(y / 6), np.sin((x - y) / 7)], axis=-1) * 90 + 128
    return np.clip(base, 0, 255).astype(np.uint8)


def test_clean_crops_are_exactly_bicubic(rng):
    hr = photo(rng, 64, 64)
    lr = degrade(hr, 4, DegradationConfig(enabled=True, clean=1.0), np.random.default_rng(0))
    np.testing.assert_array_equal(lr, bicubic_downscale(hr, 4))


def test_noise_alone_moves_the_lr_by_its_sigma_and_mild_jpeg_barely(rng):
    hr = photo(rng, 96, 96, period=8)  # smooth at LR scale, so resampling and 4:2:0 chroma change it little
    bicubic = bicubic_downscale(hr, 4)
    noisy_cfg = DegradationConfig(enabled=True, clean=0, blur=0, jpeg=0, second_order=0, noise=1, noise_sigma=(20, 20))
    noisy = degrade(hr, 4, noisy_cfg, np.random.default_rng(1))
    assert noisy.shape == (24, 24, 3) and noisy.dtype == np.uint8
    # sigma 20 at the first resize (1x-2x the LR size), partly averaged away by the final downscale
    assert 6 < (noisy.astype(float) - bicubic).std() < 25
    jpeg_cfg = DegradationConfig(enabled=True, clean=0, blur=0, noise=0, second_order=0, jpeg=1, jpeg_quality=(95, 95))
    jpeg = degrade(hr, 4, jpeg_cfg, np.random.default_rng(1))
    assert np.abs(jpeg.astype(int) - bicubic.astype(int)).mean() < 4


def test_degrade_is_a_pure_function_of_the_generator(rng):
    hr = photo(rng, 64, 64)
    cfg = DegradationConfig(enabled=True)
    a = [degrade(hr, 4, cfg, g) for g in [np.random.default_rng(5)] * 6]
    b = [degrade(hr, 4, cfg, g) for g in [np.random.default_rng(5)] * 6]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(a[0], x) for x in a[1:])  # successive crops draw differently


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("noise", 1.5, "probability"), ("noise_sigma", (5.0, 2.0), "range"), ("jpeg_quality", (0, 90), "within")],
)
def test_bad_degradation_settings_are_config_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        DegradationConfig(**{key: value})


def test_degradation_loads_from_a_run_config():
    cfg = TrainConfig.from_dict({"source_hr": "s", "out": "o", "degradation": {"enabled": True, "noise_sigma": [1, 9]}})
    assert cfg.degradation.enabled and cfg.degradation.noise_sigma == (1.0, 9.0)
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"source_hr": "s", "out": "o", "degradation": {"sharpness": 1}})


def test_training_batches_degrade_x_s_but_keep_every_crop_position(rng):
    images = [photo(rng, 80, 96), photo(rng, 64, 64)]
    plain = TrainingData(images, None, lr_patch=8, batch_size=6, seed=3)
    degraded = TrainingData(
        images, None, lr_patch=8, batch_size=6, seed=3, degradation=DegradationConfig(enabled=True, clean=0)
    )
    a, b = plain.batch(7), degraded.batch(7)
    np.testing.assert_array_equal(a.source_hr, b.source_hr)
    assert not np.array_equal(a.source_lr, b.source_lr)
    np.testing.assert_array_equal(b.source_lr, degraded.batch(7).source_lr)  # resumable: a pure function of the step


def test_validation_recipe_draws_noise_and_quality_in_range(rng):
    hr = photo(rng, 64, 64)
    lr, draws = degrade_for_validation(hr, 4, np.random.default_rng(0))
    assert lr.shape == (16, 16, 3) and lr.dtype == np.uint8
    assert 2 <= draws["noise_sigma"] <= 15 and 30 <= draws["jpeg_quality"] <= 90
    assert isinstance(draws["gray_noise"], bool)


def test_degraded_pairs_are_reproducible_and_pair_by_name(tmp_path, rng):
    src = tmp_path / "hr_in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(photo(rng, 66, 70)).save(src / "a.png")
    Image.fromarray(photo(rng, 40, 48)).save(src / "sub" / "b.jpg", quality=95)
    records = make_degraded_pairs(src, tmp_path / "one", seed=4)
    make_degraded_pairs(src, tmp_path / "two", seed=4)
    assert [r["name"] for r in records] == ["a.png", "sub/b.png"]
    for name in ("a.png", "sub/b.png"):
        lr = np.asarray(Image.open(tmp_path / "one" / "lr" / name))
        hr = np.asarray(Image.open(tmp_path / "one" / "hr" / name))
        assert hr.shape[0] == lr.shape[0] * 4 and hr.shape[1] == lr.shape[1] * 4  # cropped to the scale grid
        assert (tmp_path / "one" / "lr" / name).read_bytes() == (tmp_path / "two" / "lr" / name).read_bytes()
    recipe = json.loads((tmp_path / "one" / "recipe.json").read_text())
    assert recipe["seed"] == 4 and recipe["images"] == records


def test_degrade_command_writes_pairs_realsr_eval_reads(tmp_path, rng):
    Image.fromarray(photo(rng, 64, 64)).save(tmp_path / "x.png")
    result = CliRunner().invoke(cli, ["degrade", str(tmp_path), "-o", str(tmp_path / "out"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "lr" / "x.png").is_file() and (tmp_path / "out" / "hr" / "x.png").is_file()
    missing = CliRunner().invoke(cli, ["degrade", str(tmp_path / "nope"), "-o", str(tmp_path / "o2")])
    assert missing.exit_code == 2 and not (tmp_path / "o2").exists()
