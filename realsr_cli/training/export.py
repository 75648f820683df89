"""Export E + G_SR from a checkpoint, or a community .pth/.safetensors model that spandrel recognises, to ONNX
(fp32, optional fp16) and TorchScript, with the `ModelSpec` in the model metadata, and verify every file against
eager PyTorch before it is put in place. Imports torch.

The exported graph is `clamp(sr_decoder(encoder(x)), 0, 1)` (or the community model's forward, clamped): every
backend returns valid images, and the caller never clamps. Files are written under temporary names and renamed
into place only when all of them pass.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
import torch
from torch import nn

from realsr_cli import __version__
from realsr_cli._files import atomic_write, file_sha256
from realsr_cli.config import MODEL_FORMATS, ExportConfig
from realsr_cli.errors import ConfigError, InputError, ModelError
from realsr_cli.inference.runtime.community import is_safetensors, load_community_model, read_state_dict
from realsr_cli.spec import TORCHSCRIPT_SPEC_FILE, ModelSpec
from realsr_cli.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from realsr_cli.training.nets import SRNet, count_parameters

VERSION_KEY = "realsr_version"
"""ONNX metadata key and TorchScript extra file holding the realsr version that wrote the model."""

# the example input of tracing; deliberately none of the check sizes, so the checks prove the dynamic axes
_TRACE_SIZE = (24, 32)
_SUFFIXES = {"onnx": ".onnx", "onnx_fp16": ".fp16.onnx", "torchscript": ".ts"}


class ClampedSRNet(nn.Module):
    """The inference graph: (N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale) in [0, 1]."""

    def __init__(self, net: SRNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).clamp(0.0, 1.0)


class ClampedCommunityNet(nn.Module):
    """A community model's inference graph, as spandrel's descriptor calls it, clamped to [0, 1]; without the
    descriptor's padding to the model's size multiple, which the exported spec carries and realsr's tiling does."""

    def __init__(self, descriptor) -> None:
        super().__init__()
        self.net = descriptor.model
        # a few architectures (DnCNN, FBCNN, ...) wrap their forward; spandrel keeps that call on the descriptor
        self._call = descriptor._call_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.net, x).clamp(0.0, 1.0)


@dataclass(frozen=True)
class ExportSource:
    """What an export starts from: the graph to write, its spec, and the sizes it can be traced and checked at."""

    graph: nn.Module
    spec: ModelSpec  # supports_half is what the source allows; the export's fp16 check may only turn it off
    path: Path
    minimum: int = 0  # smallest input edge the network takes (spandrel's size requirement)

    def fit(self, size: tuple[int, int]) -> tuple[int, int]:
        """`size` raised to the source's minimum and rounded up to its size multiple."""
        m = self.spec.size_multiple
        return tuple(-(-max(edge, self.minimum) // m) * m for edge in size)


def load_source(path: str | os.PathLike) -> ExportSource:
    """A realsr checkpoint (E + G_SR), or a community model: a safetensors file, or a PyTorch pickle without the
    checkpoint marker, read safely and recognised by spandrel (its spec then carries the file's SHA-256).

    Raises InputError, ModelError or BackendError as `load_checkpoint` and `load_community_model` do.
    """
    path = Path(path)
    state = _community_state(path)
    if state is None:
        ckpt = load_checkpoint(path)
        # realsr's own networks: the export's fp16 check alone decides supports_half
        return ExportSource(ClampedSRNet(ckpt.generator()).eval(), replace(ckpt.spec, supports_half=True), ckpt.path)
    model = load_community_model(path, state)
    spec = replace(model.spec, source_sha256=file_sha256(path))
    return ExportSource(
        ClampedCommunityNet(model.descriptor).eval(), spec, path, model.descriptor.size_requirements.minimum
    )


def _community_state(path: Path) -> dict | None:
    """The state dict of a community model file; None for a realsr checkpoint, or for a file that is no model at
    all (then `load_checkpoint` says what it is)."""
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        head = fh.read(9)
    if is_safetensors(head):
        return read_state_dict(path)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # refused or damaged: load_checkpoint gives the message
        return None
    if not isinstance(data, dict) or data.get("format") == CHECKPOINT_FORMAT:
        return None
    return data


@dataclass(frozen=True)
class ExportReport:
    """What `export_model` wrote and how closely each file matches eager PyTorch."""

    paths: dict[str, Path]
    """Written files by kind: "onnx", "onnx_fp16", "torchscript" (only those written)."""
    max_errors: dict[str, dict[tuple[int, int], float]]
    """Kind -> (height, width) of a check input -> max abs error against eager PyTorch. "onnx_fp16" is always
    measured, because it decides `supports_half`, even when the fp16 file is not written."""
    spec: ModelSpec
    """The spec in the fp32 files' metadata (the fp16 file's differs only in `precision`)."""
    parameters: int
    """Parameters of the exported network (E + G_SR for a realsr checkpoint)."""
    seconds: float

    @property
    def receptive_field(self) -> int | None:
        return self.spec.receptive_field

    @property
    def supports_half(self) -> bool:
        return self.spec.supports_half


def export_model(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: ExportConfig = ExportConfig(),
    stem: str | None = None,
) -> ExportReport:
    """Export the checkpoint's E + G_SR, or a community model (`load_source`), as `<stem>.onnx`, `<stem>.fp16.onnx`
    (cfg.half) and `<stem>.ts` in out_dir.

    ONNX: opset cfg.opset, input "input" (N, 3, H, W) float32 in [0, 1], output "output" (N, 3, H*s, W*s) float32
    in [0, 1], batch/height/width dynamic, one self-contained file, spec + realsr version in metadata_props.
    The fp16 variant keeps float32 inputs and outputs. TorchScript: a traced module that loads without realsr,
    with the spec as JSON in the extra file TORCHSCRIPT_SPEC_FILE. `supports_half` in every file says whether the
    fp16 graph stayed within cfg.half_tolerance of eager on ONNX Runtime's CPU provider (and, for a community model,
    that spandrel says its architecture supports fp16); if it did not, the fp16 file is not written. A community
    model is traced and checked at sizes raised to its minimum and size multiple. `stem` defaults to the checkpoint
    file's stem. Existing files of the same name are replaced.

    Raises InputError (missing or corrupt checkpoint, unwritable out_dir), ConfigError (unknown format, --half
    without onnx, a stem with folders in it), ModelError (a file differs from eager by more than cfg.tolerance at
    some check size, and nothing is then written; a community model of no known architecture) or BackendError
    (spandrel missing, for a community model).
    """
    start = time.perf_counter()
    unknown = sorted(set(cfg.formats) - set(MODEL_FORMATS))
    if unknown or not cfg.formats:
        raise ConfigError(
            f"unknown export format {', '.join(unknown) or '(none)'}; choose from {', '.join(MODEL_FORMATS)}"
        )
    if cfg.half and "onnx" not in cfg.formats:
        raise ConfigError("--half writes an fp16 ONNX variant: include onnx in the formats")
    if stem is not None and (not stem or stem.startswith(".") or Path(stem).name != stem):
        raise ConfigError(f"export name {stem!r} must be a plain file name stem, without folders or a leading dot")
    source = load_source(checkpoint)
    stem = stem or source.path.stem
    out_dir = _writable_dir(Path(out_dir))

    graph = source.graph
    checks = [(source.fit(size), _check_input(source.fit(size), seed=i)) for i, size in enumerate(cfg.check_sizes)]
    with torch.inference_mode():
        expected = {size: graph(x).numpy() for size, x in checks}

    def errors(run) -> dict[tuple[int, int], float]:
        return {size: float(np.abs(run(x) - expected[size]).max()) for size, x in checks}

    max_errors: dict[str, dict[tuple[int, int], float]] = {}
    written: dict[str, Path] = {}  # kind -> temporary file, renamed to its final name when all of them pass
    with contextlib.ExitStack() as temps:

        def temp(kind: str) -> BinaryIO:
            return temps.enter_context(atomic_write(out_dir / f"{stem}{_SUFFIXES[kind]}"))

        with _quiet_export():
            trace_size = source.fit(_TRACE_SIZE)
            onnx_model = _to_onnx(graph, cfg.opset, trace_size)
            # the fp16 check always runs: it decides supports_half in every file, --half or not
            half_model = _to_fp16(onnx_model)
            max_errors["onnx_fp16"] = errors(_onnx_runner(half_model.SerializeToString()))
            half_ok = all(err <= cfg.half_tolerance for err in max_errors["onnx_fp16"].values())  # False on NaN
            spec = replace(source.spec, supports_half=half_ok and source.spec.supports_half, precision="fp32")

            if "onnx" in cfg.formats:
                written["onnx"] = _write_onnx(onnx_model, spec, temp("onnx"))
                max_errors["onnx"] = errors(_onnx_runner(str(written["onnx"])))
                if cfg.half and spec.supports_half:
                    written["onnx_fp16"] = _write_onnx(half_model, replace(spec, precision="fp16"), temp("onnx_fp16"))
            if "torchscript" in cfg.formats:
                written["torchscript"] = _write_torchscript(graph, spec, temp("torchscript"), trace_size)
                module = torch.jit.load(str(written["torchscript"]), map_location="cpu")
                max_errors["torchscript"] = errors(lambda x: _run_torch(module, x))
        _check_parity(source.path, max_errors, cfg.tolerance)  # on failure, leaving `temps` removes every file
    # leaving `temps` without an error: atomic_write syncs and renames each file into place
    paths = {kind: out_dir / f"{stem}{_SUFFIXES[kind]}" for kind in written}
    return ExportReport(
        paths=paths,
        max_errors=max_errors,
        spec=spec,
        parameters=count_parameters(graph),
        seconds=time.perf_counter() - start,
    )


def _check_parity(checkpoint: Path, max_errors: dict[str, dict[tuple[int, int], float]], tolerance: float) -> None:
    """ModelError listing every written file and check size whose error against eager exceeds `tolerance`."""
    failures = [
        f"{kind} {h}x{w}: {err:.2e}"
        for kind, by_size in max_errors.items()
        if kind != "onnx_fp16"
        for (h, w), err in by_size.items()
        if not err <= tolerance  # also catches NaN
    ]
    if failures:
        raise ModelError(
            f"{checkpoint}: export differs from eager PyTorch by more than {tolerance:g} "
            f"({'; '.join(failures)}); nothing written"
        )


def _writable_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: output path exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{path}: cannot create output folder ({err.strerror})") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{path}: output folder is not writable")
    return path


def _check_input(size: tuple[int, int], seed: int) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1]: smooth structure per channel plus seeded noise, never constant, contiguous."""
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h).view(h, 1)
    x = torch.linspace(0, 1, w).view(1, w)
    smooth = torch.stack([torch.sin(7 * x + 3 * y), torch.cos(5 * y - 2 * x), torch.sin(9 * (x + y))]) * 0.35 + 0.5
    noise = torch.rand((3, h, w), generator=gen) - 0.5
    return (smooth + 0.3 * noise).clamp(0, 1).unsqueeze(0).contiguous()


@contextlib.contextmanager
def _quiet_export():
    """Hide the exporters' known deprecation notices (both are still the right tools here; see docs/runtime.md);
    any other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        warnings.filterwarnings(
            "ignore", message="The feature will be removed", category=DeprecationWarning, module=r"torch\.onnx"
        )
        yield


def _to_onnx(graph: nn.Module, opset: int, trace_size: tuple[int, int]) -> onnx.ModelProto:
    # the legacy (TorchScript-based) exporter: measured here it exports `compact` in 0.2 s and `paper` in 2.4 s,
    # the dynamo exporter in 4 s and 35 s, and dynamo only emits opset >= 18 natively (17 goes through a
    # fallback version converter); the parity checks below hold either way
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            graph,
            (torch.rand(1, 3, *trace_size),),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={
                "input": {0: "batch", 2: "height", 3: "width"},
                "output": {0: "batch", 2: "out_height", 3: "out_width"},
            },
        )
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model, full_check=True)
    return model


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    # keep_io_types: callers feed and receive float32; the casts live inside the graph
    half = convert_float_to_float16(model, keep_io_types=True)
    # the converter appends the input casts after their consumers; ONNX requires topological order
    OnnxModel.graph_topological_sort(half.graph)
    return half


def _write_onnx(model: onnx.ModelProto, spec: ModelSpec, fh: BinaryIO) -> Path:
    """Write the model with `spec` in its metadata to `fh` (an `atomic_write` file); returns its temporary path."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's proto stays unchanged
    onnx.helper.set_model_props(model, {**spec.to_metadata(), VERSION_KEY: __version__})
    onnx.checker.check_model(model)
    fh.write(model.SerializeToString())  # one self-contained file: weights inline, never a separate .onnx.data
    fh.flush()  # the parity check reads the file back
    return Path(fh.name)


def _write_torchscript(graph: nn.Module, spec: ModelSpec, fh: BinaryIO, trace_size: tuple[int, int]) -> Path:
    """Trace the graph and write it with `spec` as an extra file to `fh` (an `atomic_write` file); returns its
    temporary path."""
    with torch.no_grad():
        # check_trace would run the net twice more; the parity check against eager below is stricter
        traced = torch.jit.trace(graph, torch.rand(1, 3, *trace_size), check_trace=False)
    extra = {TORCHSCRIPT_SPEC_FILE: json.dumps(spec.to_dict()), VERSION_KEY: __version__}
    # into memory: torch.jit.save writing a file aborts the whole process (std::terminate) on a full disk
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files=extra)
    fh.write(buffer.getbuffer())
    fh.flush()  # the parity check reads the file back
    return Path(fh.name)


def _onnx_runner(model: str | bytes):
    import onnxruntime as ort

    # CPU only: the check must not depend on (or spam about) a GPU provider
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x.numpy()})[0]


def _run_torch(module: torch.jit.ScriptModule, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return module(x).numpy()
