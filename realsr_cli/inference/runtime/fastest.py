"""`--precision auto` on a CPU: which of a model's files and precisions runs it fastest on this machine, measured
once and remembered.

No flag list predicts it: on a CPU with AMX, TorchScript in bf16 runs the bundled model fastest per pixel; on one
with AVX512-BF16 but no AMX, the same bf16 path runs slower than ONNX Runtime in fp32, and the int8 model beats
both (the README's performance section has the figures). And TorchScript's start-up (importing torch, about
two seconds) outweighs its speed on a small photo. So every way this model can run here is timed once, for its
start-up and its seconds per megapixel, and kept in a small cache keyed by the CPU, the runtimes' versions and
the model files' contents; each job then takes the way that finishes it soonest (`UpscaleConfig.job_pixels`).

The ways a model can run ("candidates"), all of equal quality (int8 was checked against fp32 when it was made:
`realsr quantize`; bf16 only where the model supports half precision):
- its fp32 ONNX file, and its `<stem>.int8.onnx` sibling when there is one;
- its TorchScript file in fp32, and in bf16 where the CPU computes bf16 natively; for a bundled model under
  `--backend auto`, or a .ts file, when torch is installed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realsr_cli import __version__, host
from realsr_cli._files import atomic_write, file_sha256
from realsr_cli.errors import RealSRError
from realsr_cli.spec import ModelSpec

MEASURE_EDGE = 256  # input pixels a side of the timed tile: at 128 px cache-resident tiles flatter bf16 on AMX
MEASURE_RUNS = 2  # timed runs after one warm-up; the median counts
CACHE_FILE = "fastest.json"
# the CPU features that decide which kernels the runtimes use
_DECIDING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


@dataclass(frozen=True)
class Candidate:
    """One way to run a model: this file, with this backend, in this precision."""

    path: Path
    backend: str  # onnx or torchscript
    precision: str  # fp32, bf16 or int8

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


Opener = Callable[[Candidate], object]  # opens a Backend for a candidate (runtime.open_candidate)


def fastest(
    candidates: list[Candidate], spec: ModelSpec, open_candidate: Opener, notice, job_pixels: int | None = None
) -> Candidate:
    """The candidate that finishes a job of `job_pixels` input pixels soonest on this CPU (None: a job so large
    that only the speed per pixel counts): the only one, or else the one whose start-up plus `job_pixels` at its
    measured speed is least, from the timings remembered for this machine and these files, or measured now (each
    timed on one tile, then remembered). A candidate that fails to open or run is left out; when every one fails,
    the first one's error is raised."""
    if len(candidates) == 1:
        return candidates[0]
    key = _cache_key(candidates)
    costs = _read_cache().get(key)
    if not _covers(costs, candidates):
        notice(
            f"measuring which way runs this model fastest on this CPU (once): {', '.join(c.label for c in candidates)}"
        )
        costs = _measure(candidates, spec, open_candidate)
        _remember(key, costs)

    def job_seconds(candidate: Candidate) -> float:
        cost = costs[candidate.label]
        if job_pixels is None:
            return cost["seconds_per_mp"]
        return cost["startup_seconds"] + cost["seconds_per_mp"] * job_pixels / 1e6

    return min((c for c in candidates if c.label in costs), key=job_seconds)


def _measure(candidates: list[Candidate], spec: ModelSpec, open_candidate: Opener) -> dict[str, dict]:
    """{label: {"startup_seconds", "seconds_per_mp"}} of each candidate that opens and runs. Start-up is opening
    the model plus what its first run costs beyond a steady one, and includes importing the backend's library (the
    most any candidate of the backend took: a fresh process pays it once, whichever precision runs)."""
    measured: dict[str, dict] = {}
    first_error: RealSRError | None = None
    for candidate in candidates:
        try:
            measured[candidate.label] = _time_candidate(candidate, spec, open_candidate)
        except RealSRError as err:
            first_error = first_error or err
    if not measured:
        raise first_error
    startup: dict[str, float] = {}
    for candidate in candidates:
        if candidate.label in measured:
            cost = measured[candidate.label]["startup_seconds"]
            startup[candidate.backend] = max(startup.get(candidate.backend, 0.0), cost)
    for candidate in candidates:
        if candidate.label in measured:
            measured[candidate.label]["startup_seconds"] = startup[candidate.backend]
    return {label: {k: round(v, 4) for k, v in cost.items()} for label, cost in measured.items()}


def _covers(costs: dict | None, candidates: list[Candidate]) -> bool:
    """Whether remembered `costs` hold what choosing needs, for at least one of `candidates`."""
    if not isinstance(costs, dict):
        return False
    usable = [
        cost
        for cost in (costs.get(c.label) for c in candidates)
        if isinstance(cost, dict) and {"startup_seconds", "seconds_per_mp"} <= cost.keys()
    ]
    return bool(usable)


def _time_candidate(candidate: Candidate, spec: ModelSpec, open_candidate: Opener) -> dict[str, float]:
    """{"startup_seconds", "seconds_per_mp"} of `candidate`: opening it and its first run beyond a steady one,
    and the median of MEASURE_RUNS steady runs of one tile, per megapixel."""
    height, width = spec.fixed_size or (_round_up(MEASURE_EDGE, spec.size_multiple),) * 2
    tile = np.random.default_rng(0).random((1, spec.channels, height, width), dtype=np.float32)
    start = time.perf_counter()
    backend = open_candidate(candidate)
    try:
        backend.run(tile)
        first = time.perf_counter() - start
        runs = []
        for _ in range(MEASURE_RUNS):
            run_start = time.perf_counter()
            backend.run(tile)
            runs.append(time.perf_counter() - run_start)
    finally:
        backend.close()
    steady = statistics.median(runs)
    return {"startup_seconds": max(0.0, first - steady), "seconds_per_mp": steady / (height * width) * 1e6}


def cache_dir() -> Path:
    """Where realsr keeps what it measured: $REALSR_CACHE_DIR, else $XDG_CACHE_HOME/realsr, else ~/.cache/realsr."""
    if os.environ.get("REALSR_CACHE_DIR"):
        return Path(os.environ["REALSR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "realsr"


def _cache_key(candidates: list[Candidate]) -> str:
    """This machine's CPU and runtimes, and the candidates' files by content: what the timings depend on."""
    flags = host.cpu_flags()
    facts = {
        "cpu": host.cpu_model(),
        "flags": [flag for flag in _DECIDING_FLAGS if flag in flags],
        "amx_usable": host.amx_usable(),
        "cores": host.cpu_count(),
        "realsr": __version__,
        "runtimes": {name: _version(name) for name in ("onnxruntime", "onnxruntime-gpu", "torch")},
        "candidates": [[c.label, file_sha256(c.path)] for c in candidates],
        "measure": [MEASURE_EDGE, MEASURE_RUNS],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _read_cache() -> dict:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or damaged: measure again
        return {}
    return data if isinstance(data, dict) else {}


def _remember(key: str, entry: dict) -> None:
    """Add `entry` to the cache; a cache that cannot be written only means measuring again next time."""
    entries = _read_cache()
    entries[key] = entry
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        with atomic_write(cache_dir() / CACHE_FILE) as fh:
            fh.write(json.dumps(entries, indent=1).encode())
    except (OSError, RealSRError):
        pass


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
