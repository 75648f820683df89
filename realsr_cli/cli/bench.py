"""`realsr bench`: a thin Click layer over `realsr_cli.bench.benchmark.run_benchmark`; owns only the console output
and the report files. No torch here: an ONNX-only benchmark never imports it.
"""

from __future__ import annotations

import rich_click as click
from rich.markup import escape

from realsr_cli.bench.benchmark import run_benchmark
from realsr_cli.bench.report import save_report, to_markdown
from realsr_cli.cli._console import console
from realsr_cli.config import MODEL_FORMATS, PRECISIONS, BenchConfig
from realsr_cli.errors import ConfigError

DEFAULT_SIZES = ",".join(f"{mp:g}" for mp in BenchConfig.sizes_mp)


@click.command("bench")
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Exported .onnx or .ts model, or a bundled model's name; the file with the same stem and the other "
    "suffix in the same folder is the other backend's. Default: the bundled model.",
)
@click.option(
    "--backend",
    type=click.Choice(["both", *MODEL_FORMATS]),
    default="both",
    show_default=True,
    help="Backends to measure; both runs ONNX Runtime and TorchScript side by side and skips a missing file "
    "with a note.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    metavar="auto|cpu|cuda[:N]",
    help="auto uses CUDA when it really loads, else the CPU; cuda:N picks GPU N.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Arithmetic of the model, as for realsr upscale; the reference convolution runs in the same.",
)
@click.option(
    "--sizes",
    default=DEFAULT_SIZES,
    show_default=True,
    help="Comma-separated sizes in megapixels of the photos timed end to end, each in a fresh process, JPEG in "
    "and out and PNG in and out; the one nearest 1 MP also measures tiling.",
)
@click.option(
    "--folder",
    "folder_count",
    type=click.IntRange(min=1),
    default=BenchConfig.folder_count,
    show_default=True,
    help="Number of photos in the folder that measures the batch pipeline and its throughput.",
)
@click.option(
    "--folder-mp",
    type=float,
    default=BenchConfig.folder_mp,
    show_default=True,
    help="Size in megapixels of each photo in that folder.",
)
@click.option(
    "--tile",
    type=click.IntRange(min=1),
    default=None,
    help="Tile size for every run (default: as realsr upscale chooses by photo size); tiled inference is "
    "compared with the whole image.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=BenchConfig.repeats,
    show_default=True,
    help="Timed runs of each measurement after its warm-up; the median is reported.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the full report as JSON to this file.",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the tables as Markdown to this file.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines; the tables still print.")
def bench_command(
    model, backend, device, precision, sizes, folder_count, folder_mp, tile, repeats, json_path, markdown_path, quiet
):
    """Measure what a model costs and how fast realsr runs it on this machine.

    For each backend: FLOPs per input pixel counted from the model file, a reference convolution's speed on the
    same backend and device, end-to-end throughput, efficiency and peak memory on photo-like JPEGs, the cost of
    tiling, and how well a folder batch overlaps decoding, inference and encoding. Targets for a 2-core CPU are
    shown with pass or fail.

    Where the time goes: each photo size runs in a fresh process, which reports its start-up (importing realsr
    and the backend's library, opening the model, a warm-up on a small photo), then decode, inference and encode
    for JPEG in and out and for PNG in and out, the total a one-photo `realsr upscale` costs, and encoding's share
    of it; the rest of the process's wall time (interpreter start and exit) shows as "other". The folder batch
    reports photos, input megapixels and output megapixels per second. The tables go to stderr.

    \b
    Examples:
      realsr bench                              both backends, 0.25, 1 and 12 MP
      realsr bench --backend onnx --sizes 1 --repeats 1 -q
      realsr bench --device cuda:1 --json bench.json --markdown bench.md
    """
    cfg = BenchConfig(
        model=model,
        backends=MODEL_FORMATS if backend == "both" else (backend,),
        device=device,
        precision=precision,
        sizes_mp=_parse_sizes(sizes),
        folder_count=folder_count,
        folder_mp=folder_mp,
        tile=tile,
        repeats=repeats,
    )
    report = run_benchmark(cfg, progress=(lambda line: None) if quiet else _progress)
    save_report(report, json_path, markdown_path)
    console.print(to_markdown(report), markup=False, soft_wrap=True)


def _parse_sizes(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--sizes takes comma-separated megapixels such as {DEFAULT_SIZES}, got {text!r}") from None


def _progress(line: str) -> None:
    console.print(f"[dim]{escape(line)}[/]", soft_wrap=True)
