"""The wheel works on its own: built from this tree and installed into a fresh virtual environment without torch,
its `realsr` upscales the bundled Kodak photo with the bundled model from a folder far from the source tree, and
asks for the torch extra where a feature needs it.

The environment gets the wheel's dependencies from a wheelhouse kept between runs (WHEELHOUSE, filled by
`pip download` from the package index the first time, or when a dependency changes), so only the first run
downloads the ~300 MB that onnxruntime and friends weigh; every later one installs offline.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from realsr_cli import __version__
from realsr_cli.errors import BackendError

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "realsr-tests" / "wheelhouse"


def pip(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """This tree built into a wheel (without build isolation when hatchling is here: no index needed)."""
    out = tmp_path_factory.mktemp("dist")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    built = pip("wheel", "--no-deps", *isolation, "-w", str(out), str(ROOT))
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("realsr_cli-*.whl")
    assert path.name.startswith(f"realsr_cli-{__version__}-")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment (no pip of its own, no system site-packages) with the wheel installed; its
    bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], check=True, timeout=120)
    target = ["--python", str(venv / "bin" / "python")]
    offline = ["install", "--no-index", "--find-links", str(WHEELHOUSE), str(wheel)]
    done = pip(*target, *offline)
    if done.returncode != 0:  # first run, or a dependency the wheelhouse lacks: fetch them, then offline again
        fetched = pip("download", "--dest", str(WHEELHOUSE), str(wheel))
        assert fetched.returncode == 0, fetched.stderr
        (WHEELHOUSE / wheel.name).unlink(missing_ok=True)  # pip download copies the wheel too: dependencies only
        done = pip(*target, *offline)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


def run_installed(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # a clean environment: nothing points back at the source tree or the development environment
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([*args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_installed_wheel_upscales_the_bundled_photo_without_torch(installed, tmp_path):
    python = str(installed / "python")
    where = run_installed(installed, python, "-c", "import realsr_cli; print(realsr_cli.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    package = Path(where.stdout.strip()).parent
    assert ROOT not in package.parents, f"imported from the source tree: {package}"
    no_torch = run_installed(installed, python, "-c", "import torch", cwd=tmp_path)
    assert no_torch.returncode != 0, "torch is in the fresh environment: it must be an extra, not a dependency"

    shutil.copyfile(package / "samples" / "kodim23.png", tmp_path / "kodim23.png")
    done = run_installed(installed, "realsr", "upscale", "kodim23.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "model realsr-compact-x4." in done.stderr and "on onnx/cpu" in done.stderr, done.stderr  # the bundled model
    with Image.open(tmp_path / "kodim23_x4.png") as result:
        assert result.size == (768 * 4, 512 * 4)

    refused = run_installed(installed, "realsr", "export", "model.pth", "-o", "out/", cwd=tmp_path)
    assert refused.returncode == BackendError.exit_code, refused.stderr
    assert refused.stderr.strip() == "error: realsr export needs torch: pip install 'realsr-cli[torch]'"
