"""The bundled models: the manifest `export/models.toml` (the one home of their names, scales, costs and headline
numbers), read by `realsr models` and by `--model NAME`; its folder also holds the models' files. No torch here."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from realsr_cli._strict import dataclass_from_dict
from realsr_cli.errors import InputError

MANIFEST = "models.toml"

# the file of each backend among a bundled model's files (the fp16 and int8 ONNX siblings are found by the ONNX
# backend and by `--precision auto`)
_BACKEND_SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts"}
_VARIANT_SUFFIXES = (".fp16.onnx", ".int8.onnx")


@dataclass(frozen=True)
class BundledModel:
    """One [[model]] table of the manifest."""

    name: str
    """What `--model NAME` takes; also the stem of its files."""
    scale: int
    """Native upscaling factor; must match the files' metadata (a test checks)."""
    mflop_per_pixel: float
    """Inference cost in MFLOP per input pixel, as `realsr bench` counts it from the ONNX file."""
    purpose: str
    """What the model is for, in one line."""
    headline: str
    """Its headline scores from the model card, in one line."""
    files: tuple[str, ...]
    """File names beside the manifest: .onnx, optionally .fp16.onnx and .int8.onnx, and .ts."""
    default: bool = False
    """The model `realsr upscale` runs without --model (exactly one has it)."""


@dataclass(frozen=True)
class Manifest:
    """The manifest as read from `folder`, which also holds the models' files."""

    folder: Path
    models: tuple[BundledModel, ...]

    @property
    def default(self) -> BundledModel:
        return next(model for model in self.models if model.default)

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.models]

    def find(self, name: str) -> BundledModel | None:
        return next((model for model in self.models if model.name == name), None)

    def file(self, model: BundledModel, backend: str = "auto") -> Path | None:
        """The file `backend` runs of `model` (under auto the ONNX file, else the TorchScript one), when present."""
        for kind in ("onnx", "torchscript") if backend == "auto" else (backend,):
            for name in model.files:
                if name.endswith(_BACKEND_SUFFIXES[kind]) and not name.endswith(_VARIANT_SUFFIXES):
                    path = self.folder / name
                    if path.is_file():
                        return path
        return None


def read_manifest(dirs: list[Path]) -> Manifest:
    """The manifest in the first of `dirs` that holds one. Raises InputError when none does or it is malformed."""
    for folder in dirs:
        path = folder / MANIFEST
        if path.is_file():
            return _parse(path)
    looked = ", ".join(str(folder) for folder in dirs)
    raise InputError(
        f"the bundled model manifest ({MANIFEST}) is missing from {looked}: reinstall realsr, or pass --model with "
        "an exported .onnx or .ts file (make one with `realsr export CHECKPOINT -o DIR`)"
    )


def _parse(path: Path) -> Manifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise InputError(f"{path}: unreadable bundled model manifest ({err})") from err
    tables = data.get("model")
    if set(data) != {"model"} or not isinstance(tables, list):
        raise InputError(f"{path}: the manifest holds [[model]] tables and nothing else")
    models = tuple(
        dataclass_from_dict(BundledModel, table, f"{path}: model {i + 1}", InputError) for i, table in enumerate(tables)
    )
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: model names must be unique, got {', '.join(names)}")
    if sum(model.default for model in models) != 1:
        raise InputError(f"{path}: exactly one model must have default = true")
    return Manifest(path.parent, models)
