"""The end-to-end comparison of issue 13: one photo upscaled x4 by `realsr upscale` in each way it can run, PNG
out and JPEG out, against the same network in a plain PyTorch tile loop with OpenCV I/O (reference_tile_loop.py,
what Real-ESRGAN's script does). Every command is a fresh process timed whole (imports, model load, decode,
inference, encode), the median of `--repeats` runs, on a quiet machine.

    python benchmarks/headline.py photo.png [--repeats 3] [--no-amx] [--markdown results/headline.md]

`--no-amx` runs every command with no_amx.c preloaded (built with cc on first use): the process is refused the
kernel's AMX permission, as on a CPU without AMX, so oneDNN (torch) and ONNX Runtime run their AVX-512 kernels
(bf16, VNNI) instead. The reference loop needs opencv-python-headless, which realsr itself does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REALSR = [str(Path(sys.executable).parent / "realsr")]  # the console script beside this Python
WAYS = {  # label -> realsr upscale options
    "realsr, auto (the default)": [],
    "realsr, ONNX int8": ["--backend", "onnx", "--precision", "int8"],
    "realsr, ONNX fp32": ["--backend", "onnx", "--precision", "fp32"],
    "realsr, TorchScript bf16": ["--backend", "torchscript", "--precision", "bf16"],
    "realsr, TorchScript fp32": ["--backend", "torchscript", "--precision", "fp32"],
}


def no_amx_library() -> Path:
    """no_amx.so, built from no_amx.c beside this script when missing or older."""
    source, library = HERE / "no_amx.c", HERE / "no_amx.so"
    if not library.exists() or library.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source), "-ldl"], check=True)
    return library


def timed_run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return seconds, done.stdout


def measure(photo: Path, repeats: int, env: dict[str, str], work: Path) -> list[dict]:
    rows = []
    for label, options in WAYS.items():
        for fmt in ("png", "jpg") if label.endswith("(the default)") else ("png",):
            out = work / f"out.{fmt}"
            command = [*REALSR, "upscale", str(photo), "-o", str(out), "--json", *options]
            timed_run(command, env)  # untimed: auto's one-time measurement, the file cache
            runs = [timed_run(command, env) for _ in range(repeats)]
            wall, stdout = sorted(runs)[len(runs) // 2]
            result = json.loads(stdout.strip().splitlines()[-1])
            rows.append({"way": label, "output": fmt.upper(), "wall": wall, **result["timings"]})
    command = [sys.executable, str(HERE / "reference_tile_loop.py"), str(photo), str(work / "reference.png")]
    runs = [timed_run(command, env) for _ in range(repeats)]
    wall, stdout = sorted(runs)[len(runs) // 2]
    parts = json.loads(stdout)
    rows.append(
        {
            "way": "plain tile loop, PyTorch fp32 + OpenCV",
            "output": "PNG",
            "wall": wall,
            "decode": parts["read"],
            "infer": parts["infer"],
            "encode": parts["write"],
        }
    )
    return rows


def to_markdown(rows: list[dict], photo: Path, size: str, no_amx: bool, repeats: int) -> str:
    reference = rows[-1]["wall"]
    lines = [
        f"Photo: {photo.name} ({size}), x4; CPU: {_cpu()}{' with AMX refused (no_amx.c)' if no_amx else ''}; "
        f"{os.cpu_count()} cores; median of {repeats} fresh processes.",
        "",
        "| way | out | wall s | decode s | inference s | encode s | start-up and rest s | vs plain loop |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        parts = row.get("decode", 0) + row.get("infer", 0) + row.get("encode", 0)
        lines.append(
            f"| {row['way']} | {row['output']} | {row['wall']:.2f} | {row.get('decode', 0):.2f} | "
            f"{row.get('infer', 0):.2f} | {row.get('encode', 0):.2f} | {row['wall'] - parts:.2f} | "
            f"{reference / row['wall']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-amx", action="store_true")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    env = dict(os.environ)
    if args.no_amx:
        env["LD_PRELOAD"] = str(no_amx_library())
    from PIL import Image

    with Image.open(args.photo) as image:
        size = f"{image.width}x{image.height}, {image.width * image.height / 1e6:.2f} MP"
    with tempfile.TemporaryDirectory(prefix="realsr-headline-") as tmp:
        env["REALSR_CACHE_DIR"] = str(Path(tmp) / "cache")  # auto measures afresh, for this mode
        rows = measure(args.photo.resolve(), args.repeats, env, Path(tmp))
    table = to_markdown(rows, args.photo, size, args.no_amx, args.repeats)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
