"""The ONNX Runtime backend, on CUDA or CPU: sessions with realsr's settings, the fp16/int8/fp32 sibling files, the
CUDA provider tried only where it can load, and a probe for models made elsewhere. onnxruntime is imported
when a model is opened; no torch here.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from realsr_cli import host
from realsr_cli._files import first_line
from realsr_cli.config import split_device
from realsr_cli.errors import BackendError, ConfigError, InputError, ModelError
from realsr_cli.inference.runtime.checks import check_spec, fp16_needs_cuda, probe_spec
from realsr_cli.inference.runtime.int8 import INT8_SUFFIX
from realsr_cli.spec import ModelSpec

if TYPE_CHECKING:
    import onnxruntime

    from realsr_cli.inference.runtime import Notice

FP16_SUFFIX = ".fp16.onnx"
# one model's ONNX files, by precision: <stem>.onnx, <stem>.fp16.onnx (`realsr export --half`, for CUDA) and
# <stem>.int8.onnx (`realsr quantize`, for CPUs)
_SUFFIXES = {"fp32": ".onnx", "fp16": FP16_SUFFIX, "int8": INT8_SUFFIX}


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

    @property
    def precision(self) -> str:
        """fp16, int8 (a realsr quantized model; its inputs stay float32) or fp32."""
        if self.fp16:
            return "fp16"
        return "int8" if self.spec is not None and self.spec.precision == "int8" else "fp32"

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
        return None if self.spec is None else check_spec(self.spec, path, scale_hint)


class OnnxBackend:
    """ONNX Runtime on CUDA or CPU. Construct with `OnnxBackend.open` (see `open_backend` for the device and
    precision rules)."""

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
        self.gpu = 0  # the CUDA device index when on CUDA
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
        if precision == "bf16":
            raise ConfigError(
                f"{path.name}: bf16 runs with TorchScript only (ONNX Runtime has no bf16 convolutions on CPU); "
                "pass the .ts model or another --precision"
            )
        ort = _import_ort()
        info = _OnnxInfo.read(path)
        device, gpu = split_device(device)
        cuda, reason = _cuda_choice(ort, device)
        if reason and device == "cuda":
            notice(f"CUDA not available ({reason}): running on CPU")

        chosen, session = path, None
        if precision == "int8" or (info.precision == "int8" and precision == "fp32"):
            chosen = _variant(path, info, precision)  # int8 runs on the CPU: its ops have no CUDA kernels here
            cuda = False
        if cuda:
            # on CUDA prefer the fp16 sibling of an fp32 realsr model that supports half precision
            sibling = _fp16_sibling(path)
            half_ok = info.spec is not None and info.spec.supports_half
            wants_half = precision == "fp16" or (precision == "auto" and half_ok)
            if not info.fp16 and wants_half and sibling and sibling.is_file():
                chosen = sibling
            elif info.fp16 and precision == "fp32":
                chosen = _fp32_sibling_or_fail(path, notice, on_cuda=True)
            session, failure = _cuda_session(ort, chosen, gpu)
            if session is None:
                notice(f"CUDA not available ({failure}): running on CPU")
                chosen = path
        if session is None:
            if precision == "fp16":
                raise fp16_needs_cuda(path)
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
            precision=info.precision,
        )
        backend.gpu = gpu
        if spec is None:
            h, w = info.dims[2:]
            if (h is None) != (w is None):
                raise ModelError(f"{chosen}: model input has one fixed and one free spatial size; not supported")
            fixed = (h, w) if h else None
            probed = probe_spec(backend._run_quiet, chosen, fixed_size=fixed, precision="fp16" if info.fp16 else "fp32")
            backend.spec = check_spec(probed, chosen, scale_hint)
        return backend

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._run(batch)
        except MemoryError as err:
            raise self._failed(err) from err
        except Exception as err:
            # onnxruntime's own types (Fail, InvalidArgument, RuntimeException, ...) derive from Exception only
            if type(err).__module__.startswith("onnxruntime"):
                raise self._failed(err) from err
            raise

    def _failed(self, err: BaseException) -> BackendError:
        return BackendError(f"{self.path.name}: inference failed on {self.device} ({first_line(err, 300)})")

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
        binding.bind_output(self._output, "cuda", self.gpu)
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


def onnx_sibling(path: Path, precision: str) -> Path:
    """The file of `path`'s model in `precision` (fp32, fp16 or int8), whichever of that model's files `path` is."""
    stem = path.name
    for suffix in (FP16_SUFFIX, INT8_SUFFIX, ".onnx"):  # the longer suffixes first: they end in ".onnx" too
        if stem.endswith(suffix):
            stem = stem.removesuffix(suffix)
            break
    return path.with_name(stem + _SUFFIXES[precision])


def _variant(path: Path, info: _OnnxInfo, precision: str) -> Path:
    """The file that runs `path`'s model in `precision` ("int8", or "fp32" for an int8 file): itself when it already
    is, else its sibling `<stem>.int8.onnx` or `<stem>.onnx`. Raises ConfigError when that sibling is missing."""
    if info.precision == precision:
        return path
    sibling = onnx_sibling(path, precision)
    if precision == "int8":
        how = f"make one with `realsr quantize {path} --calibration PHOTOS`"
    else:
        how = "pass the fp32 model"
    if not sibling.is_file():
        raise ConfigError(f"{path.name}: is an {info.precision} model and no {sibling.name} lies beside it; {how}")
    return sibling


def _fp16_sibling(path: Path) -> Path | None:
    if path.name.endswith(FP16_SUFFIX) or path.suffix != ".onnx":
        return None
    return onnx_sibling(path, "fp16")


def _fp32_sibling_or_fail(path: Path, notice: Notice, on_cuda: bool = False) -> Path:
    """The fp32 `<stem>.onnx` beside an fp16 model: on CPU (fp16 never runs there) or on CUDA with fp32 asked for."""
    reason = "--precision fp32 asked for" if on_cuda else "fp16 models run only on CUDA"
    if path.name.endswith(FP16_SUFFIX):
        sibling = onnx_sibling(path, "fp32")
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
    # ORT_ENABLE_ALL includes the NCHWc layout transform, which is where the CPU speed comes from (docs/runtime.md)
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


def _cuda_session(ort, path: Path, gpu: int = 0):
    """(session, None) when the CUDA provider really loaded, else (None, why)."""
    # tiles have one fixed shape per image, so per-shape autotuning would pay off only once per image size;
    # the heuristic pick avoids the hundreds of ms EXHAUSTIVE spends re-benchmarking every conv for a new shape
    cuda_options = {"device_id": gpu, "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True}
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
