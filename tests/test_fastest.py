"""int8 models (`realsr quantize`) and `--precision auto` on a CPU (`runtime.fastest`): the ways a model can run,
the measured fastest chosen and remembered per machine and files, explicit precisions taken as asked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from realsr_cli import host
from realsr_cli.cli import cli
from realsr_cli.config import UpscaleConfig
from realsr_cli.errors import ConfigError, ModelError
from realsr_cli.inference import runtime
from realsr_cli.inference.runtime import bundled, fastest, open_backend
from realsr_cli.inference.runtime.onnx import onnx_sibling
from realsr_cli.inference.upscaler import Upscaler
from realsr_cli.training.quantize import quantize_model


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> str:
    """A folder of small photo-like images to calibrate with."""
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:120, 0:160]
    for i in range(4):
        base = np.stack([np.sin(x / (5 + i)), np.cos(y / (7 + i)), np.sin((x + y) / 9)], -1) * 90 + 128
        noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"photo{i}.png")
    return str(folder)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_ranged_exports, calibration):
    """<stem>.onnx, <stem>.int8.onnx (quantized here) and <stem>.ts side by side, as a bundled model ships them."""
    folder = tmp_path_factory.mktemp("int8_model")
    shutil.copy(tiny_ranged_exports["onnx"], folder / "m.onnx")
    shutil.copy(tiny_ranged_exports["torchscript"], folder / "m.ts")
    report = quantize_model(folder / "m.onnx", [calibration])
    assert report.path == folder / "m.int8.onnx" == onnx_sibling(folder / "m.onnx", "int8")
    return folder


def test_quantize_writes_a_self_describing_int8_model_close_to_fp32(model_folder, odd_image):
    model = onnx.load(str(model_folder / "m.int8.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "int8" and meta["scale"] == "4" and meta["supports_half"] == "false"
    assert {node.op_type for node in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    x = np.ascontiguousarray(odd_image.transpose(2, 0, 1)[None])
    fp32 = open_backend(UpscaleConfig(model=str(model_folder / "m.onnx"), precision="fp32", device="cpu"))
    int8 = open_backend(UpscaleConfig(model=str(model_folder / "m.onnx"), precision="int8", device="cpu"))
    assert (int8.path.name, int8.precision, fp32.precision) == ("m.int8.onnx", "int8", "fp32")
    error = np.abs(int8.run(x) - fp32.run(x))
    assert 0 < error.mean() < 0.01  # quantized, and close: a tiny random net, not the bundled model's 50 dB


def test_quantize_command_reports_its_fidelity(tmp_path, model_folder, calibration):
    args = ["quantize", str(model_folder / "m.onnx"), "--calibration", calibration, "-o", str(tmp_path / "q.onnx")]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'q.onnx'}" in result.stderr and "dB worst" in result.stderr
    int8 = open_backend(UpscaleConfig(model=str(model_folder / "m.int8.onnx"), precision="fp32", device="cpu"))
    assert int8.path.name == "m.onnx"  # an int8 file asked to run in fp32: its fp32 sibling stands in
    with pytest.raises(ModelError, match="quantize takes an fp32 ONNX model exported by realsr"):
        quantize_model(model_folder / "m.int8.onnx", [calibration])


def test_precisions_that_need_another_file_or_backend_say_so(tmp_path, model_folder, tiny_ranged_exports):
    with pytest.raises(ConfigError, match="int8 runs with ONNX Runtime only"):
        open_backend(UpscaleConfig(model=str(model_folder / "m.ts"), precision="int8", device="cpu"))
    lone = tmp_path / "lone.onnx"
    shutil.copy(tiny_ranged_exports["onnx"], lone)
    with pytest.raises(ConfigError, match=r"no lone\.int8\.onnx lies beside it; make one with `realsr quantize"):
        open_backend(UpscaleConfig(model=str(lone), precision="int8", device="cpu"))


def _fake_timings(monkeypatch, seconds: dict[str, float], startup=None, cold=None) -> list[str]:
    """Make each candidate take `seconds[label]` a megapixel, `cold[label]` (default the same) for a job's first
    megapixel, after `startup[label]` (default 0); returns the labels timed, in order."""
    timed = []

    def fake(candidate, spec, open_candidate):
        label = candidate.label
        timed.append(label)
        open_candidate(candidate).close()  # it still opens, as the real measurement does
        return {
            "startup_seconds": (startup or {}).get(label, 0.0),
            "cold_seconds_per_mp": (cold or {}).get(label, seconds[label]),
            "seconds_per_mp": seconds[label],
        }

    monkeypatch.setattr(fastest, "_time_candidate", fake)
    return timed


def _bundle(tmp_path, model_folder, monkeypatch):
    """`model_folder`'s files as the bundled default model."""
    folder = tmp_path / "export"
    folder.mkdir()
    name = runtime.DEFAULT_MODEL_STEM
    for suffix in (".onnx", ".int8.onnx", ".ts"):
        shutil.copy(model_folder / f"m{suffix}", folder / f"{name}{suffix}")
    shutil.copy(runtime.bundled_models().folder / bundled.MANIFEST, folder)
    monkeypatch.setattr(runtime, "default_model_dirs", lambda: [folder])
    monkeypatch.setattr(host, "gpu_present", lambda: False)
    return folder


def test_auto_runs_the_way_measured_fastest_and_remembers_it(tmp_path, model_folder, monkeypatch):
    monkeypatch.setenv("REALSR_CACHE_DIR", str(tmp_path / "cache"))
    folder = _bundle(tmp_path, model_folder, monkeypatch)
    monkeypatch.setattr(host, "cpu_has_native_bf16", lambda: True)
    speeds = {"onnx fp32": 3.0, "onnx int8": 2.0, "torchscript fp32": 4.0, "torchscript bf16": 1.0}
    timed = _fake_timings(monkeypatch, speeds)
    notices = []
    with Upscaler(notice=notices.append) as up:
        assert (up.backend_name, up.precision, up.model_path.parent) == ("torchscript", "bf16", folder)
    assert sorted(timed) == sorted(speeds)
    assert notices and "measuring which way runs this model fastest on this CPU (once)" in notices[0]
    (entry,) = json.loads((tmp_path / "cache" / fastest.CACHE_FILE).read_text()).values()
    assert {label: cost["seconds_per_mp"] for label, cost in entry.items()} == speeds

    timed.clear()
    speeds["onnx int8"] = 0.1  # a faster way now would not be seen: the remembered choice is not re-measured
    with Upscaler(notice=notices.append) as up:
        assert (up.backend_name, up.precision) == ("torchscript", "bf16")
    assert timed == [] and len(notices) == 1

    fp32_file = folder / f"{runtime.DEFAULT_MODEL_STEM}.onnx"
    changed = onnx.load(str(fp32_file))
    changed.metadata_props.add(key="note", value="a new release of the same model")
    onnx.save(changed, str(fp32_file))
    with Upscaler() as up:  # other files: measured again
        assert (up.backend_name, up.precision) == ("onnx", "int8")
    assert sorted(timed) == sorted(speeds)


def test_what_auto_measures_depends_on_the_cpu_the_model_and_torch(tmp_path, model_folder, monkeypatch):
    monkeypatch.setenv("REALSR_CACHE_DIR", str(tmp_path / "cache"))
    _bundle(tmp_path, model_folder, monkeypatch)
    speeds = {"onnx fp32": 3.0, "onnx int8": 2.0, "torchscript fp32": 1.5, "torchscript bf16": 1.0}
    timed = _fake_timings(monkeypatch, speeds)
    monkeypatch.setattr(host, "cpu_has_native_bf16", lambda: False)  # no bf16 candidate
    with Upscaler() as up:
        assert (up.backend_name, up.precision) == ("torchscript", "fp32")
    assert sorted(timed) == ["onnx fp32", "onnx int8", "torchscript fp32"]
    timed.clear()
    with Upscaler(model=str(model_folder / "m.ts")) as up:  # a named .ts: its own precisions only, here one
        assert (up.backend_name, up.precision) == ("torchscript", "fp32")
    with Upscaler(model=str(model_folder / "m.onnx")) as up:  # a named file runs as that file, int8 copy or not
        assert (up.backend_name, up.precision, up.model_path.name) == ("onnx", "fp32", "m.onnx")
    with Upscaler(precision="fp32") as up:  # an explicit precision is taken as asked, unmeasured
        assert (up.backend_name, up.precision) == ("onnx", "fp32")
    assert timed == []
    monkeypatch.setattr(host, "torch_installed", lambda: False)  # ONNX's ways only, and no torch import
    with Upscaler() as up:
        assert (up.backend_name, up.precision) == ("onnx", "int8")
    assert sorted(timed) == ["onnx fp32", "onnx int8"]


def test_a_damaged_cache_or_a_way_that_fails_only_costs_a_measurement(tmp_path, model_folder, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / fastest.CACHE_FILE).write_text("{not json")
    monkeypatch.setenv("REALSR_CACHE_DIR", str(cache))
    folder = _bundle(tmp_path, model_folder, monkeypatch)
    monkeypatch.setattr(host, "torch_installed", lambda: False)
    (folder / f"{runtime.DEFAULT_MODEL_STEM}.int8.onnx").write_bytes(b"\x08\x07 damaged")
    with Upscaler() as up:  # real timings: the damaged int8 file cannot open and is left out
        assert (up.backend_name, up.precision) == ("onnx", "fp32")
    assert json.loads((cache / fastest.CACHE_FILE).read_text())  # rewritten whole


def test_a_small_job_weighs_start_up_and_first_runs_against_speed(tmp_path, model_folder, monkeypatch):
    """TorchScript runs faster per pixel here once warm, but takes seconds to start (importing torch) and runs its
    first tiles slowly: one photo is done sooner by ONNX Runtime, a big job by TorchScript."""
    monkeypatch.setenv("REALSR_CACHE_DIR", str(tmp_path / "cache"))
    _bundle(tmp_path, model_folder, monkeypatch)
    monkeypatch.setattr(host, "cpu_has_native_bf16", lambda: True)
    speeds = {"onnx fp32": 6.0, "onnx int8": 3.0, "torchscript fp32": 5.0, "torchscript bf16": 2.0}
    startup = {"onnx fp32": 0.1, "onnx int8": 0.1, "torchscript fp32": 2.0, "torchscript bf16": 2.0}
    cold = {"torchscript fp32": 8.0, "torchscript bf16": 5.0}
    _fake_timings(monkeypatch, speeds, startup, cold)
    chosen = {}
    # 0.1 MP: 0.4 s against 2.5 s; 1 MP: 3.1 s against 7 s; 10 MP: 30.1 s against 25 s
    for pixels in (100_000, 1_000_000, 10_000_000, None):
        with Upscaler.from_config(UpscaleConfig(job_pixels=pixels)) as up:
            chosen[pixels] = (up.backend_name, up.precision)
    assert chosen == {
        100_000: ("onnx", "int8"),
        1_000_000: ("onnx", "int8"),
        10_000_000: ("torchscript", "bf16"),
        None: ("torchscript", "bf16"),
    }
