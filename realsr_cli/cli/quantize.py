"""`realsr quantize`: an exported fp32 ONNX model to int8 for fast CPU inference (`realsr_cli.training.quantize`).
No torch here.
"""

from __future__ import annotations

import rich_click as click

from realsr_cli.cli._console import console


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--calibration",
    "photos",
    required=True,
    multiple=True,
    metavar="PHOTOS",
    help="Photos (files, folders or globs; repeatable) like the ones the model will upscale: their crops set the "
    "int8 ranges. A few dozen varied photos suffice.",
)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="The int8 model file. Default: <stem>.int8.onnx beside MODEL, where `--precision int8` finds it.",
)
def quantize_command(model: str, photos: tuple[str, ...], out: str | None) -> None:
    """Make an int8 copy of an exported fp32 ONNX MODEL, for CPUs with 8-bit integer units (VNNI, AMX).

    Static quantization by ONNX Runtime, calibrated on crops of PHOTOS; the int8 model's output is then compared
    with the fp32 model's on those crops (check it on your own pairs with `realsr eval`). `--precision int8` runs
    the copy beside MODEL; the bundled model ships one, which `--precision auto` uses where it measures fastest.

    \b
    Examples:
      realsr quantize export/mine-x4.onnx --calibration photos/
      realsr upscale photo.jpg --model export/mine-x4.onnx --precision int8
    """
    from realsr_cli.training.quantize import quantize_model

    report = quantize_model(model, list(photos), out)
    console.print(
        f"wrote {report.path} ({report.crops} calibration crops, {report.seconds:.1f} s); against the fp32 model "
        f"on those crops: PSNR-Y {report.psnr_y_mean:.1f} dB mean, {report.psnr_y_min:.1f} dB worst",
        soft_wrap=True,
        highlight=False,
    )
