"""End-to-end: the installed `realsr` console script in a real subprocess, on real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from PIL import Image

REALSR = Path(sys.executable).with_name("realsr")

pytestmark = pytest.mark.skipif(not REALSR.exists(), reason=f"console script not installed at {REALSR}")


def realsr(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(REALSR), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def files_under(folder: Path) -> list[str]:
    """Every file below `folder`, hidden temporaries included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def photo(tmp_path, odd_image) -> Path:
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    Image.fromarray((odd_image * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    "command", [[], ["upscale"], ["export"], ["train"], ["eval"], ["compare"], ["bench"], ["degrade"]]
)
def test_help_of_every_command(command):
    result = realsr(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: realsr" in result.stdout
    assert "Examples:" in result.stdout and "realsr " in result.stdout.split("Examples:")[1]


def test_export_then_upscale_with_both_backends(tmp_path, tiny_ranged_checkpoint, photo):
    exported = realsr("export", tiny_ranged_checkpoint, "-o", tmp_path / "models", "--name", "net")
    assert exported.returncode == 0, exported.stderr
    outputs = {}
    for backend, model in (("onnx", "net.onnx"), ("torchscript", "net.ts")):
        out = tmp_path / backend
        result = realsr(
            "upscale",
            photo,
            "--model",
            tmp_path / "models" / model,
            "--backend",
            backend,
            "--precision",
            "fp32",
            "-o",
            out,
            "--json",
        )
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout.strip())
        assert record["status"] == "ok" and record["output_size"] == [53 * 4, 37 * 4]
        assert files_under(out) == ["photo_x4.png"]
        outputs[backend] = np.asarray(Image.open(out / "photo_x4.png"), dtype=np.int16)
    assert outputs["onnx"].shape == (37 * 4, 53 * 4, 3)
    assert outputs["onnx"].std() > 10, "the model's output should not be flat"
    assert np.abs(outputs["onnx"] - outputs["torchscript"]).max() <= 1


def test_scale_below_native_and_above(tmp_path, tiny_exports, photo):
    result = realsr("upscale", photo, "--model", tiny_exports["onnx"], "-s", "2", "-o", tmp_path / "o", "-q")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "o" / "photo_x2.png").size == (106, 74)
    result = realsr("upscale", photo, "--model", tiny_exports["onnx"], "-s", "5", "-o", tmp_path / "o5")
    assert result.returncode == 2
    assert "above the model's native x4" in result.stderr
    assert not (tmp_path / "o5").exists()


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    zero = folder / "zero.png"
    zero.write_bytes(b"")
    text = folder / "text.png"
    text.write_text("this is not a picture\n")
    buffer = folder / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(buffer.read_bytes()[:600])
    buffer.unlink()
    return {"zero": zero, "text": text, "truncated": truncated}


@pytest.mark.parametrize(
    "kind, message", [("zero", "empty file"), ("text", "not an image"), ("truncated", "truncated")]
)
def test_bad_input_gives_its_error_and_leaves_nothing(tmp_path, tiny_exports, kind, message):
    bad = make_bad_inputs(tmp_path / "in")[kind]
    out = tmp_path / "out"
    result = realsr("upscale", bad, "--model", tiny_exports["onnx"], "-o", out)
    assert result.returncode == 3, result.stderr
    assert message in result.stderr.lower()
    assert bad.name in result.stderr
    assert not out.exists() or files_under(out) == []


def test_batch_goes_on_past_bad_files(tmp_path, tiny_exports, photo):
    bad = make_bad_inputs(photo.parent)
    out = tmp_path / "out"
    result = realsr("upscale", photo.parent, "--model", tiny_exports["onnx"], "-o", out)
    assert result.returncode == 6, result.stderr
    assert files_under(out) == ["photo_x4.png"]
    assert "upscaled 1, skipped 0, failed 3" in result.stderr
    for path in bad.values():
        assert path.name in result.stderr


def test_unwritable_output_and_missing_model(tmp_path, tiny_exports, photo):
    blocker = tmp_path / "a-file"
    blocker.write_text("a regular file where a folder should be")
    result = realsr("upscale", photo, "--model", tiny_exports["onnx"], "-o", blocker / "out")
    assert result.returncode == 3, result.stderr
    assert "a-file" in result.stderr

    result = realsr("upscale", photo, "--model", tmp_path / "missing.onnx")
    assert result.returncode == 3
    assert "missing.onnx" in result.stderr
    assert result.stderr.count("\n") == 1, "one-line error"

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_exports["onnx"].read_bytes()[:5000])
    result = realsr("upscale", photo, "--model", corrupt)
    assert result.returncode == 3, result.stderr
    assert "corrupt.onnx" in result.stderr and "Traceback" not in result.stderr
    assert not list(photo.parent.glob("*_x4*"))


def test_training_checkpoint_as_model_says_to_export(tmp_path, tiny_checkpoint, photo):
    result = realsr("upscale", photo, "--model", tiny_checkpoint)
    assert result.returncode == 3
    assert "realsr export" in result.stderr


def test_folder_tree_mirrored_recursive_and_skip_existing(tmp_path, tiny_exports, photo):
    nested = photo.parent / "trip" / "day1"
    nested.mkdir(parents=True)
    (nested / "beach.png").write_bytes(photo.read_bytes())
    out, model = tmp_path / "out", tiny_exports["onnx"]
    flat = realsr("upscale", photo.parent, "--model", model, "-o", out, "-q")
    assert flat.returncode == 0, flat.stderr
    assert files_under(out) == ["photo_x4.png"]
    deep = realsr("upscale", photo.parent, "-r", "--skip-existing", "--model", model, "-o", out, "--json")
    assert deep.returncode == 0, deep.stderr
    records = {Path(r["input"]).name: r["status"] for r in map(json.loads, deep.stdout.splitlines())}
    assert records == {"photo.png": "skipped", "beach.png": "ok"}
    assert files_under(out) == ["photo_x4.png", "trip/day1/beach_x4.png"]


def test_exif_orientation_applied_and_reset(tmp_path, tiny_exports):
    src = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.new("RGB", (40, 24), (200, 120, 40)).save(src, exif=exif, quality=95)
    result = realsr("upscale", src, "--model", tiny_exports["onnx"], "-o", tmp_path / "out", "-q")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out" / "rotated_x4.jpg") as out:
        assert out.size == (24 * 4, 40 * 4)  # upright
        assert out.getexif().get(0x0112, 1) == 1


def test_sixteen_bit_alpha_and_grayscale_edge_cases(tmp_path, tiny_exports):
    edge = shared_data("real_inputs", "edge_cases")
    out = tmp_path / "out"
    inputs = [edge / "tree_alpha_16bit.png", edge / "wolf_gray.jpg", edge / "children-alpha.png"]
    result = realsr("upscale", *inputs, "--model", tiny_exports["onnx"], "-o", out, "-q", "--tile", "256", timeout=300)
    assert result.returncode == 0, result.stderr
    import png  # pypng reads the written 16-bit file without Pillow's 8-bit truncation

    width, height, _, info = png.Reader(filename=str(out / "tree_alpha_16bit_x4.png")).read()
    with Image.open(edge / "tree_alpha_16bit.png") as src:
        assert (width, height) == (src.width * 4, src.height * 4)
    assert info["bitdepth"] == 16 and info["alpha"] and not info["greyscale"]
    with Image.open(out / "wolf_gray_x4.jpg") as gray:
        assert gray.mode == "L"
    with Image.open(out / "children-alpha_x4.png") as rgba, Image.open(edge / "children-alpha.png") as src:
        assert rgba.mode == "RGBA"
        alpha_in = np.asarray(src.getchannel("A"))
        alpha_out = np.asarray(rgba.getchannel("A").resize(src.size, Image.BOX), dtype=np.int16)
        assert np.abs(alpha_out - alpha_in).mean() < 3  # the alpha channel survives, upscaled


@pytest.mark.slow
def test_ctrl_c_leaves_no_partial_output(tmp_path, compact_exports, rng):
    src = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (700, 900, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(REALSR), "upscale", str(src), "--model", str(compact_exports["onnx"]), "-o", str(out), "--tile", "128"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    assert proc.poll() is None, "finished before it could be interrupted: make the input larger"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not out.exists() or files_under(out) == []


def test_bundled_model_is_the_default(photo):
    result = realsr("upscale", photo, "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(photo.parent)) == ["photo.png", "photo_x4.png"]
    with Image.open(photo.parent / "photo_x4.png") as out:
        assert out.size == (53 * 4, 37 * 4)


def test_same_output_name_is_refused_not_overwritten(tmp_path, tiny_exports, photo):
    Image.open(photo).convert("RGB").save(photo.with_suffix(".jpg"), quality=95)
    out = tmp_path / "out"
    result = realsr("upscale", photo.parent, "--model", tiny_exports["onnx"], "-o", out, "--format", "png", "--json")
    assert result.returncode == 6, result.stderr
    statuses = [json.loads(line)["status"] for line in result.stdout.splitlines()]
    assert sorted(statuses) == ["failed", "ok"]
    assert "already the output of" in result.stderr
    assert files_under(out) == ["photo_x4.png"]


def test_rerun_over_a_folder_skips_earlier_outputs(tmp_path, tiny_exports, photo):
    first = realsr("upscale", photo.parent, "--model", tiny_exports["onnx"], "-q")
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(photo.parent)) == ["photo.png", "photo_x4.png"]
    again = realsr("upscale", photo.parent, "--model", tiny_exports["onnx"], "--json")
    assert again.returncode == 0, again.stderr
    assert [Path(json.loads(line)["input"]).name for line in again.stdout.splitlines()] == ["photo.png"]
    assert sorted(os.listdir(photo.parent)) == ["photo.png", "photo_x4.png"]
