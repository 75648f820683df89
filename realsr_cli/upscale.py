"""The upscaling API's earlier import path, `from realsr_cli.upscale import Upscaler`, kept working; it lives in
`realsr_cli.inference`, and `from realsr_cli import Upscaler` is the documented path."""

from realsr_cli.inference.inputs import expand_inputs
from realsr_cli.inference.pipeline import UpscaleResult
from realsr_cli.inference.upscaler import Upscaler

__all__ = ["Upscaler", "UpscaleResult", "expand_inputs"]
