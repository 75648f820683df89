"""`realsr compare`: side-by-side crops (bicubic | models | HR) as one PNG. Thin layer over
`realsr_cli.quality.compare`. No torch here."""

from __future__ import annotations

from pathlib import Path

import click

from realsr_cli.cli._console import console, notice
from realsr_cli.config import CompareConfig
from realsr_cli.errors import ConfigError


@click.command("compare")
@click.option(
    "--lr",
    "lr_dir",
    type=click.Path(exists=True, file_okay=False),
    required=True,
    help="Folder of low-resolution images.",
)
@click.option(
    "--hr",
    "hr_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder of ground-truth HR images with the LR images' file names; adds an HR column.",
)
@click.option(
    "--model",
    "models",
    type=click.Path(dir_okay=False),
    multiple=True,
    required=True,
    help="Exported model (.onnx or .ts); repeat for several columns.",
)
@click.option(
    "--label", "labels", multiple=True, help="Column title of each --model, in order. Default: the model file's stem."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="PNG file to write.")
@click.option("--names", default=None, help="Comma-separated LR file names (relative to --lr) to show, in order.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=CompareConfig.count,
    show_default=True,
    help="Images to show when --names is not given (the first by name).",
)
@click.option(
    "--crop",
    type=click.IntRange(min=1),
    default=CompareConfig.crop,
    show_default=True,
    help="Crop edge in LR pixels; each image shows its most detailed crop.",
)
@click.option(
    "--zoom",
    type=click.IntRange(min=1),
    default=CompareConfig.zoom,
    show_default=True,
    help="Nearest-neighbour magnification of every crop.",
)
def compare_command(lr_dir, hr_dir, models, labels, output, names, count, crop, zoom):
    """Write side-by-side crops of bicubic, each model and HR as one labelled PNG."""
    from realsr_cli.inference.upscaler import Upscaler
    from realsr_cli.photo.write import write_image
    from realsr_cli.quality.compare import compare

    if labels and len(labels) != len(models):
        raise ConfigError(f"--label was given {len(labels)} times for {len(models)} --model(s); give one per model")
    labels = labels or [Path(m).stem for m in models]
    upscalers = [Upscaler(model=m, tile=0, notice=notice) for m in models]
    try:
        grid = compare(
            lr_dir,
            hr_dir,
            [(label, up.upscale) for label, up in zip(labels, upscalers, strict=True)],
            CompareConfig(crop=crop, zoom=zoom, count=count, scale=upscalers[0].native_scale),
            names=[n.strip() for n in names.split(",")] if names else None,
        )
    finally:
        for up in upscalers:
            up.close()
    write_image(Path(output), grid, fmt="PNG")
    console.print(f"wrote {output} ({grid.shape[1]}x{grid.shape[0]})")
