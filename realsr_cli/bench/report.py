"""The `realsr bench` report on paper: Markdown (the table `realsr bench` prints) and the JSON and Markdown files.
The report itself is the JSON-ready dict `realsr_cli.bench.benchmark.run_benchmark` returns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from realsr_cli._files import atomic_write
from realsr_cli.errors import InputError

SIZE_LABELS = {"efficiency": "efficiency {mp:g} MP", "peak_rss_mib": "peak RSS {mp:g} MP (MiB)"}  # Markdown rows
FORMAT_LABELS = {"jpeg": "JPEG", "png": "PNG"}


def to_markdown(report: dict) -> str:
    """The report as Markdown: machine and model files, then one row per measure per backend, with the target and
    pass/fail where one applies; then where the time goes (`_time_split`)."""
    machine, cfg = report["machine"], report["config"]
    gpu = f"; GPU {machine['gpu']}" if machine["gpu"] else ""
    versions = f"realsr {machine['realsr']}, onnxruntime {machine['onnxruntime']}, torch {machine['torch']}"
    sizes = ", ".join(f"{mp:g}" for mp in cfg["sizes_mp"])
    folder = f"folder of {cfg['folder_count']} x {cfg['folder_mp']:g} MP"
    tile = "by photo size" if cfg["tile"] is None else cfg["tile"]
    settings = (
        f"photos of {sizes} MP; {folder}; tile {tile}; median of {cfg['repeats']}; "
        f"device {cfg['device']}; precision {cfg['precision']}"
    )
    lines = [
        "# realsr bench",
        "",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, AMX {'in use' if machine.get('amx') else 'none'}{gpu}",
        f"- versions: {versions}, Python {machine['python']}",
        f"- settings: {settings}",
    ]
    for name, result in report["backends"].items():
        if "skipped" not in result:
            where = f"on {result['device']} in {result['precision']}"
            lines.append(f"- {name}: `{result['model']}` {where}, sha256 `{result['sha256']}`")
    lines += [
        "",
        "Targets are set for a 2-core CPU.",
        "",
        "| backend | measure | value | target | result |",
        "|---|---|---|---|---|",
    ]
    for name, result in report["backends"].items():
        if "skipped" in result:
            lines.append(f"| {name} | skipped | {result['skipped']} |  |  |")
            continue
        checks = {(c["measure"], c["at_mp"]): c for c in result["checks"]}
        rows = list(_rows(result))
        # targets at a size that was not measured get a row of their own, so that no target goes unmentioned
        measured = {key for _, key, _ in rows}
        rows += [
            (SIZE_LABELS[measure].format(mp=mp), (measure, mp), "-")
            for measure, mp in checks
            if (measure, mp) not in measured
        ]
        for label, key, value in rows:
            check, target, verdict = checks.get(key), "", ""
            if check is not None:
                target = f"{'<=' if check['at_most'] else '>='} {check['limit']:g}"
                verdict = {True: "pass", False: "**FAIL**", None: "not measured"}[check["passed"]]
            lines.append(f"| {name} | {label} | {value} | {target} | {verdict} |")
    lines += _time_split(report)
    return "\n".join(lines) + "\n"


def _time_split(report: dict) -> list[str]:
    """The "where the time goes" section: one row per backend, size and format, whose parts add up to its total
    (but for the pipeline's own milliseconds, in the total only), then each backend's folder throughput. Nothing
    when every backend was skipped."""
    rows, folders = [], []
    for name, result in report["backends"].items():
        if "skipped" in result:
            continue
        for size in result["sizes"]:
            startup = size["startup"]
            for fmt, run in size["formats"].items():
                split = run["timings"]
                cells = [
                    name,
                    f"{size['mp']:g} MP {FORMAT_LABELS[fmt]}",
                    f"{size['other_seconds']:.2f}",
                    f"{startup['import_realsr']:.2f} + {startup['import_backend']:.2f}",
                    f"{startup['open']:.2f}",
                    f"{startup['warmup']:.2f}",
                    f"{split['decode']:.2f}",
                    f"{split['infer']:.2f}",
                    f"{split['encode']:.2f}",
                    f"{run['total_seconds']:.2f}",
                    f"{run['encode_share']:.1%}",
                ]
                rows.append(f"| {' | '.join(cells)} |")
        folder = result["folder"]
        photos = f"{folder['count']} photos of {report['config']['folder_mp']:g} MP, JPEG in and out"
        throughput = (
            f"{folder['images_per_s']:.2f} photos/s, {folder['input_mp_per_s']:.3f} input MP/s, "
            f"{folder['output_mp_per_s']:.2f} output MP/s"
        )
        folders.append(f"- {name} folder ({photos}): {throughput} ({folder['wall_seconds']:.2f} s)")
    if not rows:
        return []
    return [
        "",
        "## Where the time goes",
        "",
        "Seconds of one fresh process per photo size, the photo upscaled in its own format (JPEG in and out, PNG in",
        "and out). other: interpreter start and exit; import: realsr + the backend's library; open: the model;",
        "warm-up: a small photo in each format; decode, inference, encode: the median run; total: all of these,",
        "what one `realsr upscale` of the photo costs; encode share: encode / total.",
        "",
        "| backend | photo | other | import | open | warm-up | decode | inference | encode | total | encode share |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *folders,
    ]


def _rows(result: dict):
    """(label, target key, value text) for each measure of one backend's result."""
    ref, tiling, folder = result["reference"], result["tiling"], result["folder"]
    flops = f"{result['flops_per_input_pixel'] / 1e3:,.1f} kFLOP per input pixel, from {result['flops_counted_from']}"
    yield "model cost", None, flops
    conv = f"3x3 conv 64->64 on 1x64x{ref['edge']}x{ref['edge']}, {ref['precision']}"
    yield "reference speed", None, f"{ref['gflops']:.1f} GFLOP/s ({conv})"
    if ref["precision"] != "fp32":
        yield "reference speed, fp32", None, f"{result['reference_fp32']['gflops']:.1f} GFLOP/s (the same conv in fp32)"
    for size in result["sizes"]:
        mp, (width, height), split = size["mp"], size["input_size"], size["timings"]
        parts = " + ".join(f"{part} {split[part]:.2f}" for part in ("decode", "infer", "encode"))
        seconds = f"{size['seconds']:.2f} s ({width}x{height} JPEG: {parts})"
        yield f"end-to-end {mp:g} MP", None, f"{seconds}, {size['output_mp_per_s']:.2f} output MP/s"
        efficiency = f"{size['efficiency']:.3f} ({size['model_gflops']:.1f} model GFLOP/s)"
        if ref["precision"] != "fp32":
            efficiency += f"; {size['efficiency_vs_fp32']:.3f} of the fp32 conv"
        yield SIZE_LABELS["efficiency"].format(mp=mp), ("efficiency", mp), efficiency
        rss = size["peak_rss_mib"]
        yield SIZE_LABELS["peak_rss_mib"].format(mp=mp), ("peak_rss_mib", mp), "-" if rss is None else f"{rss:.0f}"
    if result["memory_growth_mib_per_mp"] is not None:
        small, large = result["sizes"][-2]["mp"], result["sizes"][-1]["mp"]
        growth = f"{result['memory_growth_mib_per_mp']:.1f} MiB per input MP ({small:g} -> {large:g} MP)"
        yield "memory growth", None, growth
    (tile_h, tile_w), (width, height) = tiling["tile_shape"], tiling["input_size"]
    plan = f"{tiling['rows']}x{tiling['cols']} tiles of {tile_h}x{tile_w} on {width}x{height}"
    seconds = f"{tiling['tiled_seconds']:.2f} s vs {tiling['whole_seconds']:.2f} s"
    yield "tiled / whole", ("tiling.ratio", None), f"{tiling['ratio']:.3f} ({seconds}; {plan})"
    seconds = f"{folder['wall_seconds']:.2f} s vs {folder['inference_seconds']:.2f} s"
    yield "folder / inference", ("folder.ratio", None), f"{folder['ratio']:.3f} ({seconds}; {folder['count']} photos)"


def save_report(report: dict, json_path: str | os.PathLike | None, markdown_path: str | os.PathLike | None) -> None:
    """Write the report as JSON and/or Markdown (parent folders made, each file atomically). Raises InputError for an
    unwritable file."""
    renders = ((json_path, lambda: json.dumps(report, indent=2) + "\n"), (markdown_path, lambda: to_markdown(report)))
    for path, render in renders:
        if path is None:
            continue
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"{path}: cannot write the report ({err.strerror})") from err
        with atomic_write(path) as fh:
            fh.write(render().encode())
