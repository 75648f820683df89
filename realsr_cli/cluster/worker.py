"""What runs on the Ray cluster for `realsr upscale --ray`.

`UpscaleWorker` is the Ray Data actor: it opens one `Upscaler` and runs each unit of work through
`Upscaler.upscale_batch`, the pipeline of a local run (decoding, inference and encoding overlap; outputs written
atomically to the paths a local run would choose). `Ledger` is the job's record, one small actor beside the
driver: which images workers began and how often, which they finished, and their results until the driver
collects them. When a worker dies, Ray restarts it and retries its unit; the ledger lets the retry skip what was
finished and take the rest one image at a time, so that an image that kills its worker every time is reported
failed after MAX_ATTEMPTS instead of being retried forever.

ray is imported inside the methods: the driver imports this module before it knows ray is installed. No torch here.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from realsr_cli import __version__, host
from realsr_cli._files import atomic_write, file_sha256
from realsr_cli.cluster.plan import Task
from realsr_cli.config import UpscaleConfig
from realsr_cli.errors import BackendError, InputError, RealSRError
from realsr_cli.inference.pipeline import BatchOptions, UpscaleResult
from realsr_cli.inference.upscaler import Upscaler

# times a worker may start an image; a worker that died on it this often (a crash in a decoder, or memory its node
# cannot give) has its image reported failed
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Finished:
    """One image's outcome, as its worker reports it: the result, and for a written output its size and SHA-256 (read
    back from the file; the driver journals an output only with them)."""

    index: int  # the image's place in the job's input list
    result: UpscaleResult
    size: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class WorkerModel:
    """What a worker runs, for the driver's report: the file loaded, its native scale and architecture, and the
    backend, device and precision it runs in there."""

    name: str
    scale: int
    architecture: str
    backend: str
    device: str
    precision: str


@dataclass(frozen=True)
class ShippedModel:
    """A model file from the driver's disk, put once in Ray's object store, with its fp32, fp16 and int8 ONNX
    siblings where it has them (the backend or `--precision` may switch to one). Each worker copies the files into
    its node's temporary folder, once per node, and opens them there."""

    files: dict[str, tuple[Any, str]]  # file name -> (ObjectRef of its bytes, SHA-256)
    name: str  # of the file to open


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker of a job is started with."""

    config: UpscaleConfig
    options: BatchOptions  # how outputs are named and encoded (no callbacks: they would run on the worker)
    model: ShippedModel | None  # None: a bundled model, which every node's realsr has
    cwd: str  # the driver's working folder: relative inputs and outputs mean the same files on every node
    version: str  # the driver's realsr
    cpus: int  # the cores Ray gives each worker
    ledger: Any  # the job's Ledger actor


@dataclass
class Collected:
    """What the ledger gathered since the driver last asked."""

    finished: list[Finished] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    models: list[WorkerModel] = field(default_factory=list)
    failure: RealSRError | None = None  # a worker that could not start: the job cannot go on


class Ledger:
    """The job's record on the cluster (see the module docstring). Every call is quick; Ray runs them one at a
    time, so nothing here needs a lock."""

    def __init__(self) -> None:
        self._attempts: dict[int, int] = {}
        self._finished: set[int] = set()
        self._told: set[str | WorkerModel] = set()
        self._new = Collected()

    def attempts(self, indices: list[int]) -> dict[int, int]:
        """How often each unfinished image of `indices` was begun (finished ones are left out)."""
        return {i: self._attempts.get(i, 0) for i in indices if i not in self._finished}

    def begin(self, indices: list[int]) -> dict[int, int]:
        """Count one more attempt at each of `indices`; returns the attempt numbers."""
        for i in indices:
            self._attempts[i] = self._attempts.get(i, 0) + 1
        return {i: self._attempts[i] for i in indices}

    def finish(self, finished: Finished) -> None:
        if finished.index not in self._finished:  # a retried unit may finish an image twice: report it once
            self._finished.add(finished.index)
            self._new.finished.append(finished)

    def tell(self, news: str | WorkerModel) -> None:
        """A notice or a worker's model, passed on to the driver once however many workers tell it."""
        if news not in self._told:
            self._told.add(news)
            (self._new.models if isinstance(news, WorkerModel) else self._new.notices).append(news)

    def fail(self, err: RealSRError) -> None:
        if self._new.failure is None:
            self._new.failure = err

    def collect(self) -> Collected:
        new, self._new = self._new, Collected()
        return new


class UpscaleWorker:
    """The Ray Data actor: one opened Upscaler, fed one unit (a pickled list of `Task`s) per call; yields one row
    per finished image, after the ledger has its result, so the driver collects results as they come."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.ledger = setup.ledger
        self.options = setup.options
        self.upscaler: Upscaler | None = None
        self.failure: RealSRError | None = None
        notices: list[str] = []
        try:
            self.upscaler = _open(setup, notices.append)
        except RealSRError as err:
            self.failure = type(err)(f"Ray worker on {_node()}: {err}")
        except Exception as err:  # a bug must stop the job with its reason, not restart this actor forever
            self.failure = RealSRError(f"Ray worker on {_node()}: unexpected error ({type(err).__name__}: {err})")
        if self.upscaler is not None:
            up = self.upscaler
            model = WorkerModel(
                up.model_path.name, up.native_scale, up.spec.architecture, up.backend_name, up.device, up.precision
            )
            _call(self.ledger.tell, model)
            for notice in notices:
                _call(self.ledger.tell, notice)

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, list[int]]]:
        if self.failure is not None:
            _call(self.ledger.fail, self.failure)
            return
        unit: list[Task] = pickle.loads(batch["unit"][0])
        pending = _call(self.ledger.attempts, [task.index for task in unit])
        tasks = [task for task in unit if task.index in pending]
        if all(pending[task.index] == 0 for task in tasks):
            _call(self.ledger.begin, [task.index for task in tasks])
            yield from self._upscale(tasks)
            return
        # a worker died during this unit: the rest runs one image at a time, so that another death names its image
        for task in tasks:
            attempt = _call(self.ledger.begin, [task.index])[task.index]
            if attempt <= MAX_ATTEMPTS:
                yield from self._upscale([task])
                continue
            error = (
                f"{task.item.path}: its Ray worker died during each of {MAX_ATTEMPTS} attempts at it (a crash, or its "
                "node out of memory); not written"
            )
            result = UpscaleResult(task.item.path, "failed", error=error, exit_code=RealSRError.exit_code)
            yield self._report(Finished(task.index, result))

    def _upscale(self, tasks: list[Task]) -> Iterator[dict[str, list[int]]]:
        """Run `tasks` through the local pipeline; each result goes to the ledger the moment it is final (from the
        encode thread, so a death while the next image is inferred costs only that image), then a row is yielded."""
        waiting = iter(tasks)

        def on_result(result: UpscaleResult) -> None:
            finished = Finished(next(waiting).index, result)
            if result.ok:
                try:
                    finished = replace(finished, size=result.dst.stat().st_size, sha256=file_sha256(result.dst))
                except OSError:  # gone already (someone else's doing): reported, not journaled, redone next time
                    pass
            _call(self.ledger.finish, finished)

        results = self.upscaler.upscale_batch([task.item for task in tasks], replace(self.options, on_result=on_result))
        for task, _ in zip(tasks, results, strict=True):
            yield {"index": [task.index]}

    def _report(self, finished: Finished) -> dict[str, list[int]]:
        _call(self.ledger.finish, finished)
        return {"index": [finished.index]}


def _open(setup: WorkerSetup, notice: Callable[[str], None]) -> Upscaler:
    """The worker's Upscaler, opened as the driver's settings say, in the driver's working folder, with thread
    pools sized to the worker's cores. Raises BackendError for another realsr version than the driver's, InputError
    when the driver's working folder is missing here, and whatever opening the model raises."""
    if setup.version != __version__:
        raise BackendError(
            f"runs realsr {__version__}, the driver {setup.version}: install the same version on every node"
        )
    try:
        os.chdir(setup.cwd)  # this process is the actor's own: nothing else here depends on its working folder
    except OSError as err:
        raise InputError(
            f"{setup.cwd}: the driver's working folder is not here ({err.strerror}); inputs and outputs must be on "
            "storage every node mounts at the same path"
        ) from err
    host.use_cpus(setup.cpus)
    config = setup.config
    if setup.model is not None:
        config = replace(config, model=str(_local_copy(setup.model)))
    return Upscaler.from_config(config, notice=notice)


def _local_copy(model: ShippedModel) -> Path:
    """The shipped model's files in this node's temporary folder, written once per node (a file already there with
    the right SHA-256 is kept); returns the path of the one to open."""
    import ray

    folder = Path(tempfile.gettempdir()) / "realsr-models" / model.files[model.name][1][:16]
    folder.mkdir(parents=True, exist_ok=True)
    for name, (ref, sha256) in model.files.items():
        path = folder / name
        if not (path.is_file() and file_sha256(path) == sha256):
            with atomic_write(path) as fh:  # workers of one node may write it at once: each rename is whole
                fh.write(ray.get(ref))
    return folder / model.name


def _call(method, *args):
    """Call a Ledger method and wait for its answer."""
    import ray

    return ray.get(method.remote(*args))


def _node() -> str:
    import ray

    return ray.util.get_node_ip_address()
