"""The rule of the tree: only `realsr_cli.training` imports torch at module level, so `realsr --help`, ONNX upscaling,
eval, compare, degrade and an ONNX-only bench start without it (backends that need torch import it inside their
functions). Every module is walked, including ones added later."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import realsr_cli

TORCH_PACKAGE = "realsr_cli.training"

# imports one module in a fresh interpreter and says whether torch came with it
_PROBE = "import importlib, sys; importlib.import_module(sys.argv[1]); print('torch' in sys.modules)"


def _modules_outside_training() -> list[str]:
    def fail(name: str) -> None:  # a package that cannot be imported would hide its modules from the walk
        raise ImportError(f"cannot import {name} to walk it")

    walk = pkgutil.walk_packages(realsr_cli.__path__, "realsr_cli.", onerror=fail)
    names = ["realsr_cli", *(info.name for info in walk)]
    return [name for name in names if name != TORCH_PACKAGE and not name.startswith(TORCH_PACKAGE + ".")]


def _import_alone(name: str) -> str | None:
    """Import module `name` in a fresh interpreter: None when torch stayed out, else what went wrong."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return None if proc.stdout.strip() == "False" else "imports torch"


def test_no_module_outside_training_imports_torch():
    modules = _modules_outside_training()
    assert "realsr_cli.cli.upscale" in modules and "realsr_cli.config" in modules
    # a fresh interpreter per module: in a shared one, the first module to import torch would hide the others
    broken = {name: why for name in modules if (why := _import_alone(name)) is not None}
    assert not broken, broken
