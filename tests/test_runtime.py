"""Backends: file detection, clear errors for bad model files, probing of models made elsewhere, CUDA provider
selection and fallback (simulated: no GPU here), fp16 handling, and ONNX == TorchScript == eager."""

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from realsr_cli import host
from realsr_cli.config import UpscaleConfig
from realsr_cli.errors import ConfigError, InputError, ModelError
from realsr_cli.inference.runtime import detect_format, open_backend


def foreign_onnx(
    path, nodes, *, input_shape=("N", 3, "H", "W"), output_shape=None, initializers=(), elem=TensorProto.FLOAT
):
    """Write an ONNX model with no realsr metadata (like a Real-ESRGAN export made elsewhere)."""
    graph = helper.make_graph(
        list(nodes),
        "foreign",
        [helper.make_tensor_value_info("x", elem, list(input_shape))],
        [helper.make_tensor_value_info("y", elem, list(output_shape or ("N", None, None, None)))],
        initializer=list(initializers),
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="elsewhere", ir_version=8
    )
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def resize_nodes(sy, sx, src="x", dst="y"):
    scales = helper.make_tensor(f"scales_{dst}", TensorProto.FLOAT, [4], [1, 1, sy, sx])
    node = helper.make_node("Resize", [src, "", f"scales_{dst}"], [dst], mode="nearest")
    return [node], [scales]


@pytest.fixture
def nearest_x2(tmp_path):
    nodes, inits = resize_nodes(2, 2)
    return foreign_onnx(tmp_path / "nearest_x2.onnx", nodes, initializers=inits)


def notices():
    seen = []
    return seen, seen.append


def open_model(path, notice=None, **options):
    """`open_backend` for the model file `path`, with `UpscaleConfig`'s backend, device, precision, scale_hint."""
    return open_backend(UpscaleConfig(model=str(path), **options), notice)


# ---- detection and bad files


def test_detects_formats_by_content_not_name(tiny_exports, tmp_path):
    renamed_onnx = tmp_path / "model.bin"
    renamed_ts = tmp_path / "model.onnx"  # a TorchScript file with the wrong extension
    shutil.copy(tiny_exports["onnx"], renamed_onnx)
    shutil.copy(tiny_exports["torchscript"], renamed_ts)
    assert detect_format(renamed_onnx) == "onnx"
    assert detect_format(renamed_ts) == "torchscript"
    assert open_model(renamed_ts).name == "torchscript"  # auto: whatever the file is
    assert open_model(renamed_onnx).name == "onnx"


def truncated(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def written(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d, e, c: d / "missing.onnx", "not found"),
        (lambda d, e, c: written(d / "empty.onnx", b""), "empty"),
        (lambda d, e, c: written(d / "text.onnx", b"hello, not a model\n"), "not an ONNX or TorchScript model"),
        (lambda d, e, c: truncated(e["onnx"], d / "cut.onnx"), "corrupt or truncated ONNX"),
        (lambda d, e, c: truncated(e["torchscript"], d / "cut.ts"), "corrupt"),
        (lambda d, e, c: c, "realsr export"),
        (lambda d, e, c: d, "is a folder"),
    ],
    ids=["missing", "empty", "text", "truncated-onnx", "truncated-ts", "training-checkpoint", "folder"],
)
def test_bad_model_files_give_one_line_input_errors(tmp_path, tiny_exports, tiny_checkpoint, capfd, make, message):
    path = make(tmp_path, tiny_exports, tiny_checkpoint)
    with pytest.raises(InputError, match=message) as info:
        open_model(path)
    assert "\n" not in str(info.value)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no onnxruntime or torch log spam


def test_backend_must_match_the_file(tiny_exports):
    with pytest.raises(ConfigError, match="onnx model"):
        open_model(tiny_exports["onnx"], backend="torchscript")
    with pytest.raises(ConfigError, match="torchscript model"):
        open_model(tiny_exports["torchscript"], backend="onnx")
    with pytest.raises(ConfigError, match="backend.*'tensorrt'"):
        open_model(tiny_exports["onnx"], backend="tensorrt")
    with pytest.raises(ConfigError, match="device.*'tpu'"):
        open_model(tiny_exports["onnx"], device="tpu")


# ---- precision


def test_bf16_runs_torchscript_close_to_fp32(tiny_exports, odd_image):
    x = np.ascontiguousarray(odd_image.transpose(2, 0, 1)[None])
    fp32 = open_model(tiny_exports["torchscript"], device="cpu", precision="fp32")
    assert open_model(tiny_exports["onnx"], device="cpu").precision == "fp32"  # ORT has no bf16 convolutions
    bf16 = open_model(tiny_exports["torchscript"], device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    reference, rounded = fp32.run(x), bf16.run(x)
    assert rounded.dtype == np.float32 and 0 < np.abs(rounded - reference).max() < 0.02  # 8-bit mantissa


def test_precisions_a_backend_or_device_cannot_run_are_config_errors(tiny_exports):
    with pytest.raises(ConfigError, match="bf16 runs with TorchScript only"):
        open_model(tiny_exports["onnx"], precision="bf16")
    for kind in ("onnx", "torchscript"):
        with pytest.raises(ConfigError, match="fp16 runs only on CUDA, and this run is on CPU"):
            open_model(tiny_exports[kind], device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="precision.*'int4'"):
        open_model(tiny_exports["onnx"], precision="int4")


# ---- realsr models: spec from metadata, parity


def test_onnx_torchscript_and_eager_agree(tiny_exports, tiny_checkpoint, odd_image):
    import torch

    from realsr_cli.training.checkpoint import load_checkpoint

    x = np.ascontiguousarray(odd_image.transpose(2, 0, 1)[None])  # (1, 3, 37, 53)
    with torch.inference_mode():
        eager = load_checkpoint(tiny_checkpoint).generator()(torch.from_numpy(x)).clamp(0, 1).numpy()
    outs = {}
    for kind in ("onnx", "torchscript"):
        backend = open_model(tiny_exports[kind], device="cpu", precision="fp32")
        assert backend.name == kind and backend.device == "cpu" and backend.precision == "fp32"
        assert backend.spec.scale == 4 and backend.spec.receptive_field is not None
        outs[kind] = backend.run(x)
        assert outs[kind].shape == (1, 3, 148, 212) and outs[kind].dtype == np.float32
        np.testing.assert_allclose(outs[kind], eager, atol=1e-3)
    np.testing.assert_allclose(outs["onnx"], outs["torchscript"], atol=1e-3)
    # batches of any size
    assert open_model(tiny_exports["onnx"]).run(np.repeat(x, 3, axis=0)).shape == (3, 3, 148, 212)


def test_scale_hint_is_checked_against_metadata(tiny_exports):
    assert open_model(tiny_exports["onnx"], scale_hint=4).spec.scale == 4
    with pytest.raises(ModelError, match="x4, not x2"):
        open_model(tiny_exports["onnx"], scale_hint=2)


# ---- models made elsewhere: probing


def test_probe_finds_the_scale_of_a_foreign_onnx(nearest_x2, capfd):
    backend = open_model(nearest_x2)
    spec = backend.spec
    assert (spec.scale, spec.size_multiple, spec.receptive_field, spec.fixed_size) == (2, 1, None, None)
    x = np.random.default_rng(0).random((2, 3, 5, 7), dtype=np.float32)
    np.testing.assert_array_equal(backend.run(x), x.repeat(2, 2).repeat(2, 3))
    assert open_model(nearest_x2, scale_hint=2).spec.scale == 2
    with pytest.raises(ModelError, match="x2, not x3"):
        open_model(nearest_x2, scale_hint=3)
    assert capfd.readouterr().err == ""


def test_probe_finds_a_size_multiple(tmp_path, capfd):
    # SpaceToDepth(2) rejects odd sizes: the probe must step up to multiples of 2, without ORT's error logging
    s2d = helper.make_node("SpaceToDepth", ["x"], ["z"], blocksize=2)
    d2s = helper.make_node("DepthToSpace", ["z"], ["w"], blocksize=2, mode="DCR")
    nodes, inits = resize_nodes(4, 4, src="w")
    path = foreign_onnx(tmp_path / "even.onnx", [s2d, d2s, *nodes], initializers=inits)
    spec = open_model(path).spec
    assert (spec.scale, spec.size_multiple) == (4, 2)
    assert capfd.readouterr().err == ""


def test_fixed_input_shape_is_read_from_the_graph(tmp_path):
    nodes, inits = resize_nodes(2, 2)
    path = foreign_onnx(tmp_path / "fixed.onnx", nodes, input_shape=(1, 3, 16, 24), initializers=inits)
    backend = open_model(path)
    assert backend.spec.fixed_size == (16, 24) and backend.spec.scale == 2
    x = np.random.default_rng(0).random((3, 3, 16, 24), dtype=np.float32)  # fed one at a time to a batch-1 model
    np.testing.assert_array_equal(backend.run(x), x.repeat(2, 2).repeat(2, 3))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: resize_nodes(1.5, 1.5), "could not find the model's scale"),
        (lambda: resize_nodes(2, 3), "could not find the model's scale"),
        (lambda: ([helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)], []), "1-channel images"),
    ],
    ids=["fractional", "anisotropic", "gray-output"],
)
def test_probe_rejects_what_is_not_an_rgb_sr_model(tmp_path, build, message):
    nodes, inits = build()
    path = foreign_onnx(tmp_path / "odd.onnx", nodes, initializers=inits)
    with pytest.raises(ModelError, match=message):
        open_model(path)


def test_non_rgb_input_is_a_model_error(tmp_path):
    nodes, inits = resize_nodes(2, 2)
    path = foreign_onnx(tmp_path / "gray.onnx", nodes, input_shape=("N", 1, "H", "W"), initializers=inits)
    with pytest.raises(ModelError, match="1-channel input"):
        open_model(path)


def test_probe_finds_the_scale_of_a_foreign_torchscript(tmp_path):
    import torch
    from torch.nn import functional as F

    class Net(torch.nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=3.0, mode="nearest") * 2.0  # unclamped: the backend clamps

    path = tmp_path / "elsewhere.pt"
    torch.jit.save(torch.jit.trace(Net(), torch.rand(1, 3, 8, 8)), str(path))
    backend = open_model(path)
    assert backend.name == "torchscript" and backend.spec.scale == 3 and backend.spec.receptive_field is None
    y = backend.run(np.full((1, 3, 4, 5), 0.75, np.float32))
    assert y.shape == (1, 3, 12, 15) and y.max() == 1.0


# ---- devices: CUDA only when it really loads, fp16 only on CUDA


def test_cuda_requested_without_a_gpu_falls_back_quietly(tiny_exports, capfd):
    # the real GPU build of onnxruntime on this CPU-only machine: CUDA is "available" but cannot load
    seen, notice = notices()
    backend = open_model(tiny_exports["onnx"], device="cuda", notice=notice)
    assert backend.device == "cpu"
    assert len(seen) == 1 and seen[0].startswith("CUDA not available (") and seen[0].endswith("running on CPU")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_auto_device_tries_cuda_only_where_a_gpu_is_visible(tiny_exports, monkeypatch):
    monkeypatch.setattr(host, "gpu_present", lambda: False)
    seen, notice = notices()
    assert open_model(tiny_exports["onnx"], notice=notice).device == "cpu"
    assert seen == []  # nothing was expected of CUDA, so nothing to say
    monkeypatch.setattr(host, "gpu_present", lambda: True)
    assert open_model(tiny_exports["onnx"], notice=notice).device == "cpu"
    assert len(seen) == 1 and "CUDA not available" in seen[0]


def test_build_without_cuda_provider(tiny_exports, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(host, "gpu_present", lambda: True)
    seen, notice = notices()
    assert open_model(tiny_exports["onnx"], device="auto", notice=notice).device == "cpu"
    assert seen == []
    assert open_model(tiny_exports["onnx"], device="cuda", notice=notice).device == "cpu"
    assert len(seen) == 1 and "no CUDA provider" in seen[0]


class FakeCudaSession:
    """Stands in for onnxruntime.InferenceSession when CUDA 'loads': records what was opened, how."""

    opened = []

    def __init__(self, path, options, providers):
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        self.providers = names
        FakeCudaSession.opened.append((path, names, dict(providers[0][1]) if isinstance(providers[0], tuple) else {}))

    def get_providers(self):
        return self.providers


@pytest.fixture
def fake_cuda(monkeypatch):
    import onnxruntime as ort

    FakeCudaSession.opened = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FakeCudaSession)
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: print("preload output must not reach stdout"))
    monkeypatch.setattr(host, "gpu_present", lambda: True)
    return FakeCudaSession


def fp32_with_fp16_sibling(tmp_path, exports) -> Path:
    """model.onnx with its model.fp16.onnx beside it, as `realsr export --half` writes them; returns the fp32 path."""
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(exports["onnx_fp16"], folder / "model.fp16.onnx")
    return shutil.copy(exports["onnx"], folder / "model.onnx")


def test_cuda_prefers_the_fp16_sibling(tmp_path, tiny_exports, fake_cuda, capfd):
    fp32 = fp32_with_fp16_sibling(tmp_path, tiny_exports)
    seen, notice = notices()
    backend = open_model(fp32, notice=notice)
    assert backend.device == "cuda" and backend.path.name == "model.fp16.onnx"
    assert backend.spec.precision == "fp16" and backend.spec.supports_half
    path, providers, options = fake_cuda.opened[-1]
    assert path.endswith("model.fp16.onnx") and providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"
    assert seen == [] and capfd.readouterr().out == ""
    # explicit CPU never touches CUDA, so the fp32 file is opened as named
    cpu = open_model(fp32, device="cpu")
    assert cpu.path == fp32 and cpu.device == "cpu" and fake_cuda.opened[-1][1] == ["CPUExecutionProvider"]


def test_cuda_session_that_falls_back_to_cpu_is_detected(tmp_path, tiny_exports, monkeypatch, fake_cuda):
    import onnxruntime as ort

    class SilentFallback(FakeCudaSession):
        def get_providers(self):  # what ORT does when the CUDA libraries are missing
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", SilentFallback)
    fp32 = fp32_with_fp16_sibling(tmp_path, tiny_exports)
    seen, notice = notices()
    backend = open_model(fp32, notice=notice)
    # CUDA was tried with the fp16 sibling, then the CPU session uses the fp32 file
    assert [p.rsplit("/", 1)[1] for p, _, _ in SilentFallback.opened] == ["model.fp16.onnx", "model.onnx"]
    assert SilentFallback.opened[-1][1] == ["CPUExecutionProvider"]
    assert backend.device == "cpu" and backend.path == fp32 and backend.spec.precision == "fp32"
    assert len(seen) == 1 and "CUDA not available" in seen[0]


def test_cuda_session_error_falls_back_with_its_reason(tiny_exports, monkeypatch, fake_cuda):
    import onnxruntime as ort

    class Exploding(FakeCudaSession):
        def __init__(self, path, options, providers):
            if "CUDAExecutionProvider" in [p[0] if isinstance(p, tuple) else p for p in providers]:
                raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected\nmore lines")
            super().__init__(path, options, providers)

    monkeypatch.setattr(ort, "InferenceSession", Exploding)
    seen, notice = notices()
    backend = open_model(tiny_exports["onnx"], device="cuda", notice=notice)
    assert backend.device == "cpu"
    assert seen == ["CUDA not available (CUDA failure 100: no CUDA-capable device is detected): running on CPU"]


def test_fp16_onnx_on_cpu_uses_the_fp32_sibling(tmp_path, tiny_exports):
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(tiny_exports["onnx"], folder / "model.onnx")
    fp16 = shutil.copy(tiny_exports["onnx_fp16"], folder / "model.fp16.onnx")
    seen, notice = notices()
    backend = open_model(fp16, device="cpu", notice=notice)
    assert backend.path.name == "model.onnx" and backend.spec.precision == "fp32"
    assert seen == ["fp16 models run only on CUDA: using model.onnx on CPU"]


def test_fp16_onnx_alone_on_cpu_is_a_model_error(tmp_path, tiny_exports):
    fp16 = shutil.copy(tiny_exports["onnx_fp16"], tmp_path / "lonely.fp16.onnx")
    with pytest.raises(ModelError, match="fp16 models run only on CUDA"):
        open_model(fp16, device="cpu")


def test_torchscript_cuda_request_falls_back(tiny_exports, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen, notice = notices()
    backend = open_model(tiny_exports["torchscript"], device="cuda", notice=notice)
    assert backend.device == "cpu" and len(seen) == 1 and "CUDA not available" in seen[0]
