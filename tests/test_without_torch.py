"""torch is an extra (`realsr-cli[torch]`): where it is missing, ONNX upscaling works and chooses ONNX by itself,
and every torch feature stops with one line naming what to install (BackendError, exit 5).

Each case runs `realsr` in a fresh interpreter in which `import torch` fails as it does where torch is not
installed (a None entry in sys.modules makes the import raise ModuleNotFoundError, and importlib's find_spec
report it missing). tests/test_wheel.py runs the same commands in a real environment without torch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from realsr_cli.errors import BackendError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "realsr_cli" / "samples" / "kodim23.png"
TS = "the TorchScript backend"

WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
sys.argv[0] = "realsr"
from realsr_cli.cli import main
main()
"""


def realsr_without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    with Image.open(SAMPLE) as sample:
        sample.convert("RGB").crop((300, 200, 340, 230)).save(path)
    return path


def test_onnx_upscaling_works_and_is_chosen_without_torch(tmp_path, photo):
    # where TorchScript would run the bundled model fastest, auto must still pick one of the ONNX files here
    done = realsr_without_torch("upscale", str(photo), "-o", "out/", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "model realsr-compact-x4." in done.stderr and " on onnx/cpu " in done.stderr, done.stderr
    with Image.open(tmp_path / "out" / "photo_x4.png") as result:
        assert result.size == (160, 120)


@pytest.mark.parametrize(
    ("args", "feature", "extra"),
    [
        (("export", "model.pth", "-o", "out/"), "realsr export", "torch"),
        (("train", "--baseline", "--source-hr", "hr/", "--out", "run/"), "realsr train", "torch"),
        (("upscale", "photo.png", "--backend", "torchscript"), TS, "torch"),
        (("upscale", "photo.png", "--model", "model.ts"), TS, "torch"),
        (("upscale", "photo.png", "--model", "model.pth"), "a .pth or .safetensors model", "spandrel"),
        (("bench", "--backend", "torchscript", "--sizes", "0.01", "--folder", "1", "-q"), TS, "torch"),
    ],
    ids=["export", "train", "backend-torchscript", "ts-model", "pth-model", "bench-torchscript"],
)
def test_torch_features_say_which_extra_to_install(tmp_path, photo, args, feature, extra):
    bundled_ts = ROOT / "export" / "realsr-compact-x4.ts"
    (tmp_path / "model.ts").write_bytes(bundled_ts.read_bytes())
    (tmp_path / "model.pth").write_bytes(b"\x80\x02}q\x00.")  # a pickle's first bytes: a torch.save file
    done = realsr_without_torch(*args, cwd=tmp_path)
    assert done.returncode == BackendError.exit_code, done.stderr
    assert done.stderr.strip() == f"error: {feature} needs torch: pip install 'realsr-cli[{extra}]'"


def test_bench_skips_torchscript_with_a_note_without_torch(monkeypatch):
    from realsr_cli.bench import benchmark
    from realsr_cli.config import BenchConfig

    monkeypatch.setattr(benchmark, "torch_installed", lambda: False)
    ts = ROOT / "export" / "realsr-compact-x4.ts"
    both = BenchConfig(backends=("onnx", "torchscript"))
    assert benchmark.skip_reason(both, "torchscript", ts) == "needs torch: pip install 'realsr-cli[torch]'"
    assert benchmark.skip_reason(both, "onnx", ts.with_suffix(".onnx")) is None
    # asked for alone, it is not skipped: it fails with the backend's own one-line error (above)
    assert benchmark.skip_reason(BenchConfig(backends=("torchscript",)), "torchscript", ts) is None
