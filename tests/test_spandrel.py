"""Community models (.pth/.safetensors state dicts recognised by spandrel): detection, safe loading, upscaling
through realsr's tiling, export, and the errors for files that are none of these."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from realsr_cli import Upscaler
from realsr_cli.config import ExportConfig
from realsr_cli.errors import BackendError, InputError, ModelError
from realsr_cli.inference.runtime import community
from realsr_cli.inference.runtime.community import load_community_model

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("spandrel") is None or importlib.util.find_spec("safetensors") is None,
    reason="the spandrel extra is not installed",
)

REALSR = Path(sys.executable).with_name("realsr")


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact network (realesr-general-x4v3, realesr-animevideov3) as published, built small here."""

    def __init__(self, num_feat: int = 8, num_conv: int = 2, upscale: int = 4) -> None:
        super().__init__()
        self.upscale = upscale
        self.body = nn.ModuleList([nn.Conv2d(3, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)])
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(nn.PReLU(num_parameters=num_feat))
        self.body.append(nn.Conv2d(num_feat, 3 * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def _compact(upscale: int = 4) -> SRVGGNetCompact:
    torch.manual_seed(upscale)
    net = SRVGGNetCompact(upscale=upscale).eval()
    with torch.no_grad():  # PReLU starts at 0.25 everywhere; vary it so loading the wrong slope would show
        for module in net.modules():
            if isinstance(module, nn.PReLU):
                module.weight.uniform_(0.05, 0.4)
    return net


def _eager(net: nn.Module, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] through the torch module directly -> (H*s, W*s, 3), clamped."""
    with torch.inference_mode():
        y = net(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]).clamp(0, 1)
    return y[0].numpy().transpose(1, 2, 0)


@pytest.fixture(scope="module")
def compact_net() -> SRVGGNetCompact:
    return _compact()


@pytest.fixture(scope="module")
def compact_files(tmp_path_factory, compact_net) -> dict[str, Path]:
    """The same weights as a Real-ESRGAN-style .pth (wrapped in "params_ema", as Real-ESRGAN ships them) and as
    .safetensors."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("community")
    state = compact_net.state_dict()
    torch.save({"params_ema": state}, folder / "realesr-tiny-x4.pth")
    save_file(state, str(folder / "realesr-tiny-x4.safetensors"))
    return {"pth": folder / "realesr-tiny-x4.pth", "safetensors": folder / "realesr-tiny-x4.safetensors"}


@pytest.fixture
def image(rng) -> np.ndarray:
    return rng.random((37, 53, 3), dtype=np.float32)


# ---- detection


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_detects_architecture_scale_channels_and_half_support(compact_files, compact_net, kind):
    model = load_community_model(compact_files[kind])
    spec = model.spec
    assert (spec.architecture, spec.scale, spec.channels, spec.size_multiple) == ("Compact", 4, 3, 1)
    assert spec.supports_half and model.descriptor.supports_bfloat16  # spandrel's word for Compact
    assert spec.receptive_field is None  # unknown: tiles overlap by tiling's safe default
    loaded = model.descriptor.model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in compact_net.state_dict().items())


def test_detects_scale_and_a_second_architecture(tmp_path):
    community.import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    rrdb = ESRGAN(num_filters=8, num_blocks=1, scale=2)
    torch.save(rrdb.state_dict(), tmp_path / "esrgan-tiny-x2.pth")
    compact_x2 = tmp_path / "compact-x2.pth"
    torch.save(_compact(upscale=2).state_dict(), compact_x2)
    esrgan = load_community_model(tmp_path / "esrgan-tiny-x2.pth").spec
    assert (esrgan.architecture, esrgan.scale) == ("ESRGAN", 2)
    assert load_community_model(compact_x2).spec.scale == 2


# ---- upscaling


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_upscale_equals_the_torch_module(compact_files, compact_net, image, kind):
    with Upscaler(compact_files[kind], device="cpu", precision="fp32", tile=0) as up:
        assert (up.backend_name, up.native_scale, up.precision) == ("torch", 4, "fp32")
        out = up.upscale(image)
    assert out.shape == (37 * 4, 53 * 4, 3)
    np.testing.assert_allclose(out, _eager(compact_net, image), atol=2e-5)  # float outputs carry 16 bits


def test_tiled_equals_whole_image(compact_files, rng):
    image = rng.random((150, 140, 3), dtype=np.float32)
    with Upscaler(compact_files["pth"], device="cpu", precision="fp32", tile=0) as whole:
        expected = whole.upscale(image)
    with Upscaler(compact_files["pth"], device="cpu", precision="fp32", tile=72) as tiled:
        assert tiled.plan(140, 150).count > 1
        np.testing.assert_allclose(tiled.upscale(image), expected, atol=2e-5)


def test_auto_precision_follows_spandrel_and_the_cpu(compact_files, image):
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    with Upscaler(compact_files["pth"], device="cpu") as up:
        assert up.precision == ("bf16" if native_bf16 else "fp32")
        out = up.upscale(image)
    with Upscaler(compact_files["pth"], device="cpu", precision="fp32") as fp32:
        reference = fp32.upscale(image)
    assert np.abs(out - reference).max() < 0.03  # bf16 has an 8-bit mantissa


def test_cli_upscales_a_pth_like_the_torch_module(tmp_path, compact_files, compact_net, image):
    src = tmp_path / "photo.png"
    Image.fromarray((image * 255).round().astype(np.uint8)).save(src)
    args = ["upscale", src, "--model", compact_files["pth"], "--precision", "fp32", "-o", tmp_path / "out"]
    result = subprocess.run([str(REALSR), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "realesr-tiny-x4.pth (x4, Compact) on torch/cpu fp32" in result.stderr
    out = np.asarray(Image.open(tmp_path / "out" / "photo_x4.png")).astype(np.float32) / 255
    expected = _eager(compact_net, np.asarray(Image.open(src)).astype(np.float32) / 255)
    assert np.abs(out - expected).max() <= 1 / 255 + 1e-6  # one 8-bit rounding step at most


# ---- export


def test_export_writes_verified_onnx_and_torchscript(tmp_path, compact_files, compact_net, image):
    from realsr_cli._files import file_sha256
    from realsr_cli.training.export import export_model

    report = export_model(compact_files["safetensors"], tmp_path, ExportConfig(half=True))
    assert set(report.paths) == {"onnx", "onnx_fp16", "torchscript"}
    assert all(err <= 1e-3 for kind in ("onnx", "torchscript") for err in report.max_errors[kind].values())
    assert (report.spec.architecture, report.spec.scale, report.spec.supports_half) == ("Compact", 4, True)
    assert report.spec.source_sha256 == file_sha256(compact_files["safetensors"])
    assert report.parameters == sum(p.numel() for p in compact_net.parameters())
    for kind in ("onnx", "torchscript"):
        with Upscaler(report.paths[kind], device="cpu", precision="fp32", tile=0) as up:
            assert up.spec.architecture == "Compact" and up.native_scale == 4
            np.testing.assert_allclose(up.upscale(image), _eager(compact_net, image), atol=1e-4)


def test_cli_export_of_a_community_model(tmp_path, compact_files):
    args = ["export", compact_files["pth"], "-o", tmp_path, "--format", "onnx"]
    result = subprocess.run([str(REALSR), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["realesr-tiny-x4.onnx"]
    assert "Compact, x4, receptive field unknown" in " ".join(result.stderr.split())


# spandrel's unshuffle pads only when a size is off the multiple, a branch the trace fixes; the parity checks at two
# sizes, and realsr feeding only multiples, are what make that safe
@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean:torch.jit.TracerWarning")
def test_export_of_a_size_multiple_model_checks_at_sizes_it_takes(tmp_path, rng):
    from realsr_cli.training.export import export_model, load_source

    community.import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    # Real-ESRGAN x2plus's layout: pixel-unshuffle by 2, then an x4 RRDB net; spandrel asks for multiples of 4
    net = ESRGAN(in_nc=12, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2).eval()
    torch.save(net.state_dict(), tmp_path / "x2plus-tiny.pth")
    source = load_source(tmp_path / "x2plus-tiny.pth")
    assert (source.spec.architecture, source.spec.scale, source.spec.size_multiple) == ("ESRGAN", 2, 4)
    assert source.fit((37, 53)) == (40, 56)
    report = export_model(tmp_path / "x2plus-tiny.pth", tmp_path / "out", ExportConfig(formats=("onnx",)))
    assert set(report.max_errors["onnx"]) == {(40, 56), (64, 44)}
    image = rng.random((40, 56, 3), dtype=np.float32)  # a multiple of 4: no padding on either path
    with Upscaler(report.paths["onnx"], device="cpu", tile=0) as up:
        assert up.spec.size_multiple == 4
        np.testing.assert_allclose(up.upscale(image), _eager(net, image), atol=1e-4)


# ---- errors


def _run_upscale(model: Path, photo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REALSR), "upscale", str(photo), "--model", str(model)], capture_output=True, text=True, timeout=120
    )


class _RunsCode:
    """A pickle payload that would create a file when unpickled unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_refuses_pickles_that_would_run_code(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"body.0.weight": torch.zeros(1), "payload": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(InputError, match="safe weights-only load refuses: realsr runs no code") as info:
        load_community_model(tmp_path / "evil.pth")
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, data, error, message",
    [
        ("garbage.pth", b"\x80\x04" + bytes(range(256)) * 4, InputError, "a damaged pickle, or not a PyTorch file"),
        ("cut.safetensors", (50).to_bytes(8, "little") + b'{"x": {"dtype": "F32"', InputError, "corrupt safetensors"),
        ("list.pth", None, InputError, "holds a list, not a state dict"),
        ("unknown.pth", None, ModelError, "unknown architecture: none of spandrel"),
    ],
)
def test_files_that_are_no_model_give_one_line_errors(tmp_path, name, data, error, message):
    path = tmp_path / name
    if name == "list.pth":
        torch.save([torch.zeros(2)], path)
    elif name == "unknown.pth":
        torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3)}, path)
    else:
        path.write_bytes(data)
    with pytest.raises(error, match=message) as info:
        load_community_model(path)
    assert "\n" not in str(info.value)


def test_error_exit_codes_through_the_cli(tmp_path, image):
    photo = tmp_path / "photo.png"
    Image.fromarray((image * 255).astype(np.uint8)).save(photo)
    torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "unknown.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x04" + bytes(range(256)))
    unknown, garbage = _run_upscale(tmp_path / "unknown.pth", photo), _run_upscale(tmp_path / "garbage.pth", photo)
    assert (unknown.returncode, garbage.returncode) == (ModelError.exit_code, InputError.exit_code)
    assert "unknown architecture" in unknown.stderr and "Traceback" not in unknown.stderr + garbage.stderr


def test_training_checkpoint_marker_is_the_checkpoints_own():
    from realsr_cli.training.checkpoint import CHECKPOINT_FORMAT

    assert community.REALSR_CHECKPOINT_FORMAT == CHECKPOINT_FORMAT


def test_training_checkpoint_still_says_to_export(tiny_checkpoint):
    with pytest.raises(InputError, match="realsr training checkpoint.*run `realsr export"):
        load_community_model(tiny_checkpoint)


def test_missing_spandrel_or_torch_names_the_extra(monkeypatch, compact_files):
    monkeypatch.delitem(sys.modules, "spandrel", raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "spandrel" else real_find_spec(name, *a)
    )
    with pytest.raises(BackendError, match=r"spandrel is not installed: pip install 'realsr-cli\[spandrel\]'"):
        load_community_model(compact_files["pth"])
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(BackendError, match=r"model needs torch: pip install 'realsr-cli\[spandrel\]'"):
        load_community_model(compact_files["pth"])


def test_spandrel_imports_without_torchvision_and_leaves_no_stand_in():
    try:
        import torchvision.transforms.functional  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision imports here: spandrel needs no stand-in")
    # in a fresh interpreter too, where torch is imported by spandrel's import (torch's own import walks sys.modules)
    probe = "import sys; from realsr_cli.inference.runtime import community as c; c.import_spandrel(); "
    probe += "print('Compact' in sys.modules['spandrel'].MAIN_REGISTRY, 'torchvision' in sys.modules)"
    fresh = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert fresh.stdout.split() == ["True", "False"], fresh.stderr
    spandrel = community.import_spandrel()
    assert "LaMa" in spandrel.MAIN_REGISTRY and "Compact" in spandrel.MAIN_REGISTRY
    assert "torchvision" not in sys.modules  # the stand-in was only there while spandrel was imported
    lama = importlib.import_module("spandrel.architectures.LaMa.__arch.LaMa")
    with pytest.raises(BackendError, match="needs torchvision"):
        lama.rotate(torch.zeros(1, 3, 4, 4), 0.0)
