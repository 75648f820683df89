"""`realsr eval` and its core `realsr_cli.quality.evaluate`: hand-made LR/HR folders with known scores, missing
partners, size mismatches, the JSON report, and a real exported model through the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from realsr_cli.cli import cli
from realsr_cli.errors import InputError
from realsr_cli.quality.datasets import bicubic_upscale, list_pairs
from realsr_cli.quality.evaluate import evaluate
from realsr_cli.quality.metrics import ssim


def _write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 with smooth colour structure plus mild noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([np.sin(x / 9) * np.cos(y / 13), np.cos((x + y) / 17), np.sin(x / 23 - y / 7)], axis=-1)
    return np.clip(np.round(128 + 60 * base + rng.normal(0, 6, (h, w, 3))), 0, 255).astype(np.uint8)


@pytest.fixture
def pairs_dir(tmp_path, rng) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """lr/ and hr/ with two pairs (48x48 LR -> 192x192 HR, 32x56 -> 128x224), HR = bicubic x4 of LR plus 3."""
    hrs = {}
    for name, (h, w) in {"a.png": (48, 48), "sub/b.png": (32, 56)}.items():
        lr = _photo(rng, h, w)
        hr = bicubic_upscale(lr).astype(np.int16) + 3
        assert hr.max() <= 255  # no clipping: every pixel is off by exactly 3 levels
        hr = hr.astype(np.uint8)
        _write(tmp_path / "lr" / name, lr)
        _write(tmp_path / "hr" / name, hr)
        hrs[name] = hr
    return tmp_path / "lr", tmp_path / "hr", hrs


def _perfect(hrs: dict[str, np.ndarray], lr_dir: Path):
    """An `upscale` that returns the HR partner of the LR it gets: a model scoring PSNR = inf, SSIM = 1."""
    by_lr = {np.asarray(Image.open(lr_dir / n).convert("RGB")).tobytes(): hr for n, hr in hrs.items()}
    return lambda lr: by_lr[np.ascontiguousarray(lr).tobytes()]


# --- core: realsr_cli.quality.evaluate -------------------------------------------------------------------------------


def test_evaluate_scores_model_and_bicubic_against_known_values(pairs_dir):
    lr_dir, hr_dir, hrs = pairs_dir
    # the "model" is bicubic itself, and each HR is bicubic + 3 levels: PSNR is known exactly
    report = evaluate(bicubic_upscale, lr_dir, hr_dir)
    assert [r.name for r in report.images] == ["a.png", "sub/b.png"]
    for r in report.images:
        assert r.model.psnr_rgb == pytest.approx(20 * math.log10(255 / 3), abs=1e-9)
        assert r.model.psnr_y == pytest.approx(20 * math.log10(255 / (3 * 219 / 255)), abs=1e-9)
        assert r.model.ssim_y == pytest.approx(ssim(hrs[r.name] - np.uint8(3), hrs[r.name]))
        assert r.model == r.bicubic
        assert r.hr is not None and r.hr.niqe is not None and r.model.niqe is not None
    mean = report.mean()
    assert mean["model"].psnr_y == pytest.approx(np.mean([r.model.psnr_y for r in report.images]))
    assert mean["hr"].niqe == pytest.approx(np.mean([r.hr.niqe for r in report.images]))


def test_evaluate_constant_offset_gives_the_exact_psnr(tmp_path, rng):
    lr = rng.integers(20, 200, (24, 24, 3), dtype=np.uint8)
    hr = rng.integers(20, 200, (96, 96, 3), dtype=np.uint8)
    _write(tmp_path / "lr" / "x.png", lr)
    _write(tmp_path / "hr" / "x.png", hr)
    report = evaluate(lambda _: hr + np.uint8(5), tmp_path / "lr", tmp_path / "hr", with_niqe=False)
    (r,) = report.images
    assert r.model.psnr_rgb == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)
    assert r.model.psnr_y == pytest.approx(20 * math.log10(255 / (5 * 219 / 255)), abs=1e-9)
    assert r.model.ssim_y == pytest.approx(ssim(hr + np.uint8(5), hr))
    assert r.model.niqe is None and r.hr.niqe is None  # with_niqe=False
    assert (r.model.bias_r, r.model.bias_g, r.model.bias_b) == pytest.approx((5.0, 5.0, 5.0))


def test_evaluate_reports_a_colour_cast_per_channel_and_the_grid(tmp_path, rng):
    lr = rng.integers(20, 200, (24, 24, 3), dtype=np.uint8)
    hr = np.full((96, 96, 3), 100, dtype=np.uint8)
    # red +4 levels, blue -2; and a 4-pixel checkerboard in every output pixel (0, 0) of each 4x4 block
    sr = hr.astype(np.int16) + np.array([4, 0, -2], dtype=np.int16)
    sr[::4, ::4] += 40
    sr = sr.astype(np.uint8)
    _write(tmp_path / "lr" / "x.png", lr)
    _write(tmp_path / "hr" / "x.png", hr)
    (r,) = evaluate(lambda _: sr, tmp_path / "lr", tmp_path / "hr", with_niqe=False).images
    # inside the 4-pixel border crop, 1 pixel in 16 carries +40
    assert r.model.bias_r == pytest.approx(4 + 40 / 16) and r.model.bias_b == pytest.approx(-2 + 40 / 16)
    assert r.model.grid > 1.0  # a periodic grid
    assert r.bicubic.grid < r.model.grid


def test_evaluate_perfect_model_reports_inf_and_json_null(pairs_dir):
    lr_dir, hr_dir, hrs = pairs_dir
    report = evaluate(_perfect(hrs, lr_dir), lr_dir, hr_dir, with_niqe=False)
    assert all(r.model.psnr_y == math.inf and r.model.ssim_y == pytest.approx(1.0) for r in report.images)
    data = report.to_dict()
    assert data["images"][0]["model"]["psnr_y"] is None  # JSON has no infinity
    assert json.loads(json.dumps(data)) == data


def test_evaluate_without_hr_gives_niqe_alone(pairs_dir):
    lr_dir, _, _ = pairs_dir
    report = evaluate(bicubic_upscale, lr_dir)
    assert not report.has_reference
    for r in report.images:
        assert r.model.psnr_y is None and r.model.ssim_y is None and r.hr is None
        assert r.model.niqe is not None and r.model.niqe == r.bicubic.niqe
    assert "hr" not in report.mean()


def test_evaluate_niqe_is_none_for_images_too_small(tmp_path, rng):
    _write(tmp_path / "lr" / "tiny.png", _photo(rng, 16, 16))  # 64x64 output: under two 96x96 NIQE blocks
    (r,) = evaluate(bicubic_upscale, tmp_path / "lr").images
    assert r.model.niqe is None and r.bicubic.niqe is None


@pytest.mark.parametrize("side", ["lr", "hr"])
def test_missing_partner_is_an_input_error_naming_the_file(pairs_dir, side):
    lr_dir, hr_dir, _ = pairs_dir
    extra = _write((lr_dir if side == "lr" else hr_dir) / "lonely.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match=str(extra)):
        list_pairs(lr_dir, hr_dir)


def test_model_output_of_the_wrong_size_is_an_input_error(pairs_dir):
    lr_dir, hr_dir, _ = pairs_dir
    with pytest.raises(InputError, match=r"a\.png: the model's output is 96x96 but its HR is 192x192"):
        evaluate(lambda lr: bicubic_upscale(lr, 2), lr_dir, hr_dir)


def test_empty_or_missing_folders_are_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        list_pairs(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        list_pairs(tmp_path / "nope")


# --- CLI: realsr eval ----------------------------------------------------------------------------------------


class _FakeUpscaler:
    """Stands in for `realsr_cli.inference.upscaler.Upscaler`: bicubic x4, so the model's scores equal bicubic's."""

    native_scale = 4

    def __init__(self, path: Path) -> None:
        self.model_path = path

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def upscale(self, lr: np.ndarray) -> np.ndarray:
        return bicubic_upscale(lr, 4)


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> Path:
    import realsr_cli.cli.eval as eval_cli

    monkeypatch.setattr(eval_cli, "_open_upscaler", lambda path, **options: _FakeUpscaler(path))
    path = tmp_path / "fake.onnx"
    path.write_bytes(b"not read: the upscaler is faked")
    return path


def _run(*args: str):
    return CliRunner().invoke(cli, ["eval", *args], catch_exceptions=False)


def test_cli_json_has_every_field_and_the_known_psnr(pairs_dir, fake_model):
    lr_dir, hr_dir, _ = pairs_dir
    result = _run("--model", str(fake_model), "--lr", str(lr_dir), "--hr", str(hr_dir), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["count"] == 2 and data["has_reference"] is True and data["border"] == 4
    assert data["hr"] == str(hr_dir) and data["model"] == str(fake_model)
    assert [img["name"] for img in data["images"]] == ["a.png", "sub/b.png"]
    for img in data["images"]:
        assert set(img) == {"name", "model", "bicubic", "hr"}
        assert (
            set(img["model"])
            == set(img["bicubic"])
            == {"psnr_y", "ssim_y", "psnr_rgb", "niqe", "grid", "bias_r", "bias_g", "bias_b"}
        )
        assert img["model"]["bias_r"] == pytest.approx(-3.0)  # the fake model is bicubic, each HR bicubic + 3
        assert img["model"]["psnr_rgb"] == pytest.approx(20 * math.log10(255 / 3), abs=1e-9)
        assert img["hr"]["niqe"] > 0
    assert set(data["mean"]) == {"model", "bicubic", "hr"}
    assert data["mean"]["model"]["psnr_y"] == pytest.approx(20 * math.log10(255 / (3 * 219 / 255)), abs=1e-9)


def test_cli_without_hr_reports_niqe_alone(pairs_dir, fake_model):
    lr_dir, _, _ = pairs_dir
    result = _run("--model", str(fake_model), "--lr", str(lr_dir), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["has_reference"] is False and data["hr"] is None
    assert set(data["mean"]) == {"model", "bicubic"}
    for img in data["images"]:
        assert "hr" not in img
        assert img["model"]["psnr_y"] is None and img["model"]["niqe"] > 0


def test_cli_table_goes_to_stderr(pairs_dir, fake_model, monkeypatch):
    from realsr_cli.cli._console import console

    monkeypatch.setattr(console, "width", 160)  # the whole table on one line per image
    lr_dir, hr_dir, _ = pairs_dir
    result = _run("--model", str(fake_model), "--lr", str(lr_dir), "--hr", str(hr_dir), "--no-niqe")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "sub/b.png" in result.stderr and "mean (2)" in result.stderr
    assert f"{20 * math.log10(255 / 3):.2f}" in result.stderr  # 38.59, the PSNR-RGB of a 3-level offset
    assert "NIQE" not in result.stderr  # --no-niqe drops its columns


def test_cli_missing_partner_exits_3_naming_the_file(pairs_dir, fake_model):
    lr_dir, hr_dir, _ = pairs_dir
    (hr_dir / "sub" / "b.png").unlink()
    result = _run("--model", str(fake_model), "--lr", str(lr_dir), "--hr", str(hr_dir), "--json")
    assert result.exit_code == 3
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert f"{lr_dir / 'sub' / 'b.png'} has no partner of the same name in {hr_dir}" in message
    assert result.stdout == ""


def test_cli_refuses_to_score_nothing(pairs_dir, fake_model):
    lr_dir, _, _ = pairs_dir
    result = _run("--model", str(fake_model), "--lr", str(lr_dir), "--no-niqe")
    assert result.exit_code == 2
    assert "nothing to score" in result.stderr


def test_cli_help_documents_the_options():
    result = CliRunner().invoke(cli, ["eval", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--model", "--lr", "--hr", "--json", "--no-niqe"):
        assert option in result.output


@pytest.mark.skipif(
    importlib.util.find_spec("realsr_cli.inference.upscaler") is None, reason="needs realsr_cli.inference.upscaler"
)
def test_cli_with_a_real_exported_model(tmp_path, rng, tiny_exports):
    """The tiny random-weight model through the real upscaler: sizes check out and scores are sane numbers."""
    lr = _photo(rng, 24, 40)
    _write(tmp_path / "lr" / "p.png", lr)
    _write(tmp_path / "hr" / "p.png", bicubic_upscale(lr))
    model = str(tiny_exports["onnx"])
    result = _run("--model", model, "--lr", str(tmp_path / "lr"), "--hr", str(tmp_path / "hr"), "--json")
    assert result.exit_code == 0, result.output
    (img,) = json.loads(result.stdout)["images"]
    assert img["bicubic"]["psnr_y"] is None  # bicubic is the HR here: a perfect match, inf -> null
    assert 0 < img["model"]["ssim_y"] < 1 and img["model"]["psnr_y"] > 0
