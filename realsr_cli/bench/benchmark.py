"""`realsr bench`: what a model costs, and how fast and lean realsr runs it on this machine.

For each backend (ONNX Runtime, TorchScript) one run measures: the model's FLOPs per input pixel, counted from its
file; a reference convolution's GFLOP/s on the same backend and device; end-to-end throughput, efficiency and peak
memory on generated photo-like images, each size in a fresh process that also says where its seconds went (start-up,
decode, inference, encode; JPEG in and out, and PNG in and out); tiled against whole-image inference; and a folder
batch against the sum of its pure inference times, with its throughput. `run_benchmark` returns a JSON-ready dict,
which `realsr_cli.bench.report` renders and saves; `realsr_cli.bench.flops` counts the model's cost. No torch at
import: an ONNX-only benchmark never imports it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.resources
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from realsr_cli import __version__
from realsr_cli._files import file_sha256
from realsr_cli.bench.flops import count_flops
from realsr_cli.config import BenchConfig, split_device
from realsr_cli.errors import BackendError, InputError, RealSRError
from realsr_cli.host import TORCH_INSTALL, amx_usable, cpu_count, cpu_model, torch_installed
from realsr_cli.inference.pipeline import UpscaleResult
from realsr_cli.inference.runtime import detect_format, resolve_model
from realsr_cli.inference.runtime.onnx import session_options
from realsr_cli.inference.runtime.torchscript import torch_dtype
from realsr_cli.inference.upscaler import Upscaler
from realsr_cli.photo.read import read_image

Progress = Callable[[str], None]

MODEL_SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts"}
REFERENCE_CHANNELS = 64  # the reference 3x3 convolution maps 64 -> 64 channels, like the body of realsr's nets
REFERENCE_RUNS = 5  # timed runs of the reference convolution after two warm-ups (short and steady: five suffice)
GRAIN_SIGMA = 3.0  # 8-bit levels of Gaussian grain: a Lanczos-enlarged sample is too smooth to compress like a photo
PHOTO_QUALITY = 92  # JPEG quality of the generated inputs, as cameras and phones write them
# the libraries each backend imports when it opens a model (the ONNX backend reads the file's metadata with onnx):
# an end-to-end process imports them first, so that their import is timed apart from opening the model
BACKEND_LIBRARIES = {"onnx": ("onnx", "onnxruntime"), "torchscript": ("torch",)}
# each end-to-end photo runs in these formats, in this order, every output in its input's format as `realsr upscale`
# writes it by default. JPEG first: it is the run whose seconds (and efficiency) the report has always given, and
# with one repeat it alone also pays for the first run at the photo's shape, as a one-photo upscale does
END_TO_END_SUFFIXES = {"jpeg": ".jpg", "png": ".png"}


@dataclass(frozen=True)
class Target:
    """A pass/fail goal, set for a 2-core CPU. `measure` is a field of each end-to-end size's result when `at_mp`
    is set, else "section.field" of a backend's result. `backend` None applies it to every backend."""

    measure: str
    limit: float
    at_most: bool  # True: the value must be <= limit; False: >= limit
    backend: str | None = None
    at_mp: float | None = None


TARGETS = (
    Target("efficiency", 0.75, at_most=False, backend="onnx", at_mp=1.0),
    Target("efficiency", 0.60, at_most=False, backend="torchscript", at_mp=1.0),
    Target("peak_rss_mib", 1536.0, at_most=True, at_mp=12.0),  # 1.5 GiB
    Target("tiling.ratio", 1.10, at_most=True),
    Target("folder.ratio", 1.05, at_most=True),
)


def run_benchmark(cfg: BenchConfig, progress: Progress = lambda line: None) -> dict:
    """Measure every backend of `cfg` and return the report (JSON-ready): "machine", "config", "targets" and
    "backends" (one result per backend, or {"skipped": why} for a missing sibling file).

    Raises ConfigError, InputError (missing model), ModelError, BackendError, or RealSRError when an end-to-end
    process fails.
    """
    files = model_files(cfg)
    backends: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="realsr-bench-") as tmp:
        work = Path(tmp)
        progress(f"making test photos: {', '.join(f'{mp:g}' for mp in cfg.sizes_mp)} MP, folder {cfg.folder_count}")
        photos = {mp: make_photo(work / f"photo_{mp:g}mp.jpg", mp, png_twin=True) for mp in cfg.sizes_mp}
        folder = work / "folder"
        folder.mkdir()
        for i in range(cfg.folder_count):  # distinct grain, so no two files are alike
            make_photo(folder / f"photo_{i:03d}.jpg", cfg.folder_mp, seed=i + 1)
        for name, path in files.items():
            why = skip_reason(cfg, name, path)
            if why is not None:
                progress(f"{name}: skipped ({why})")
                backends[name] = {"skipped": why}
            else:
                backends[name] = bench_backend(cfg, name, path, photos, folder, work / name, progress)
    for result in backends.values():
        if "skipped" not in result:
            result["checks"] = check_targets(result)
    on_cuda = any(result.get("device") == "cuda" for result in backends.values())
    return {
        "machine": describe_machine(on_cuda),
        "config": {**asdict(cfg), "backends": list(cfg.backends), "sizes_mp": list(cfg.sizes_mp)},  # as JSON has them
        "targets": [asdict(target) for target in TARGETS],
        "backends": backends,
    }


def skip_reason(cfg: BenchConfig, name: str, path: Path | None) -> str | None:
    """Why backend `name` is skipped with a note, or None to measure it. Only a backend that was not asked for
    alone is skipped; one asked for alone fails instead (`model_files`, or the backend's own BackendError)."""
    if path is None:
        return f"no {MODEL_SUFFIXES[name]} file beside the model"
    if name == "torchscript" and len(cfg.backends) > 1 and not torch_installed():
        return f"needs torch: {TORCH_INSTALL}"
    return None


def model_files(cfg: BenchConfig) -> dict[str, Path | None]:
    """The file each backend of `cfg` runs: the model for its own kind, its same-stem sibling for the other kind;
    None for a missing sibling when several backends are asked for. Raises InputError when the only one is missing."""
    path = resolve_model(cfg.model, "auto")
    kind = detect_format(path)
    files: dict[str, Path | None] = {}
    for name in cfg.backends:
        candidate = path if name == kind else path.with_suffix(MODEL_SUFFIXES[name])
        if not candidate.is_file() and len(cfg.backends) == 1:
            raise InputError(f"{candidate}: no {name} model beside {path.name}; pass it with --model")
        files[name] = candidate if candidate.is_file() else None
    return files


def bench_backend(
    cfg: BenchConfig, name: str, path: Path, photos: dict[float, Path], folder: Path, work: Path, progress: Progress
) -> dict:
    """Every measure for one backend. In this process: reference, tiling, folder; each size in its own process.
    `photos` are JPEGs, each with its PNG twin (`make_photo`)."""
    work.mkdir()
    options = {"backend": name, "device": cfg.device, "precision": cfg.precision, "tile": cfg.tile}
    tiling_mp = min(photos, key=lambda mp: abs(math.log(mp)))  # the photo nearest 1 MP
    with Upscaler(path, **options) as tiled, Upscaler(path, **{**options, "tile": 0}) as whole:
        device, precision, loaded = tiled.device, tiled.precision, tiled.model_path
        progress(f"{name}: {loaded.name} on {device} in {precision}: reference convolution")
        # after the backend opened: torch now runs with the threads TorchScriptBackend set
        where = device if device == "cpu" else f"cuda:{split_device(cfg.device)[1]}"  # the model's own GPU
        reference = reference_conv(name, where, precision, cfg.reference_edge)
        # reduced precision has its own, much higher peak (bf16 on AMX, fp16 on tensor cores): the fp32 convolution
        # is measured too, so a bf16 model's speed can also be read against the fp32 machine
        reference_fp32 = reference if precision == "fp32" else reference_conv(name, where, "fp32", cfg.reference_edge)
        progress(f"{name}: tiled vs whole-image inference at {tiling_mp:g} MP")
        tiling = measure_tiling(tiled, whole, photos[tiling_mp], cfg.repeats)
        progress(f"{name}: folder of {cfg.folder_count} photos of {cfg.folder_mp:g} MP")
        batch = measure_folder(tiled, folder, work / "folder_out")
    flops, counted_from = count_flops(loaded, name)
    warmup = make_photo(work / "warmup.jpg", 0.01, png_twin=True)
    sizes = []
    for mp, src in photos.items():
        progress(f"{name}: end-to-end {mp:g} MP in a fresh process")
        # the file and precision this process resolved, so the child runs exactly what the reference was set for
        run = run_child(
            dict(
                options,
                model=str(loaded),
                precision=precision,
                src=str(src),
                warmup=str(warmup),
                out_dir=str(work),
                repeats=cfg.repeats,
            )
        )
        (width, height), (out_width, out_height) = run["input_size"], run["output_size"]
        model_gflops = flops * width * height / run["seconds"] / 1e9
        sizes.append(
            {
                "mp": mp,
                **run,
                **time_split(run),
                "output_mp_per_s": out_width * out_height / run["seconds"] / 1e6,
                "model_gflops": model_gflops,
                "efficiency": model_gflops / reference["gflops"],
                "efficiency_vs_fp32": model_gflops / reference_fp32["gflops"],
            }
        )
    return {
        "backend": name,
        "model": str(loaded),
        "sha256": file_sha256(loaded),
        "device": device,
        "precision": precision,
        "flops_per_input_pixel": flops,
        "flops_counted_from": counted_from,
        "reference": reference,
        "reference_fp32": reference_fp32,
        "sizes": sizes,
        "memory_growth_mib_per_mp": memory_growth(sizes),
        "tiling": tiling,
        "folder": batch,
    }


def reference_conv(backend: str, device: str, precision: str, edge: int = 256) -> dict:
    """GFLOP/s of one 3x3 convolution, 64 -> 64 channels, pad 1, on a 1 x 64 x edge x edge input, as `backend` runs
    it on `device` (cpu or cuda:N) in `precision` (the model's: fp32, fp16, bf16 or int8): the median of REFERENCE_RUNS
    runs after two warm-ups."""
    flops = 2.0 * REFERENCE_CHANNELS * REFERENCE_CHANNELS * 9 * edge * edge
    run = _onnx_conv(device, precision, edge) if backend == "onnx" else _torch_conv(device, precision, edge)
    for _ in range(2):  # warm-up: first runs pick algorithms and allocate
        run()
    seconds = statistics.median(timed(run) for _ in range(REFERENCE_RUNS))
    return {"edge": edge, "precision": precision, "flops": flops, "seconds": seconds, "gflops": flops / seconds / 1e9}


def _onnx_conv(device: str, precision: str, edge: int) -> Callable[[], object]:
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    kind, gpu = split_device(device)
    cuda = kind == "cuda"
    half = precision == "fp16"  # ONNX Runtime runs fp32 or (on CUDA) fp16 models
    dtype, elem = (np.float16, onnx.TensorProto.FLOAT16) if half else (np.float32, onnx.TensorProto.FLOAT)
    rng = np.random.default_rng(0)
    c, shape = REFERENCE_CHANNELS, [1, REFERENCE_CHANNELS, edge, edge]
    weight = numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.05).astype(dtype), "weight")
    bias = numpy_helper.from_array(np.zeros(c, dtype), "bias")
    conv = helper.make_node("Conv", ["x", "weight", "bias"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [conv],
        "reference_conv",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, shape)],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if precision == "int8":
        model = _quantized(model, shape, rng)
    # the model's own session settings; on CUDA its conv algorithm choice too (runtime.onnx._cuda_session)
    providers = [("CUDAExecutionProvider", {"device_id": gpu, "cudnn_conv_algo_search": "HEURISTIC"})] if cuda else []
    session = ort.InferenceSession(
        model.SerializeToString(), session_options(ort), providers=[*providers, "CPUExecutionProvider"]
    )
    if cuda and session.get_providers()[0] != "CUDAExecutionProvider":
        raise BackendError("the reference convolution could not load onnxruntime's CUDA provider")
    x = rng.random(shape, dtype=np.float32).astype(dtype)
    if not cuda:
        return lambda: session.run(None, {"x": x})
    binding = session.io_binding()  # input and output stay on the GPU: time the convolution, not the copies
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x, "cuda", gpu))
    binding.bind_output("y", "cuda", gpu)
    return lambda: session.run_with_iobinding(binding)


def _quantized(model, shape: list[int], rng: np.random.Generator):
    """The one-convolution model quantized to int8 as `realsr quantize` quantizes a model, calibrated on random
    inputs like the timed one."""
    import onnx

    from realsr_cli.inference.runtime.int8 import quantize_int8

    with tempfile.TemporaryDirectory(prefix="realsr-bench-") as tmp:
        source, quantized = Path(tmp) / "conv.onnx", Path(tmp) / "conv.int8.onnx"
        onnx.save(model, str(source))
        quantize_int8(source, quantized, [{"x": rng.random(shape, dtype=np.float32)} for _ in range(2)])
        return onnx.load(str(quantized))


def _torch_conv(device: str, precision: str, edge: int) -> Callable[[], object]:
    import torch

    cuda = split_device(device)[0] == "cuda"
    dtype = torch_dtype(torch, precision)
    generator = torch.Generator().manual_seed(0)
    c = REFERENCE_CHANNELS
    channels_last = torch.channels_last  # what TorchScriptBackend uses on CPU (docs/runtime.md: the faster layout)
    x = torch.rand(1, c, edge, edge, generator=generator).to(device, dtype).contiguous(memory_format=channels_last)
    weight = (torch.randn(c, c, 3, 3, generator=generator) * 0.05).to(device, dtype)
    weight = weight.contiguous(memory_format=channels_last)
    bias = torch.zeros(c, device=device, dtype=dtype)

    def run():
        with torch.inference_mode():
            torch.nn.functional.conv2d(x, weight, bias, padding=1)
        if cuda:
            torch.cuda.synchronize(device)

    return run


def timed(fn: Callable, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure_tiling(tiled: Upscaler, whole: Upscaler, src: Path, repeats: int) -> dict:
    """Median inference seconds of `tiled` over `whole` on one decoded photo, and the tile plan."""
    photo = read_image(src, max_pixels=tiled.config.max_pixels)
    height, width = photo.rgb.shape[:2]
    plan = tiled.plan(width, height)
    for up in (tiled, whole):  # warm-up at these shapes
        up.upscale_photo(photo)
    tiled_runs, whole_runs = [], []
    for _ in range(repeats):  # interleaved, so a change in machine load hits both alike
        tiled_runs.append(timed(tiled.upscale_photo, photo))
        whole_runs.append(timed(whole.upscale_photo, photo))
    tiled_s, whole_s = statistics.median(tiled_runs), statistics.median(whole_runs)
    tile = tiled.config.tile.tile_for(width * height)
    return {
        "input_size": [width, height],
        "tile": tile,
        "rows": len(plan.rows.starts),
        "cols": len(plan.cols.starts),
        "tile_shape": list(plan.tile_shape),
        "tiled_seconds": tiled_s,
        "whole_seconds": whole_s,
        "ratio": tiled_s / whole_s,
    }


def measure_folder(up: Upscaler, folder: Path, out_dir: Path) -> dict:
    """Wall seconds of `upscale_files` over the folder (JPEG out), over the sum of each photo's pure inference
    (decoded beforehand, then `upscale_photo` alone, one after another); and the folder's throughput over that wall
    time: photos, input megapixels and output megapixels per second."""
    files = sorted(folder.iterdir())
    up.upscale_photo(read_image(files[0], max_pixels=up.config.max_pixels))  # warm-up at this size
    inference = 0.0
    for file in files:
        photo = read_image(file, max_pixels=up.config.max_pixels)
        inference += timed(up.upscale_photo, photo)
    start = time.perf_counter()
    results = list(up.upscale_files([folder], out_dir=out_dir))  # encoded as `realsr upscale` encodes by default
    wall = time.perf_counter() - start
    failed = [result for result in results if not result.ok]
    if failed:
        raise RealSRError(f"the folder benchmark failed: {failed[0].error}")
    input_pixels = sum(math.prod(result.input_size) for result in results)
    output_pixels = sum(math.prod(result.output_size) for result in results)
    return {
        "count": len(files),
        "wall_seconds": wall,
        "inference_seconds": inference,
        "ratio": wall / inference,
        "images_per_s": len(files) / wall,
        "input_mp_per_s": input_pixels / wall / 1e6,
        "output_mp_per_s": output_pixels / wall / 1e6,
    }


def memory_growth(sizes: list[dict]) -> float | None:
    """MiB of peak memory per input megapixel between the two largest sizes (1 -> 12 MP by default)."""
    if len(sizes) < 2 or sizes[-1]["peak_rss_mib"] is None:
        return None
    small, large = sizes[-2], sizes[-1]
    return (large["peak_rss_mib"] - small["peak_rss_mib"]) / (large["mp"] - small["mp"])


# the child times its own first import, realsr's upscaler (and with it numpy and Pillow): what any upscale imports.
# This module's further imports (the benchmark's own) come after, untimed, and so count as "other"
_CHILD = (
    "import time; started = time.perf_counter(); import realsr_cli.inference.upscaler; "
    "imported = time.perf_counter(); import sys; from realsr_cli.bench.benchmark import child_main; "
    "child_main(sys.argv[1], imported - started)"
)


def run_child(args: dict) -> dict:
    """Run `child_main(args)` in a fresh Python process, so that its peak memory is this photo's alone; its JSON
    plus "process_seconds", the process's wall time from this side (interpreter start and exit included)."""
    env = dict(os.environ)  # the child imports this same realsr_cli, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    command = [sys.executable, "-c", _CHILD, json.dumps(args)]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    process_seconds = time.perf_counter() - start
    if proc.returncode < 0:  # the kernel's out-of-memory killer sends SIGKILL
        raise RealSRError(f"end-to-end run of {Path(args['src']).name} was killed by signal {-proc.returncode}")
    if proc.returncode > 0:  # the child's error class, by its exit code
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        error = {e.exit_code: e for e in RealSRError.__subclasses__()}.get(proc.returncode, RealSRError)
        raise error(f"end-to-end run of {Path(args['src']).name} failed: {why}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_seconds": process_seconds}


def child_main(args_json: str, import_seconds: float) -> None:
    """The fresh process, `import_seconds` after `_CHILD` began importing realsr: import the backend's libraries,
    open the model, warm up on a small photo in each format, then upscale the photo JPEG -> JPEG and its PNG twin
    PNG -> PNG in turn, `repeats` times each, and print one JSON line:
    - "startup": seconds of "import_realsr", "import_backend", "open" (the Upscaler) and "warmup" (both formats);
    - "formats": per format, its median run's "seconds" and "timings" (the image's own decode, infer and encode)
      and "wall_seconds" (the call, pipeline threads included); the JPEG run's also as "seconds" and "timings";
    - "timed_seconds": the wall seconds of all timed runs together;
    - the sizes, the device and precision, and the process's peak memory (of every run, both formats)."""
    args = json.loads(args_json)
    out_dir = Path(args["out_dir"])
    startup = {"import_realsr": import_seconds, "import_backend": timed(import_backend_libraries, args["backend"])}
    runs: dict[str, list[tuple[float, UpscaleResult]]] = {fmt: [] for fmt in END_TO_END_SUFFIXES}
    try:
        options = {key: args[key] for key in ("backend", "device", "precision", "tile")}
        start = time.perf_counter()
        with Upscaler(args["model"], **options) as up:
            startup["open"] = time.perf_counter() - start
            start = time.perf_counter()
            for suffix in END_TO_END_SUFFIXES.values():  # the first use of each encoder belongs to start-up too
                up.upscale_file(Path(args["warmup"]).with_suffix(suffix), out_dir / f"warmup_x4{suffix}")
            startup["warmup"] = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args["repeats"]):  # interleaved, so a change in machine load hits both formats alike
                for fmt, suffix in END_TO_END_SUFFIXES.items():
                    src = Path(args["src"]).with_suffix(suffix)
                    wall_start = time.perf_counter()
                    result = up.upscale_file(src, out_dir / f"photo_x4{suffix}")
                    runs[fmt].append((time.perf_counter() - wall_start, result))
            timed_seconds = time.perf_counter() - start
            device, precision = up.device, up.precision
    except RealSRError as err:
        print(err, file=sys.stderr)
        sys.exit(err.exit_code)
    # each format's median run (the later middle one if even)
    medians = {fmt: sorted(pairs, key=lambda pair: pair[1].seconds)[len(pairs) // 2] for fmt, pairs in runs.items()}
    formats = {
        fmt: {"seconds": run.seconds, "wall_seconds": wall, "timings": run.timings}
        for fmt, (wall, run) in medians.items()
    }
    jpeg = medians["jpeg"][1]
    print(
        json.dumps(
            {
                "input_size": list(jpeg.input_size),
                "output_size": list(jpeg.output_size),
                "seconds": formats["jpeg"]["seconds"],
                "timings": formats["jpeg"]["timings"],
                "formats": formats,
                "startup": startup,
                "timed_seconds": timed_seconds,
                "device": device,
                "precision": precision,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def import_backend_libraries(backend: str) -> None:
    """Import what `backend` imports to open a model, so that the open that follows is the model's alone."""
    for library in BACKEND_LIBRARIES[backend]:
        with contextlib.suppress(ImportError):  # a missing one is the backend's own BackendError, when the model opens
            importlib.import_module(library)


def time_split(run: dict) -> dict:
    """Where an end-to-end process's seconds went, from `run_child`'s result: "other_seconds", its wall time less
    everything timed inside it (interpreter start and exit, the benchmark's own imports and code), and "formats"
    with each format's "total_seconds", what a fresh process that upscales this one photo costs (other, start-up
    and the median run's wall seconds), and "encode_share", the encode seconds' share of that total."""
    startup = sum(run["startup"].values())
    other = run["process_seconds"] - startup - run["timed_seconds"]
    formats = {}
    for fmt, result in run["formats"].items():
        total = other + startup + result["wall_seconds"]
        formats[fmt] = {**result, "total_seconds": total, "encode_share": result["timings"]["encode"] / total}
    return {"other_seconds": other, "formats": formats}


def peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB; None where it cannot be read (Windows).

    Linux: VmHWM, the peak of this process's own memory map. Its ru_maxrss would not do: exec keeps the high-water
    mark of the map it replaces, which a child shares with its parent until then, so every child would report at
    least the parent's memory. Elsewhere: ru_maxrss."""
    status = Path("/proc/self/status")
    if status.is_file():
        hwm = [line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM:")]
        if hwm:
            return int(hwm[0]) / 2**10  # kB
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on other Unixes


def make_photo(path: Path, megapixels: float, seed: int = 0, png_twin: bool = False) -> Path:
    """Write a photo-like 4:3 JPEG of about `megapixels`: the bundled Kodak sample, cropped to 4:3 and
    Lanczos-resized, with mild Gaussian grain. With `png_twin`, the same pixels also go, losslessly, to the PNG of
    the same stem beside it."""
    from PIL import Image

    width = max(4, round(math.sqrt(megapixels * 1e6 * 4 / 3)))
    height = max(3, round(width * 3 / 4))
    with (importlib.resources.files("realsr_cli") / "samples" / "kodim23.png").open("rb") as fh:
        sample = Image.open(fh).convert("RGB")
    crop_w = min(sample.width, round(sample.height * 4 / 3))
    crop_h = round(crop_w * 3 / 4)
    left, top = (sample.width - crop_w) // 2, (sample.height - crop_h) // 2
    image = sample.resize((width, height), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h))
    grain = np.random.default_rng(seed).standard_normal((height, width, 3), dtype=np.float32) * GRAIN_SIGMA
    pixels = np.clip(np.asarray(image, np.float32) + grain, 0, 255).round().astype(np.uint8)
    image = Image.fromarray(pixels)
    image.save(path, quality=PHOTO_QUALITY)
    if png_twin:
        image.save(path.with_suffix(".png"))
    return path


def describe_machine(on_cuda: bool) -> dict:
    return {
        "cpu": cpu_model(),
        "amx": amx_usable(),  # false on a CPU without AMX, and where the process is refused it
        "cores": cpu_count(),
        "gpu": _gpu_name() if on_cuda else None,
        "python": platform.python_version(),
        "realsr": __version__,
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "torch": _version("torch"),
    }


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_targets(result: dict) -> list[dict]:
    """Each target that applies to `result`'s backend, with its value and pass/fail (None: not measured)."""
    checks = []
    for target in TARGETS:
        if target.backend not in (None, result["backend"]):
            continue
        if target.at_mp is None:
            section, field = target.measure.split(".")
            value = result[section][field]
        else:
            value = next((s[target.measure] for s in result["sizes"] if s["mp"] == target.at_mp), None)
        passed = None if value is None else (value <= target.limit if target.at_most else value >= target.limit)
        checks.append({**asdict(target), "value": value, "passed": passed})
    return checks
