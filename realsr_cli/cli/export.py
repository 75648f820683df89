"""`realsr export`: a checkpoint's inference network, or a community .pth/.safetensors model, to verified ONNX and
TorchScript files.

No torch at import: the exporter is imported when the command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.table import Table

from realsr_cli.cli._console import console, warning
from realsr_cli.config import MODEL_FORMATS, ExportConfig
from realsr_cli.host import require_torch

if TYPE_CHECKING:
    from realsr_cli.training.export import ExportReport


def _parse_formats(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [f for f in formats if f not in MODEL_FORMATS]
    if unknown or not formats:
        raise click.BadParameter(f"{value!r}: choose one or more of {', '.join(MODEL_FORMATS)}, comma-separated")
    return formats


@click.command("export")
@click.argument("checkpoint", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the exported files (created if missing).",
)
@click.option(
    "--format",
    "formats",
    default=",".join(MODEL_FORMATS),
    show_default=True,
    callback=_parse_formats,
    help=f"Comma-separated formats to write: {', '.join(MODEL_FORMATS)}.",
)
@click.option(
    "--half", is_flag=True, help="Also write an fp16 ONNX variant for GPUs (<name>.fp16.onnx, fp32 inputs and outputs)."
)
@click.option(
    "--name", "stem", default=None, help="File name stem of the exported files. Default: the checkpoint's stem."
)
def export(checkpoint: str, out_dir: str, formats: tuple[str, ...], half: bool, stem: str | None) -> None:
    """Export MODEL to ONNX (<name>.onnx) and TorchScript (<name>.ts): a realsr training checkpoint's upscaling
    network, or a community .pth/.safetensors model (Real-ESRGAN, SwinIR, HAT, ...) that spandrel recognises.

    Every file is checked against PyTorch at odd input sizes before it is written; the model's scale,
    receptive field and the source file's SHA-256 travel in the files' metadata.

    \b
    Examples:
      realsr export runs/mine/model.pth -o export/
      realsr export runs/mine/model.pth -o export/ --format onnx --half --name mine-x4
      realsr export 4x-UltraSharp.safetensors -o export/
      realsr upscale photo.jpg --model export/mine-x4.onnx
    """
    require_torch("realsr export")  # before the exporter, which imports torch at module level
    from realsr_cli.training.export import export_model

    cfg = ExportConfig(formats=formats, half=half)
    report = export_model(checkpoint, out_dir, cfg, stem=stem)
    console.print(_report_table(report))
    if half and "onnx_fp16" not in report.paths:
        worst = max(report.max_errors["onnx_fp16"].values())
        why = (
            f"its max error {worst:.1e} exceeds {cfg.half_tolerance:g}"
            if not worst <= cfg.half_tolerance
            else f"spandrel says {report.spec.architecture} does not support fp16"
        )
        warning(f"fp16 variant not written: {why}; the files say supports_half false")


def _report_table(report: ExportReport) -> Table:
    sizes = sorted({size for by_size in report.max_errors.values() for size in by_size})
    spec = report.spec
    folder = next(iter(report.paths.values())).parent
    table = Table(
        title=f"exported to {folder}",
        caption=(
            f"{report.parameters:,} parameters, {spec.architecture}, x{spec.scale}, receptive field "
            f"{'unknown' if spec.receptive_field is None else f'{spec.receptive_field} px'}, "
            f"supports_half {str(spec.supports_half).lower()}, {report.seconds:.1f} s"
        ),
    )
    table.add_column("format")
    table.add_column("file", overflow="fold")
    for h, w in sizes:
        table.add_column(f"max error {h}x{w}", justify="right")
    for kind in ("onnx", "onnx_fp16", "torchscript"):
        if kind not in report.max_errors:
            continue
        path = report.paths.get(kind)
        name = path.name if path else "[dim]not written (checked for supports_half)[/]"
        table.add_row(kind, name, *(f"{report.max_errors[kind][s]:.1e}" for s in sizes))
    return table
