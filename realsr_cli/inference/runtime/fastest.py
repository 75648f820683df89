"""`--precision auto` on a CPU: which of a model's files and precisions runs it fastest on this machine, measured
once and remembered.

No flag list predicts it: on a CPU with AMX, TorchScript in bf16 runs the bundled model fastest per pixel; on one
with AVX512-BF16 but no AMX, the same bf16 path runs slower than ONNX Runtime in fp32, and the int8 model beats
both (the README's performance section has the figures). And TorchScript's start-up (importing torch, about
two seconds) and its first, unoptimised runs outweigh its speed on a small photo. So every way this model can run
here is timed once, for its start-up, its first runs and its steady seconds per megapixel, and kept in a small
cache keyed by the CPU, the runtimes' versions and the model files' contents; each job then takes the way that
finishes it soonest (`UpscaleConfig.job_pixels`).

The ways a model can run ("candidates", `runtime.cpu_candidates`), all of equal quality (int8 was checked against
fp32 when it was made: `realsr quantize`; bf16 only where the model supports half precision):
- a bundled model: its ONNX file and its int8 copy; under `--backend auto`, with torch installed, its TorchScript
  file in fp32, and in bf16 where the CPU computes bf16 natively;
- a .ts file named with --model: fp32, and bf16 as above (any other named file runs as it is).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
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
# TorchScript re-profiles each new tile shape and takes a few runs to reach its optimised code, so a job's first
# megapixel (a 1 MP photo's tiles) runs at the speed of a first run at a new shape, the rest at the steady speed
COLD_PIXELS = 1_000_000
COST_KEYS = ("startup_seconds", "cold_seconds_per_mp", "seconds_per_mp")
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
        cold = min(job_pixels, COLD_PIXELS)
        return (
            cost["startup_seconds"]
            + cost["cold_seconds_per_mp"] * cold / 1e6
            + cost["seconds_per_mp"] * (job_pixels - cold) / 1e6
        )

    return min((c for c in candidates if c.label in costs), key=job_seconds)


def _measure(candidates: list[Candidate], spec: ModelSpec, open_candidate: Opener) -> dict[str, dict]:
    """{label: {COST_KEYS}} of each candidate that opens and runs (`_time_candidate`). Start-up includes importing
    the backend's library: each candidate of a backend gets the most any of them took, as a fresh process pays the
    import whichever precision runs."""
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
        if isinstance(cost, dict) and set(COST_KEYS) <= cost.keys()
    ]
    return bool(usable)


def _time_candidate(candidate: Candidate, spec: ModelSpec, open_candidate: Opener) -> dict[str, float]:
    """`candidate`'s costs: start-up (opening it, and its first run of one tile beyond its later ones), steady
    seconds per megapixel (the faster of two later runs of that tile) and cold ones (one run of a new, larger tile
    shape, as a photo's first tiles are: TorchScript re-profiles a new shape, and its larger tiles run slower)."""
    if spec.fixed_size is not None:
        shapes = [spec.fixed_size] * 4
    else:
        edge = _round_up(MEASURE_EDGE, spec.size_multiple)
        shapes = [(edge, edge)] * 3 + [(_round_up(edge * 5 // 4, spec.size_multiple), _round_up(edge * 3 // 2, 8))]
    tiles = [np.random.default_rng(0).random((1, spec.channels, h, w), dtype=np.float32) for h, w in shapes]
    start = time.perf_counter()
    backend = open_candidate(candidate)
    try:
        opened = time.perf_counter() - start
        runs = []
        for tile in tiles:
            run_start = time.perf_counter()
            backend.run(tile)
            runs.append((time.perf_counter() - run_start) / (tile.shape[2] * tile.shape[3] / 1e6))
    finally:
        backend.close()
    steady = min(runs[1:3])
    return {
        "startup_seconds": opened + max(0.0, runs[0] - steady) * shapes[0][0] * shapes[0][1] / 1e6,
        "cold_seconds_per_mp": runs[3],
        "seconds_per_mp": steady,
    }


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
        "measure": [MEASURE_EDGE, list(COST_KEYS)],
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
