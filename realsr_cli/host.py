"""What this machine offers, read cheaply and without importing torch: usable CPU cores, the CPU's model and feature
flags (native bf16), a GPU driver, whether torch is installed; and the one check that a torch feature makes before
it imports torch.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import sys
from functools import cache

from realsr_cli.errors import BackendError

# torch is an extra: ONNX inference runs without it; export, train, TorchScript and community models need it
TORCH_INSTALL = "pip install 'realsr-cli[torch]'"


# the cores a scheduler gave this process, when fewer than it can see (`use_cpus`); None: all it can see
_cpu_share: int | None = None


def cpu_count() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total; at most the share `use_cpus`
    set)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    return count if _cpu_share is None else min(count, _cpu_share)


def use_cpus(count: int) -> None:
    """Use at most `count` cores from now on: a Ray worker given a few of a node's cores sizes the thread pools of
    the backend it opens next to its share (they follow `cpu_count`), not to the whole node it shares with others."""
    global _cpu_share
    _cpu_share = max(1, count)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo without importing
    torch; False where that file does not exist."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo (avx512_bf16, amx_int8, ...); empty where that file does not
    exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@cache
def amx_usable() -> bool:
    """Whether this process may use AMX: the CPU has it and Linux grants the tile-data permission that oneDNN and
    ONNX Runtime ask for before they use it (a container or a kernel may refuse; so does benchmarks/no_amx.c)."""
    if "amx_tile" not in cpu_flags():
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    arch_prctl, request_permission, tile_data = 158, 0x1023, 18  # x86-64: SYS_arch_prctl, ARCH_REQ_XCOMP_PERM
    return libc.syscall(arch_prctl, request_permission, tile_data) == 0


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what the platform says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
