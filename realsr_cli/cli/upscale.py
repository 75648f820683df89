"""`realsr upscale`: a thin Click layer over `realsr_cli.inference.upscaler.Upscaler` (and, with --ray, over
`realsr_cli.cluster.job.RayJob`); owns only the console output and the rule that makes `-o` a file or a folder.

No torch here: the ONNX path never imports it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import rich_click as click
from rich.markup import escape

from realsr_cli.cli._console import console, notice, print_data, progress_bar, warning
from realsr_cli.config import (
    BACKENDS,
    DEFAULT_PNG_COMPRESSION,
    KEPT_QUALITY,
    LARGE_PHOTO_PIXELS,
    LARGE_PHOTO_TILE,
    PRECISIONS,
    SMALL_PHOTO_TILE,
    SUBSAMPLINGS,
    ClusterConfig,
    EncodeConfig,
    TileConfig,
    UpscaleConfig,
)
from realsr_cli.errors import EXIT_SOME_FAILED, ConfigError
from realsr_cli.photo.formats import FORMAT_CHOICES, OUTPUT_FORMATS, format_of, output_format_for

# The help's option panels, in this order. Each option names its panel; an option that names none is listed last,
# under "Options": give a new option one of these (format and metadata options go to FORMAT_METADATA).
INPUT_OUTPUT = "Input and output"
MODEL_DEVICE = "Model and device"
TILING_SPEED = "Tiling and speed"
FORMAT_METADATA = "Output format and metadata"
CLUSTER = "Ray cluster"


@click.command("upscale")
@click.option_panel(INPUT_OUTPUT)
@click.option_panel(MODEL_DEVICE)
@click.option_panel(TILING_SPEED)
@click.option_panel(FORMAT_METADATA)
@click.option_panel(CLUSTER)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    default=None,
    panel=INPUT_OUTPUT,
    help="Output file when it ends in the extension of a format realsr writes (.png, .jpg, ...; the extension "
    "then says the format) and there is one input file; else an output folder, created if missing, where a folder "
    "input's tree is mirrored. Default: beside each input.",
)
@click.option(
    "-r", "--recursive", is_flag=True, panel=INPUT_OUTPUT, help="Also take images in sub-folders of folder inputs."
)
@click.option(
    "--skip-existing", is_flag=True, panel=INPUT_OUTPUT, help="Leave inputs whose output file already exists."
)
@click.option(
    "-s",
    "--scale",
    type=float,
    default=None,
    panel=INPUT_OUTPUT,
    help="Output scale, from 1 to the model's native scale (the native pass, then Lanczos). Default: native.",
)
@click.option(
    "--width",
    type=click.IntRange(min=1),
    default=None,
    panel=INPUT_OUTPUT,
    help="Output width in pixels; the height follows the aspect ratio. With --height: a box the output fits in. "
    "The native pass, then Lanczos; at most the native scale.",
)
@click.option(
    "--height",
    type=click.IntRange(min=1),
    default=None,
    panel=INPUT_OUTPUT,
    help="Output height in pixels; the width follows the aspect ratio (see --width).",
)
@click.option(
    "--max-size",
    type=click.IntRange(min=1),
    default=None,
    panel=INPUT_OUTPUT,
    help="Longest output side in pixels: larger outputs are brought down to it, smaller ones are kept.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=UpscaleConfig.max_pixels,
    show_default=True,
    panel=INPUT_OUTPUT,
    help="Refuse larger inputs before decoding them (decompression bombs).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    panel=INPUT_OUTPUT,
    help="One JSON line per image on stdout; messages stay on stderr.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    panel=INPUT_OUTPUT,
    help="No progress bars and no per-image lines; errors still show.",
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE|NAME",
    panel=MODEL_DEVICE,
    help="A bundled model's name (`realsr models` lists them), an exported .onnx or TorchScript model, or a "
    ".pth/.safetensors model spandrel recognises (Real-ESRGAN, SwinIR, HAT, ...). Default: the bundled default.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    panel=MODEL_DEVICE,
    help="Inference engine. auto runs the model file given with its own engine; for the bundled model the one "
    "--precision auto measures fastest here for this job (TorchScript only when torch is installed). The run's "
    "first line says what runs.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    metavar="auto|cpu|cuda[:N]",
    panel=MODEL_DEVICE,
    help="auto uses CUDA when it really loads, else the CPU (with a one-line notice if CUDA was asked for); "
    "cuda:N picks GPU N.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    panel=MODEL_DEVICE,
    help="Arithmetic of the model: auto runs fp16 on CUDA (realsr models that support half precision); on a CPU "
    "the bundled model's fastest way for this job (ONNX fp32 or int8, TorchScript fp32 or bf16), measured once per "
    "machine and remembered, and a .ts file's faster of fp32 and bf16. fp16 needs CUDA, bf16 TorchScript, int8 a "
    "<stem>.int8.onnx (realsr quantize).",
)
@click.option(
    "--scale-hint",
    type=click.IntRange(min=1),
    default=None,
    panel=MODEL_DEVICE,
    help="Native scale of a model made elsewhere (checked against a probe run).",
)
@click.option(
    "--tile",
    type=click.IntRange(min=0),
    default=None,
    panel=TILING_SPEED,
    help="Tile size: at most N x N input pixels per tile (on CPU tiles may be oblong, to cut overlap work); 0 = "
    f"the whole image in one piece. Default: {SMALL_PHOTO_TILE} up to {LARGE_PHOTO_PIXELS // 1_000_000} MP, "
    f"{LARGE_PHOTO_TILE} above (less memory where the output is large).",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    panel=TILING_SPEED,
    help="Input pixels shared by neighbouring tiles. Default: from the model's receptive field (exact).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=TileConfig.batch,
    show_default=True,
    panel=TILING_SPEED,
    help="Tiles per forward call.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    default="same",
    show_default=True,
    panel=FORMAT_METADATA,
    help="Output format; same keeps the input's (an animated GIF stays GIF; a still GIF and formats realsr does "
    "not write become PNG), or with an output file follows its extension. gif and webp keep animations; the "
    "others take an animation's first frame.",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=None,
    panel=FORMAT_METADATA,
    help="JPEG, WebP, AVIF and HEIC quality; WebP at 100 is lossless. Default: a JPEG written from a JPEG keeps "
    f"the source's quality (estimated from its quantization tables, kept within {KEPT_QUALITY[0]}-{KEPT_QUALITY[1]}); "
    "else "
    + ", ".join(f"{f.choices[0]} {f.quality}" for f in OUTPUT_FORMATS.values() if f.quality)
    + " (each about JPEG 90's fidelity).",
)
@click.option(
    "--subsampling",
    type=click.Choice(SUBSAMPLINGS),
    default="keep",
    show_default=True,
    panel=FORMAT_METADATA,
    help="Chroma resolution of JPEG, AVIF and HEIC outputs: 4:4:4 full, 4:2:2 half across, 4:2:0 half both ways "
    "(what cameras write). keep: a colour JPEG source's own, else 4:2:0.",
)
@click.option(
    "--png-compression",
    type=click.IntRange(0, 9),
    default=DEFAULT_PNG_COMPRESSION,
    show_default=True,
    panel=FORMAT_METADATA,
    help="zlib level of PNG and TIFF outputs: 0 fastest and largest, 9 smallest and slowest. The default writes "
    "within 1% of level 6's bytes in half its time.",
)
@click.option(
    "--strip-metadata",
    is_flag=True,
    panel=FORMAT_METADATA,
    help="Write no EXIF (camera, date, GPS, ...). The colour profile stays: it is part of the colours.",
)
@click.option(
    "--strip-gps", is_flag=True, panel=FORMAT_METADATA, help="Write EXIF without its GPS block (the location)."
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    panel=CLUSTER,
    help="Run on a Ray cluster (`pip install 'realsr-cli[ray]'`): auto (the cluster `ray start` runs here), "
    "HOST:PORT or ray://HOST:PORT; alone, the cluster RAY_ADDRESS names, else a local Ray started for the run. "
    "Same outputs as a local run; a journal beside them lets a rerun redo only what is missing. Inputs and outputs "
    "must be on storage every node mounts at the same path.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    panel=CLUSTER,
    help="Ray workers (one model each, on a GPU or a few cores). Default: as many as the cluster holds now; an "
    "autoscaling cluster grows to more.",
)
@click.pass_context
def upscale(
    ctx,
    inputs,
    output,
    recursive,
    skip_existing,
    scale,
    width,
    height,
    max_size,
    max_pixels,
    as_json,
    quiet,
    model,
    backend,
    device,
    precision,
    scale_hint,
    tile,
    overlap,
    batch,
    fmt,
    quality,
    subsampling,
    png_compression,
    strip_metadata,
    strip_gps,
    ray_address,
    workers,
):
    """Upscale photos: files, folders and glob patterns.

    Each output is named <stem>_x<scale>.<ext> and written atomically: an interrupted run leaves no partial file.
    A bad file is reported and skipped; the exit code says whether any failed. Options, inputs and output sizes
    are checked before the model is loaded.

    \b
    Examples:
      realsr upscale photo.jpg                  photo_x4.jpg beside it
      realsr upscale photo.jpg -o big.png       exactly that file, as PNG
      realsr upscale photos/ -r -o out/         a folder tree, into out/
      realsr upscale "shots/*.jpg" --width 3840 3840 wide, height by aspect
      realsr upscale photo.jpg --max-size 4096 --format webp --json
      realsr upscale photos/ -o big/ --ray      on a Ray cluster; rerun to resume
    """
    from realsr_cli.inference.inputs import expand_inputs
    from realsr_cli.inference.pipeline import BatchOptions
    from realsr_cli.inference.upscaler import check_sizes, job_pixels

    config = UpscaleConfig(
        model=model,
        backend=backend,
        device=device,
        precision=precision,
        tile=TileConfig(tile=tile, overlap=overlap, batch=batch),
        scale=scale,
        width=width,
        height=height,
        max_size=max_size,
        scale_hint=scale_hint,
        max_pixels=max_pixels,
    )
    if ray_address is None and workers is not None:
        raise ConfigError("--workers counts the workers of a Ray run: add --ray")
    cluster = None if ray_address is None else ClusterConfig(address=ray_address or None, workers=workers)
    items = expand_inputs(inputs, recursive)
    items, out_dir = _output_target(output, items, fmt)
    check_sizes(config, items)
    config = dataclasses.replace(
        config, job_pixels=job_pixels(items)
    )  # a few photos: the way that starts soonest may win
    options = BatchOptions(
        out_dir=out_dir,
        fmt=fmt,
        encoding=EncodeConfig(quality, subsampling, png_compression, strip_metadata, strip_gps),
        skip_existing=skip_existing,
    )
    started = time.perf_counter()
    if cluster is None:
        results = _upscale_here(config, items, options, as_json, quiet)
    else:
        results = _upscale_on_ray(cluster, config, items, options, as_json, quiet)
    _summary(results, time.perf_counter() - started, quiet)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        # a single input keeps its own error's exit code; a batch says "some failed"
        ctx.exit(failed[0].exit_code if len(results) == 1 else EXIT_SOME_FAILED)


def _upscale_here(config: UpscaleConfig, items: list, options, as_json: bool, quiet: bool) -> list:
    """Upscale `items` on this machine, reporting each result; returns the results."""
    from realsr_cli.inference.upscaler import Upscaler

    with Upscaler.from_config(config, notice=notice) as up:
        if not quiet:
            model = _model_line(
                up.model_path.name, up.native_scale, up.spec.architecture, up.backend_name, up.device, up.precision
            )
            console.print(f"{model}; output {_output_size(config, up.scale)}; {len(items)} input(s)", soft_wrap=True)
        results = []
        with progress_bar(quiet) as progress:
            images = progress.add_task("images", total=len(items))
            tiles = None

            def on_image(start):
                # a fresh task per image: its elapsed time and ETA are this image's (a reused task keeps the
                # finished time of the first image it completed)
                nonlocal tiles
                if tiles is not None:
                    progress.remove_task(tiles)
                tiles = progress.add_task(escape(start.src.name), total=start.tiles)

            def on_tile(done, total):
                progress.update(tiles, completed=done, total=total)

            for result in up.upscale_batch(items, dataclasses.replace(options, on_image=on_image, on_tile=on_tile)):
                results.append(result)
                progress.advance(images)
                _report(result, as_json, quiet)
    return results


def _upscale_on_ray(cluster: ClusterConfig, config: UpscaleConfig, items: list, options, as_json, quiet) -> list:
    """Upscale `items` on the Ray cluster `cluster` names, reporting each result as it arrives; returns the results.
    Ctrl-C journals what the workers finished, stops them and leaves the cluster."""
    from realsr_cli.cluster.job import RayJob

    def on_model(model) -> None:
        if not quiet:
            line = _model_line(
                model.name, model.scale, model.architecture, model.backend, model.device, model.precision
            )
            size = _output_size(config, model.scale if config.scale is None else config.scale)
            console.print(f"{line}; output {size}", soft_wrap=True)

    results = []
    with RayJob(cluster, config, items, options, notice=notice, on_model=on_model) as job:
        if not quiet:
            console.print(_ray_line(job, len(items)), soft_wrap=True)
        with progress_bar(quiet) as progress:
            images = progress.add_task("images", total=len(items))
            for result in job.results():
                results.append(result)
                progress.advance(images)
                _report(result, as_json, quiet)
    return results


def _model_line(name: str, scale: int, architecture: str, backend: str, device: str, precision: str) -> str:
    """What runs: "model realsr-compact-x4.onnx (x4, compact) on onnx/cpu fp32"."""
    return f"model {escape(name)} (x{scale}, {architecture}) on {backend}/{device} {precision}"


def _ray_line(job, inputs: int) -> str:
    """Where a Ray run runs and what is left: "Ray: a local Ray started for the run, 1 worker of 2 cores; 6
    input(s), 2 finished by an earlier run (journal), 4.2 MP to upscale"."""
    earlier = f"{len(job.earlier)} finished by an earlier run (journal)"
    if job.plan is None:
        return f"Ray: nothing to do; {inputs} input(s), {earlier}"
    plan = job.plan
    gpu = " and a GPU" if plan.gpus else ""
    workers = f"{plan.count} worker{'s' if plan.count != 1 else ''} of {plan.cpus} core(s){gpu}"
    return f"Ray: {job.where}, {workers}; {inputs} input(s), {earlier}, {job.pixels / 1e6:.1f} MP to upscale"


def _output_size(config: UpscaleConfig, scale: float) -> str:
    """What the run's outputs are: "x4", "width 3840", "x2, long side at most 4096" (`scale`: the output scale)."""
    parts = [f"{name} {value}" for name, value in (("width", config.width), ("height", config.height)) if value]
    if not parts:
        parts.append(f"x{scale:g}")
    if config.max_size is not None:
        parts.append(f"long side at most {config.max_size}")
    return ", ".join(parts)


def _output_target(output: str | None, items: list, fmt: str) -> tuple[list, Path | None]:
    """(items, output folder) for `-o output`. It names the output file when it ends in an extension realsr writes
    and is not an existing folder; that needs exactly one input, a file named directly. Anything else is a folder.
    Raises ConfigError for a file with several inputs, or with a --format its extension contradicts."""
    if output is None:
        return items, None
    path = Path(output)
    if path.is_dir() or not format_of(path):
        return items, path
    if len(items) != 1 or items[0].root is not None:
        raise ConfigError(
            f"-o {output} names one output file, but the inputs are {len(items)} images; for several inputs name "
            "a folder (a path without an image extension)"
        )
    if fmt != "same" and output_format_for("PNG", fmt) != format_of(path):
        raise ConfigError(
            f"-o {output} is a {format_of(path)} file name, but --format {fmt} asks for "
            f"{output_format_for('PNG', fmt)}; change one of them (or leave --format out)"
        )
    return [dataclasses.replace(items[0], dst=path)], None


def _report(result, as_json: bool, quiet: bool) -> None:
    if as_json:
        print_data(json.dumps(result.to_dict()))
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
            # the image's own work, stage by stage: in a batch the stages of neighbouring images overlap
            stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in result.timings.items())
            console.print(
                f"{name} {w}x{h} -> {escape(str(result.dst))} {ow}x{oh} ({result.seconds:.1f} s: {stages})",
                soft_wrap=True,
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
