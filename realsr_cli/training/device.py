"""Where and in which precision a training run computes: the torch device and the autocast dtype its config asks
for, checked against what this machine offers."""

from __future__ import annotations

import torch

from realsr_cli.errors import BackendError, ConfigError


def pick_device(name: str) -> torch.device:
    """The device `name` (auto, cpu, cuda, cuda:N) means here: ConfigError for any other name, BackendError for CUDA
    on a machine or torch build without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {name!r} requested, but this torch build or machine has no CUDA (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported training device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def pick_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the networks, or None for fp32. Losses always reduce in fp32."""
    if amp == "off" or (amp == "auto" and device.type == "cpu"):
        return None  # on CPU fp32 is the default: bf16 autocast is opt-in (see the module notes in losses/trainer)
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("amp = fp16 needs a CUDA device; on CPU use amp = bf16 or off")
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if amp == "bf16":
            raise BackendError(f"{torch.cuda.get_device_name(device)} does not support bf16; use amp = fp16 or off")
        return torch.float16
    return torch.bfloat16


def amp_name(dtype: torch.dtype | None) -> str:
    """How a run's provenance and start message name its precision."""
    return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[dtype]
