"""The driver of `realsr upscale --ray`, on the machine where the command runs: it reads the journals, sizes the
work, starts the workers through Ray Data and turns what they finish into the `UpscaleResult`s a local run yields,
journaling each written output as it arrives.

ray is imported when a job starts (`require_ray`), never at module level. No torch here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from realsr_cli import __version__
from realsr_cli._files import first_line
from realsr_cli.cluster.journal import Journal, job_key
from realsr_cli.cluster.plan import WorkerPlan, output_folder, plan_units, plan_workers, read_tasks
from realsr_cli.cluster.worker import Collected, Ledger, ShippedModel, UpscaleWorker, WorkerModel, WorkerSetup
from realsr_cli.config import ClusterConfig, UpscaleConfig
from realsr_cli.errors import INTERRUPT_SIGNALS, BackendError, RealSRError
from realsr_cli.inference.inputs import InputItem
from realsr_cli.inference.pipeline import BatchOptions, UpscaleResult
from realsr_cli.inference.runtime.onnx import onnx_sibling

# ray is an extra: without it `--ray` stops with one line naming what to install
RAY_INSTALL = "pip install 'realsr-cli[ray]'"
# units queued on a worker besides the one it runs: its next unit is at hand when one ends, and a worker that dies
# holds up little work while Ray restarts it
QUEUED_UNITS = 1
# seconds to wait, while stopping, for what workers finished last, so that it is journaled and not redone
LAST_COLLECT_S = 10.0


def require_ray():
    """The ray module, with Ray Data, imported now; a one-line BackendError naming the extra when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401  (the Ray Data extra: pyarrow, pandas)
    except ImportError as err:
        raise BackendError(f"realsr upscale --ray needs Ray Data: {RAY_INSTALL}") from err
    return ray


class RayJob:
    """`realsr upscale` on a Ray cluster: `items` upscaled as a local run with `config` and `options` would, to the
    same paths, names and formats, by workers on the cluster (each one opened Upscaler: one GPU where the cluster
    has GPUs, else a few cores; `plan`).

    Creating it reads the journals beside the outputs (inputs whose outputs an earlier run of the same settings
    finished are done), reads the other inputs' headers to size the work by pixels, and connects to the cluster
    `cluster` names, or starts a local Ray. `results()` then yields one UpscaleResult per input: those finished
    earlier first (status "skipped"), then the others as they finish, in no fixed order, each written output
    journaled before it is yielded. Use as a context manager: closing journals what workers finished last, stops
    the work and disconnects (stopping a local Ray the job started). Worker notices and the model each worker runs
    go to `notice` and `on_model`, once each.

    Raises ConfigError (a device the cluster cannot offer), BackendError (ray missing, no cluster, a job Ray could
    not run) and, from `results()`, the error of a worker that could not start (another realsr version, the
    driver's folder missing on its node, a model it cannot open).
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        config: UpscaleConfig,
        items: Sequence[InputItem],
        options: BatchOptions,
        *,
        notice: Callable[[str], None] = lambda message: None,
        on_model: Callable[[WorkerModel], None] = lambda model: None,
    ) -> None:
        self._ray = require_ray()
        self._config = config
        self._options = options
        self._notice = notice
        self._on_model = on_model
        self._owns_ray = False
        self._quiet = contextlib.ExitStack()  # Ray set up quietly from connecting to closing (`_quiet_ray`)
        self._ledger = None
        self._rows: Iterator | None = None
        self._model: ShippedModel | None = None
        model_files = _model_files(config)
        self._journal = Journal(job_key(config, options.fmt, options.encoding, _model_identity(config, model_files)))
        self.earlier: list[UpscaleResult] = []  # finished by an earlier run, as the journals say
        todo = []
        for index, item in enumerate(items):
            output = None if item.error else self._journal.finished(item.path, output_folder(item, options.out_dir))
            if output is None:
                todo.append(index)
            else:
                self.earlier.append(UpscaleResult(item.path, "skipped", dst=output))
        self._tasks = read_tasks(items, todo)
        self.plan: WorkerPlan | None = None  # None: nothing left to do, and no cluster was needed
        self.where = ""  # "a local Ray ..." or "the Ray cluster at ..."
        if not self._tasks:
            return
        self._owns_ray, self.where = _connect(self._ray, cluster.address)
        try:
            self._quiet.enter_context(_quiet_ray(self._ray))
            nodes = [node["Resources"] for node in self._ray.nodes() if node["Alive"]]
            self.plan = plan_workers(nodes, config.device, cluster.workers)
            self._model = None if model_files is None else self._ship(model_files)
        except BaseException:
            self.close()
            raise

    @property
    def pixels(self) -> int:
        """Input pixels left to upscale."""
        return sum(task.pixels for task in self._tasks)

    def results(self) -> Iterator[UpscaleResult]:
        """One UpscaleResult per input (see the class docstring); raises a worker's start-up error, or a
        BackendError when Ray fails the job."""
        yield from self.earlier
        if not self._tasks:
            return
        ray = self._ray
        units = plan_units(self._tasks, self._options.out_dir, self.plan.count)
        # the ledger lives beside the driver: it goes when the job goes
        here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=True
        )
        self._ledger = ray.remote(num_cpus=0)(Ledger).options(scheduling_strategy=here).remote()
        setup = WorkerSetup(
            self._config, self._options, self._model, os.getcwd(), __version__, self.plan.cpus, self._ledger
        )
        count = min(self.plan.count, len(units))
        pool = ray.data.ActorPoolStrategy(
            min_size=max(1, min(count, self.plan.fits)),
            max_size=count,
            max_tasks_in_flight_per_actor=1 + QUEUED_UNITS,
        )
        rows = [{"unit": pickle.dumps(unit)} for unit in units]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            UpscaleWorker,
            batch_size=1,
            compute=pool,
            num_cpus=self.plan.cpus,
            num_gpus=self.plan.gpus or None,
            fn_constructor_kwargs={"setup": setup},
        )
        try:
            self._rows = iter(dataset.iter_rows())
            for _ in self._rows:  # one row per finished image: its result is in the ledger
                yield from self._collect(ray.get(self._ledger.collect.remote()))
            yield from self._collect(ray.get(self._ledger.collect.remote()))
        except RealSRError:
            raise
        except Exception as err:  # Ray's own failures: a lost cluster, an actor Ray could not place
            raise BackendError(f"the Ray job stopped: {first_line(err)}") from err

    def close(self) -> None:
        """Journal what workers finished since the last results, stop the work and disconnect (stopping a local
        Ray the job started). Safe to call twice."""
        ray = self._ray
        if self._rows is not None:
            with contextlib.suppress(Exception):
                self._rows.close()  # stops the dataset's execution and its workers
            self._rows = None
        if self._ledger is not None:
            # the cluster may be gone: what is not journaled now is merely redone by the next run
            with contextlib.suppress(Exception):
                self._record(ray.get(self._ledger.collect.remote(), timeout=LAST_COLLECT_S))
            with contextlib.suppress(Exception):
                ray.kill(self._ledger)
            self._ledger = None
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
        self._quiet.close()

    def __enter__(self) -> RayJob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _collect(self, collected: Collected) -> Iterator[UpscaleResult]:
        for notice in collected.notices:
            self._notice(notice)
        for model in collected.models:
            self._on_model(model)
        if collected.failure is not None:
            raise collected.failure
        self._record(collected)
        for finished in collected.finished:
            yield finished.result

    def _record(self, collected: Collected) -> None:
        for finished in collected.finished:
            if finished.sha256:  # a written output, read back whole by its worker
                self._journal.record(finished.result.src, finished.result.dst, finished.size, finished.sha256)

    def _ship(self, files: dict[Path, str]) -> ShippedModel:
        """The model files put in Ray's object store, once: every worker of a node then reads one copy."""
        refs = {path.name: (self._ray.put(path.read_bytes()), sha256) for path, sha256 in files.items()}
        return ShippedModel(refs, next(iter(files)).name)


def _model_files(config: UpscaleConfig) -> dict[Path, str] | None:
    """The model files workers need from this disk, each with its SHA-256: the model file (first) and, for an ONNX
    model, the siblings its backend or `--precision auto` may switch to (`<stem>.onnx`, `<stem>.fp16.onnx`,
    `<stem>.int8.onnx`). None for a bundled model's name, which every node's realsr resolves itself (the same way
    as a local run there)."""
    if config.model is None or not Path(config.model).is_file():
        return None
    path = Path(config.model)
    paths = [path]
    if path.suffix == ".onnx":
        siblings = (onnx_sibling(path, precision) for precision in ("fp32", "fp16", "int8"))
        paths += [sibling for sibling in siblings if sibling != path and sibling.is_file()]
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _model_identity(config: UpscaleConfig, files: dict[Path, str] | None) -> str:
    """Which model made an output, for the journal: its files' SHA-256, or a bundled model's name and realsr's
    version (the release that ships it)."""
    if files is None:
        return f"bundled {config.model or 'default'} of realsr {__version__}"
    return " ".join(files.values())


def _connect(ray, address: str | None) -> tuple[bool, str]:
    """Connect this process to the cluster at `address` (None: RAY_ADDRESS, else a local Ray started now), unless
    it is connected already (a Python caller's own ray.init). Returns (whether this job started the connection,
    where it runs). Raises BackendError when the cluster cannot be reached or started."""
    if ray.is_initialized():
        return False, "the Ray cluster this process is connected to"
    address = address or os.environ.get("RAY_ADDRESS")
    local = address in (None, "local")
    where = "a local Ray started for the run" if local else f"the Ray cluster at {address}"
    try:
        with _environ("RAY_BACKEND_LOG_LEVEL", "fatal"), _stderr_silenced(), _signal_handlers_kept():
            ray.init(
                address=address,
                logging_level=logging.ERROR,
                log_to_driver=False,  # workers print nothing the user needs: results and notices come as data
                **({"include_dashboard": False} if local else {}),
            )
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise BackendError(f"cannot {'start' if local else 'reach'} {where}: {first_line(err)}") from err
    return True, where


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """`name` set to `value` in the block, unless the user set it. For RAY_BACKEND_LOG_LEVEL around ray.init: Ray's
    C++ core prints warnings to stderr that mean nothing to a realsr user (that an actor's arguments live in the
    object store); a local Ray started then keeps the level for its own log files (RAY_BACKEND_LOG_LEVEL=info
    brings them back)."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """The handlers of INTERRUPT_SIGNALS as they were before the block, set again after it. ray.init installs a
    SIGTERM handler of Ray's core that ends the process at once (exit status 15); realsr's must stay, so that SIGTERM
    and SIGHUP stop a Ray run as Ctrl-C does: what finished journaled, the workers stopped, exit 130. Python sets
    handlers only from its main thread; elsewhere there are none of realsr's to keep."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in INTERRUPT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:  # None: a handler not set from Python, which Python cannot set back
                signal.signal(sig, handler)


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 sent to the null device in the block: Ray's C++ core announces the log level it was given
    there, itself a log line, while ray.init starts; its failures reach us as exceptions."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextmanager
def _quiet_ray(ray) -> Iterator[None]:
    """Ray and Ray Data set up for a job, and back as they were after: no progress bars or log lines of Ray Data's
    own on stderr (its log file keeps them), no worker-death reports on stdout (which must hold only --json lines),
    and every finished image's row sent at once, not held until its unit's block fills."""
    import ray.data

    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.target_max_block_size
    context.enable_progress_bars = False
    context.target_max_block_size = 1
    consoles = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    levels = [h.level for h in consoles]
    for handler in consoles:
        handler.setLevel(logging.CRITICAL + 1)
    # Ray prints "(raylet) A worker died ..." to stdout from a thread of its own; this private switch is its only off
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    logs_enabled = getattr(worker, "_worker_logs_enabled", None)
    if logs_enabled is not None:
        worker._worker_logs_enabled = False
    try:
        yield
    finally:
        context.enable_progress_bars, context.target_max_block_size = saved
        for handler, level in zip(consoles, levels, strict=True):
            handler.setLevel(level)
        if logs_enabled is not None:
            worker._worker_logs_enabled = logs_enabled
