"""PSNR/SSIM (Y and RGB) and NIQE: hand-made pairs with known values, MATLAB imresize, and the reference figures
of ../shared/data (skipped without it)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from PIL import Image

from realsr_cli.errors import InputError
from realsr_cli.quality import metrics
from realsr_cli.quality.metrics import psnr, rgb_to_y, ssim
from realsr_cli.quality.niqe import imresize, niqe, niqe_luma, pristine_model


def _textured(rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """(size, size, 3) uint8 gray noise with a power-law spectrum (amplitude ~ 1/f^1.5): natural-image-like texture."""
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    radius = np.hypot(fy, fx)
    radius[0, 0] = 1
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / radius**1.5
    img = np.real(np.fft.ifft2(spectrum))
    img = np.clip(np.round(128 + 40 * (img - img.mean()) / img.std()), 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


# --- PSNR / SSIM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 17])
def test_psnr_of_a_constant_offset_is_exact(rng, k):
    hr = rng.integers(20, 200, (40, 48, 3), dtype=np.uint8)
    sr = hr + np.uint8(k)
    assert psnr(sr, hr, y_channel=False) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)
    # on Y the offset shrinks by (65.481 + 128.553 + 24.966) / 255 = 219 / 255
    assert psnr(sr, hr) == pytest.approx(20 * math.log10(255 / (k * 219 / 255)), abs=1e-9)


def test_psnr_crops_the_border_before_comparing(rng):
    hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:4] = 0  # damage confined to the 4-pixel border
    sr[:, -4:] = 255
    assert psnr(sr, hr) == math.inf
    assert psnr(sr, hr, border=0) < 20


def test_psnr_accepts_float_images_on_the_255_scale(rng):
    hr = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(np.int16) + rng.integers(-3, 4, hr.shape), 0, 255).astype(np.uint8)
    assert psnr(sr.astype(np.float32), hr.astype(np.float64)) == psnr(sr, hr)


def test_rgb_to_y_matches_matlab_rgb2ycbcr():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(rgb), [[16.0, 235.0, 81.481, 144.553, 40.966]], atol=1e-9)


def test_ssim_is_one_for_identical_images_and_drops_with_noise(rng):
    hr = _textured(rng, 64)
    hr[..., 0] //= 2  # some colour, so the RGB path sees three different channels
    assert ssim(hr, hr) == pytest.approx(1.0, abs=1e-12)
    assert ssim(hr, hr, y_channel=False) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(hr + rng.normal(0, 10, hr.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(hr + rng.normal(0, 30, hr.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim(noisier, hr) < ssim(noisy, hr) < 1


def test_ssim_of_a_constant_offset_on_flat_images_is_the_luminance_term():
    # flat images: sigma terms vanish, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) exactly
    a = np.full((30, 30, 3), 100, np.uint8)
    b = np.full((30, 30, 3), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)
    assert ssim(a, b, y_channel=False) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "message"),
    [
        ((16, 16, 3), (16, 17, 3), "differ in shape"),
        ((16, 16), (16, 16), "HxWx3"),
        ((8, 8, 3), (8, 8, 3), "too small"),
    ],
)
def test_psnr_rejects_bad_shapes(a_shape, b_shape, message):
    with pytest.raises(InputError, match=message):
        psnr(np.zeros(a_shape, np.uint8), np.zeros(b_shape, np.uint8))


def test_ssim_rejects_images_smaller_than_its_window():
    with pytest.raises(InputError, match="11x11"):
        ssim(np.zeros((18, 18, 3), np.uint8), np.zeros((18, 18, 3), np.uint8))


def test_bicubic_reference_figures_on_val_realsr():
    """README of ../shared/data: PIL bicubic x4 of val/realsr/lr against hr, mean over the 30 pairs."""
    root = shared_data("val", "realsr")
    names = sorted(p.name for p in (root / "lr").iterdir())
    assert len(names) == 30
    scores = []
    for name in names:
        lr = Image.open(root / "lr" / name).convert("RGB")
        hr = np.asarray(Image.open(root / "hr" / name).convert("RGB"))
        sr = np.asarray(lr.resize((lr.width * 4, lr.height * 4), Image.BICUBIC))
        scores.append((psnr(sr, hr), ssim(sr, hr), psnr(sr, hr, y_channel=False)))
    psnr_y, ssim_y, psnr_rgb = np.mean(scores, axis=0)
    assert psnr_y == pytest.approx(27.31, abs=0.005)  # measured 27.3058
    assert ssim_y == pytest.approx(0.766, abs=0.0005)  # measured 0.76642
    assert psnr_rgb == pytest.approx(25.59, abs=0.01)  # measured 25.5955


# --- MATLAB imresize -----------------------------------------------------------------------------------------


def test_imresize_matches_matlab_bicubic():
    # MATLAB: imresize(reshape(0:15, 4, 4)', [3 3]) (antialiased bicubic), as quoted by pyiqa's resize.py; its
    # 6.1505 is a typo there: the result is 4 r_i + r_j with r = imresize(0:3) = [0.1501, 1.5, 2.8499]
    expected = [[0.7506, 2.1004, 3.4503], [6.1501, 7.5000, 8.8499], [11.5497, 12.8996, 14.2494]]
    np.testing.assert_allclose(imresize(np.arange(16.0).reshape(4, 4), 0.75), expected, atol=1e-4)


def test_imresize_halves_keep_constants_and_size(rng):
    img = rng.uniform(0, 1, (96, 50))
    assert imresize(img, 0.5).shape == (48, 25)
    np.testing.assert_allclose(imresize(np.full((20, 30), 0.3), 0.5), 0.3, atol=1e-12)
    # linear in the input, and a mean-preserving low-pass
    assert imresize(img, 0.5).mean() == pytest.approx(img.mean(), abs=0.01)


# --- NIQE -----------------------------------------------------------------------------------------------------


def test_pristine_model_is_bundled_with_its_notice():
    from importlib import resources

    mu, cov = pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    np.testing.assert_allclose(cov, cov.T)
    notice = (resources.files("realsr_cli") / "assets" / "NOTICE.md").read_text()
    assert "Copyright (c) 2011 The University of Texas at Austin" in notice
    assert "Laboratory for Image and Video Engineering" in notice


def test_niqe_luma_is_rounded_bt601_luma():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    # 0.299*255 = 76.245, 0.587*255 = 149.685, 0.114*255 = 29.07, 0.299*10 + 0.587*20 + 0.114*30 = 18.15
    np.testing.assert_array_equal(niqe_luma(rgb), [[76, 150, 29, 18]])
    np.testing.assert_array_equal(niqe_luma(np.array([[1.4, 2.6]])), [[1, 3]])


def test_niqe_is_deterministic_and_prefers_texture_to_blur(rng):
    textured = _textured(rng)
    blurred = np.asarray(
        Image.fromarray(textured).resize((48, 48), Image.BICUBIC).resize((192, 192), Image.BICUBIC)
    )  # x4 bicubic down and up: the texture washed out
    score = niqe(textured)
    assert score == pytest.approx(5.2482053, abs=1e-5)  # locks the implementation against silent drift
    assert niqe(textured) == score
    assert niqe(blurred) > score + 1  # lower is more natural: blur reads as less natural


def test_niqe_of_rgb_equals_niqe_of_its_luma(rng):
    img = _textured(rng)
    assert niqe(img) == pytest.approx(niqe(niqe_luma(img)), abs=1e-12)


def test_niqe_crops_to_whole_blocks(rng):
    img = _textured(rng, 200)  # 200 = 2 * 96 + 8: the last 8 rows and columns are ignored
    assert niqe(img) == niqe(img[:192, :192])


def test_niqe_of_a_flat_image_is_nan():
    assert math.isnan(niqe(np.full((192, 192, 3), 128, np.uint8)))


@pytest.mark.parametrize("shape", [(96, 96, 3), (95, 300, 3), (192, 192, 4), (192,)])
def test_niqe_rejects_small_or_misshapen_images(shape):
    with pytest.raises(InputError):
        niqe(np.zeros(shape, np.uint8))


def test_niqe_reference_figures_on_val_realsr():
    """Issue 3: mean NIQE 5.908 on val/realsr/hr and 9.273 on PIL bicubic x4 of val/realsr/lr."""
    root = shared_data("val", "realsr")
    names = sorted(p.name for p in (root / "lr").iterdir())
    hr_scores, bicubic_scores = [], []
    for name in names:
        lr = Image.open(root / "lr" / name).convert("RGB")
        hr_scores.append(niqe(np.asarray(Image.open(root / "hr" / name).convert("RGB"))))
        bicubic_scores.append(niqe(np.asarray(lr.resize((lr.width * 4, lr.height * 4), Image.BICUBIC))))
    assert np.mean(hr_scores) == pytest.approx(5.908, abs=0.005)  # measured 5.90816
    assert np.mean(bicubic_scores) == pytest.approx(9.273, abs=0.005)  # measured 9.27286


def test_grid_score_equals_the_shared_tool(tmp_path):
    tool = Path(__file__).resolve().parents[2] / "shared" / "tools" / "gridscore.py"
    if not tool.is_file():
        pytest.skip(f"the shared grid-score tool is not at {tool} (a fresh clone has no shared/ folder)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("gridscore", tool)
    gridscore = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gridscore)
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    img[::4, 1::4] = 255  # a sub-pixel pattern to measure
    Image.fromarray(img).save(tmp_path / "x.png")
    assert metrics.grid_score(img) == pytest.approx(gridscore.grid_score(tmp_path / "x.png"), abs=1e-12)
