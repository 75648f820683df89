"""Backends that run an exported SR model on float32 NCHW batches: ONNX Runtime (`onnx.py`) and TorchScript
(`torchscript.py`), behind the `Backend` protocol.

`open_backend(config)` chooses the model file (`choose_model`: the one named, or the bundled model for the
fastest backend here), detects its type by content, reads the `ModelSpec` from the model's metadata (or probes
a model made elsewhere), picks the device (CUDA only when it really loads; otherwise one notice, then CPU) and
returns a `Backend`. onnxruntime and torch are imported inside the functions that need them, so importing this
package, and running ONNX models, never imports torch.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from realsr_cli import host
from realsr_cli.config import ModelFormat, UpscaleConfig
from realsr_cli.errors import ConfigError, InputError
from realsr_cli.inference.runtime.onnx import OnnxBackend
from realsr_cli.inference.runtime.torchscript import TorchScriptBackend
from realsr_cli.spec import ModelSpec

Notice = Callable[[str], None]

DEFAULT_MODEL_STEM = "realsr-compact-x4"
"""The bundled model's file stem: export/realsr-compact-x4.onnx (+ .fp16.onnx for CUDA) and .ts."""


class Backend(Protocol):
    """A loaded model. `run` maps (N, C, H, W) float32 in [0, 1] to (N, C, H*s, W*s) float32 clamped to [0, 1].

    H and W must be multiples of `spec.size_multiple` (exactly `spec.fixed_size` when set). `run` may be called
    with any batch size; a model with a fixed batch size is fed in pieces. Raises BackendError when inference
    fails (for example out of device memory).
    """

    spec: ModelSpec
    name: ModelFormat
    device: Literal["cpu", "cuda"]
    precision: Literal["fp32", "fp16", "bf16"]  # the arithmetic the model runs in (inputs and outputs stay fp32)
    path: Path  # the file actually loaded (an fp16/fp32 sibling may stand in for the one asked for)

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def open_backend(config: UpscaleConfig, notice: Notice | None = None) -> Backend:
    """Open the model `config` asks for (`choose_model`) with the right backend.

    `config.backend` "auto" runs whatever the file is; "onnx"/"torchscript" must match the file. `config.device`
    "auto" uses CUDA when a GPU is present and the provider really loads, "cuda" insists on trying; either falls
    back to CPU with one `notice`. fp16 ONNX runs only on CUDA: on CPU a sibling fp32 file `<stem>.onnx` stands
    in (with a notice); on CUDA a sibling `<stem>.fp16.onnx` is preferred when the model supports half precision.
    `config.precision` "auto" runs fp16 on CUDA and bf16 for TorchScript on a CPU with native bf16 (AVX512-BF16 or
    AMX), both only for realsr models that support half precision, fp32 otherwise; an explicit fp16 needs CUDA and
    bf16 needs TorchScript. Models without realsr metadata are probed for their scale and size multiple;
    `config.scale_hint` must agree with the found scale.

    Raises ConfigError (a backend that does not match the file, a precision it cannot run), InputError (missing,
    empty, corrupt or truncated file; a training checkpoint; no bundled model), ModelError (not a 3-channel SR
    model, scale mismatch, fp16 model on CPU) or BackendError (onnxruntime/torch missing).
    """
    path = choose_model(config)
    kind = detect_format(path)
    if config.backend not in ("auto", kind):
        raise ConfigError(
            f"{path}: is a{'n' if kind == 'onnx' else ''} {kind} model, but --backend {config.backend} was asked for"
        )
    opener = OnnxBackend.open if kind == "onnx" else TorchScriptBackend.open
    return opener(
        path,
        config.device,
        precision=config.precision,
        scale_hint=config.scale_hint,
        notice=notice or (lambda message: None),
    )


# ---- which model file


def choose_model(config: UpscaleConfig) -> Path:
    """The model file `config` runs: its `model`, or else the bundled model for its backend; under backend auto,
    the bundled file of the backend that runs fastest here (`preferred_backend`), as the bundled model ships both.

    Raises InputError when no model is given and none is bundled.
    """
    backend = config.backend
    if config.model is None and backend == "auto":
        backend = preferred_backend(config.device, config.precision)
    return resolve_model(config.model, backend)


def preferred_backend(device: str = "auto", precision: str = "auto") -> str:
    """The backend that runs a realsr model fastest here, for a bundled model that ships both files.

    TorchScript in bf16 on a CPU with native bf16 (about twice ONNX Runtime's fp32 speed there, see the README's
    performance section), when torch is installed and no GPU is in play; ONNX Runtime everywhere else (it starts
    faster, without torch, and runs CUDA with fp16).
    """
    gpu_in_play = device == "cuda" or (device == "auto" and host.gpu_present())
    wants_cpu_bf16 = precision in ("auto", "bf16") and not gpu_in_play
    if wants_cpu_bf16 and host.cpu_has_native_bf16() and importlib.util.find_spec("torch") is not None:
        return "torchscript"
    return "onnx"


def resolve_model(model: str | Path | None, backend: str = "auto") -> Path:
    """`model` itself, or the bundled model for `backend` (under auto the ONNX file first, then TorchScript).

    Raises InputError when no model is given and none is bundled.
    """
    if model is not None:
        return Path(model)
    names = {
        "auto": [f"{DEFAULT_MODEL_STEM}.onnx", f"{DEFAULT_MODEL_STEM}.ts"],
        "onnx": [f"{DEFAULT_MODEL_STEM}.onnx"],
        "torchscript": [f"{DEFAULT_MODEL_STEM}.ts"],
    }[backend]
    for folder in default_model_dirs():
        for name in names:
            if (folder / name).is_file():
                return folder / name
    looked = ", ".join(str(folder) for folder in default_model_dirs())
    raise InputError(
        f"the bundled model ({' or '.join(names)}) is missing from {looked}: reinstall realsr, or pass --model "
        "with an exported .onnx or .ts file (make one with `realsr export CHECKPOINT -o DIR`)"
    )


def default_model_dirs() -> list[Path]:
    """Where the bundled model may live: inside the installed package (the wheel puts export/ there), then the
    source tree's top-level export/ folder."""
    dirs = []
    try:
        dirs.append(Path(str(importlib.resources.files("realsr_cli") / "export")))
    except (ModuleNotFoundError, TypeError):  # not importable as a regular package (zipimport etc.)
        pass
    dirs.append(Path(__file__).resolve().parents[3] / "export")
    return dirs


# ---- what a model file is


def detect_format(path: Path) -> str:
    """ "onnx" or "torchscript", from the file's content. Raises InputError for anything else, naming what it is."""
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; pass a model file (.onnx or .ts)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise InputError(f"{path}: cannot read model file ({err.strerror})") from err
    if not head:
        raise InputError(f"{path}: model file is empty")
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head[:1] == b"\x80":  # a pickle: torch.save's legacy (non-zip) format
        raise InputError(_checkpoint_message(path))
    # ONNX is a protobuf ModelProto; its first field is ir_version (field 1, varint: tag byte 0x08). Exporters may
    # write other fields first, so accept a few other ModelProto tags and let the parser decide.
    if head[0] in (0x08, 0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42):
        return "onnx"
    raise InputError(f"{path}: not an ONNX or TorchScript model")


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{path}: corrupt model file (a damaged zip archive: {err})") from err
    # TorchScript archives hold the module's code and constants; torch.save checkpoints only data.pkl + tensors
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        raise InputError(_checkpoint_message(path))
    raise InputError(f"{path}: a zip archive that is neither a TorchScript model nor a PyTorch checkpoint")


def _checkpoint_message(path: Path) -> str:
    return (
        f"{path}: is a PyTorch checkpoint, not an exported model; run `realsr export {path} -o DIR` first "
        "and pass the .onnx or .ts file it writes"
    )
