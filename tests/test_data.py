"""Training data: folders, image modes, bicubic pairs, deterministic crops, dataset errors, validation pairs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from realsr_cli.errors import InputError
from realsr_cli.quality.datasets import bicubic_downscale, list_images, load_val_pairs, read_rgb8
from realsr_cli.training.data import TrainingData, dihedral


def smooth_image(rng, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 3 + y / 7), np.cos(y / 4), np.sin((x - y) / 5)], axis=-1) * 100 + 128
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def save(path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_list_images_recurses_sorts_and_skips_other_files(tmp_path, rng):
    save(tmp_path / "b" / "z.png", smooth_image(rng, 4, 4))
    save(tmp_path / "a.jpg", smooth_image(rng, 4, 4))
    (tmp_path / "notes.md").write_text("not an image")
    save(tmp_path / ".hidden.png", smooth_image(rng, 4, 4))
    assert list(list_images(tmp_path, "source HR")) == ["a.jpg", "b/z.png"]


def test_empty_and_missing_folders_are_input_errors_naming_them(tmp_path):
    with pytest.raises(InputError, match=f"source HR folder {tmp_path} holds no images"):
        list_images(tmp_path, "source HR")
    with pytest.raises(InputError, match="does not exist"):
        list_images(tmp_path / "nope", "target LR")


def test_unreadable_file_is_an_input_error_naming_it(tmp_path, rng):
    save(tmp_path / "good.png", smooth_image(rng, 40, 40))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="broken.png"):
        TrainingData.from_folders(tmp_path, None, lr_patch=8, batch_size=1)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "I;16", "LA"])
def test_any_mode_reads_as_rgb8(tmp_path, mode):
    rgb = np.full((5, 7, 3), 128, np.uint8)
    if mode == "I;16":
        img = Image.fromarray(np.full((5, 7), 32896, np.uint16))  # 32896 / 65535 * 255 = 128.0
    elif mode == "P":
        img = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        img = Image.fromarray(rgb).convert(mode)
    img.save(tmp_path / "x.png")
    out = read_rgb8(tmp_path / "x.png")
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_transparency_is_composited_onto_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 0, 255)  # opaque
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[1, :] = (0, 0, 0, 51)  # 20 % black over white -> 204
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_rgb8(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], (200, 100, 0))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    np.testing.assert_array_equal(out[1, 0], (204, 204, 204))


def test_images_smaller_than_a_crop_are_skipped_with_a_warning(tmp_path, rng):
    save(tmp_path / "big.png", smooth_image(rng, 40, 44))
    save(tmp_path / "thumb.png", smooth_image(rng, 30, 60))  # 30 < 4 * 8
    warnings = []
    data = TrainingData.from_folders(tmp_path, None, lr_patch=8, batch_size=2, warn=warnings.append)
    assert len(data.source_hr) == 1
    assert len(warnings) == 1 and "thumb.png" in warnings[0] and "32x32" in warnings[0]


def test_no_image_large_enough_is_an_input_error(tmp_path, rng):
    save(tmp_path / "src" / "a.png", smooth_image(rng, 40, 40))
    save(tmp_path / "tgt" / "t.png", smooth_image(rng, 6, 20))
    with pytest.raises(InputError, match=r"target LR folder .*tgt: no image is at least 8x8"):
        TrainingData.from_folders(tmp_path / "src", tmp_path / "tgt", lr_patch=8, batch_size=2, warn=lambda m: None)


def test_dihedral_gives_eight_distinct_transforms(rng):
    img = rng.integers(0, 255, (3, 3, 1))
    outs = {dihedral(img, k).tobytes() for k in range(8)}
    assert len(outs) == 8


def test_bicubic_downscale_is_pils_bicubic_of_the_modcropped_image(rng):
    hr = smooth_image(rng, 42, 37)
    lr = bicubic_downscale(hr, 4)
    expected = np.asarray(Image.fromarray(hr[:40, :36]).resize((9, 10), Image.BICUBIC))
    np.testing.assert_array_equal(lr, expected)


def test_crops_pair_each_hr_crop_with_its_bicubic_lr(rng):
    hr = smooth_image(rng, 40, 40)
    data = TrainingData([hr], None, lr_patch=10, batch_size=16, seed=3)  # the crop covers the whole image
    batch = data.batch(0)
    full_lr = bicubic_downscale(hr, 4)
    assert batch.source_hr.shape == (16, 3, 40, 40) and batch.source_lr.shape == (16, 3, 10, 10)
    assert batch.target_lr is None
    for lr_crop, hr_crop in zip(batch.source_lr, batch.source_hr, strict=True):
        k = next(k for k in range(8) if np.array_equal(hr_crop.transpose(1, 2, 0), dihedral(hr, k)))
        np.testing.assert_array_equal(lr_crop.transpose(1, 2, 0), dihedral(full_lr, k))  # same transform on both


def test_batches_are_a_pure_function_of_seed_and_step(rng):
    src = [smooth_image(rng, 64, 72), smooth_image(rng, 48, 40)]
    tgt = [smooth_image(rng, 20, 24)]
    a = TrainingData(src, tgt, lr_patch=8, batch_size=3, seed=1)
    b = TrainingData(src, tgt, lr_patch=8, batch_size=3, seed=1)
    for field in ("source_lr", "source_hr", "target_lr"):
        np.testing.assert_array_equal(getattr(a.batch(5), field), getattr(b.batch(5), field))
    assert not np.array_equal(a.batch(5).source_hr, a.batch(6).source_hr)
    other_seed = TrainingData(src, tgt, lr_patch=8, batch_size=3, seed=2)
    assert not np.array_equal(a.batch(5).source_hr, other_seed.batch(5).source_hr)
    # the target stream is separate: a baseline (no target data) sees exactly the same source crops
    no_target = TrainingData(src, None, lr_patch=8, batch_size=3, seed=1)
    np.testing.assert_array_equal(a.batch(5).source_hr, no_target.batch(5).source_hr)


def test_val_pairs_match_by_name_and_modcrop_the_hr(tmp_path, rng):
    save(tmp_path / "lr" / "a.png", smooth_image(rng, 8, 10))
    save(tmp_path / "hr" / "a.png", smooth_image(rng, 34, 41))
    ((name, lr, hr),) = load_val_pairs(tmp_path / "lr", tmp_path / "hr")
    assert name == "a.png" and lr.shape == (8, 10, 3) and hr.shape == (32, 40, 3)


def test_val_pair_errors_name_the_file(tmp_path, rng):
    save(tmp_path / "lr" / "a.png", smooth_image(rng, 8, 10))
    save(tmp_path / "lr" / "b.png", smooth_image(rng, 8, 10))
    save(tmp_path / "hr" / "a.png", smooth_image(rng, 30, 40))
    with pytest.raises(InputError, match=r"b\.png has no partner"):
        load_val_pairs(tmp_path / "lr", tmp_path / "hr")
    (tmp_path / "lr" / "b.png").unlink()
    with pytest.raises(InputError, match=r"a\.png is 40x30, smaller than 4 x its LR"):
        load_val_pairs(tmp_path / "lr", tmp_path / "hr")
