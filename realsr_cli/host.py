"""What this machine offers, read cheaply and without importing torch: usable CPU cores, native bf16, a GPU driver,
whether torch is installed; and the one check that a torch feature makes before it imports torch.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from realsr_cli.errors import BackendError

# torch is an extra: ONNX inference runs without it; export, train, TorchScript and community models need it
TORCH_INSTALL = "pip install 'realsr-cli[torch]'"


def cpu_count() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo without importing
    torch; False where that file does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def gpu_present() -> bool:
    """A cheap hint that an NVIDIA GPU driver is loaded (so auto mode does not try, and warn about, CUDA on
    machines that cannot have it). Where we cannot tell, say yes and let the provider decide."""
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg"))
    return sys.platform == "win32"


def torch_installed() -> bool:
    """Whether torch can be imported here, found without importing it (which takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def require_torch(feature: str, install: str = TORCH_INSTALL):
    """The torch module, imported now, for `feature` (which completes "FEATURE needs torch", e.g. "realsr export");
    BackendError in one line saying what to install when torch is missing."""
    try:
        import torch
    except ImportError as err:
        raise BackendError(f"{feature} needs torch: {install}") from err
    return torch
