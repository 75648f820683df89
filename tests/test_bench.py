"""realsr bench: FLOP counts against the generator's own count, the reference convolution, a whole run on tiny
settings, the Markdown, and the console script. Benchmarks print numbers: nothing here times anything against a goal.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from realsr_cli.bench import benchmark as bench
from realsr_cli.bench import flops as flop_counters
from realsr_cli.bench.benchmark import TARGETS, model_files, reference_conv, run_benchmark
from realsr_cli.bench.flops import count_flops, count_onnx_flops
from realsr_cli.bench.report import to_markdown
from realsr_cli.config import BenchConfig
from realsr_cli.errors import ConfigError, InputError, ModelError
from realsr_cli.inference.upscaler import Upscaler

REALSR = Path(sys.executable).with_name("realsr")

# seconds-long settings: photos of 0.01 and 0.02 MP (115x86 and 163x122), tiles small enough to make a real grid
TINY = {
    "device": "cpu",
    "sizes_mp": (0.01, 0.02),
    "folder_count": 2,
    "folder_mp": 0.01,
    "tile": 48,
    "repeats": 1,
    "reference_edge": 32,
}
# the Markdown rows of each backend's tiny run: every measure, then the targets at sizes that were not measured
MEASURES = [
    "model cost",
    "reference speed",
    "end-to-end 0.01 MP",
    "efficiency 0.01 MP",
    "peak RSS 0.01 MP (MiB)",
    "end-to-end 0.02 MP",
    "efficiency 0.02 MP",
    "peak RSS 0.02 MP (MiB)",
    "memory growth",
    "tiled / whole",
    "folder / inference",
    "efficiency 1 MP",
    "peak RSS 12 MP (MiB)",
]
MEASURES_HEADER = "| backend | measure |"
TIME_SPLIT_HEADER = "| backend | photo |"


@pytest.fixture(scope="module")
def generator_flops(tiny_arch) -> float:
    from conftest import flops_per_input_pixel

    from realsr_cli.training.nets import build_generator

    return flops_per_input_pixel(build_generator(tiny_arch))


@pytest.fixture(scope="module")
def bench_run(tiny_exports) -> tuple[dict, list[str]]:
    """One run_benchmark of the tiny model on both backends, and its progress lines."""
    lines: list[str] = []
    return run_benchmark(BenchConfig(model=str(tiny_exports["onnx"]), **TINY), progress=lines.append), lines


# ---- model cost


def test_onnx_flop_count_equals_the_generator_count(tiny_exports, generator_flops):
    assert count_onnx_flops(tiny_exports["onnx"]) == generator_flops
    # the fp16 variant adds Cast nodes and stores fp16 weights: the same arithmetic
    assert count_onnx_flops(tiny_exports["onnx_fp16"]) == generator_flops


def test_torchscript_flop_count_equals_the_generator_count(tiny_exports, generator_flops):
    flops, counted_from = count_flops(tiny_exports["torchscript"], "torchscript")
    assert flops == generator_flops
    assert "TorchScript" in counted_from


def test_onnx_flop_count_of_conv_transpose_matmul_and_gemm(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    def weight(name, *shape):
        return numpy_helper.from_array(np.zeros(shape, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w_conv"], ["a"], pads=[1, 1, 1, 1]),  # (1, 8, H, W)
        helper.make_node("ConvTranspose", ["a", "w_up"], ["b"], strides=[2, 2]),  # (1, 4, 2H, 2W)
        helper.make_node("MatMul", ["b", "m"], ["c"]),  # (1, 4, 2H, 5)
        helper.make_node("Flatten", ["c"], ["d"]),  # (1, 4 * 2H * 5)
        helper.make_node("Transpose", ["d"], ["e"]),  # (4 * 2H * 5, 1)
        helper.make_node("Gemm", ["e", "g"], ["y"], transA=1),  # (1, 7)
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight("w_conv", 8, 3, 3, 3), weight("w_up", 8, 4, 2, 2), weight("m", 128, 5), weight("g", 2560, 7)],
    )
    path = tmp_path / "mixed.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    pixels = 64 * 64  # the probe size; the MatMul's constant fits its 2 * 64 = 128 columns
    macs = {
        "Conv": 8 * pixels * 3 * 3 * 3,  # output elements x (C_in / group) x kH x kW
        "ConvTranspose": 8 * pixels * 4 * 2 * 2,  # input elements x (C_out / group) x kH x kW
        "MatMul": 4 * 128 * 5 * 128,  # output elements x K
        "Gemm": 7 * 2560,  # output elements x K (A is transposed)
    }
    assert count_onnx_flops(path, edge=64) == 2 * sum(macs.values()) / pixels


def test_torchscript_count_falls_back_to_the_onnx_sibling(tiny_exports, generator_flops, monkeypatch, tmp_path):
    monkeypatch.setattr(flop_counters, "count_torchscript_flops", lambda path: 0.0)  # torch counted nothing
    flops, counted_from = count_flops(tiny_exports["torchscript"], "torchscript")
    assert flops == generator_flops
    assert counted_from == f"the ONNX sibling {tiny_exports['onnx'].name}"
    lonely = tmp_path / "lonely.ts"
    shutil.copy(tiny_exports["torchscript"], lonely)
    with pytest.raises(ModelError, match="no lonely.onnx"):
        count_flops(lonely, "torchscript")


# ---- reference speed


@pytest.mark.parametrize("backend, precision", [("onnx", "fp32"), ("torchscript", "fp32"), ("torchscript", "bf16")])
def test_reference_convolution(backend, precision):
    reference = reference_conv(backend, "cpu", precision, edge=32)
    assert reference["flops"] == 2 * 64 * 64 * 3 * 3 * 32 * 32
    assert reference["precision"] == precision
    assert reference["seconds"] > 0
    assert reference["gflops"] == pytest.approx(reference["flops"] / reference["seconds"] / 1e9)


# ---- configuration and model files


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sizes_mp": ()}, "no photo sizes"),
        ({"sizes_mp": (1, 0)}, "positive"),
        ({"sizes_mp": (math.nan,)}, "positive"),
        ({"folder_mp": -1}, "positive"),
        ({"folder_count": 0}, "folder count"),
        ({"repeats": 0}, "repeats"),
        ({"tile": 0}, "tile"),
        ({"backends": ()}, "got none"),
        ({"backends": ("onnx", "tensorrt")}, "tensorrt"),
        ({"device": "tpu"}, "tpu"),
        ({"precision": "int4"}, "int4"),
    ],
)
def test_bench_config_rejects_bad_values(options, message):
    with pytest.raises(ConfigError, match=message):
        BenchConfig(**options)


def test_bench_config_sorts_sizes_and_drops_repeats():
    assert BenchConfig(sizes_mp=(12, 0.25, 1, 12)).sizes_mp == (0.25, 1, 12)


def test_model_files_pair_siblings_and_mark_a_missing_one(tiny_exports, tmp_path):
    both = {"onnx": tiny_exports["onnx"], "torchscript": tiny_exports["torchscript"]}
    assert model_files(BenchConfig(model=str(tiny_exports["onnx"]))) == both
    assert model_files(BenchConfig(model=str(tiny_exports["torchscript"]))) == both
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(tiny_exports["onnx"], lonely)
    assert model_files(BenchConfig(model=str(lonely))) == {"onnx": lonely, "torchscript": None}
    with pytest.raises(InputError, match="lonely.ts"):
        model_files(BenchConfig(model=str(lonely), backends=("torchscript",)))


# ---- a whole run


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_run_benchmark_reports_every_measure(bench_run, tiny_exports, generator_flops, backend):
    report, _ = bench_run
    assert json.loads(json.dumps(report)) == report  # JSON-ready as it is
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    result = report["backends"][backend]
    model = tiny_exports[backend]
    assert result["model"] == str(model) and result["device"] == "cpu"
    with Upscaler(model, backend=backend, device="cpu") as up:
        assert result["precision"] == result["reference"]["precision"] == up.precision
    assert result["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert result["flops_per_input_pixel"] == generator_flops
    reference = result["reference"]["gflops"]
    assert reference > 0

    sizes = result["sizes"]
    assert [(s["mp"], s["input_size"]) for s in sizes] == [(0.01, [115, 86]), (0.02, [163, 122])]
    for size in sizes:
        pixels = size["input_size"][0] * size["input_size"][1]
        assert size["output_size"] == [4 * size["input_size"][0], 4 * size["input_size"][1]]
        assert (size["device"], size["precision"]) == ("cpu", result["precision"])
        assert set(size["timings"]) == {"decode", "infer", "encode"}
        assert all(t > 0 for t in size["timings"].values())
        assert sum(size["timings"].values()) <= size["seconds"]
        assert_time_split(size)
        assert size["output_mp_per_s"] == pytest.approx(16 * pixels / size["seconds"] / 1e6)
        efficiency = generator_flops * pixels / size["seconds"] / 1e9 / reference
        assert size["efficiency"] == pytest.approx(efficiency)
        fp32 = result["reference_fp32"]
        assert fp32["precision"] == "fp32" and (fp32 is result["reference"]) == (result["precision"] == "fp32")
        assert size["efficiency_vs_fp32"] == pytest.approx(efficiency * reference / fp32["gflops"])
        if sys.platform.startswith("linux"):
            assert size["peak_rss_mib"] > 0
    if sys.platform.startswith("linux"):
        growth = (sizes[1]["peak_rss_mib"] - sizes[0]["peak_rss_mib"]) / (0.02 - 0.01)
        assert result["memory_growth_mib_per_mp"] == pytest.approx(growth)

    tiling = result["tiling"]
    assert tiling["input_size"] == [163, 122]  # the photo nearest 1 MP
    assert tiling["tile"] == 48 and tiling["rows"] * tiling["cols"] > 1
    assert tiling["ratio"] == pytest.approx(tiling["tiled_seconds"] / tiling["whole_seconds"])
    folder = result["folder"]
    assert folder["count"] == 2 and folder["inference_seconds"] > 0
    assert folder["ratio"] == pytest.approx(folder["wall_seconds"] / folder["inference_seconds"])
    assert folder["images_per_s"] == pytest.approx(2 / folder["wall_seconds"])
    assert folder["input_mp_per_s"] == pytest.approx(2 * 115 * 86 / folder["wall_seconds"] / 1e6)
    assert folder["output_mp_per_s"] == pytest.approx(16 * folder["input_mp_per_s"])

    applicable = [t for t in TARGETS if t.backend in (None, backend)]
    assert [(c["measure"], c["at_mp"]) for c in result["checks"]] == [(t.measure, t.at_mp) for t in applicable]
    for check in result["checks"]:
        if check["at_mp"] is not None:  # 1 and 12 MP were not measured
            assert check["value"] is None and check["passed"] is None
        else:
            assert check["passed"] == (check["value"] <= check["limit"])


def assert_time_split(size: dict) -> None:
    """One end-to-end size's time split: every part measured, and the parts no more than the whole."""
    startup = size["startup"]
    assert set(startup) == {"import_realsr", "import_backend", "open", "warmup"}
    assert all(seconds > 0 for seconds in startup.values())
    assert list(size["formats"]) == ["jpeg", "png"]
    # "other" is the process's wall time less everything timed inside it: interpreter start and exit remain
    assert size["other_seconds"] > 0
    timed = sum(startup.values()) + size["timed_seconds"]
    assert timed + size["other_seconds"] == pytest.approx(size["process_seconds"])
    assert sum(run["wall_seconds"] for run in size["formats"].values()) <= size["timed_seconds"]
    for run in size["formats"].values():
        assert set(run["timings"]) == {"decode", "infer", "encode"}
        assert all(seconds > 0 for seconds in run["timings"].values())
        assert run["seconds"] == pytest.approx(sum(run["timings"].values()))
        assert run["seconds"] <= run["wall_seconds"]
        fresh_process = size["other_seconds"] + sum(startup.values()) + run["wall_seconds"]
        assert run["total_seconds"] == pytest.approx(fresh_process)
        assert run["total_seconds"] <= size["process_seconds"]
        assert run["encode_share"] == pytest.approx(run["timings"]["encode"] / run["total_seconds"])
    # the end-to-end seconds (and with them the efficiency) are the JPEG run's, as before PNG was measured
    jpeg = size["formats"]["jpeg"]
    assert (size["seconds"], size["timings"]) == (jpeg["seconds"], jpeg["timings"])


def table_rows(text: str, header: str) -> list[str]:
    """The body rows of the Markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 2  # past the header and its rule
    return list(itertools.takewhile(lambda line: line.startswith("| "), lines[start:]))


def test_run_benchmark_reports_progress(bench_run):
    _, lines = bench_run
    for backend in ("onnx", "torchscript"):
        assert any(line.startswith(f"{backend}: end-to-end 0.02 MP") for line in lines)


def test_to_markdown_has_a_row_for_every_measure(bench_run):
    report, _ = bench_run
    text = to_markdown(report)
    rows = table_rows(text, MEASURES_HEADER)
    for backend in ("onnx", "torchscript"):
        labels = [row.split(" | ")[1] for row in rows if row.startswith(f"| {backend} |")]
        reduced = report["backends"][backend]["precision"] != "fp32"  # then the fp32 reference has a row too
        assert labels == MEASURES[:2] + ["reference speed, fp32"] * reduced + MEASURES[2:]
        assert report["backends"][backend]["sha256"] in text
    tiling = next(row for row in rows if row.startswith("| onnx | tiled / whole |"))
    verdict = "pass" if report["backends"]["onnx"]["tiling"]["ratio"] <= 1.10 else "**FAIL**"
    assert tiling.endswith(f"| <= 1.1 | {verdict} |")
    assert "| onnx | efficiency 1 MP | - | >= 0.75 | not measured |" in rows
    assert "| torchscript | peak RSS 12 MP (MiB) | - | <= 1536 | not measured |" in rows


def test_to_markdown_shows_where_the_time_goes(bench_run):
    report, _ = bench_run
    text = to_markdown(report)
    rows = table_rows(text, TIME_SPLIT_HEADER)
    for backend in ("onnx", "torchscript"):
        result = report["backends"][backend]
        expected = []
        for size in result["sizes"]:
            startup = size["startup"]
            for fmt, run in size["formats"].items():
                seconds = [
                    size["other_seconds"],
                    startup["open"],
                    startup["warmup"],
                    run["timings"]["decode"],
                    run["timings"]["infer"],
                    run["timings"]["encode"],
                    run["total_seconds"],
                ]
                other, *later = [f"{value:.2f}" for value in seconds]
                imports = f"{startup['import_realsr']:.2f} + {startup['import_backend']:.2f}"
                label = f"{size['mp']:g} MP {fmt.upper()}"
                expected.append(
                    " | ".join([f"| {backend}", label, other, imports, *later, f"{run['encode_share']:.1%} |"])
                )
        assert [row for row in rows if row.startswith(f"| {backend} |")] == expected
        assert [row.split(" | ")[1] for row in expected] == [
            "0.01 MP JPEG",
            "0.01 MP PNG",
            "0.02 MP JPEG",
            "0.02 MP PNG",
        ]
        folder = result["folder"]
        throughput = f"{folder['images_per_s']:.2f} photos/s, {folder['input_mp_per_s']:.3f} input MP/s"
        assert f"- {backend} folder (2 photos of 0.01 MP, JPEG in and out): {throughput}, " in text


def test_to_markdown_shows_a_skipped_backend(bench_run):
    report, _ = bench_run
    skipped = {**report, "backends": {**report["backends"], "torchscript": {"skipped": "no .ts file beside it"}}}
    text = to_markdown(skipped)
    assert "| torchscript | skipped | no .ts file beside it |" in text
    assert not any(line.startswith("| torchscript | model cost") for line in text.splitlines())
    assert [row.split(" | ")[0] for row in table_rows(text, TIME_SPLIT_HEADER)] == ["| onnx"] * 4
    assert "- torchscript folder" not in text
    every_one = {**report, "backends": {name: {"skipped": "no file"} for name in report["backends"]}}
    assert "Where the time goes" not in to_markdown(every_one)


def test_onnx_only_run_skips_a_missing_sibling_and_never_imports_torch(tiny_exports, tmp_path):
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(tiny_exports["onnx"], lonely)
    script = textwrap.dedent(f"""
        import json, sys
        from realsr_cli.bench.benchmark import run_benchmark
        from realsr_cli.config import BenchConfig
        cfg = BenchConfig(model={str(lonely)!r}, device="cpu", sizes_mp=(0.01,), folder_count=1, folder_mp=0.01,
                          repeats=1, reference_edge=16)
        report = run_benchmark(cfg)
        print(json.dumps({{"torch": "torch" in sys.modules, "backends": report["backends"]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert result["backends"]["torchscript"] == {"skipped": "no .ts file beside the model"}
    assert result["backends"]["onnx"]["sizes"][0]["seconds"] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the exec high-water mark is Linux behaviour")
def test_peak_memory_of_a_child_is_its_own():
    # ru_maxrss of a fresh child would include this process's memory at the fork (the ballast): VmHWM does not
    ballast = np.ones(32 << 20)  # 256 MiB, written
    code = "from realsr_cli.bench.benchmark import peak_rss_mib; print(peak_rss_mib())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert 0 < float(proc.stdout) < ballast.nbytes / 2**20


def test_a_failing_end_to_end_process_raises_its_error(tmp_path):
    args = {
        "model": str(tmp_path / "missing.onnx"),
        "backend": "onnx",
        "device": "cpu",
        "precision": "fp32",
        "tile": 512,
        "src": str(tmp_path / "photo.jpg"),
        "warmup": str(tmp_path / "warmup.jpg"),
        "out_dir": str(tmp_path),
        "repeats": 1,
    }
    with pytest.raises(InputError, match=r"end-to-end run of photo.jpg failed: .*missing.onnx: model file not found"):
        bench.run_child(args)


# ---- the console script

needs_script = pytest.mark.skipif(not REALSR.exists(), reason=f"console script not installed at {REALSR}")


@needs_script
def test_cli_writes_json_and_markdown(tiny_exports, tmp_path):
    out = tmp_path / "results"
    args = [
        "bench",
        "--model",
        tiny_exports["onnx"],
        "--backend",
        "onnx",
        "--device",
        "cpu",
        "--sizes",
        "0.01",
        "--folder",
        "2",
        "--folder-mp",
        "0.01",
        "--tile",
        "48",
        "--repeats",
        "1",
        "--json",
        out / "bench.json",
        "--markdown",
        out / "bench.md",
        "-q",
    ]
    proc = subprocess.run([str(REALSR), *map(str, args)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "bench.json").read_text())
    assert list(report["backends"]) == ["onnx"]
    assert report["config"]["sizes_mp"] == [0.01] and report["config"]["folder_count"] == 2
    markdown = (out / "bench.md").read_text()
    assert markdown == to_markdown(report)
    assert "| onnx | end-to-end 0.01 MP |" in markdown
    assert "| onnx | end-to-end 0.01 MP |" in proc.stderr  # the tables, on stderr
    assert "| onnx | 0.01 MP PNG |" in proc.stderr
    assert "- onnx folder (2 photos of 0.01 MP, JPEG in and out):" in proc.stderr
    assert "making test photos" not in proc.stderr  # -q: no progress lines
    assert proc.stdout == ""


@needs_script
@pytest.mark.parametrize("sizes", ["", "1,-2", "0", "big"])
def test_cli_bad_sizes_exit_2_with_one_line(sizes, tmp_path):
    proc = subprocess.run(
        [str(REALSR), "bench", "--sizes", sizes, "--json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "r.json").exists()


@needs_script
def test_cli_help():
    proc = subprocess.run([str(REALSR), "bench", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--folder-mp" in proc.stdout and "--markdown" in proc.stdout
    assert "Where the time goes" in proc.stdout
