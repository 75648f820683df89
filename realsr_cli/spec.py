"""`ModelSpec`: the facts a caller needs to run an exported model, and their string form for model metadata.

The same spec travels in a checkpoint (as a dict), in ONNX `metadata_props` and in TorchScript extra files
(as strings), so `realsr upscale` needs no sidecar file and no torch. No torch here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from realsr_cli._strict import dataclass_from_dict
from realsr_cli.errors import ModelError

# the TorchScript extra file that holds the spec as JSON
TORCHSCRIPT_SPEC_FILE = "realsr_spec.json"


@dataclass(frozen=True)
class ModelSpec:
    """What an image-to-image SR model expects and returns.

    Input and output are float32 NCHW tensors, RGB order, values in [0, 1]; the output is `scale` times the
    input in height and width. Tiling is exact when tiles overlap by at least twice `receptive_field`.
    """

    scale: int
    """Native upscaling factor; 1 for a restoration model that keeps the size."""
    channels: int = 3
    """Input and output channels (RGB)."""
    size_multiple: int = 1
    """Input height and width must be a multiple of this (the caller pads)."""
    receptive_field: int | None = None
    """Radius in input pixels beyond which an input pixel cannot change an output pixel; None if unknown."""
    supports_half: bool = False
    """Whether fp16 inference keeps quality (checked at export); only ever used on CUDA."""
    precision: str = "fp32"
    """Precision of the stored weights and arithmetic: fp32, fp16 (CUDA) or int8 (static quantization, CPU); inputs
    and outputs stay fp32."""
    architecture: str = "unknown"
    """Architecture name, e.g. `compact` or `paper`."""
    source_sha256: str = ""
    """SHA-256 of the checkpoint the export was made from; empty for models made elsewhere."""
    value_range: str = "0,1"
    channel_order: str = "RGB"
    fixed_size: tuple[int, int] | None = None
    """(height, width) when the model only accepts one input size (some foreign exports); None when dynamic."""

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ModelError(f"model scale must be a positive integer, got {self.scale}")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ModelError(f"unknown model precision {self.precision!r} (expected fp32, fp16 or int8)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        """Strictly (`_strict`): unknown keys and wrong types raise ModelError."""
        return dataclass_from_dict(cls, data, "model spec", ModelError)

    def to_metadata(self) -> dict[str, str]:
        """Flat string key/values for ONNX metadata_props (readable by any ONNX tool)."""
        out = {}
        for key, value in asdict(self).items():
            if value is None:
                continue
            out[key] = json.dumps(value) if not isinstance(value, str) else value
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelSpec | None:
        """Parse `to_metadata` output; None when the model carries no realsr metadata (a model made elsewhere)."""
        if "scale" not in meta:
            return None
        kwargs = {}
        for f in fields(cls):
            if f.name not in meta:
                continue
            raw = meta[f.name]
            kwargs[f.name] = raw if f.name in _STRING_FIELDS else json.loads(raw)
        try:
            return cls.from_dict(kwargs)
        except ModelError as err:
            raise ModelError(f"model metadata is malformed: {err}") from err


_STRING_FIELDS = {"precision", "architecture", "source_sha256", "value_range", "channel_order"}
