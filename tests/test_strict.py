"""The strict loader's `Literal` fields: only their listed values, whether loaded from plain data or built directly,
and the configs whose names the CLI offers are checked through it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from realsr_cli._strict import check_choices, dataclass_from_dict
from realsr_cli.config import BenchConfig, TrainConfig, UpscaleConfig
from realsr_cli.errors import ConfigError, ModelError

Colour = Literal["red", "green"]


@dataclass(frozen=True)
class Paint:
    colour: Colour = "red"
    finish: Literal["matt", "gloss"] | None = None
    layers: tuple[Colour, ...] = ()
    coats: Literal[1, 2] = 1

    def __post_init__(self) -> None:
        check_choices(self)


def test_literal_fields_load_their_listed_values():
    data = {"colour": "green", "finish": None, "layers": ["red", "green"], "coats": 2}
    assert dataclass_from_dict(Paint, data, "paint") == Paint("green", None, ("red", "green"), 2)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"colour": "blue"}, "paint: colour must be one of 'red', 'green', got 'blue'"),
        ({"finish": "satin"}, "paint: finish must be one of 'matt', 'gloss', got 'satin'"),
        ({"layers": ["red", "blue"]}, r"paint: layers\[1\] must be one of 'red', 'green', got 'blue'"),
        ({"coats": True}, "paint: coats must be one of 1, 2, got True"),  # true == 1, but it is no coat count
        ({"colour": ["red"]}, r"paint: colour must be one of 'red', 'green', got \['red'\]"),
    ],
)
def test_literal_fields_refuse_other_values(data, message):
    with pytest.raises(ConfigError, match=message):
        dataclass_from_dict(Paint, data, "paint")


def test_the_caller_chooses_the_error_class():
    with pytest.raises(ModelError, match="colour must be one of"):
        dataclass_from_dict(Paint, {"colour": "blue"}, "paint", ModelError)


def test_objects_built_directly_are_checked_too():
    assert Paint(colour="green", finish="gloss", layers=("green",)).layers == ("green",)
    with pytest.raises(ConfigError, match="^colour must be one of 'red', 'green', got 'blue'$"):
        Paint(colour="blue")
    with pytest.raises(ConfigError, match=r"^layers\[0\] must be one of"):
        Paint(layers=("blue",))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: UpscaleConfig(backend="tensorrt"), "backend must be one of 'auto', 'onnx', 'torchscript'"),
        (lambda: UpscaleConfig(precision="int4"), "precision must be one of 'auto', 'fp32', 'fp16', 'bf16', 'int8'"),
        (lambda: BenchConfig(device="tpu"), "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
        (lambda: BenchConfig(backends=("onnx", "auto")), r"backends\[1\] must be one of 'onnx', 'torchscript'"),
        (lambda: TrainConfig(amp="fp8"), "amp must be one of 'auto', 'off', 'bf16', 'fp16', got 'fp8'"),
        (lambda: TrainConfig.from_dict({"sty_input": "lowpass"}, "run.toml"), "run.toml: sty_input must be one of"),
    ],
)
def test_configs_take_only_the_names_the_cli_offers(build, message):
    with pytest.raises(ConfigError, match=message):
        build()
