"""`realsr degrade`: a seeded full-reference test set of noisy, JPEG-compressed LR images from clean HR photos.
Thin layer over `realsr_cli.quality.degrade`. No torch here."""

from __future__ import annotations

from pathlib import Path

import rich_click as click

from realsr_cli.cli._console import console


@click.command("degrade")
@click.argument("hr_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write lr/, hr/ and recipe.json into.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of every image's noise and JPEG draws: the same seed writes the same files.",
)
@click.option("--scale", type=click.IntRange(min=2), default=4, show_default=True, help="Downscale factor.")
def degrade_command(hr_dir: Path, out_dir: Path, seed: int, scale: int) -> None:
    """Make LR/HR test pairs with noise and JPEG blocks from clean HR photos.

    Each HR image is downscaled with bicubic, given Gaussian noise (sigma 2 to 15 levels, half of them
    luminance-only, half colour) and saved through JPEG (quality 30 to 90). Score a model on the result with
    `realsr eval --lr OUT/lr --hr OUT/hr`.

    \b
    Examples:
      realsr degrade data/hr -o data/noisy --seed 1
      realsr eval --lr data/noisy/lr --hr data/noisy/hr
    """
    from realsr_cli.quality.degrade import make_degraded_pairs

    records = make_degraded_pairs(hr_dir, out_dir, seed=seed, scale=scale)
    lr, hr, recipe = out_dir / "lr", out_dir / "hr", out_dir / "recipe.json"
    console.print(f"wrote {len(records)} pairs to {lr} and {hr} (recipe: {recipe})")
