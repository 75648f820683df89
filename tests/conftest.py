"""Shared fixtures: seeded data, a tiny checkpoint of the real architecture, paths to the shared data sets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# `--precision auto` remembers what it measured (runtime.fastest): one cache for the whole run, in-process and in
# the CLI's subprocesses alike, and never the user's own
os.environ["REALSR_CACHE_DIR"] = tempfile.mkdtemp(prefix="realsr-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying why (a user's fresh clone has no shared data)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared data set, absent from a fresh clone)")
    return path


def flops_per_input_pixel(net, in_channels: int = 3) -> float:
    """Floating-point operations (2 per multiply-add) torch module `net` spends per input pixel, counted from its
    convolutions and linear layers on a probe input (activations, additions and the shuffle are not counted: they
    are a rounding error beside the convolutions). The tests' independent count, to check `realsr bench`'s count
    from the exported files against; import it with `from conftest import flops_per_input_pixel`."""
    import torch
    from torch import nn

    macs = 0

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    size = 32
    try:
        with torch.no_grad():
            net(torch.zeros(1, in_channels, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return 2.0 * macs / (size * size)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def odd_image(rng) -> np.ndarray:
    """(37, 53, 3) float32 in [0, 1]: neither square nor a multiple of any tile size, with real structure."""
    y, x = np.mgrid[0:37, 0:53].astype(np.float32)
    smooth = np.stack([np.sin(x / 5), np.cos(y / 7), np.sin((x + y) / 9)], axis=-1) * 0.35 + 0.5
    return np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_arch():
    from realsr_cli.training.nets import ArchConfig

    return ArchConfig(
        name="tiny", channels=8, encoder_blocks=1, sr_blocks=1, lr_blocks=1, hr_channels=4, disc_channels=8
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_arch) -> Path:
    """A checkpoint of a tiny net of the real architecture, all six networks, seeded random weights."""
    import torch

    from realsr_cli.training.checkpoint import save_checkpoint
    from realsr_cli.training.nets import build_networks

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    return save_checkpoint(path, tiny_arch, build_networks(tiny_arch), provenance={"note": "seeded random weights"})


@pytest.fixture(scope="session")
def compact_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the `compact` preset (the shipped model's family) with seeded random weights."""
    import torch

    from realsr_cli.training.checkpoint import save_checkpoint
    from realsr_cli.training.nets import build_networks, preset

    torch.manual_seed(0)
    arch = preset("compact")
    path = tmp_path_factory.mktemp("ckpt") / "compact.pth"
    return save_checkpoint(path, arch, build_networks(arch), provenance={"note": "seeded random weights"})


def _exports(checkpoint: Path, out_dir: Path) -> dict[str, Path]:
    from realsr_cli.config import ExportConfig
    from realsr_cli.training.export import export_model

    report = export_model(checkpoint, out_dir, ExportConfig(half=True))
    assert set(report.paths) == {"onnx", "onnx_fp16", "torchscript"}, report.max_errors
    return dict(report.paths)


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    """`tiny_checkpoint` exported and verified by `realsr_cli.training.export.export_model` with half=True.

    Keys: "onnx" (fp32, dynamic batch/H/W, input "input", output "output", ModelSpec in metadata_props),
    "onnx_fp16" (fp16 weights, fp32 inputs and outputs, metadata precision "fp16"), "torchscript" (`.ts`, spec JSON
    in the extra file TORCHSCRIPT_SPEC_FILE). Every graph ends in clamp(0, 1), and this tiny net's seeded weights
    output values below 0, so every output is exactly 0 (black): good for shapes, metadata and plumbing; to compare
    output values, use `tiny_ranged_exports`. Shared by the whole session: read only.
    """
    return _exports(tiny_checkpoint, tmp_path_factory.mktemp("tiny_exports"))


@pytest.fixture(scope="session")
def compact_exports(tmp_path_factory, compact_checkpoint) -> dict[str, Path]:
    """`compact_checkpoint` exported like `tiny_exports` (same keys: "onnx", "onnx_fp16", "torchscript"); read only."""
    return _exports(compact_checkpoint, tmp_path_factory.mktemp("compact_exports"))


@pytest.fixture(scope="session")
def tiny_ranged_checkpoint(tmp_path_factory, tiny_arch) -> Path:
    """Like `tiny_checkpoint` (all six networks, plus Adam state as a training run saves it), but G_SR's last conv
    is rescaled so outputs spread over about [-0.2, 1.15] instead of sitting below 0: after the exported graph's
    clamp, seeded random weights otherwise give an all-black image, and every comparison of outputs passes vacuously.
    """
    import torch

    from realsr_cli.training.checkpoint import save_checkpoint
    from realsr_cli.training.nets import build_generator, build_networks

    torch.manual_seed(0)
    nets = build_networks(tiny_arch)
    net = build_generator(tiny_arch)
    net.encoder, net.sr_decoder = nets["encoder"], nets["sr_decoder"]
    probe = torch.rand(1, tiny_arch.in_channels, 32, 32)
    with torch.no_grad():
        out = net(probe)
        last = nets["sr_decoder"].conv_hr  # the pixelshuffle decoder's final conv
        gain = 0.4 / out.std()
        last.weight.mul_(gain)
        last.bias.mul_(gain).add_(0.5 - out.mean() * gain)
    gen_params = [p for role in ("encoder", "sr_decoder") for p in nets[role].parameters()]
    optimizer = torch.optim.Adam(gen_params, lr=1e-4)
    net(probe).mean().backward()
    optimizer.step()  # one real step, so the checkpoint carries non-empty optimizer state
    optimizer.zero_grad()
    path = tmp_path_factory.mktemp("ckpt") / "ranged.pth"
    return save_checkpoint(
        path,
        tiny_arch,
        nets,
        step=1,
        optimizers={"generator": optimizer.state_dict()},
        provenance={"note": "rescaled seeded weights"},
    )


@pytest.fixture(scope="session")
def tiny_ranged_exports(tmp_path_factory, tiny_ranged_checkpoint) -> dict[str, Path]:
    """`tiny_ranged_checkpoint` exported like `tiny_exports`: outputs that use the whole [0, 1] range, clamped at
    both ends, for tests that compare backends, tiles or precisions and must not compare black images."""
    return _exports(tiny_ranged_checkpoint, tmp_path_factory.mktemp("tiny_ranged_exports"))
