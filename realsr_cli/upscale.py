"""The upscaling API's earlier import path, `from realsr_cli.upscale import Upscaler`, kept working; it lives in
`realsr_cli.inference.upscaler`, and `from realsr_cli import Upscaler` is the documented path."""

from realsr_cli.inference.upscaler import Upscaler, UpscaleResult, expand_inputs

__all__ = ["Upscaler", "UpscaleResult", "expand_inputs"]
