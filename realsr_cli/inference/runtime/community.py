"""Community models: the `.pth` and `.safetensors` state dicts people already have (Real-ESRGAN, SwinIR, HAT, DAT,
OmniSR, ...), recognised from their weights by spandrel, as chaiNNer and ComfyUI do, and run eagerly by torch
through realsr's tiling (`CommunityBackend`).

A model file is untrusted input: `.pth` files are read with `torch.load(weights_only=True)`, which refuses any
pickle that would run code, and `.safetensors` files with safetensors, which holds tensors only. torch,
safetensors and spandrel come with the `spandrel` extra and are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realsr_cli import host
from realsr_cli._files import first_line
from realsr_cli.errors import BackendError, ConfigError, InputError, ModelError
from realsr_cli.inference.runtime.checks import check_spec
from realsr_cli.inference.runtime.torchscript import (
    TorchScriptBackend,
    torch_dtype,
    torch_precision,
    torch_target,
    tune_threads,
)
from realsr_cli.spec import ModelSpec

if TYPE_CHECKING:
    from realsr_cli.inference.runtime import Notice

SPANDREL_EXTRA = "pip install 'realsr-cli[spandrel]'"

# the marker of a realsr training checkpoint (training/checkpoint.py's CHECKPOINT_FORMAT, pinned to it by a test):
# the runtime may not import training, and those files get "run realsr export first" rather than spandrel's verdict
REALSR_CHECKPOINT_FORMAT = "realsr-checkpoint"

# spandrel's only architectures that import torchvision (at module level); neither upscales: LaMa inpaints
# masked regions and RestoreFormer restores faces
TORCHVISION_ARCHITECTURES = ("LaMa", "RestoreFormer")

_SAFETENSORS_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header, in bytes

# why torchvision could not be imported when spandrel was imported with the stand-in (see `import_spandrel`)
_torchvision_missing: str | None = None


@dataclass(frozen=True)
class CommunityModel:
    """A state dict spandrel recognised, loaded into its architecture (fp32, on the CPU), and its `ModelSpec`."""

    descriptor: Any  # spandrel.ImageModelDescriptor: the module plus its facts (scale, channels, half support)
    spec: ModelSpec

    @property
    def architecture(self) -> str:
        return self.descriptor.architecture.name


def is_safetensors(head: bytes) -> bool:
    """Whether a file that starts with `head` (at least 9 bytes) is a safetensors file, whole or truncated: an
    8-byte little-endian header length, then that many bytes of JSON starting with '{'."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER


def read_state_dict(path: Path) -> dict:
    """The tensors of a `.pth` or `.safetensors` file (by content, not by name), read safely on the CPU.

    Raises BackendError (torch or safetensors missing), InputError (unreadable, corrupt, a pickle that would run
    code, not a dict of tensors, or a realsr training checkpoint, which `realsr export` turns into a model).
    """
    torch = host.require_torch("a .pth or .safetensors model", SPANDREL_EXTRA)
    with open(path, "rb") as fh:
        head = fh.read(9)
    if is_safetensors(head):
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise BackendError(f"safetensors is not installed: {SPANDREL_EXTRA} (needed for {path.name})") from err
        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError (and OSError) on damaged files
            raise InputError(f"{path}: corrupt safetensors file ({first_line(err, 300)})") from err
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols its safe unpickler was not written for; it then refuses what it
            # cannot read, and that refusal is the message
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types on garbage input (UnpicklingError, EOFError, ...)
        raise InputError(f"{path}: not a readable PyTorch model ({_refusal(err)})") from err
    if isinstance(data, dict) and data.get("format") == REALSR_CHECKPOINT_FORMAT:
        raise InputError(checkpoint_message(path))
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: holds a {type(data).__name__}, not a state dict (a dict of named tensors)")
    return data


def _refusal(err: Exception) -> str:
    """Why torch's weights-only unpickler refused a file, in a few words (its own message is a page long)."""
    text = str(err)
    code = re.search(r"GLOBAL (\S+)", text)
    if code:
        return (
            f"it holds Python objects ({code[1]}) that a safe weights-only load refuses: realsr runs no code from "
            "a model file"
        )
    if "Weights only load failed" in text:
        return "a damaged pickle, or not a PyTorch file"
    return first_line(err, 300)


def checkpoint_message(path: Path) -> str:
    """The message for a realsr training checkpoint given where an exported model is expected."""
    return (
        f"{path}: is a realsr training checkpoint, not an exported model; run `realsr export {path} -o DIR` first "
        "and pass the .onnx or .ts file it writes"
    )


def load_community_model(path: Path, state: dict | None = None) -> CommunityModel:
    """Read `path` (`read_state_dict`; `state` when the caller has read it already) and let spandrel find its
    architecture and hyperparameters.

    The spec takes scale, channels and half-precision support from spandrel's descriptor, and spandrel's size
    multiple (spandrel pads inputs below its minimum size itself). The receptive field is unknown, so tiles
    overlap by tiling's safe default. Raises what `read_state_dict` raises, BackendError (spandrel missing, an
    architecture that needs torchvision) or ModelError (no known architecture matches, the weights do not fit
    it, not a 3-channel image-to-image model).
    """
    if state is None:
        state = read_state_dict(path)
    spandrel = import_spandrel()
    state = spandrel.canonicalize_state_dict(state)
    try:
        descriptor = spandrel.MAIN_REGISTRY.load(state)
    except spandrel.UnsupportedModelError as err:
        raise ModelError(
            f"{path}: unknown architecture: none of spandrel {spandrel.__version__}'s "
            f"{len(spandrel.MAIN_REGISTRY)} architectures matches its weights"
        ) from err
    except Exception as err:  # an architecture matched the key names, then its shapes or values did not fit
        raise ModelError(f"{path}: spandrel could not load its weights ({first_line(err, 300)})") from err
    arch = descriptor.architecture
    if _torchvision_missing is not None and arch.id in TORCHVISION_ARCHITECTURES:
        raise BackendError(
            f"{path}: is a {arch.name} model ({descriptor.purpose}), which needs torchvision, and torchvision cannot "
            f"be imported here ({_torchvision_missing}); install a torchvision build that matches torch"
        )
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelError(f"{path}: is a {arch.name} {descriptor.purpose} model; realsr runs image-to-image models")
    if descriptor.output_channels != descriptor.input_channels:
        raise ModelError(
            f"{path}: {arch.name} model maps {descriptor.input_channels} channels to {descriptor.output_channels}; "
            "realsr runs RGB (3-channel) models"
        )
    spec = ModelSpec(
        scale=descriptor.scale,
        channels=descriptor.input_channels,
        size_multiple=descriptor.size_requirements.multiple_of,
        receptive_field=None,
        supports_half=descriptor.supports_half,
        architecture=arch.id,
    )
    return CommunityModel(descriptor.eval(), spec)


def import_spandrel():
    """The spandrel module; BackendError naming the extra when it (or what it needs) is missing.

    `import spandrel` imports every architecture it knows, and two of them (TORCHVISION_ARCHITECTURES) import
    torchvision at module level. Where torchvision cannot be imported (not installed, or PyPI's CUDA build beside
    a CPU torch: "operator torchvision::nms does not exist"), spandrel is imported with a stand-in for
    `torchvision.transforms.functional` whose functions raise a BackendError naming torchvision, and the stand-in
    is taken out of `sys.modules` again at once, so nothing else ever sees a fake torchvision. The stand-in is the
    narrower choice: importing one architecture alone (`spandrel.architectures.ESRGAN`) still runs
    `spandrel/__init__`, which imports the main registry and with it both torchvision users; skipping that
    `__init__` would leave a hollow `spandrel` module behind and need a copy of spandrel's registry order.
    `load_community_model` refuses the two architectures up front, so the stand-in is never called.
    """
    global _torchvision_missing
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    if importlib.util.find_spec("spandrel") is None:
        raise BackendError(f"spandrel is not installed: {SPANDREL_EXTRA} (needed for .pth/.safetensors models)")
    host.require_torch("a .pth or .safetensors model", SPANDREL_EXTRA)  # before the stand-in: torch's own import
    try:
        import torchvision.transforms.functional  # noqa: F401
    except Exception as err:  # ImportError, or RuntimeError from a build that does not match torch
        reason = first_line(err, 200)
        with _torchvision_stand_in(reason):
            spandrel = _import_spandrel_module()
        _torchvision_missing = reason
        return spandrel
    return _import_spandrel_module()


def _import_spandrel_module():
    try:
        import spandrel
    except ModuleNotFoundError as err:  # safetensors or einops, which spandrel imports
        raise BackendError(f"spandrel cannot be imported: {err.name} is missing: {SPANDREL_EXTRA}") from err
    return spandrel


class _NeedsTorchvision:
    """Stands in for every name of `torchvision.transforms.functional`; using one raises BackendError."""

    def __init__(self, name: str, reason: str) -> None:
        self._name, self._reason = name, reason

    def _fail(self):
        raise BackendError(f"torchvision.transforms.functional.{self._name} needs torchvision ({self._reason})")

    def __call__(self, *args, **kwargs):
        self._fail()

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        self._fail()


@contextlib.contextmanager
def _torchvision_stand_in(reason: str):
    """`torchvision`, `torchvision.transforms` and `torchvision.transforms.functional` as stand-in modules in
    `sys.modules` for the duration of the block; whatever was there before (usually nothing) is put back."""
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    saved = {name: sys.modules.get(name) for name in names}
    modules = {name: types.ModuleType(name, "realsr's stand-in: torchvision cannot be imported") for name in names}
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]

    def stand_in(name: str):
        if name.startswith("__"):  # module introspection (inspect walks sys.modules for __file__) finds nothing
            raise AttributeError(name)
        return _NeedsTorchvision(name, reason)

    modules["torchvision.transforms.functional"].__getattr__ = stand_in
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:
            if saved[name] is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = saved[name]


class CommunityBackend(TorchScriptBackend):
    """A community model (`load_community_model`) run eagerly by torch, on CUDA or the CPU (channels-last), in the
    precision spandrel says the architecture supports. Calls go through spandrel's descriptor, which pads inputs
    below the model's minimum size and clamps the output to [0, 1]."""

    name = "torch"

    @classmethod
    def open(
        cls, path: Path, device: str = "auto", *, precision: str = "auto", scale_hint: int | None = None, notice: Notice
    ) -> CommunityBackend:
        torch = host.require_torch("a .pth or .safetensors model", SPANDREL_EXTRA)
        model = load_community_model(path)
        check_spec(model.spec, path, scale_hint)
        descriptor = model.descriptor
        target = torch_target(torch, device, notice)
        cuda = target == "cuda"
        tune_threads(torch, cuda)
        precision = torch_precision(
            torch,
            precision,
            cuda,
            path,
            notice,
            fp16_ok=descriptor.supports_half,
            bf16_ok=descriptor.supports_bfloat16,
        )
        supported = {"fp16": descriptor.supports_half, "bf16": descriptor.supports_bfloat16}
        if not supported.get(precision, True):
            raise ConfigError(
                f"{path.name}: {model.architecture} does not support {precision} (spandrel says so); "
                "use --precision auto or fp32"
            )
        descriptor.to(torch.device(target))
        descriptor.to(torch_dtype(torch, precision))
        if not cuda:
            descriptor.model.to(memory_format=torch.channels_last)  # docs/runtime.md: faster on CPU
        if descriptor.tiling is not import_spandrel().ModelTiling.SUPPORTED:
            notice(f"spandrel advises against tiling {model.architecture} models; --tile 0 runs whole images")
        return cls(descriptor, path, model.spec, target, precision=precision, clamp=False)
