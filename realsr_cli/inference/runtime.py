"""Backends that run an exported SR model on float32 NCHW batches: ONNX Runtime and TorchScript.

`open_backend(path)` detects the file type by content, reads the `ModelSpec` from the model's metadata (or
probes a model made elsewhere), picks the device (CUDA only when it really loads; otherwise one notice, then
CPU) and returns a `Backend`. onnxruntime and torch are imported inside the functions that need them, so
importing this module, and running ONNX models, never imports torch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from realsr_cli import host
from realsr_cli._files import first_line
from realsr_cli.config import BACKENDS, DEVICES, PRECISIONS
from realsr_cli.errors import BackendError, ConfigError, InputError, ModelError
from realsr_cli.spec import TORCHSCRIPT_SPEC_FILE, ModelSpec

if TYPE_CHECKING:
    import onnxruntime

Notice = Callable[[str], None]

FP16_SUFFIX = ".fp16.onnx"

# probe sizes for models made elsewhere: for each candidate size multiple m, odd multiples of m (so an input of
# this size is a multiple of m but not of 2m), at least 16 pixels, and different on the two axes
_PROBE_MULTIPLES = (1, 2, 4, 8, 16, 32, 64)


class Backend(Protocol):
    """A loaded model. `run` maps (N, C, H, W) float32 in [0, 1] to (N, C, H*s, W*s) float32 clamped to [0, 1].

    H and W must be multiples of `spec.size_multiple` (exactly `spec.fixed_size` when set). `run` may be called
    with any batch size; a model with a fixed batch size is fed in pieces. Raises BackendError when inference
    fails (for example out of device memory).
    """

    spec: ModelSpec
    name: str  # "onnx" or "torchscript"
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "fp16" or "bf16": the arithmetic the model runs in (inputs and outputs stay fp32)
    path: Path  # the file actually loaded (an fp16/fp32 sibling may stand in for the one asked for)

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


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


def open_backend(
    path: str | os.PathLike,
    backend: str = "auto",
    device: str = "auto",
    *,
    precision: str = "auto",
    scale_hint: int | None = None,
    notice: Notice | None = None,
) -> Backend:
    """Open an exported model file with the right backend.

    `backend="auto"` means whatever the file is (the caller picks which file); "onnx"/"torchscript" must match
    the file. `device="auto"` uses CUDA when a GPU is present and the provider really loads, "cuda" insists on
    trying; either falls back to CPU with one `notice`. fp16 ONNX runs only on CUDA: on CPU a sibling fp32 file
    `<stem>.onnx` stands in (with a notice); on CUDA a sibling `<stem>.fp16.onnx` is preferred when the model
    supports half precision. `precision` "auto" runs fp16 on CUDA and bf16 for TorchScript on a CPU with native
    bf16 (AVX512-BF16 or AMX), both only for realsr models that support half precision, fp32 otherwise; an explicit
    fp16 needs CUDA and bf16 needs TorchScript. Models without realsr metadata are probed for their scale and size
    multiple; `scale_hint` must agree with the found scale.

    Raises ConfigError (unknown backend/device, backend that does not match the file), InputError (missing,
    empty, corrupt or truncated file; a training checkpoint), ModelError (not a 3-channel SR model, scale
    mismatch, fp16 model on CPU) or BackendError (onnxruntime/torch missing).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if scale_hint is not None and scale_hint < 1:
        raise ConfigError(f"scale hint must be a positive integer, got {scale_hint}")
    path = Path(path)
    kind = detect_format(path)
    if backend != "auto" and backend != kind:
        raise ConfigError(
            f"{path}: is a{'n' if kind == 'onnx' else ''} {kind} model, but --backend {backend} was asked for"
        )
    notice = notice or (lambda message: None)
    if kind == "onnx":
        if precision == "bf16":
            raise ConfigError(
                f"{path.name}: bf16 runs with TorchScript only (ONNX Runtime has no bf16 convolutions on CPU); "
                "pass the .ts model or another --precision"
            )
        return OnnxBackend.open(path, device, precision=precision, scale_hint=scale_hint, notice=notice)
    return TorchScriptBackend.open(path, device, precision=precision, scale_hint=scale_hint, notice=notice)


def _fp16_needs_cuda(path: Path) -> ConfigError:
    return ConfigError(f"{path.name}: fp16 runs only on CUDA, and this run is on CPU; use --precision auto or fp32")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line[:300]


def _check_spec(spec: ModelSpec, path: Path, scale_hint: int | None) -> ModelSpec:
    if spec.channels != 3:
        raise ModelError(f"{path}: model takes {spec.channels}-channel input; realsr runs RGB (3-channel) models")
    if scale_hint is not None and scale_hint != spec.scale:
        raise ModelError(f"{path}: model upscales x{spec.scale}, not x{scale_hint} as --scale-hint says")
    return spec


def probe_spec(
    run: Callable[[np.ndarray], np.ndarray],
    path: Path,
    *,
    fixed_size: tuple[int, int] | None = None,
    precision: str = "fp32",
) -> ModelSpec:
    """Find a model's scale and size multiple by running it on small inputs (models without realsr metadata).

    Tries 1 x 3 x H x W inputs with H, W odd multiples of 1, 2, 4, ... 64 until one runs and returns
    (1, 3, H*s, W*s) for one integer s; that multiple becomes `size_multiple`. With `fixed_size` only that size
    is tried. The receptive field stays unknown, so tiling falls back to its safe default overlap.
    Raises ModelError when no probe gives a 3-channel output of one integer scale.
    """
    candidates = [(fixed_size, 1)] if fixed_size else [(_probe_size(m), m) for m in _PROBE_MULTIPLES]
    rng = np.random.default_rng(0)
    reasons = []
    for (h, w), multiple in candidates:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        try:
            y = np.asarray(run(x))
        except Exception as err:  # each runtime raises its own types for a shape the model cannot take
            reasons.append(f"{h}x{w}: {first_line(err, 300)}")
            continue
        if y.ndim != 4 or y.shape[0] != 1:
            raise ModelError(
                f"{path}: model returned shape {tuple(y.shape)} for input {x.shape}; expected (1, 3, H, W)"
            )
        if y.shape[1] != 3:
            raise ModelError(f"{path}: model returns {y.shape[1]}-channel images; realsr runs RGB (3-channel) models")
        oh, ow = y.shape[2:]
        if oh % h or ow % w or oh // h != ow // w or oh < h:
            reasons.append(f"{h}x{w} -> {oh}x{ow} is not one integer scale")
            continue
        return ModelSpec(
            scale=oh // h,
            size_multiple=multiple,
            receptive_field=None,
            supports_half=False,
            precision=precision,
            architecture="unknown",
            fixed_size=fixed_size,
        )
    detail = "; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else "")
    raise ModelError(f"{path}: could not find the model's scale by a probe run ({detail})")


def _probe_size(multiple: int) -> tuple[int, int]:
    k = max(1, math.ceil(16 / multiple))
    k += 1 - k % 2  # odd
    return multiple * k, multiple * (k + 2)


def preferred_backend(device: str = "auto", precision: str = "auto") -> str:
    """The backend that runs a realsr model fastest here, for a bundled model that ships both files.

    TorchScript in bf16 on a CPU with native bf16 (about twice ONNX Runtime's fp32 speed there, see the README's
    performance section), when torch is installed and no GPU is in play; ONNX Runtime everywhere else (it starts
    faster, without torch, and runs CUDA with fp16).
    """
    wants_cpu_bf16 = precision in ("auto", "bf16") and device != "cuda" and not (device == "auto" and host.gpu_present())
    if wants_cpu_bf16 and host.cpu_has_native_bf16() and importlib.util.find_spec("torch") is not None:
        return "torchscript"
    return "onnx"


# ---------------------------------------------------------------------------------------------------------------
# ONNX Runtime


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise BackendError(
            "onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu for CUDA)"
        ) from err
    return ort


@contextlib.contextmanager
def _ort_quiet(ort, severity: int = 4):
    """Silence ORT's default logger (it prints provider-load failures and run errors to stderr); errors still
    reach us as exceptions or as a missing provider."""
    ort.set_default_logger_severity(severity)
    try:
        yield
    finally:
        ort.set_default_logger_severity(3)


@dataclass(frozen=True)
class _OnnxInfo:
    """What realsr needs from an ONNX file before building a session: metadata and the input's name/shape/type."""

    spec: ModelSpec | None  # None: no realsr metadata (a model made elsewhere)
    input_name: str
    output_name: str
    dims: tuple[int | None, ...]  # static sizes, None where dynamic
    elem: str  # input element type, e.g. "FLOAT" or "FLOAT16"

    @property
    def fp16(self) -> bool:
        return self.elem == "FLOAT16" or (self.spec is not None and self.spec.precision == "fp16")

    @classmethod
    def read(cls, path: Path) -> _OnnxInfo:
        import onnx
        from google.protobuf.message import DecodeError

        try:
            model = onnx.load(str(path), load_external_data=False)
        except (DecodeError, ValueError, OSError, RuntimeError) as err:
            raise InputError(f"{path}: corrupt or truncated ONNX model ({first_line(err, 300)})") from err
        graph = model.graph
        initializers = {t.name for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initializers]
        if not inputs or not graph.output or not graph.node:
            raise InputError(f"{path}: corrupt or truncated ONNX model (no graph)")
        if len(inputs) != 1:
            raise ModelError(f"{path}: model has {len(inputs)} inputs; an SR model takes one image batch")
        tensor = inputs[0].type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        meta = {p.key: p.value for p in model.metadata_props}
        return cls(
            spec=ModelSpec.from_metadata(meta),
            input_name=inputs[0].name,
            output_name=graph.output[0].name,
            dims=dims,
            elem=onnx.TensorProto.DataType.Name(tensor.elem_type),
        )

    def validate(self, path: Path, scale_hint: int | None) -> ModelSpec | None:
        if len(self.dims) != 4:
            raise ModelError(f"{path}: model input has {len(self.dims)} dimensions; an SR model takes (N, 3, H, W)")
        if self.dims[1] is not None and self.dims[1] != 3:
            raise ModelError(f"{path}: model takes {self.dims[1]}-channel input; realsr runs RGB (3-channel) models")
        return None if self.spec is None else _check_spec(self.spec, path, scale_hint)


class OnnxBackend:
    """ONNX Runtime on CUDA or CPU. Construct with `OnnxBackend.open`."""

    name = "onnx"

    def __init__(
        self,
        session,
        path: Path,
        spec: ModelSpec,
        device: str,
        *,
        input_name: str,
        output_name: str,
        half_input: bool,
        fixed_batch: int | None,
        clamp: bool,
        precision: str,
    ) -> None:
        self._session = session
        self.path = path
        self.spec = spec
        self.device = device
        self._input = input_name
        self._output = output_name
        self._half_input = half_input  # the graph takes float16 (a foreign fp16 model); ours keep fp32 inputs
        self.fixed_batch = fixed_batch
        self._clamp = clamp  # realsr exports clamp inside the graph; foreign models may not
        self.precision = precision

    @classmethod
    def open(
        cls, path: Path, device: str = "auto", *, precision: str = "auto", scale_hint: int | None = None, notice: Notice
    ) -> OnnxBackend:
        ort = _import_ort()
        info = _OnnxInfo.read(path)
        cuda, reason = _cuda_choice(ort, device)
        if reason and device == "cuda":
            notice(f"CUDA not available ({reason}): running on CPU")

        chosen, session = path, None
        if cuda:
            # on CUDA prefer the fp16 sibling of an fp32 realsr model that supports half precision
            sibling = _fp16_sibling(path)
            half_ok = info.spec is not None and info.spec.supports_half
            wants_half = precision == "fp16" or (precision == "auto" and half_ok)
            if not info.fp16 and wants_half and sibling and sibling.is_file():
                chosen = sibling
            elif info.fp16 and precision == "fp32":
                chosen = _fp32_sibling_or_fail(path, notice, on_cuda=True)
            session, failure = _cuda_session(ort, chosen)
            if session is None:
                notice(f"CUDA not available ({failure}): running on CPU")
                chosen = path
        if session is None:
            if precision == "fp16":
                raise _fp16_needs_cuda(path)
            if info.fp16:  # fp16 never runs on CPU: an fp32 sibling stands in, or we stop
                chosen = _fp32_sibling_or_fail(path, notice)
            session = _cpu_session(ort, chosen)
        if chosen != path:
            info = _OnnxInfo.read(chosen)
        on_cuda = session.get_providers()[0] == "CUDAExecutionProvider"
        if info.fp16 and not on_cuda:
            raise ModelError(f"{chosen}: fp16 models run only on CUDA; pass the fp32 model for CPU")
        spec = info.validate(chosen, scale_hint)

        backend = cls(
            session,
            chosen,
            spec or ModelSpec(scale=1),  # placeholder until the probe below
            "cuda" if on_cuda else "cpu",
            input_name=info.input_name,
            output_name=info.output_name,
            half_input=info.elem == "FLOAT16",
            fixed_batch=info.dims[0] or None,
            clamp=spec is None,  # realsr exports clamp inside the graph
            precision="fp16" if info.fp16 else "fp32",
        )
        if spec is None:
            h, w = info.dims[2:]
            if (h is None) != (w is None):
                raise ModelError(f"{chosen}: model input has one fixed and one free spatial size; not supported")
            fixed = (h, w) if h else None
            probed = probe_spec(backend._run_quiet, chosen, fixed_size=fixed, precision="fp16" if info.fp16 else "fp32")
            backend.spec = _check_spec(probed, chosen, scale_hint)
        return backend

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._run(batch)
        except MemoryError as err:
            raise BackendError(f"{self.path.name}: inference failed on {self.device} ({first_line(err, 300)})") from err
        except Exception as err:
            # onnxruntime's own types (Fail, InvalidArgument, RuntimeException, ...) derive from Exception only
            if type(err).__module__.startswith("onnxruntime"):
                raise BackendError(f"{self.path.name}: inference failed on {self.device} ({first_line(err, 300)})") from err
            raise

    def _run_quiet(self, batch: np.ndarray) -> np.ndarray:
        # a probe at an unsupported size makes ORT log an error line before raising: keep the terminal clean
        ort = _import_ort()
        with _ort_quiet(ort):
            options = ort.RunOptions()
            options.log_severity_level = 4
            return self._run(batch, options)

    def _run(self, batch: np.ndarray, options=None) -> np.ndarray:
        if self.fixed_batch and len(batch) != self.fixed_batch:
            return _split_batch(batch, self.fixed_batch, lambda b: self._run(b, options))
        x = np.ascontiguousarray(batch, dtype=np.float16 if self._half_input else np.float32)
        if self.device == "cuda":
            y = self._run_cuda(x, options)
        else:
            y = self._session.run([self._output], {self._input: x}, options)[0]
        if y.dtype != np.float32:
            y = y.astype(np.float32)
        if self._clamp:
            np.clip(y, 0.0, 1.0, out=y)
        return y

    def _run_cuda(self, x: np.ndarray, options) -> np.ndarray:
        # I/O binding: the input is copied to the GPU once and the output is allocated there by ORT, then copied
        # back in one piece (no per-run host staging in session.run)
        binding = self._session.io_binding()
        binding.bind_cpu_input(self._input, x)
        binding.bind_output(self._output, "cuda")
        if options is None:
            self._session.run_with_iobinding(binding)
        else:
            self._session.run_with_iobinding(binding, options)
        return binding.copy_outputs_to_cpu()[0]

    def close(self) -> None:
        self._session = None


def _split_batch(batch: np.ndarray, size: int, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Feed a fixed-batch model: pieces of `size`, the last padded with repeats of its final item."""
    outs = []
    for first in range(0, len(batch), size):
        piece = batch[first : first + size]
        count = len(piece)
        if count < size:
            piece = np.concatenate([piece, np.repeat(piece[-1:], size - count, axis=0)])
        outs.append(run(piece)[:count])
    return np.concatenate(outs)


def _fp16_sibling(path: Path) -> Path | None:
    if path.name.endswith(FP16_SUFFIX) or path.suffix != ".onnx":
        return None
    return path.with_name(path.name[: -len(".onnx")] + FP16_SUFFIX)


def _fp32_sibling_or_fail(path: Path, notice: Notice, on_cuda: bool = False) -> Path:
    """The fp32 `<stem>.onnx` beside an fp16 model: on CPU (fp16 never runs there) or on CUDA with fp32 asked for."""
    reason = "--precision fp32 asked for" if on_cuda else "fp16 models run only on CUDA"
    if path.name.endswith(FP16_SUFFIX):
        sibling = path.with_name(path.name[: -len(FP16_SUFFIX)] + ".onnx")
        if sibling.is_file():
            notice(f"{reason}: using {sibling.name} on {'CUDA' if on_cuda else 'CPU'}")
            return sibling
    raise ModelError(f"{path}: {reason}; pass the fp32 model (export without --half)")


def _cuda_choice(ort, device: str) -> tuple[bool, str]:
    """(try CUDA?, why not). Auto tries only where a GPU driver is visible, so a CPU machine with the GPU build
    of onnxruntime runs quietly on CPU; device="cuda" always tries."""
    if device == "cpu":
        return False, ""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDA provider; install onnxruntime-gpu"
    if device == "auto" and not host.gpu_present():
        return False, ""
    return True, ""


def session_options(ort) -> onnxruntime.SessionOptions:
    """The SessionOptions every realsr session uses (also the benchmark's reference convolution, for a fair ratio)."""
    so = ort.SessionOptions()
    # ORT_ENABLE_ALL includes the NCHWc layout transform, which is where the CPU speed comes from (runtime.md)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = host.cpu_count()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # don't spin idle threads between runs: decoding, blending and encoding share the cores
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # no CPU arena: it keeps its high-water mark for the session's life (+930 MB at a 512 px tile of the compact
    # model), while a tile's activations are few and large, so plain allocations cost nothing measurable.
    # The memory pattern stays on: without it a 12 MP photo peaked higher (2114 MiB against about 1650)
    so.enable_cpu_mem_arena = False
    so.log_severity_level = 4  # every failure reaches the caller as an exception: no log lines on stderr
    return so


def _cpu_session(ort, path: Path):
    try:
        with _ort_quiet(ort):
            return ort.InferenceSession(str(path), session_options(ort), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf/InvalidGraph types
        raise InputError(f"{path}: onnxruntime cannot load the model ({first_line(err, 300)})") from err


def _cuda_session(ort, path: Path):
    """(session, None) when the CUDA provider really loaded, else (None, why)."""
    # tiles have one fixed shape per image, so per-shape autotuning would pay off only once per image size;
    # the heuristic pick avoids the hundreds of ms EXHAUSTIVE spends re-benchmarking every conv for a new shape
    cuda_options = {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True}
    try:
        with _ort_quiet(ort):
            if hasattr(ort, "preload_dlls"):
                with contextlib.redirect_stdout(io.StringIO()):  # it prints load failures to stdout
                    ort.preload_dlls()
            session = ort.InferenceSession(
                str(path),
                session_options(ort),
                providers=[("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"],
            )
    except Exception as err:
        return None, first_line(err, 300)
    # get_available_providers() describes the build; only the session says whether CUDA really loaded
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return None, "onnxruntime could not load its CUDA provider; check the CUDA and cuDNN libraries"
    return session, None


# ---------------------------------------------------------------------------------------------------------------
# TorchScript


_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # names: torch is imported lazily


def torch_dtype(torch, precision: str):
    """The torch dtype of a precision name (fp32, fp16, bf16); `torch` is the imported module."""
    return getattr(torch, _TORCH_DTYPES[precision])


def _torch_precision(torch, precision: str, cuda: bool, spec: ModelSpec | None, path: Path, notice: Notice) -> str:
    """The precision a TorchScript model runs in (see `open_backend`)."""
    if precision == "fp16" and not cuda:
        raise _fp16_needs_cuda(path)
    native_bf16 = cuda or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "bf16" and not native_bf16:
        notice("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 runs slower than fp32 here")
    if precision != "auto":
        return precision
    # reduced precision only where export measured that the model holds up in it
    if spec is None or not spec.supports_half:
        return "fp32"
    if cuda:
        return "fp16"
    return "bf16" if native_bf16 else "fp32"


def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise BackendError("torch is not installed: pip install torch (needed for TorchScript models)") from err
    return torch


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
        torch = _import_torch()
        cuda = False
        if device != "cpu":
            if torch.cuda.is_available():
                cuda = True
            elif device == "cuda":
                notice("CUDA not available (this torch build or machine has no CUDA device): running on CPU")
        target = "cuda" if cuda else "cpu"
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
            _check_spec(spec, path, scale_hint)
        if cuda:
            torch.backends.cudnn.benchmark = True  # tiles share one shape per image: tune once, reuse
        else:
            torch.set_num_threads(host.cpu_count())
            with contextlib.suppress(RuntimeError):  # settable only before the first parallel work
                torch.set_num_interop_threads(1)
        precision = _torch_precision(torch, precision, cuda, spec, path, notice)
        module = module.to(torch_dtype(torch, precision))
        if not cuda:
            module = module.to(memory_format=torch.channels_last)  # see runtime.md: channels-last is faster on CPU
        backend = cls(module, path, spec or ModelSpec(scale=1), target, precision=precision, clamp=spec is None)
        if spec is None:
            backend.spec = _check_spec(probe_spec(backend._run, path), path, scale_hint)
        return backend

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = _import_torch()
        try:
            return self._run(batch)
        except torch.cuda.OutOfMemoryError as err:
            raise BackendError(f"{self.path.name}: out of GPU memory; use a smaller --tile") from err
        except RuntimeError as err:
            raise BackendError(f"{self.path.name}: inference failed on {self.device} ({first_line(err, 300)})") from err

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = _import_torch()
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
