"""The bundled models: the manifest beside their files (export/models.toml), `realsr models`, and `--model NAME`."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from realsr_cli.bench.flops import count_flops
from realsr_cli.errors import InputError
from realsr_cli.inference import runtime
from realsr_cli.inference.runtime import bundled_models, resolve_model
from realsr_cli.inference.runtime.bundled import MANIFEST, read_manifest
from realsr_cli.spec import TORCHSCRIPT_SPEC_FILE, ModelSpec

ROOT = Path(__file__).resolve().parents[1]
REALSR = Path(sys.executable).with_name("realsr")
MODELS = bundled_models().models


def realsr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(REALSR), *map(str, args)], capture_output=True, text=True, timeout=120)


def stated_spec(path: Path) -> ModelSpec:
    """The spec an exported file carries in its metadata."""
    if path.suffix == ".onnx":
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return ModelSpec.from_metadata(props)
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_SPEC_FILE}")]
        return ModelSpec.from_dict(json.loads(archive.read(name)))


# ---- the manifest


def test_the_manifest_names_one_default():
    manifest = bundled_models()
    assert sum(model.default for model in manifest.models) == 1
    assert runtime.DEFAULT_MODEL_STEM == manifest.default.name  # the default's one home is the manifest


@pytest.mark.parametrize("model", MODELS, ids=[m.name for m in MODELS])
def test_every_bundled_file_exists_and_states_the_manifests_scale(model):
    folder = bundled_models().folder
    assert any(name.endswith(".onnx") for name in model.files) and any(name.endswith(".ts") for name in model.files)
    for name in model.files:
        path = folder / name
        assert path.is_file(), f"{path} is listed in {MANIFEST} but missing"
        assert Path(name).stem.removesuffix(".fp16").removesuffix(".int8") == model.name
        assert stated_spec(path).scale == model.scale, name


@pytest.mark.parametrize("model", MODELS, ids=[m.name for m in MODELS])
def test_the_manifests_cost_is_what_bench_counts(model):
    onnx_file = next(name for name in model.files if name.endswith(".onnx") and ".fp16" not in name)
    flops, _ = count_flops(bundled_models().folder / onnx_file, "onnx")
    assert model.mflop_per_pixel == pytest.approx(flops / 1e6, abs=0.005)


def test_a_malformed_manifest_says_which_key(tmp_path):
    text = (ROOT / "export" / MANIFEST).read_text().replace("scale = 4", "scale = 4\nsize = 12")
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(InputError, match=r"model 1: unknown key size; valid keys: name, scale"):
        read_manifest([tmp_path])
    (tmp_path / MANIFEST).write_text(text.replace("size = 12\n", "").replace("default = true", "default = false"))
    with pytest.raises(InputError, match="exactly one model must have default = true"):
        read_manifest([tmp_path])


# ---- names as --model


def test_a_name_resolves_to_that_models_file_for_each_backend():
    default = bundled_models().default
    folder = bundled_models().folder
    assert resolve_model(default.name, "onnx") == folder / f"{default.name}.onnx"
    assert resolve_model(default.name, "torchscript") == folder / f"{default.name}.ts"
    assert resolve_model(None, "onnx") == resolve_model(default.name, "onnx")


def test_an_unknown_name_lists_the_bundled_ones_and_a_missing_file_stays_a_path(tmp_path):
    names = ", ".join(model.name for model in MODELS)
    with pytest.raises(InputError, match=f"realsr-nope-x4: no such model file, and no bundled model .*{names}"):
        resolve_model("realsr-nope-x4")
    assert resolve_model("missing.onnx") == Path("missing.onnx")  # opening it says "not found"
    assert resolve_model(tmp_path / "realsr-nope-x4") == tmp_path / "realsr-nope-x4"  # a folder in it: a path


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch, tiny_exports):
    name = bundled_models().default.name
    monkeypatch.chdir(tmp_path)
    Path(name).write_bytes(tiny_exports["onnx"].read_bytes())
    assert resolve_model(name) == Path(name)


# ---- the commands


def test_models_lists_every_bundled_model():
    result = realsr("models")
    assert result.returncode == 0, result.stderr
    for model in MODELS:
        for fact in (model.name, f"x{model.scale}", f"{model.mflop_per_pixel:.2f}", model.headline):
            assert fact in result.stderr
    assert "(default)" in result.stderr
    listed = [json.loads(line) for line in realsr("models", "--json").stdout.splitlines()]
    assert [entry["name"] for entry in listed] == [model.name for model in MODELS]
    assert all(Path(path).is_file() for entry in listed for path in entry["files"])


def test_upscale_with_a_bundled_name_and_with_an_unknown_one(tmp_path, rng):
    photo = tmp_path / "photo.png"
    Image.fromarray((rng.random((24, 31, 3)) * 255).astype(np.uint8)).save(photo)
    name = bundled_models().default.name
    ok = realsr("upscale", photo, "--model", name, "--backend", "onnx", "--precision", "fp32", "-o", tmp_path / "out")
    assert ok.returncode == 0, ok.stderr
    assert f"model {name}.onnx (x4" in ok.stderr and "on onnx/cpu fp32" in ok.stderr
    assert Image.open(tmp_path / "out" / "photo_x4.png").size == (31 * 4, 24 * 4)
    unknown = realsr("upscale", photo, "--model", "realsr-nope-x4")
    assert unknown.returncode == InputError.exit_code
    assert f"bundled: {name}" in unknown.stderr and "`realsr models` lists them" in unknown.stderr


def test_models_help():
    result = realsr("models", "--help")
    assert result.returncode == 0 and "Usage: realsr models" in result.stdout
