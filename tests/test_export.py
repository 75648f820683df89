"""`realsr export`: parity of every exported format with eager PyTorch, measured here independently of the
exporter's own checks; metadata; dynamic shapes; failure paths that must leave nothing behind; the command."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from realsr_cli import __version__
from realsr_cli.cli import cli
from realsr_cli.config import ExportConfig
from realsr_cli.errors import ConfigError, InputError, ModelError
from realsr_cli.spec import TORCHSCRIPT_SPEC_FILE, ModelSpec
from realsr_cli.training.checkpoint import load_checkpoint
from realsr_cli.training.export import VERSION_KEY, export_model
from realsr_cli.training.nets import count_parameters

ort = pytest.importorskip("onnxruntime")

# none of ExportConfig.check_sizes, odd and non-square: the exporter never saw this shape
FRESH = (23, 61)


def structured_input(batch: int, h: int, w: int, seed: int = 7) -> np.ndarray:
    """(batch, 3, h, w) float32 in [0, 1]: a different gradient per channel plus noise, never constant."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = np.stack([x / w, y / h, np.sin((x - 2 * y) / 4) * 0.5 + 0.5])
    return np.clip(smooth * 0.7 + rng.random((batch, 3, h, w), dtype=np.float32) * 0.3, 0, 1).astype(np.float32)


def eager(checkpoint: Path, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return load_checkpoint(checkpoint).generator()(torch.from_numpy(x)).clamp(0, 1).numpy()


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


def run_torchscript(path: Path, x: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


def onnx_meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def torchscript_extras(path: Path) -> dict[str, str]:
    extras = {TORCHSCRIPT_SPEC_FILE: "", VERSION_KEY: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extras)
    return {name: data.decode() for name, data in extras.items()}  # torch fills in bytes


def test_ranged_checkpoint_exercises_the_clamp(tiny_ranged_checkpoint):
    # the parity tests below are only meaningful if outputs are neither all clamped nor never clamped
    x = structured_input(1, *FRESH)
    with torch.inference_mode():
        raw = load_checkpoint(tiny_ranged_checkpoint).generator()(torch.from_numpy(x))
    inside = ((raw > 0) & (raw < 1)).float().mean()
    assert 0.3 < inside < 0.95 and raw.min() < 0 and raw.max() > 1


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
@pytest.mark.parametrize("exports", ["tiny_ranged_exports", "compact_exports"])
def test_fp32_parity_at_a_fresh_odd_size(request, kind, exports):
    paths = request.getfixturevalue(exports)
    checkpoint = request.getfixturevalue(exports.replace("exports", "checkpoint"))
    x = structured_input(1, *FRESH)
    run = run_onnx if kind == "onnx" else run_torchscript
    out = run(paths[kind], x)
    assert out.shape == (1, 3, FRESH[0] * 4, FRESH[1] * 4)
    np.testing.assert_allclose(out, eager(checkpoint, x), atol=1e-4, rtol=0)


def test_fp16_parity_with_fp32_io(tiny_ranged_exports, tiny_ranged_checkpoint):
    path = tiny_ranged_exports["onnx_fp16"]
    model = onnx.load(str(path))
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == float32
    assert model.graph.output[0].type.tensor_type.elem_type == float32
    assert {t.data_type for t in model.graph.initializer} == {float16}  # the weights really are fp16
    x = structured_input(1, *FRESH)
    out = run_onnx(path, x)
    assert out.dtype == np.float32
    error = np.abs(out - eager(tiny_ranged_checkpoint, x)).max()
    assert 0 < error <= ExportConfig().half_tolerance


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_dynamic_batch(tiny_ranged_exports, tiny_ranged_checkpoint, kind):
    x = structured_input(2, 19, 30)
    x[1] = x[1, :, ::-1]  # two different images, so a batch mix-up shows
    run = run_onnx if kind == "onnx" else run_torchscript
    out = run(tiny_ranged_exports[kind], np.ascontiguousarray(x))
    assert out.shape == (2, 3, 76, 120)
    np.testing.assert_allclose(out, eager(tiny_ranged_checkpoint, np.ascontiguousarray(x)), atol=1e-4, rtol=0)


def test_onnx_graph_contract(tiny_exports, tiny_checkpoint):
    path = tiny_exports["onnx"]
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "output")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))
    # self-contained: no external-data tensors, no side files
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.fp16.onnx", "tiny.onnx", "tiny.ts"]
    # E + G_SR only, though the checkpoint holds all six networks: the legacy exporter merges identical
    # initializers (e.g. the zeroed biases), so the file may hold slightly fewer values than the generator
    ckpt = load_checkpoint(tiny_checkpoint)
    stored = sum(numpy_helper.to_array(t).size for t in model.graph.initializer)
    generator = count_parameters(ckpt.generator())
    assert 0.9 * generator < stored <= generator < sum(count_parameters(n) for n in ckpt.networks().values())


def test_metadata_round_trip(tiny_exports, tiny_checkpoint):
    expected = replace(load_checkpoint(tiny_checkpoint).spec, supports_half=True)
    assert len(expected.source_sha256) == 64 and expected.receptive_field > 0

    meta = onnx_meta(tiny_exports["onnx"])
    assert ModelSpec.from_metadata(meta) == expected
    assert meta[VERSION_KEY] == __version__
    assert ModelSpec.from_metadata(onnx_meta(tiny_exports["onnx_fp16"])) == replace(expected, precision="fp16")

    extras = torchscript_extras(tiny_exports["torchscript"])
    assert ModelSpec.from_dict(json.loads(extras[TORCHSCRIPT_SPEC_FILE])) == expected
    assert extras[VERSION_KEY] == __version__


def test_torchscript_loads_in_a_fresh_process_without_realsr(tiny_ranged_exports, tiny_ranged_checkpoint, tmp_path):
    script = """
import sys, numpy as np, torch
module = torch.jit.load(sys.argv[1], map_location="cpu")
with torch.inference_mode():
    out = module(torch.from_numpy(np.load(sys.argv[2])))
np.save(sys.argv[3], out.numpy())
assert not any(name.startswith("realsr_cli") for name in sys.modules), "loading imported realsr"
"""
    x = structured_input(1, 17, 29)
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tiny_ranged_exports["torchscript"]),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        cwd=tmp_path,  # not the repository root, so nothing of realsr is importable by accident
        check=True,
        capture_output=True,
    )
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), eager(tiny_ranged_checkpoint, x), atol=1e-4, rtol=0)


def test_report(tiny_ranged_checkpoint, tmp_path):
    cfg = ExportConfig(check_sizes=((21, 34), (40, 27), (9, 11)))
    report = export_model(tiny_ranged_checkpoint, tmp_path, cfg, stem="model")
    assert report.paths == {"onnx": tmp_path / "model.onnx", "torchscript": tmp_path / "model.ts"}  # no --half
    assert set(report.max_errors) == {"onnx", "onnx_fp16", "torchscript"}  # fp16 is checked even when not written
    for kind, by_size in report.max_errors.items():
        assert set(by_size) == set(cfg.check_sizes)
        limit = cfg.half_tolerance if kind == "onnx_fp16" else cfg.tolerance
        assert all(0 <= err <= limit for err in by_size.values())
    assert 0 < max(report.max_errors["onnx_fp16"].values())  # a real fp16 graph, not the fp32 one
    ckpt = load_checkpoint(tiny_ranged_checkpoint)
    assert report.parameters == count_parameters(ckpt.generator())
    assert report.receptive_field == ckpt.spec.receptive_field and report.supports_half


def _scramble_pixel_shuffle(monkeypatch):
    """Make the exporter emit DCR instead of CRD DepthToSpace: a valid graph whose channels are silently wrong."""
    from realsr_cli.training import export as exporter

    original = exporter._to_onnx

    def scrambled(*args):
        model = original(*args)
        (node,) = [n for n in model.graph.node if n.op_type == "DepthToSpace"]
        (mode,) = [a for a in node.attribute if a.name == "mode"]
        mode.s = b"DCR"
        return model

    monkeypatch.setattr(exporter, "_to_onnx", scrambled)


def test_parity_failure_raises_and_writes_nothing(tiny_ranged_checkpoint, tmp_path, monkeypatch):
    _scramble_pixel_shuffle(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "ranged.onnx").write_bytes(b"an earlier export")
    with pytest.raises(ModelError, match=r"onnx 37x53: .*nothing written") as err:
        export_model(tiny_ranged_checkpoint, out, ExportConfig(half=True))
    assert "\n" not in str(err.value)
    # no new file, no temporary left over, and the earlier export untouched
    assert [p.name for p in out.iterdir()] == ["ranged.onnx"]
    assert (out / "ranged.onnx").read_bytes() == b"an earlier export"


def test_failed_fp16_check_clears_supports_half(tiny_ranged_checkpoint, tmp_path):
    report = export_model(tiny_ranged_checkpoint, tmp_path, ExportConfig(half=True, half_tolerance=1e-7))
    assert set(report.paths) == {"onnx", "torchscript"}  # no fp16 file when fp16 is not good enough
    assert not report.supports_half
    assert ModelSpec.from_metadata(onnx_meta(report.paths["onnx"])).supports_half is False
    assert json.loads(torchscript_extras(report.paths["torchscript"])[TORCHSCRIPT_SPEC_FILE])["supports_half"] is False


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (ExportConfig(formats=("onnx", "tflite")), "unknown export format tflite"),
        (ExportConfig(formats=("torchscript",), half=True), "include onnx"),
    ],
)
def test_bad_config(tiny_checkpoint, tmp_path, cfg, message):
    with pytest.raises(ConfigError, match=message):
        export_model(tiny_checkpoint, tmp_path, cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stem", ["", "sub/model", "..", ".hidden"])
def test_bad_name(tiny_checkpoint, tmp_path, stem):
    with pytest.raises(ConfigError, match="plain file name stem"):
        export_model(tiny_checkpoint, tmp_path, ExportConfig(), stem=stem)
    assert list(tmp_path.iterdir()) == []


def test_output_below_a_file_is_an_input_error(tiny_checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="file"):
        export_model(tiny_checkpoint, blocker / "out", ExportConfig())


@pytest.mark.parametrize("formats", [("onnx",), ("torchscript",)])
def test_failed_write_is_an_input_error(tiny_checkpoint, tmp_path, monkeypatch, formats):
    from realsr_cli._files import atomic_write
    from realsr_cli.training import export as exporter

    gone = tmp_path / "removed meanwhile"  # the temporary files' folder, as if removed while the export ran
    monkeypatch.setattr(exporter, "atomic_write", lambda path: atomic_write(gone / path.name))
    with pytest.raises(InputError, match="removed meanwhile: cannot write"):
        export_model(tiny_checkpoint, tmp_path / "out", ExportConfig(formats=formats))
    assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture
def run_cli():
    def run(*args: str):
        return CliRunner().invoke(cli, ["export", *map(str, args)], catch_exceptions=False)

    return run


def test_cli_exports_and_reports(run_cli, tiny_checkpoint, tmp_path):
    result = run_cli(tiny_checkpoint, "-o", tmp_path / "out", "--half", "--name", "net")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["net.fp16.onnx", "net.onnx", "net.ts"]
    assert result.stdout == ""  # the report is on stderr
    for text in ("net.onnx", "net.fp16.onnx", "net.ts", "max error 37x53", "max error 64x41", "receptive field"):
        assert text in result.stderr
    assert "Warning" not in result.stderr


def test_cli_one_format(run_cli, tiny_checkpoint, tmp_path):
    result = run_cli(tiny_checkpoint, "-o", tmp_path, "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]


def test_cli_unknown_format_is_a_usage_error(run_cli, tiny_checkpoint, tmp_path):
    result = run_cli(tiny_checkpoint, "-o", tmp_path / "out", "--format", "onnx,tflite")
    assert result.exit_code == 2
    assert "tflite" in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint at all" * 10])
def test_cli_missing_or_corrupt_checkpoint(run_cli, tmp_path, content):
    checkpoint = tmp_path / "model.pth"
    if content is not None:
        checkpoint.write_bytes(content)
    result = run_cli(checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 3, result.output
    # rich wraps long lines at the console width (80 without a terminal); the message itself is one line
    message = " ".join(result.stderr.split())
    assert message.startswith(f"error: {checkpoint}: ") and "Traceback" not in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError) as err:
        export_model(checkpoint, tmp_path / "out", ExportConfig())
    assert str(err.value).startswith(str(checkpoint)) and "\n" not in str(err.value)


def test_cli_parity_failure_exits_4(run_cli, tiny_ranged_checkpoint, tmp_path, monkeypatch):
    _scramble_pixel_shuffle(monkeypatch)
    result = run_cli(tiny_ranged_checkpoint, "-o", tmp_path)
    assert result.exit_code == 4, result.output
    assert "nothing written" in " ".join(result.stderr.split())
    assert list(tmp_path.iterdir()) == []


def test_cli_warns_when_fp16_is_not_written(run_cli, tiny_ranged_checkpoint, tmp_path, monkeypatch):
    from realsr_cli.cli import export as command

    monkeypatch.setattr(command, "ExportConfig", functools.partial(ExportConfig, half_tolerance=1e-9))
    result = run_cli(tiny_ranged_checkpoint, "-o", tmp_path, "--half")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranged.onnx", "ranged.ts"]
    assert "fp16 variant not written" in " ".join(result.stderr.split())
