"""`realsr compare`: side-by-side crops (bicubic | models | HR) as one PNG, or as an HTML page with sliders and
scores. Thin layer over `realsr_cli.quality.compare` and `compare_page`. No torch here."""

from __future__ import annotations

from pathlib import Path

import rich_click as click

from realsr_cli._files import atomic_write
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
    help="A bundled model's name, an exported .onnx or .ts, or a .pth/.safetensors model; repeat for columns.",
)
@click.option(
    "--label", "labels", multiple=True, help="Column title of each --model, in order. Default: the model file's stem."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="PNG file to write.")
@click.option(
    "--html",
    "html_output",
    type=click.Path(dir_okay=False),
    default=None,
    help="HTML page to write: a before/after slider per image, zoom, and each column's `realsr eval` scores; "
    "self-contained (images inlined), so it opens offline.",
)
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
def compare_command(lr_dir, hr_dir, models, labels, output, html_output, names, count, crop, zoom):
    """Write side-by-side crops of bicubic, each model and HR as one labelled PNG (-o), or as an HTML page (--html).

    One row per image, at its most detailed crop; one column for bicubic, each --model, and HR when --hr is given.
    The page compares any two columns with a slider and shows the scores `realsr eval` gives each (on the whole
    image, which each model then upscales whole).

    \b
    Examples:
      realsr compare --lr lr/ --hr hr/ --model mine.onnx -o crops.png
      realsr compare --lr lr/ --model a.onnx --label A --model b.ts --label B -o ab.png
      realsr compare --lr lr/ --hr hr/ --model mine.onnx --html compare.html
    """
    from realsr_cli.inference.upscaler import Upscaler
    from realsr_cli.photo.write import write_image
    from realsr_cli.quality.compare import compare_images, grid_image
    from realsr_cli.quality.compare_page import render_page

    if output is None and html_output is None:
        raise ConfigError("nothing to write: give -o FILE.png, --html FILE.html or both")
    if labels and len(labels) != len(models):
        raise ConfigError(f"--label was given {len(labels)} times for {len(models)} --model(s); give one per model")
    labels = labels or [Path(m).stem for m in models]
    upscalers = [Upscaler(model=m, notice=notice) for m in models]
    try:
        comparison = compare_images(
            lr_dir,
            hr_dir,
            [(label, up.upscale) for label, up in zip(labels, upscalers, strict=True)],
            CompareConfig(crop=crop, zoom=zoom, count=count, scale=upscalers[0].native_scale),
            names=[n.strip() for n in names.split(",")] if names else None,
            scored=html_output is not None,
        )
    finally:
        for up in upscalers:
            up.close()
    if output is not None:
        grid = grid_image(comparison, zoom)
        write_image(Path(output), grid, fmt="PNG")
        console.print(f"wrote {output} ({grid.shape[1]}x{grid.shape[0]})")
    if html_output is not None:
        with atomic_write(html_output) as fh:
            fh.write(render_page(comparison, zoom).encode("utf-8"))
        console.print(f"wrote {html_output} ({len(comparison.rows)} image(s), {len(comparison.labels)} columns)")
