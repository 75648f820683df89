"""The TorchScript backend, on CUDA (fp16 when the model supports it) or CPU (channels-last, bf16 where the CPU
computes it natively and the model supports it). torch is imported when a model is opened or run, never at
import.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from realsr_cli import host
from realsr_cli._files import first_line
from realsr_cli.config import split_device
from realsr_cli.errors import BackendError, ConfigError, InputError, ModelError
from realsr_cli.inference.runtime.checks import check_spec, fp16_needs_cuda, probe_spec
from realsr_cli.spec import TORCHSCRIPT_SPEC_FILE, ModelSpec

if TYPE_CHECKING:
    from realsr_cli.inference.runtime import Notice

_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # names: torch is imported lazily


def torch_dtype(torch, precision: str):
    """The torch dtype of a precision name (fp32, fp16, bf16); `torch` is the imported module."""
    return getattr(torch, _TORCH_DTYPES[precision])


def torch_precision(
    torch, precision: str, cuda: bool, path: Path, notice: Notice, *, fp16_ok: bool, bf16_ok: bool
) -> str:
    """The precision a torch model runs in (see `open_backend`): `precision` itself unless it is auto; auto picks
    fp16 on CUDA where `fp16_ok`, bf16 on a CPU with native bf16 where `bf16_ok`, else fp32."""
    if precision == "int8":
        raise ConfigError(
            f"{path.name}: int8 runs with ONNX Runtime only (a <stem>.int8.onnx made by `realsr quantize`); "
            "pass the .onnx model or another --precision"
        )
    if precision == "fp16" and not cuda:
        raise fp16_needs_cuda(path)
    native_bf16 = cuda or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "bf16" and not native_bf16:
        notice("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 runs slower than fp32 here")
    if precision != "auto":
        return precision
    if cuda:
        return "fp16" if fp16_ok else "fp32"
    return "bf16" if bf16_ok and native_bf16 else "fp32"


def torch_target(torch, device: str, notice: Notice) -> str:
    """ "cuda" or "cpu": where a torch model runs for `device` (auto, cpu, cuda, cuda:N). CUDA when torch sees a
    GPU and the device is not cpu; "cuda" then means GPU N for the rest of the process. A CUDA device torch cannot
    see gives one notice and the CPU; a GPU index beyond those present is a BackendError."""
    device, gpu = split_device(device)
    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if device == "cuda":
            notice("CUDA not available (this torch build or machine has no CUDA device): running on CPU")
        return "cpu"
    if gpu >= torch.cuda.device_count():
        raise BackendError(f"cuda:{gpu} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    torch.cuda.set_device(gpu)  # "cuda" below (the model, every batch) now means this GPU
    return "cuda"


def tune_threads(torch, cuda: bool) -> None:
    """cuDNN autotuning on CUDA; on CPU every core for intra-op work and one inter-op thread."""
    if cuda:
        torch.backends.cudnn.benchmark = True  # tiles share one shape per image: tune once, reuse
    else:
        torch.set_num_threads(host.cpu_count())
        with contextlib.suppress(RuntimeError):  # settable only before the first parallel work
            torch.set_num_interop_threads(1)


class TorchScriptBackend:
    """A TorchScript module on CUDA (fp16 when the model supports it) or CPU (fp32, channels-last)."""

    name = "torchscript"

    def __init__(self, module, path: Path, spec: ModelSpec, device: str, *, precision: str, clamp: bool) -> None:
        self._module = module
        self.path = path
        self.spec = spec
        self.device = device
        self.precision = precision
        self._clamp = clamp
        self.fixed_batch = None

    @classmethod
    def open(
        cls, path: Path, device: str = "auto", *, precision: str = "auto", scale_hint: int | None = None, notice: Notice
    ) -> TorchScriptBackend:
        torch = host.require_torch("the TorchScript backend")
        target = torch_target(torch, device, notice)
        cuda = target == "cuda"
        extra = {TORCHSCRIPT_SPEC_FILE: ""}
        try:
            module = torch.jit.load(str(path), map_location=target, _extra_files=extra)
        except Exception as err:  # torch raises RuntimeError/ValueError/zip errors on damaged archives
            raise InputError(f"{path}: corrupt TorchScript model ({first_line(err, 300)})") from err
        module.eval()
        spec = None
        raw = extra[TORCHSCRIPT_SPEC_FILE]
        if raw:
            try:
                spec = ModelSpec.from_dict(json.loads(raw))
            except (json.JSONDecodeError, TypeError) as err:
                raise ModelError(f"{path}: model metadata is malformed ({first_line(err, 300)})") from err
            check_spec(spec, path, scale_hint)
        tune_threads(torch, cuda)
        # reduced precision only where export measured that the model holds up in it
        half_ok = spec is not None and spec.supports_half
        precision = torch_precision(torch, precision, cuda, path, notice, fp16_ok=half_ok, bf16_ok=half_ok)
        module = module.to(torch_dtype(torch, precision))
        if not cuda:
            module = module.to(memory_format=torch.channels_last)  # docs/runtime.md: channels-last is faster on CPU
        backend = cls(module, path, spec or ModelSpec(scale=1), target, precision=precision, clamp=spec is None)
        if spec is None:
            backend.spec = check_spec(probe_spec(backend._run, path), path, scale_hint)
        return backend

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = host.require_torch("the TorchScript backend")
        try:
            return self._run(batch)
        except torch.cuda.OutOfMemoryError as err:
            raise BackendError(f"{self.path.name}: out of GPU memory; use a smaller --tile") from err
        except RuntimeError as err:
            raise BackendError(f"{self.path.name}: inference failed on {self.device} ({first_line(err, 300)})") from err

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = host.require_torch("the TorchScript backend")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            if self.device == "cuda":
                x = x.to("cuda", non_blocking=True)
            else:
                x = x.contiguous(memory_format=torch.channels_last)
            x = x.to(torch_dtype(torch, self.precision))
            y = self._module(x)
            if self._clamp:
                y = y.clamp(0.0, 1.0)
            return y.float().contiguous().cpu().numpy()

    def close(self) -> None:
        self._module = None
