"""How `realsr upscale --ray` divides a job: units of work sized by pixels (one 48 MP photo is not one 0.3 MP
thumbnail), and workers sized to the cluster's GPUs or cores. Plain data in, plain data out: no ray and no torch
here, so a plan can be tested without a cluster.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from realsr_cli.config import split_device
from realsr_cli.errors import ConfigError
from realsr_cli.inference.inputs import InputItem
from realsr_cli.inference.upscaler import header_size
from realsr_cli.photo.formats import output_path

# input pixels of one unit at most: about four 12 MP photos, minutes of one worker's time, so a unit lost with its
# node costs little, and the pipeline's fill and drain (the first decode, the last encode) are a small share of it
UNIT_PIXELS = 48_000_000
# at least this many units per worker while the work allows, so the last units end close together
UNITS_PER_WORKER = 4
# cores of a worker at most (a node with more runs several). A 12 MP photo at x4 takes about 350 core-seconds of
# fp32 inference (170 in int8, 110 in bf16 with AMX), and its 192 MP output is written before the next inference
# starts (the pipeline holds one output that large), which leaves the worker's other cores waiting. On 2 cores
# every thread pool is busy: inference's and the PNG encoder's alike. 2, not 1: the decode and encode threads need
# a core beside inference, and a worker's memory (about 1.5 GB at 12 MP) stays under 1 GB a core (docs/scale.md
# has the numbers)
WORKER_CPUS = 2
# header reads at once while sizing the work: on network storage each is a round trip, not CPU work
HEADER_READERS = 16


@dataclass(frozen=True)
class Task:
    """One input of the job: its place in the input list, the item, and its pixels (0 when its header is
    unreadable: the worker reports why)."""

    index: int
    item: InputItem
    pixels: int


@dataclass(frozen=True)
class WorkerPlan:
    """The workers of a job: how many, and what each holds (one model and its pipeline on `cpus` cores and, for a
    GPU worker, one GPU). `fits` is how many the cluster holds now; an autoscaling cluster may grow to `count`."""

    count: int
    cpus: int
    gpus: int
    fits: int


def output_folder(item: InputItem, out_dir: str | os.PathLike | None) -> Path:
    """The folder `item`'s output goes to (whatever its format and scale turn out to be: they change only its name)."""
    if item.dst is not None:
        return item.dst.parent
    return output_path(item.path, out_dir, 1, "PNG", item.root).parent


def read_tasks(items: Sequence[InputItem], indices: Sequence[int]) -> list[Task]:
    """The items at `indices` as tasks, each with its pixel count from its header (nothing is decoded)."""

    def pixels(item: InputItem) -> int:
        return math.prod(header_size(item) or (0, 0))

    # a file's warnings are reported once, naming it, by the worker that decodes it
    with warnings.catch_warnings(), ThreadPoolExecutor(HEADER_READERS) as pool:
        warnings.simplefilter("ignore")
        sizes = list(pool.map(pixels, (items[i] for i in indices)))
    return [Task(i, items[i], n) for i, n in zip(indices, sizes, strict=True)]


def plan_units(tasks: Sequence[Task], out_dir: str | os.PathLike | None, workers: int) -> list[list[Task]]:
    """`tasks` in units of at most UNIT_PIXELS input pixels (fewer when that leaves fewer than UNITS_PER_WORKER
    units per worker), the largest first, so the last units to finish are small. A photo larger than a unit is a
    unit of its own. Inputs whose outputs may collide share a unit (`_collisions`), so that its pipeline refuses
    the collision as a local run does. Each unit keeps the input order."""
    groups = _collisions(tasks, out_dir)
    total = sum(t.pixels for t in tasks)
    budget = max(1, min(UNIT_PIXELS, math.ceil(total / (workers * UNITS_PER_WORKER))))
    units: list[list[Task]] = []
    size = 0
    for group in sorted(groups, key=lambda g: -sum(t.pixels for t in g)):
        pixels = sum(t.pixels for t in group)
        if not units or size + pixels > budget:
            units.append([])
            size = 0
        units[-1].extend(group)
        size += pixels
    return [sorted(unit, key=lambda t: t.index) for unit in units]


def _collisions(tasks: Sequence[Task], out_dir: str | os.PathLike | None) -> list[list[Task]]:
    """`tasks` grouped so that two inputs whose outputs may be one file (photo.jpg and photo.png, both written as
    photo_x4.png), or whose output may be the other input (z.png's z_x4.png), are in one group. The pipeline
    refuses both within a batch; across units nothing would. Almost every group is a single task."""
    parent = list(range(len(tasks)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # outputs are named <stem>_x<scale>.<ext>: inputs of one stem and one output folder may collide
    by_output: dict[tuple[str, str], int] = {}
    for i, task in enumerate(tasks):
        key = (os.path.abspath(output_folder(task.item, out_dir)), task.item.path.stem)
        parent[root(i)] = root(by_output.setdefault(key, i))
    # an input named <stem>_x<anything> may be the output of an input <stem>.* writing to its folder
    for i, task in enumerate(tasks):
        stem, marker, _ = task.item.path.stem.rpartition("_x")
        other = by_output.get((os.path.abspath(task.item.path.parent), stem)) if marker else None
        if other is not None:
            parent[root(i)] = root(other)
    groups: dict[int, list[Task]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(root(i), []).append(task)
    return list(groups.values())


def plan_workers(nodes: Sequence[dict[str, float]], device: str, workers: int | None) -> WorkerPlan:
    """The workers for a cluster whose live nodes offer `nodes` (Ray's resources: "CPU", "GPU", ...): one GPU each
    where the cluster has GPUs and `device` allows them, each with its share of its node's cores (at most
    WORKER_CPUS); otherwise CPU workers of WORKER_CPUS cores (fewer on smaller nodes), as many as fit. `workers`,
    when given, is the count asked for instead. Raises ConfigError for a device the cluster cannot offer."""
    kind, gpu = split_device(device)
    if gpu != 0:
        raise ConfigError(
            f"--device {device}: each Ray worker sees only the one GPU Ray gives it; use --device cuda or auto"
        )
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= 1]
    if kind == "cuda" and not gpu_nodes:
        raise ConfigError("--device cuda: the Ray cluster has no GPUs; use --device auto or cpu")
    if gpu_nodes and kind != "cpu":
        cpus = max(1, min(WORKER_CPUS, min(int(n.get("CPU", 0) // n["GPU"]) for n in gpu_nodes)))
        fits = sum(min(int(n["GPU"]), int(n.get("CPU", 0) // cpus)) for n in gpu_nodes)
        return WorkerPlan(workers or max(1, fits), cpus, 1, fits)
    cpus = max(1, min(WORKER_CPUS, max((int(n.get("CPU", 0)) for n in nodes), default=0)))
    fits = sum(int(n.get("CPU", 0)) // cpus for n in nodes)
    return WorkerPlan(workers or max(1, fits), cpus, 0, fits)
