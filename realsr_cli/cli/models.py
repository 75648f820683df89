"""`realsr models`: the bundled models, as their manifest (export/models.toml) describes them.

No torch here.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import rich_click as click
from rich.markup import escape
from rich.table import Table

from realsr_cli.cli._console import console, print_data


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per model on stdout instead of the table.")
def models_command(as_json: bool) -> None:
    """List the bundled models: name, native scale, cost per input pixel, what each is for and how it scored.

    Pass a name to --model (upscale, eval, compare, bench) to run that model; without --model, upscale runs the
    default one.

    \b
    Examples:
      realsr models
      realsr upscale photo.jpg --model realsr-compact-x4
    """
    from realsr_cli.inference.runtime import bundled_models

    manifest = bundled_models()
    if as_json:
        for model in manifest.models:
            files = [str(manifest.folder / name) for name in model.files]
            print_data(json.dumps({**asdict(model), "files": files}))
        return
    table = Table(title="bundled models", caption=f"from {manifest.folder}; run one with --model NAME")
    table.add_column("name", no_wrap=True)
    table.add_column("scale", justify="right")
    table.add_column("MFLOP/px", justify="right")
    table.add_column("for")
    table.add_column("scores")
    for model in manifest.models:
        name = escape(model.name) + (" [bold](default)[/]" if model.default else "")
        table.add_row(
            name, f"x{model.scale}", f"{model.mflop_per_pixel:.2f}", escape(model.purpose), escape(model.headline)
        )
    console.print(table)
