"""realsr: upscale real-world photos x4 with models trained by unsupervised domain adaptation.

The public API is re-exported lazily (PEP 562), so `import realsr_cli` stays cheap and never imports torch:

    from realsr_cli import Upscaler
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Upscaler": "realsr_cli.inference.upscaler",
    "UpscaleResult": "realsr_cli.inference.pipeline",
    "ModelSpec": "realsr_cli.spec",
    "RealSRError": "realsr_cli.errors",
    "ConfigError": "realsr_cli.errors",
    "InputError": "realsr_cli.errors",
    "ModelError": "realsr_cli.errors",
    "BackendError": "realsr_cli.errors",
}

__all__ = [
    "__version__",
    "Upscaler",
    "UpscaleResult",
    "ModelSpec",
    "RealSRError",
    "ConfigError",
    "InputError",
    "ModelError",
    "BackendError",
]

if TYPE_CHECKING:
    from realsr_cli.errors import BackendError, ConfigError, InputError, ModelError, RealSRError
    from realsr_cli.inference.pipeline import UpscaleResult
    from realsr_cli.inference.upscaler import Upscaler
    from realsr_cli.spec import ModelSpec


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'realsr_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
