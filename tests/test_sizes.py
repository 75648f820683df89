"""Output sizes (--width, --height, --max-size), `-o FILE`, and the checks that run before a model is loaded."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from realsr_cli import host
from realsr_cli.cli import cli
from realsr_cli.config import UpscaleConfig, check_device, split_device
from realsr_cli.errors import ConfigError
from realsr_cli.inference import upscaler as upscaler_module
from realsr_cli.inference.upscaler import Upscaler


@pytest.mark.parametrize(
    ("options", "input_size", "expected"),
    [
        ({}, (53, 37), (212, 148)),  # native x4
        ({"scale": 2.5}, (53, 37), (133, 93)),
        ({"width": 100}, (53, 37), (100, 70)),  # the width exact, the height by aspect (69.8)
        ({"height": 100}, (53, 37), (143, 100)),  # 143.2
        ({"width": 100, "height": 100}, (53, 37), (100, 70)),  # a box: the width binds
        ({"width": 200, "height": 100}, (53, 37), (143, 100)),  # a box: the height binds
        ({"max_size": 150}, (53, 37), (150, 105)),  # native 212x148 brought down to a 150 long side
        ({"max_size": 150}, (37, 53), (105, 150)),  # portrait: the long side is the height
        ({"max_size": 500}, (53, 37), (212, 148)),  # smaller outputs are kept, never enlarged
        ({"scale": 2, "max_size": 100}, (53, 37), (100, 70)),
        ({"width": 212, "max_size": 150}, (53, 37), (150, 105)),
        ({"width": 212}, (53, 37), (212, 148)),  # exactly native is allowed
    ],
)
def test_output_size_rules(options, input_size, expected):
    assert UpscaleConfig(**options).output_size(*input_size, native=4) == expected


def test_a_size_above_the_native_scale_is_a_config_error_naming_the_limit():
    with pytest.raises(ConfigError, match=r"width 213 needs x4\.02 .* native x4: at most 212x148"):
        UpscaleConfig(width=213).output_size(53, 37, native=4)
    with pytest.raises(ConfigError, match="height 149"):
        UpscaleConfig(width=100, height=149).output_size(20, 37, native=4)  # the height binds and is too large


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": 2, "width": 100}, "either a scale or an output width/height"),
        ({"width": 0}, "width must be a positive number of pixels"),
        ({"max_size": -1}, "max size must be a positive number of pixels"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"device": "cuda:"}, "unknown device"),
    ],
)
def test_bad_size_and_device_options(options, message):
    with pytest.raises(ConfigError, match=message):
        UpscaleConfig(**options)


def test_device_names():
    assert [split_device(d) for d in ("auto", "cpu", "cuda", "cuda:0", "cuda:12")] == [
        ("auto", 0),
        ("cpu", 0),
        ("cuda", 0),
        ("cuda", 0),
        ("cuda", 12),
    ]
    assert check_device("cuda:3") == "cuda:3"


def test_api_width_keeps_sixteen_bits_and_alpha(tiny_ranged_exports, rng):
    rgba = (rng.random((37, 53, 4)) * 65535).astype(np.uint16)
    with Upscaler(tiny_ranged_exports["onnx"], width=100) as up:
        out = up.upscale(rgba)
        assert up.output_size(53, 37) == (100, 70)
    assert out.shape == (70, 100, 4) and out.dtype == np.uint16
    # the alpha is resized, not run through the model: its mean survives the resize
    assert abs(float(out[..., 3].mean()) - float(rgba[..., 3].mean())) < 0.02 * 65535
    assert np.any(out[..., :3] % 257 != 0)  # 16-bit levels, not 8-bit ones widened (v * 257)


def test_api_refuses_a_scale_above_native_before_loading(tiny_exports, monkeypatch):
    monkeypatch.setattr(upscaler_module, "open_backend", _never_loaded)
    with pytest.raises(ConfigError, match="scale 8 is above the model's native x4"):
        Upscaler(tiny_exports["onnx"], scale=8)


# ---- the CLI, in process, so that loading the model can be forbidden


def _never_loaded(*args, **kwargs):
    raise AssertionError("the model was loaded before the options were checked")


@pytest.fixture
def run(monkeypatch):
    """Run `realsr ARGS` in process; returns (exit code, output). `run.forbid_loading()` makes a model load fail
    the test."""

    def invoke(*args):
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.output

    invoke.forbid_loading = lambda: monkeypatch.setattr(upscaler_module, "open_backend", _never_loaded)
    return invoke


@pytest.fixture
def photos(tmp_path, rng) -> list:
    """Two 53x37 PNGs."""
    paths = []
    for name in ("a.png", "b.png"):
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((rng.random((37, 53, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "1000"], "a.png: width 1000 needs x18.9 for a 53x37 input, above the model's native x4"),
        (["--height", "149"], "height 149 needs x4.03"),
        (["-s", "8"], "scale 8 is above the model's native x4"),
        (["-s", "2", "--width", "100"], "either a scale or an output width/height"),
        (["--device", "gpu"], "unknown device 'gpu'"),
        (["--device", "cuda:one"], "unknown device 'cuda:one'"),
        (["-o", "{tmp}/out.png", "{b}"], "names one output file, but the inputs are 2 images"),
        (["-o", "{tmp}/out.png", "{in}"], "names one output file, but the inputs are 2 images"),
        (["-o", "{tmp}/out.png", "--format", "jpg"], "is a PNG file name, but --format jpg asks for JPEG"),
    ],
)
def test_every_check_runs_before_the_model_is_loaded(run, tiny_exports, photos, tmp_path, args, message):
    run.forbid_loading()
    fill = {"tmp": tmp_path, "b": photos[1], "in": photos[0].parent}
    args = [a.format(**fill) for a in args]
    code, output = run("upscale", photos[0], "--model", tiny_exports["onnx"], *args)
    assert code == 2, output
    assert message in " ".join(output.split())
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.png", "b.png"]


def test_sizes_through_the_cli(run, tiny_exports, photos, tmp_path):
    model = ("--model", tiny_exports["onnx"], "-q")
    code, output = run("upscale", *photos, "--width", "100", "-o", tmp_path / "w", *model)
    assert code == 0, output
    assert [Image.open(tmp_path / "w" / f"{p.stem}_x4.png").size for p in photos] == [(100, 70), (100, 70)]
    code, output = run("upscale", photos[0], "--width", "100", "--height", "60", "-o", tmp_path / "box.png", *model)
    assert code == 0, output
    assert Image.open(tmp_path / "box.png").size == (86, 60)
    code, output = run("upscale", photos[0], "--max-size", "150", "-o", tmp_path / "m.png", *model)
    assert code == 0, output
    assert Image.open(tmp_path / "m.png").size == (150, 105)


def test_output_file_is_written_as_named(run, tiny_exports, photos, tmp_path):
    model = ("--model", tiny_exports["onnx"], "-q")
    code, output = run("upscale", photos[0], "-o", tmp_path / "result.png", *model)
    assert code == 0, output
    assert (tmp_path / "result.png").is_file()  # a file, not a folder named result.png
    assert Image.open(tmp_path / "result.png").size == (212, 148)
    # the suffix says the format
    code, output = run("upscale", photos[0], "-o", tmp_path / "sub" / "result.jpg", *model)
    assert code == 0, output
    assert Image.open(tmp_path / "sub" / "result.jpg").format == "JPEG"
    # an existing folder stays a folder, whatever its name
    (tmp_path / "folder.png").mkdir()
    code, output = run("upscale", photos[0], "-o", tmp_path / "folder.png", *model)
    assert code == 0, output
    assert (tmp_path / "folder.png" / "a_x4.png").is_file()
    # no image extension: a folder, created
    code, output = run("upscale", *photos, "-o", tmp_path / "outdir", *model)
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "outdir").iterdir()) == ["a_x4.png", "b_x4.png"]


@pytest.mark.parametrize("command", [["eval", "--lr", "{in}"], ["bench", "--sizes", "0.01"]])
def test_eval_and_bench_take_cuda_n_and_check_the_device_form_first(run, photos, command):
    run.forbid_loading()
    code, output = run(*[a.format(**{"in": photos[0].parent}) for a in command], "--device", "cuda:x")
    assert code == 2, output
    assert "unknown device 'cuda:x'; use auto, cpu, cuda or cuda:N" in output


@pytest.mark.skipif(host.gpu_present(), reason="on a machine with a GPU cuda:1 may really run")
def test_cuda_n_without_cuda_says_so_and_runs_on_the_cpu(run, tiny_exports, photos, tmp_path):
    code, output = run(
        "upscale", photos[0], "--model", tiny_exports["onnx"], "--device", "cuda:1", "-o", tmp_path / "o"
    )
    assert code == 0, output
    assert "notice: CUDA not available" in output and "on onnx/cpu" in output
    assert (tmp_path / "o" / "a_x4.png").is_file()
