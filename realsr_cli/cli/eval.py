"""`realsr eval`: a model against bicubic on LR images, with HR partners (PSNR/SSIM/NIQE) or without (NIQE alone).

Thin: the work is `realsr_cli.quality.evaluate.evaluate`, imported when the command runs. No torch here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import rich_click as click

from realsr_cli.cli._console import console, notice, tracker
from realsr_cli.config import BACKENDS
from realsr_cli.errors import ConfigError

if TYPE_CHECKING:
    from realsr_cli.quality.evaluate import EvalReport, Scores


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _table(report: EvalReport, model_name: str):
    from rich import box
    from rich.table import Table

    ref = report.has_reference
    has_niqe = any(s.niqe is not None for r in report.images for s in (r.model, r.bicubic))
    title = f"{model_name} vs bicubic"
    if ref:
        caption = "PSNR/SSIM on BT.601 Y (PSNR-RGB on RGB), 4-pixel border crop"
        caption += "; NIQE: lower is more natural" if has_niqe else ""
        caption += "; grid: sub-pixel grid, natural ~0.1; bias: mean output - HR in 8-bit levels (R/G/B)"
    else:
        caption = "no HR images: NIQE (lower is more natural) and grid (sub-pixel grid, natural ~0.1)"
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
    table.add_column("image", overflow="fold")
    metrics: list[tuple[str, str, int]] = []  # (header, field, digits)
    if ref:
        metrics += [("PSNR-Y", "psnr_y", 2), ("SSIM-Y", "ssim_y", 4), ("PSNR-RGB", "psnr_rgb", 2)]
    if has_niqe:
        metrics.append(("NIQE", "niqe", 3))
    metrics.append(("grid", "grid", 3))
    for header, _, _ in metrics:
        table.add_column(f"{header}\nmodel", justify="right")
        table.add_column(f"{header}\nbicubic", justify="right")
    hr_niqe = ref and has_niqe
    if hr_niqe:
        table.add_column("NIQE\nHR", justify="right")
    if ref:
        table.add_column("bias\nmodel", justify="right")

    def row(name: str, model: Scores, bicubic: Scores, hr: Scores | None, style: str | None = None) -> None:
        cells = [name]
        for _, field, digits in metrics:
            cells += [_fmt(getattr(model, field), digits), _fmt(getattr(bicubic, field), digits)]
        if hr_niqe:
            cells.append(_fmt(hr.niqe if hr is not None else None, 3))
        if ref:
            cells.append("/".join(f"{v:+.1f}" for v in (model.bias_r, model.bias_g, model.bias_b) if v is not None))
        table.add_row(*cells, style=style)

    for r in report.images:
        row(r.name, r.model, r.bicubic, r.hr)
    mean = report.mean()
    table.add_section()
    row(f"mean ({len(report.images)})", mean["model"], mean["bicubic"], mean.get("hr"), style="bold")
    return table


@click.command("eval")
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Model to evaluate: a bundled model's name, an exported .onnx or .ts, or a .pth/.safetensors model "
    "[default: the bundled model].",
)
@click.option(
    "--lr",
    "lr_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of low-resolution input images (subfolders included).",
)
@click.option(
    "--hr",
    "hr_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    show_default=True,
    help="Folder of ground-truth HR images with the LR images' file names; none = NIQE alone.",
)
@click.option(
    "--niqe/--no-niqe",
    "with_niqe",
    default=True,
    show_default=True,
    help="Also score naturalness (NIQE, no reference).",
)
@click.option(
    "--json", "as_json", is_flag=True, default=False, show_default=True, help="Print the report as JSON on stdout."
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="Inference runtime; auto = whatever the model file is.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    metavar="auto|cpu|cuda[:N]",
    help="Where the model runs; auto = CUDA when it really loads, else the CPU; cuda:N picks GPU N.",
)
@click.option(
    "--tile",
    type=click.IntRange(min=0),
    default=None,
    help="Tile size: at most N x N input pixels per tile; 0 = whole image. Default: as realsr upscale.",
)
@click.option("--quiet", "-q", is_flag=True, default=False, show_default=True, help="No progress bar.")
def eval_command(
    model_path: Path | None,
    lr_dir: Path,
    hr_dir: Path | None,
    with_niqe: bool,
    as_json: bool,
    backend: str,
    device: str,
    tile: int,
    quiet: bool,
) -> None:
    """Score a model against bicubic upscaling, image by image and on average.

    With --hr: PSNR and SSIM on the Y channel (BT.601) and PSNR on RGB, after a 4-pixel border crop, for the model
    and for bicubic side by side, NIQE of model, bicubic and HR, the grid score (a sub-pixel checkerboard: natural
    images score about 0.1) and the model's colour bias (mean output minus HR per channel, in 8-bit levels).
    Without --hr: NIQE, a no-reference naturalness score (lower is more natural), and the grid score. LR and HR
    images pair up by file name. The table goes to stderr (whole lines when it is not a terminal); --json prints
    the report on stdout.

    \b
    Examples:
      realsr eval --lr data/lr --hr data/hr           PSNR, SSIM, NIQE, grid, bias
      realsr eval --lr data/real_lr                   no HR: NIQE and grid only
      realsr eval --model my.onnx --lr lr --hr hr --json > scores.json
    """
    from realsr_cli.quality.evaluate import evaluate

    if hr_dir is None and not with_niqe:
        raise ConfigError("nothing to score: without --hr only NIQE is measured, and --no-niqe turns it off")
    with _open_upscaler(model_path, backend=backend, device=device, tile=tile) as upscaler:
        report = evaluate(
            upscaler.upscale,
            lr_dir,
            hr_dir,
            scale=upscaler.native_scale,
            with_niqe=with_niqe,
            progress=tracker("evaluating", quiet),
        )
        model_file = upscaler.model_path
    if as_json:
        data = {"model": str(model_file), "lr": str(lr_dir), "hr": str(hr_dir) if hr_dir else None, **report.to_dict()}
        click.echo(json.dumps(data, indent=2))
    else:
        console.print(_table(report, model_file.name))


def _open_upscaler(model_path: Path | None, *, backend: str, device: str, tile: int):
    """The model as an `Upscaler` (a context manager with `.upscale((h, w, 3) uint8) -> (h*s, w*s, 3) uint8`,
    `.native_scale` and `.model_path`) at its native scale."""
    from realsr_cli.inference.upscaler import Upscaler

    return Upscaler(model=model_path, backend=backend, device=device, tile=tile, notice=notice)
