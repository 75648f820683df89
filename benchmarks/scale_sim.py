"""How `realsr upscale --ray` throughput grows with workers: a simulation of docs/scale.md's job (phone photos of
12 MP, x4 to 192 MP, PNG or JPEG), and of a mixed library planned by pixels against one planned by file count.

    .venv/bin/python benchmarks/scale_sim.py                      # the tables of docs/scale.md
    .venv/bin/python benchmarks/scale_sim.py --photos 1000000 --write-gbps 2.5

Each worker follows the batch pipeline's rules (realsr_cli/inference/pipeline.py) over the units the real planner
makes (realsr_cli/cluster/plan.py): decoding runs at most one photo ahead of inference; a photo's inference waits
for the previous photo to be written when the two outputs do not fit in the pipeline's memory budget (1.5 GiB:
true of every 192 MP output); one encode thread writes the outputs in order, streaming them to storage; a unit
ends when its last output is written, and only then does the worker start its next unit. Every worker writes
through one shared storage link (FIFO).

The per-photo figures are docs/scale.md's, for a worker of 2 vCPUs (a GPU worker: one GPU and 2 vCPUs). Measured
on CPU (benchmarks/results/bench.md with AMX, bench-no-amx.md with AMX refused, and the ONNX fp32 figure from the
bench.md before the int8 model): inference of a 12 MP photo 175.1 s in fp32 (ONNX Runtime), 86.2 s in int8 (ONNX
Runtime, VNNI) and 53.7 s in bf16 (TorchScript, AMX); writing its 192 MP output 5.5 s as PNG (realsr's encoder,
on both cores) and 0.65 s as JPEG. Estimated for a GPU (no GPU was available to measure): 6.2 s, nearly all of it
tiling and blending on one core. Start-up (paid once a worker) is left out.

Encoding runs beside the next photo's decode and, where two outputs fit the budget, its inference; the simulation
does not slow either down for it, though the PNG encoder uses every core. That does not arise for 192 MP outputs
(inference waits for the write) nor for JPEG (one core for under a second); for PNG of small photos the rates
are optimistic.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from realsr_cli.cluster.plan import Task, plan_units
from realsr_cli.inference.inputs import InputItem
from realsr_cli.inference.pipeline import DEFAULT_MAX_INFLIGHT_BYTES

PHONE_MP = 12.0
PHONE_OUT_MP = PHONE_MP * 16  # x4
# seconds per output megapixel of each output format, from a 12 MP photo's 192 MP output written on a 2-vCPU
# worker (docs/scale.md, "Per-photo figures"): PNG 5.2-5.8 s (realsr's encoder, both cores), JPEG 0.55-0.74 s
ENCODE_S_PER_MP = {"png": 5.5 / PHONE_OUT_MP, "jpeg": 0.65 / PHONE_OUT_MP}
# bytes per output megapixel: PNG 0.57-1.49 MB (realsr's encoder 1-3% more), JPEG 0.076-0.12 MB (quality 90-95)
BYTES_PER_MP = {"png": 1.0e6, "jpeg": 0.1e6}
WORKER_COUNTS = (1, 2, 4, 16, 64, 256, 512, 1024, 4096)


@dataclass(frozen=True)
class Worker:
    """One worker's per-photo seconds for a 12 MP photo, scaled by pixels for other sizes."""

    name: str  # a column of the tables
    decode_s: float  # a 12 MP JPEG
    infer_s: float  # a 12 MP photo at x4, tiles blended into the output included
    vcpus: int
    gpus: int


WORKERS = [
    # measured: the bench.md before the int8 model (git history), 2-vCPU Xeon, ONNX Runtime fp32; what a CPU
    # without int8 or bf16 units runs (TorchScript fp32 on the same machine, AMX refused: 159.8 s)
    Worker("CPU fp32", 0.44, 175.1, 2, 0),
    # measured: benchmarks/results/bench-no-amx.md, ONNX Runtime int8 on AVX512-VNNI (the four 12 MP runs of both
    # bench files: 82.7-87.9 s)
    Worker("CPU int8", 0.33, 86.2, 2, 0),
    # measured: benchmarks/results/bench.md, TorchScript bf16 on AMX (61.6 s in the earlier bench, 66.4 s in the
    # PNG-in run of the same process)
    Worker("CPU bf16 (AMX)", 0.34, 53.7, 2, 0),
    # estimated: 21.4 TFLOP a photo at an assumed 150 TFLOP/s of fp16 (0.15 s), plus the tiling, blending and
    # rounding into the 192 MP output on one core, measured here with a stand-in model (6 s)
    Worker("GPU (est.)", 0.34, 6.2, 2, 1),
]


def planned(photos_mp: list[float], workers: int) -> list[list[float]]:
    """The units realsr's planner makes of photos of these megapixels, as lists of megapixels."""
    tasks = [Task(i, InputItem(Path(f"in/{i}.jpg")), int(mp * 1e6)) for i, mp in enumerate(photos_mp)]
    return [[t.pixels / 1e6 for t in unit] for unit in plan_units(tasks, "out", workers)]


def simulate(
    worker: Worker, fmt: str, units: list[list[float]], workers: int, write_bytes_per_s: float
) -> tuple[float, float]:
    """(seconds until the last output is written, seconds the storage link was busy) for `workers` workers of
    `worker` upscaling `units` (lists of photos' megapixels, taken in order) to `fmt`."""
    queue = iter(units)
    link_free = 0.0
    link_busy = 0.0
    ends = []
    # each worker is a generator that asks for storage time (write request at time t of n bytes) and gets the
    # time its write ends; requests are served in time order across all workers
    heap: list[tuple[float, int, Generator, float]] = []
    counter = itertools.count()
    for _ in range(workers):
        gen = _worker(worker, fmt, queue, ends)
        request = next(gen, None)
        if request is not None:
            heapq.heappush(heap, (request[0], next(counter), gen, request[1]))
    while heap:
        t, _, gen, nbytes = heapq.heappop(heap)
        start = max(t, link_free)
        link_free = start + nbytes / write_bytes_per_s
        link_busy += nbytes / write_bytes_per_s
        request = _send(gen, link_free)
        if request is not None:
            heapq.heappush(heap, (request[0], next(counter), gen, request[1]))
    return max(ends), link_busy


def _send(gen: Generator, value: float):
    try:
        return gen.send(value)
    except StopIteration:
        return None


def _worker(worker: Worker, fmt: str, units, ends: list[float]) -> Generator:
    """One worker: takes units while there are any; yields (time, bytes) write requests, is sent write ends."""
    now = 0.0
    for unit in units:
        dec_end = take = inf_end = enc_end = now
        for mp in unit:
            share = mp / PHONE_MP
            out_mp = mp * 16
            dec_end = max(dec_end, take) + worker.decode_s * share  # at most one photo ahead of inference
            take = max(dec_end, inf_end)
            # the output and the encoder's copy of it, of this photo and the one being written, against the budget
            fits_two = 2 * 2 * out_mp * 1e6 * 3 <= DEFAULT_MAX_INFLIGHT_BYTES
            inf_start = take if fits_two else max(take, enc_end)
            inf_end = inf_start + worker.infer_s * share
            enc_start = max(inf_end, enc_end)
            write_end = yield (enc_start, out_mp * BYTES_PER_MP[fmt])
            enc_end = max(enc_start + out_mp * ENCODE_S_PER_MP[fmt], write_end)
            ends.append(enc_end)
        now = enc_end


def scaling_table(photos: int, write_gbps: float) -> str:
    """Photos per hour (and the speedup over one worker) for each kind of worker, as workers are added: one table
    per output format."""
    rates: dict[tuple[int, str, str], tuple[float, bool]] = {}
    for n in WORKER_COUNTS:
        count = max(photos, 50 * n)  # enough that the last units' tail is small, as it is at 1 M photos
        units = planned([PHONE_MP] * count, n)
        for worker in WORKERS:
            for fmt in ("png", "jpeg"):
                seconds, busy = simulate(worker, fmt, units, n, write_gbps * 1e9)
                rates[n, worker.name, fmt] = count / seconds * 3600, busy > 0.9 * seconds
    lines = [
        f"Simulated: at least {photos:,} photos of {PHONE_MP:g} MP at x4 (50 a worker), storage writing "
        f"{write_gbps:g} GB/s in all. Photos per hour (speedup over one worker); * = storage busy over 90% of "
        "the time.",
    ]
    for fmt in ("png", "jpeg"):
        lines += [
            "",
            f"| workers, {fmt.upper()} out | " + " | ".join(worker.name for worker in WORKERS) + " |",
            "|---|" + "---|" * len(WORKERS),
        ]
        for n in WORKER_COUNTS:
            cells = []
            for worker in WORKERS:
                rate, bound = rates[n, worker.name, fmt]
                single = rates[1, worker.name, fmt][0]
                cells.append(f"{rate:,.0f} ({rate / single:,.0f}x){' *' if bound else ''}")
            lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def planning_table(workers: int, write_gbps: float) -> str:
    """A mixed library (48 MP camera photos, 12 MP phone photos, 0.3 MP thumbnails, in a random order) in units
    planned by pixels (realsr's) against units of 8 files in input order (what a batch size would give)."""
    rng = random.Random(14)
    library = [48.0] * 60 + [12.0] * 600 + [0.3] * 2400
    rng.shuffle(library)
    worker = WORKERS[0]  # CPU fp32
    by_count = [library[i : i + 8] for i in range(0, len(library), 8)]
    lines = [
        f"Simulated: {len(library):,} photos (60 of 48 MP, 600 of 12 MP, 2,400 of 0.3 MP, shuffled), {workers} "
        f"{worker.name} workers, JPEG out.",
        "",
        "| planned | units | hours | share of the workers' time spent on inference |",
        "|---|---|---|---|",
    ]
    work = sum(worker.infer_s * mp / PHONE_MP for mp in library)
    for name, units in (("by pixels (realsr)", planned(library, workers)), ("8 files each, in input order", by_count)):
        seconds, _ = simulate(worker, "jpeg", units, workers, write_gbps * 1e9)
        lines.append(f"| {name} | {len(units)} | {seconds / 3600:.2f} | {work / (seconds * workers):.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000, help="photos simulated at least (rates hold for more)")
    parser.add_argument("--write-gbps", type=float, default=1.0, help="storage write bandwidth, all workers together")
    parser.add_argument("--workers", type=int, default=64, help="workers of the planning comparison")
    args = parser.parse_args()
    print(scaling_table(args.photos, args.write_gbps))
    print()
    print(planning_table(args.workers, args.write_gbps))


if __name__ == "__main__":
    main()
