"""Shared fixtures: seeded data, a tiny checkpoint of the real architecture, paths to the shared data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying why (a user's fresh clone has no shared data)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared data set, absent from a fresh clone)")
    return path


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
    from realsr_cli.nets import ArchConfig

    return ArchConfig(name="tiny", channels=8, encoder_blocks=1, sr_blocks=1, lr_blocks=1, hr_channels=4, disc_channels=8)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_arch) -> Path:
    """A checkpoint of a tiny net of the real architecture, all six networks, seeded random weights."""
    import torch

    from realsr_cli.nets import build_networks, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    return save_checkpoint(path, tiny_arch, build_networks(tiny_arch), provenance={"note": "seeded random weights"})


@pytest.fixture(scope="session")
def compact_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the `compact` preset (the shipped model's family) with seeded random weights."""
    import torch

    from realsr_cli.nets import build_networks, preset, save_checkpoint

    torch.manual_seed(0)
    arch = preset("compact")
    path = tmp_path_factory.mktemp("ckpt") / "compact.pth"
    return save_checkpoint(path, arch, build_networks(arch), provenance={"note": "seeded random weights"})
