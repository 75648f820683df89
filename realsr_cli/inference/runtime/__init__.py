"""Backends that run an SR model on float32 NCHW batches: ONNX Runtime (`onnx.py`), TorchScript (`torchscript.py`)
and, for the .pth/.safetensors models people already have, torch with spandrel (`community.py`), behind the
`Backend` protocol. The bundled models are listed in a manifest beside their files (`bundled.py`).

`open_backend(config)` chooses the model file (`choose_model`: the one named, or the bundled model; on a CPU the
fastest of its files and precisions, `fastest`), detects its type by content, reads the `ModelSpec` from the
model's metadata (or probes a model made elsewhere), picks the device (CUDA only when it really loads; otherwise
one notice, then CPU) and returns a `Backend`. onnxruntime and torch are imported inside the functions that need
them, so importing this package, and running ONNX models, never imports torch.
"""

from __future__ import annotations

import importlib.resources
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from realsr_cli import host
from realsr_cli.config import ModelFormat, UpscaleConfig
from realsr_cli.errors import ConfigError, InputError, RealSRError
from realsr_cli.inference.runtime import fastest
from realsr_cli.inference.runtime.bundled import Manifest, read_manifest
from realsr_cli.inference.runtime.community import CommunityBackend, is_safetensors
from realsr_cli.inference.runtime.onnx import OnnxBackend, _OnnxInfo, onnx_sibling
from realsr_cli.inference.runtime.torchscript import TorchScriptBackend
from realsr_cli.spec import TORCHSCRIPT_SPEC_FILE, ModelSpec

Notice = Callable[[str], None]

# file suffixes that mark a --model value as a path (a missing file), never a bundled model's name
_MODEL_SUFFIXES = (".onnx", ".ts", ".pt", ".pth", ".safetensors", ".ckpt")


def __getattr__(name: str):
    # DEFAULT_MODEL_STEM, the default bundled model's name and file stem, lives in the manifest (export/models.toml)
    # and is read from it when first asked for, so replacing the bundled model is one edit there
    if name == "DEFAULT_MODEL_STEM":
        return bundled_models().default.name
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Backend(Protocol):
    """A loaded model. `run` maps (N, C, H, W) float32 in [0, 1] to (N, C, H*s, W*s) float32 clamped to [0, 1].

    H and W must be multiples of `spec.size_multiple` (exactly `spec.fixed_size` when set). `run` may be called
    with any batch size; a model with a fixed batch size is fed in pieces. Raises BackendError when inference
    fails (for example out of device memory).
    """

    spec: ModelSpec
    name: ModelFormat | Literal["torch"]  # torch: a community state dict run eagerly (CommunityBackend)
    device: Literal["cpu", "cuda"]
    precision: Literal["fp32", "fp16", "bf16", "int8"]  # the arithmetic the model runs in (inputs, outputs fp32)
    path: Path  # the file actually loaded (an fp16/fp32 sibling may stand in for the one asked for)

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def open_backend(config: UpscaleConfig, notice: Notice | None = None) -> Backend:
    """Open the model `config` asks for (`choose_model`) with the right backend.

    `config.backend` "auto" runs whatever the file is; "onnx"/"torchscript" must match the file (a .pth or
    .safetensors community model runs with torch: "torchscript" is accepted for it, "onnx" is not). `config.device`
    "auto" uses CUDA when a GPU is present and the provider really loads, "cuda" insists on trying; either falls
    back to CPU with one `notice`. fp16 ONNX runs only on CUDA: on CPU a sibling fp32 file `<stem>.onnx` stands
    in (with a notice); on CUDA a sibling `<stem>.fp16.onnx` is preferred when the model supports half precision.
    `config.precision` "auto" runs fp16 on CUDA for models that support half precision (realsr's as their metadata
    says, community models as spandrel says); on a CPU, the fastest of the model's files and precisions, measured
    once on this machine (`fastest`, `cpu_candidates`). An explicit fp16 needs CUDA, bf16 needs torch, int8 an ONNX
    model with a `<stem>.int8.onnx` (`realsr quantize`). Exported models without realsr metadata are probed for
    their scale and size multiple; a community model's come from spandrel. `config.scale_hint` must agree with the
    found scale.

    Raises ConfigError (a backend that does not match the file, a precision it cannot run), InputError (missing,
    empty, corrupt or truncated file; a training checkpoint; no bundled model), ModelError (not a 3-channel SR
    model, scale mismatch, fp16 model on CPU) or BackendError (onnxruntime/torch missing).
    """
    notice = notice or (lambda message: None)
    path = choose_model(config)
    kind = detect_format(path)
    if kind == "state_dict":
        if config.backend == "onnx":
            raise ConfigError(
                f"{path}: is a PyTorch state dict, which runs with torch (--backend auto or torchscript); "
                f"`realsr export {path} -o DIR` turns it into ONNX"
            )
    elif config.backend not in ("auto", kind):
        raise ConfigError(
            f"{path}: is a{'n' if kind == 'onnx' else ''} {kind} model, but --backend {config.backend} was asked for"
        )
    precision = config.precision
    if precision == "auto" and _runs_on_cpu(config.device):
        spec = stated_spec(path, kind)
        candidates = cpu_candidates(config, path, kind, spec)
        if candidates:

            def open_candidate(candidate: fastest.Candidate) -> Backend:
                return _open(
                    candidate.backend, candidate.path, "cpu", candidate.precision, config, lambda message: None
                )

            choice = fastest.fastest(candidates, spec, open_candidate, notice, config.job_pixels)
            path, kind, precision = choice.path, choice.backend, choice.precision
    return _open(kind, path, config.device, precision, config, notice)


def _open(kind: str, path: Path, device: str, precision: str, config: UpscaleConfig, notice: Notice) -> Backend:
    openers = {"onnx": OnnxBackend.open, "torchscript": TorchScriptBackend.open, "state_dict": CommunityBackend.open}
    return openers[kind](path, device, precision=precision, scale_hint=config.scale_hint, notice=notice)


def _runs_on_cpu(device: str) -> bool:
    """Whether a model opened for `device` will run on the CPU: asked for, or auto on a machine with no GPU driver."""
    return device == "cpu" or (device == "auto" and not host.gpu_present())


def cpu_candidates(config: UpscaleConfig, path: Path, kind: str, spec: ModelSpec | None) -> list[fastest.Candidate]:
    """The ways `--precision auto` may run the model at `path` on this CPU, all of equal quality (see `fastest`): a
    TorchScript file in fp32, and in bf16 where the CPU computes it natively and the model supports half precision;
    an ONNX file in its own precision. A bundled model (named, or the default) also offers its siblings: the ONNX
    file's int8 copy and, under backend auto with torch installed, its TorchScript file. A file named with --model
    runs as that file (`realsr eval` and `compare` score exactly it; `--precision int8` asks for its int8 copy).
    Empty for what is not measured: community models, models made elsewhere, fp16 files."""
    if kind == "state_dict" or spec is None or spec.precision == "fp16":
        return []
    bundled = config.model is None or _is_model_name(config.model)
    if kind == "onnx":
        candidates = [fastest.Candidate(path, "onnx", spec.precision)]
        if not bundled:
            return candidates
        int8 = onnx_sibling(path, "int8")
        if spec.precision == "fp32" and int8.is_file():
            candidates.append(fastest.Candidate(int8, "onnx", "int8"))
        script = path.with_suffix(".ts")
        if config.backend != "auto" or not script.is_file():
            return candidates
    else:
        candidates, script = [], path
    if host.torch_installed():
        candidates.append(fastest.Candidate(script, "torchscript", "fp32"))
        if spec.supports_half and host.cpu_has_native_bf16():
            candidates.append(fastest.Candidate(script, "torchscript", "bf16"))
    return candidates


# ---- which model file


def choose_model(config: UpscaleConfig) -> Path:
    """The model file `config` names: its `model` (a file, or a bundled model's name), or else the default bundled
    model; a bundled model in the file for its backend, under backend auto the ONNX one (the TorchScript one for
    bf16). Under `--precision auto` on a CPU, `open_backend` may run a sibling file instead (`cpu_candidates`).

    Raises InputError when no model is given and none is bundled, or for an unknown name.
    """
    backend = config.backend
    if backend == "auto" and (config.model is None or _is_model_name(config.model)):
        backend = "torchscript" if config.precision == "bf16" else "onnx"
    return resolve_model(config.model, backend)


def resolve_model(model: str | Path | None, backend: str = "auto") -> Path:
    """The model file for `model`: a path as given; a bundled model's name (`realsr models` lists them), or None
    for the default one, as that model's file for `backend` (under auto the ONNX file first, then TorchScript).

    A value that is neither an existing file nor a bundled name is taken as a path when it has a folder or a
    model file suffix in it (opening it then says "not found"). Raises InputError for an unknown name (listing the
    bundled ones) and when the bundled model or its file for `backend` is missing.
    """
    if model is not None and not _is_model_name(model):
        return Path(model)
    manifest = bundled_models()
    entry = manifest.default if model is None else manifest.find(str(model))
    if entry is None:
        raise InputError(
            f"{model}: no such model file, and no bundled model of that name (bundled: {', '.join(manifest.names)}; "
            "`realsr models` lists them)"
        )
    path = manifest.file(entry, backend)
    if path is None:
        wanted = "an ONNX or TorchScript file" if backend == "auto" else f"its {backend} file"
        raise InputError(
            f"the bundled model {entry.name} ({wanted}) is missing from {manifest.folder}: reinstall realsr, or pass "
            "--model with an exported .onnx or .ts file (make one with `realsr export CHECKPOINT -o DIR`)"
        )
    return path


def bundled_models() -> Manifest:
    """The manifest of the bundled models, from the first of `default_model_dirs` that holds one (InputError if
    none does)."""
    return read_manifest(default_model_dirs())


def _is_model_name(model: str | Path) -> bool:
    """Whether a --model value names a bundled model rather than a file: an existing file always wins, and a value
    with a folder or a model file suffix in it is a path (a missing file, which opening it reports)."""
    text = str(model)
    return not (Path(text).exists() or Path(text).name != text or text.lower().endswith(_MODEL_SUFFIXES))


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


def stated_scale(config: UpscaleConfig) -> int | None:
    """The native scale of the model `config` runs, as its file states it, read without loading the model, so the
    options can be checked before the seconds a load takes. None for a file that states none (a model made
    elsewhere, probed when it is opened). Raises what `choose_model` and `detect_format` raise."""
    path = choose_model(config)
    spec = stated_spec(path, detect_format(path))
    return None if spec is None else spec.scale


def stated_spec(path: Path, kind: str) -> ModelSpec | None:
    """The `ModelSpec` a realsr model file of `kind` states in its metadata, read without loading the model; None
    for a file that states none or whose metadata does not parse (opening it says why)."""
    try:
        if kind == "onnx":
            return _OnnxInfo.read(path).spec
        if kind == "torchscript":
            with zipfile.ZipFile(path) as zf:
                # torch.jit.save keeps extra files at <archive>/extra/<name>
                names = [n for n in zf.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_SPEC_FILE}")]
                return ModelSpec.from_dict(json.loads(zf.read(names[0]))) if names else None
    except (RealSRError, ValueError, zipfile.BadZipFile, OSError):
        return None
    return None


# ---- what a model file is


def detect_format(path: Path) -> str:
    """ "onnx", "torchscript" or "state_dict" (a PyTorch pickle or safetensors file: a community model, or a realsr
    training checkpoint, told apart when it is read), from the file's content. Raises InputError for anything
    else, naming what it is."""
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; pass a model file (.onnx or .ts)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as err:
        raise InputError(f"{path}: cannot read model file ({err.strerror})") from err
    if not head:
        raise InputError(f"{path}: model file is empty")
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head[:1] == b"\x80":  # a pickle: torch.save's legacy (non-zip) format
        return "state_dict"
    if is_safetensors(head):  # before ONNX: its header length may start with an ONNX tag byte
        return "state_dict"
    # ONNX is a protobuf ModelProto; its first field is ir_version (field 1, varint: tag byte 0x08). Exporters may
    # write other fields first, so accept a few other ModelProto tags and let the parser decide.
    if head[0] in (0x08, 0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42):
        return "onnx"
    raise InputError(f"{path}: not an ONNX or TorchScript model, nor a .pth or .safetensors state dict")


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
        return "state_dict"
    raise InputError(f"{path}: a zip archive that is neither a TorchScript model nor a PyTorch checkpoint")
