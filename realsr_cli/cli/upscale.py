"""`realsr upscale`: a thin Click layer over `realsr_cli.inference.upscaler.Upscaler`; owns only the console output.

No torch here: the ONNX path never imports it.
"""

from __future__ import annotations

import json
import time

import click
from rich.markup import escape

from realsr_cli.cli._console import console, notice, progress_bar, warning
from realsr_cli.config import (
    BACKENDS,
    DEVICES,
    LARGE_PHOTO_PIXELS,
    LARGE_PHOTO_TILE,
    PRECISIONS,
    SMALL_PHOTO_TILE,
    TileConfig,
    UpscaleConfig,
)
from realsr_cli.errors import EXIT_SOME_FAILED
from realsr_cli.photo.formats import FORMAT_CHOICES


@click.command("upscale")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder; a folder input's tree is mirrored below it. Default: beside each input.",
)
@click.option(
    "-s",
    "--scale",
    type=float,
    default=None,
    help="Output scale, from 1 to the model's native scale (the native pass, then Lanczos). Default: native.",
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Exported .onnx or TorchScript model, realsr's or made elsewhere. Default: the bundled model.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="Inference engine; auto uses whatever the model file is (ONNX for the bundled model).",
)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="auto uses CUDA when it really loads, else the CPU (with a one-line notice if CUDA was asked for).",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Arithmetic of the model: auto runs fp16 on CUDA and bf16 for TorchScript on CPUs with native bf16 "
    "(realsr models that support half precision), else fp32. fp16 needs CUDA, bf16 TorchScript.",
)
@click.option(
    "--tile",
    type=click.IntRange(min=0),
    default=None,
    help="Tile size: at most N x N input pixels per tile (on CPU tiles may be oblong, to cut overlap work); 0 = "
    f"the whole image in one piece. Default: {SMALL_PHOTO_TILE} up to {LARGE_PHOTO_PIXELS // 1_000_000} MP, "
    f"{LARGE_PHOTO_TILE} above (less memory where the output is large).",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Input pixels shared by neighbouring tiles. Default: from the model's receptive field (exact).",
)
@click.option(
    "--batch", type=click.IntRange(min=1), default=TileConfig.batch, show_default=True, help="Tiles per forward call."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    default="same",
    show_default=True,
    help="Output format; same keeps the input's (PNG for formats realsr does not write).",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="JPEG/WebP quality; WebP at 100 is lossless.",
)
@click.option("-r", "--recursive", is_flag=True, help="Also take images in sub-folders of folder inputs.")
@click.option("--skip-existing", is_flag=True, help="Leave inputs whose output file already exists.")
@click.option(
    "--scale-hint",
    type=click.IntRange(min=1),
    default=None,
    help="Native scale of a model made elsewhere (checked against a probe run).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=UpscaleConfig.max_pixels,
    show_default=True,
    help="Refuse larger inputs before decoding them (decompression bombs).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image on stdout; messages stay on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no per-image lines; errors still show.")
@click.pass_context
def upscale(
    ctx,
    inputs,
    out_dir,
    scale,
    model,
    backend,
    device,
    precision,
    tile,
    overlap,
    batch,
    fmt,
    quality,
    recursive,
    skip_existing,
    scale_hint,
    max_pixels,
    as_json,
    quiet,
):
    """Upscale photos: files, folders and glob patterns.

    Each output is named <stem>_x<scale>.<ext> and written atomically: an interrupted run leaves no partial file.
    A bad file is reported and skipped; the exit code says whether any failed.
    """
    from realsr_cli.inference.inputs import expand_inputs
    from realsr_cli.inference.upscaler import Upscaler

    items = expand_inputs(inputs, recursive)
    started = time.perf_counter()
    with Upscaler(
        model,
        backend=backend,
        device=device,
        precision=precision,
        tile=tile,
        overlap=overlap,
        batch=batch,
        scale=scale,
        scale_hint=scale_hint,
        max_pixels=max_pixels,
        notice=notice,
    ) as up:
        if not quiet:
            console.print(
                f"model {escape(up.model_path.name)} (x{up.native_scale}, {up.spec.architecture}) on "
                f"{up.backend_name}/{up.device} {up.precision}; output x{up.scale:g}; {len(items)} input(s)"
            )
        results = []
        with progress_bar(quiet) as progress:
            images = progress.add_task("images", total=len(items))
            tiles = progress.add_task("", total=None, visible=False)

            def on_image(start):
                progress.update(tiles, description=escape(start.src.name), completed=0, total=start.tiles, visible=True)

            def on_tile(done, total):
                progress.update(tiles, completed=done, total=total)

            for result in up.upscale_files(
                items,
                out_dir=out_dir,
                fmt=fmt,
                quality=quality,
                skip_existing=skip_existing,
                on_image=on_image,
                on_tile=on_tile,
            ):
                results.append(result)
                progress.advance(images)
                _report(result, as_json, quiet)
    _summary(results, time.perf_counter() - started, quiet)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        # a single input keeps its own error's exit code; a batch says "some failed"
        ctx.exit(failed[0].exit_code if len(results) == 1 else EXIT_SOME_FAILED)


def _report(result, as_json: bool, quiet: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    for message in result.warnings:
        warning(f"{result.src}: {message}")
    name = escape(str(result.src))
    if result.status == "failed":
        console.print(f"[bold red]failed:[/] {escape(result.error or 'unknown error')}", soft_wrap=True)
    elif not quiet and not as_json:
        if result.status == "skipped":
            console.print(f"skipped {name}: {escape(str(result.dst))} exists", soft_wrap=True)
        else:
            (w, h), (ow, oh) = result.input_size, result.output_size
            console.print(
                f"{name} {w}x{h} -> {escape(str(result.dst))} {ow}x{oh} ({result.seconds:.1f} s)", soft_wrap=True
            )


def _summary(results, seconds: float, quiet: bool) -> None:
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "skipped", "failed")}
    failed = [r for r in results if r.status == "failed"]
    if quiet and not failed:
        return
    line = f"upscaled {counts['ok']}, skipped {counts['skipped']}, failed {counts['failed']} in {seconds:.1f} s"
    console.print(f"[bold red]{line}[/]" if failed else line)
    for result in failed:
        console.print(f"  {escape(str(result.src))}", soft_wrap=True)
