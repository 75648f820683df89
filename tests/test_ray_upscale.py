"""`realsr upscale --ray` (issue 14): the same job on a Ray cluster, resumable from its journal, with nothing lost.

The cluster tests share one local Ray of 2 CPUs for the module (the `cluster` fixture; skipped, saying why, where
Ray cannot start). Faults are injected into its workers through Ray's worker setup hook (`install_faults`, which
every worker of that cluster imports from this module): a worker that dies whenever it decodes a given file, a
slow worker, and a log of each decode and encode, so a test can tell what was redone. They run the
bundled model's ONNX file, copied as a user's model file (so the job ships it to the workers), in fp32 on tiny
photos. The planning, journal and option tests need no cluster.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from realsr_cli.cli import cli
from realsr_cli.cluster.journal import JOURNAL_NAME, Journal, job_key, read_journal
from realsr_cli.cluster.plan import UNIT_PIXELS, WORKER_CPUS, Task, plan_units, plan_workers
from realsr_cli.cluster.worker import MAX_ATTEMPTS
from realsr_cli.config import EncodeConfig, UpscaleConfig
from realsr_cli.errors import EXIT_INTERRUPTED, EXIT_SOME_FAILED, BackendError, ConfigError
from realsr_cli.inference.inputs import InputItem

ROOT = Path(__file__).resolve().parents[1]
REALSR = Path(sys.executable).with_name("realsr")  # the console script
FAULTS = "REALSR_TEST_FAULTS"  # the JSON file `install_faults` reads at every decode: what to do to which file
NAMES = ["a.png", "b.png", "c.png", "d.jpg", "e.png", "sub/f.png", "sub/g.jpg", "sub/h.png"]


# ---- the faults the workers of the module's cluster run with


def install_faults() -> None:
    """Ray's worker setup hook for the module's cluster: Upscaler.decode and Upscaler.encode of this worker process
    log each file, and decode sleeps, or kills the process as a crash or the OOM killer would, as the faults file
    says."""
    if FAULTS not in os.environ:
        return
    from realsr_cli.inference.upscaler import Upscaler

    decode, encode = Upscaler.decode, Upscaler.encode

    def faulty_decode(self, path):
        faults = json.loads(Path(os.environ[FAULTS]).read_text())
        name = Path(path).name
        _log(faults, f"decode {name}")
        time.sleep(faults.get("slow", 0))
        if name in faults.get("die", ()):
            os._exit(1)
        return decode(self, path)

    def logged_encode(self, upscaled, dst, fmt, encoding):
        warnings = encode(self, upscaled, dst, fmt, encoding)
        _log(json.loads(Path(os.environ[FAULTS]).read_text()), f"encode {Path(dst).name}")
        return warnings

    Upscaler.decode, Upscaler.encode = faulty_decode, logged_encode


def _log(faults: dict, line: str) -> None:
    with open(faults["log"], "a") as fh:
        fh.write(line + "\n")


@dataclass
class Cluster:
    address: str
    runtime_env: dict
    faults: Path

    def set_faults(self, **faults) -> Path:
        """Give the workers these faults from now on, with a fresh log; returns the log's path."""
        for old in self.faults.parent.glob("*"):
            if old != self.faults:
                old.unlink()
        log = self.faults.with_name("log.txt")
        log.touch()
        self.faults.write_text(json.dumps({"log": str(log), **faults}))
        return log


def logged(log: Path, what: str) -> collections.Counter:
    """How often each file was decoded or encoded ("decode", "encode") by the workers."""
    return collections.Counter(line.split(" ", 1)[1] for line in log.read_text().splitlines() if line.startswith(what))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray = pytest.importorskip("ray", reason="the ray extra (realsr-cli[ray]) is not installed")
    faults = tmp_path_factory.mktemp("faults") / "faults.json"
    faults.write_text(json.dumps({"log": str(faults.with_name("log.txt"))}))
    # the workers import this module for the hook: put its folder on their path
    env = {FAULTS: str(faults), "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    runtime_env = {"worker_process_setup_hook": f"{__name__}.install_faults", "env_vars": env}
    try:
        ray.init(
            num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False, runtime_env=runtime_env
        )
    except Exception as err:  # no shared memory in a sandbox, no free port, ...
        pytest.skip(f"a local Ray cannot start here: {err}")
    yield Cluster(ray.get_runtime_context().gcs_address, runtime_env, faults)
    ray.shutdown()


# ---- inputs, the model, and the local run every Ray run is compared with


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder tree of tiny photos in the kinds a photo library holds (RGB, RGBA, gray and 16-bit PNG, JPEG), and
    one bad file."""
    folder = tmp_path_factory.mktemp("in") / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(14)
    modes = {"b.png": "RGBA", "e.png": "L", "sub/h.png": "I;16"}
    for i, name in enumerate(NAMES):
        pixels = (rng.random((24 + i, 32 + 2 * i, 4)) * 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGBA").convert(modes.get(name, "RGB").replace("I;16", "L"))
        if modes.get(name) == "I;16":
            image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
        image.save(folder / name, **({"quality": 90} if name.endswith(".jpg") else {}))
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature and nothing behind it
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The bundled model's ONNX files as a user's model file and its fp16 sibling (both shipped to the workers)."""
    folder = tmp_path_factory.mktemp("models")
    for name, copy in (("realsr-compact-x4.onnx", "net.onnx"), ("realsr-compact-x4.fp16.onnx", "net.fp16.onnx")):
        (folder / copy).write_bytes((ROOT / "export" / name).read_bytes())
    return folder / "net.onnx"


def invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def options(model: Path) -> list:
    return ["--model", model, "--backend", "onnx", "--precision", "fp32"]


@dataclass
class Run:
    out: Path
    result: object


@pytest.fixture(scope="module")
def local(tmp_path_factory, photos, model) -> Run:
    out = tmp_path_factory.mktemp("local") / "big"
    return Run(out, invoke("upscale", photos, "-r", "-o", out, *options(model), "--json"))


def outputs(folder: Path) -> dict[str, bytes]:
    """The visible files under `folder` (outputs; not the journal or a hidden temporary file) and their bytes."""
    files = (p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def records(run: Run) -> list[dict]:
    """The --json lines of `run`, outputs relative to its output folder, without the timings (the work's own
    seconds differ run to run)."""
    lines = [json.loads(line) for line in run.result.stdout.splitlines()]
    for line in lines:
        line["output"] = line["output"] and os.path.relpath(line["output"], run.out)
    return sorted(({k: v for k, v in r.items() if k not in ("seconds", "timings")} for r in lines), key=str)


def failure_lines(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if line.startswith("failed:"))


# ---- on the cluster


@pytest.fixture(scope="module")
def ray_run(cluster, photos, model, tmp_path_factory) -> Run:
    cluster.set_faults()
    out = tmp_path_factory.mktemp("ray") / "big"
    return Run(out, invoke("upscale", photos, "-r", "-o", out, *options(model), "--json", "--ray"))


def test_a_ray_run_writes_what_a_local_run_writes(photos, local, ray_run):
    assert local.result.exit_code == ray_run.result.exit_code == EXIT_SOME_FAILED, ray_run.result.output
    assert len(outputs(local.out)) == len(NAMES)
    assert outputs(ray_run.out) == outputs(local.out)  # the same names, formats and bytes
    # every line of stdout is a record, the same records as locally; the bad file is named, the rest written
    assert records(ray_run) == records(local)
    stderr = ray_run.result.stderr
    assert failure_lines(stderr) == failure_lines(local.result.stderr)
    assert f"{photos / 'bad.png'}: " in failure_lines(stderr)[0]
    assert f"upscaled {len(NAMES)}, skipped 0, failed 1 in " in stderr
    # the journal beside the outputs lists each of them with its size and checksum
    out = ray_run.out
    journaled = {(folder / e.output): e for folder in (out, out / "sub") for e in read_journal(folder).values()}
    assert len(journaled) == len(NAMES)
    for path, entry in journaled.items():
        assert entry.size == path.stat().st_size
        assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rerun_redoes_only_what_is_missing(cluster, photos, model, local, ray_run, tmp_path):
    out = tmp_path / "big"
    shutil.copytree(ray_run.out, out)
    (out / "c_x4.png").unlink()  # lost
    (out / "sub" / "f_x4.png").write_bytes(b"cut short")  # damaged since: not the size the journal recorded
    log = cluster.set_faults()
    again = invoke("upscale", photos, "-r", "-o", out, *options(model), "--ray")
    assert again.exit_code == EXIT_SOME_FAILED, again.output
    assert set(logged(log, "encode")) == {"c_x4.png", "f_x4.png"}
    assert f"upscaled 2, skipped {len(NAMES) - 2}, failed 1 in " in again.stderr
    assert outputs(out) == outputs(local.out)


@pytest.mark.slow
def test_a_worker_killed_mid_job_costs_its_image_not_the_job(cluster, photos, model, local, tmp_path):
    # e.png kills its worker whenever it is decoded: Ray restarts the worker and retries its unit each time, until
    # e.png has had its attempts and is reported failed
    log = cluster.set_faults(die=["e.png"])
    out = tmp_path / "big"
    result = invoke("upscale", photos, "-r", "-o", out, *options(model), "--ray")
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    expected = {name: data for name, data in outputs(local.out).items() if name != "e_x4.png"}
    assert outputs(out) == expected  # nothing missing, nothing corrupt
    failed = failure_lines(result.stderr)
    assert len(failed) == 2
    assert f"{photos / 'e.png'}: its Ray worker died during each of {MAX_ATTEMPTS} attempts" in failed[1]
    assert 1 <= logged(log, "decode")["e.png"] <= MAX_ATTEMPTS
    # an image whose result its worker had passed on is not redone: at most the one or two still in its pipeline
    encodes = logged(log, "encode")
    assert set(encodes) == {Path(name).name for name in expected}
    assert max(encodes.values()) <= 2 and sum(encodes.values()) <= len(expected) + 2


@pytest.mark.slow
def test_an_interrupted_driver_leaves_whole_files_and_a_rerun_completes_them(cluster, photos, model, local, tmp_path):
    out = tmp_path / "big"
    cluster.set_faults(slow=0.7)
    # `realsr` run as a user runs it, on the module's cluster (with its runtime env, as `ray job submit` passes one),
    # stopped by SIGTERM (which realsr takes as Ctrl-C, and which Ray's own handler would turn into a hard exit) once
    # some outputs are journaled
    env = {**os.environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": cluster.runtime_env})}
    driver = subprocess.Popen(
        [REALSR, "upscale", photos, "-r", "-o", out, *options(model), "--ray", cluster.address],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = out / JOURNAL_NAME
    deadline = time.monotonic() + 120
    while not (journal.exists() and len(journal.read_text().splitlines()) >= 2) and time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.1)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == EXIT_INTERRUPTED, stderr
    assert stderr.endswith("interrupted\n")
    done = {e.output for e in read_journal(out).values()}
    assert len(done) >= 2
    written, expected = outputs(out), outputs(local.out)
    assert written and all(data == expected[name] for name, data in written.items())  # whole, or not there
    # the rerun completes the set and leaves the journaled outputs alone
    log = cluster.set_faults()
    again = invoke("upscale", photos, "-r", "-o", out, *options(model), "--ray")
    assert again.exit_code == EXIT_SOME_FAILED, again.output
    assert outputs(out) == outputs(local.out)
    assert not done & set(logged(log, "encode"))


# ---- without a cluster


def test_ray_without_the_extra_is_one_line_naming_it(tmp_path):
    without_ray = (
        "import sys; sys.modules['ray'] = None; sys.argv[0] = 'realsr'; from realsr_cli.cli import main; main()"
    )
    Image.new("RGB", (8, 6)).save(tmp_path / "photo.png")
    done = subprocess.run(
        [sys.executable, "-c", without_ray, "upscale", "photo.png", "--ray"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == BackendError.exit_code, done.stderr
    assert done.stderr.strip() == "error: realsr upscale --ray needs Ray Data: pip install 'realsr-cli[ray]'"
    assert not list(tmp_path.glob("photo_x4*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray", "photos/"], "--ray photos/: not a Ray cluster address"),
        (["--workers", "2"], "--workers counts the workers of a Ray run: add --ray"),
    ],
)
def test_ray_options_are_checked_first(tmp_path, args, message):
    Image.new("RGB", (8, 6)).save(tmp_path / "photo.png")
    result = invoke("upscale", tmp_path / "photo.png", *args)
    assert result.exit_code == ConfigError.exit_code
    assert message in result.stderr


def task(index: int, name: str, pixels: int, root: str | None = None) -> Task:
    return Task(index, InputItem(Path(name), None if root is None else Path(root)), pixels)


def test_work_is_planned_by_pixels_largest_first():
    big = [task(0, "in/big.jpg", 48_000_000)]
    phones = [task(i, f"in/phone{i}.jpg", 12_000_000) for i in range(1, 9)]
    thumbs = [task(i, f"in/thumb{i}.jpg", 300_000) for i in range(9, 169)]
    units = plan_units(big + phones + thumbs, "out", workers=1)
    assert [sum(t.pixels for t in unit) <= UNIT_PIXELS for unit in units] == [True] * len(units)
    assert [t.index for t in units[0]] == [0]  # the 48 MP photo is a unit of its own, and goes first
    assert [len(unit) for unit in units[1:3]] == [4, 4]  # four 12 MP photos a unit
    assert sum(len(unit) for unit in units[3:]) == 160 and len(units[3]) == 160  # thumbnails by the hundred
    assert all([t.index for t in unit] == sorted(t.index for t in unit) for unit in units)  # input order inside
    # a small job is cut into several units per worker, so the workers finish together
    assert len(plan_units(phones, "out", workers=2)) == 8


def test_inputs_whose_outputs_may_collide_share_a_unit():
    # photo.jpg and photo.png both become photo_x4.png with --format png; z_x4.png is z.png's output beside it
    tasks = [
        task(0, "in/photo.jpg", 10),
        task(1, "in/other.jpg", 10),
        task(2, "in/photo.png", 10),
        task(3, "in/z.png", 10),
        task(4, "in/z_x4.png", 10),
    ]
    units = plan_units(tasks, None, workers=5)
    together = {frozenset(t.index for t in unit) for unit in units}
    assert {frozenset({0, 2}), frozenset({3, 4}), frozenset({1})} == together


def test_workers_are_one_per_gpu_or_a_few_cores():
    cpu_nodes = [{"CPU": 16.0}, {"CPU": 2.0}]
    assert plan_workers(cpu_nodes, "auto", None) == plan_workers(cpu_nodes, "cpu", None)
    plan = plan_workers(cpu_nodes, "auto", None)
    assert (plan.count, plan.cpus, plan.gpus) == (9, WORKER_CPUS, 0)  # 16 cores hold eight workers of 2, 2 cores one
    assert plan_workers([{"CPU": 1.0}], "auto", None).cpus == 1
    gpu_nodes = [{"CPU": 32.0, "GPU": 4.0}, {"CPU": 8.0}]
    plan = plan_workers(gpu_nodes, "auto", None)
    assert (plan.count, plan.cpus, plan.gpus) == (4, WORKER_CPUS, 1)  # one a GPU, each with cores of its node
    assert plan_workers(gpu_nodes, "cpu", None).gpus == 0
    assert plan_workers(gpu_nodes, "auto", 10).count == 10  # asked for: an autoscaler may add the nodes
    with pytest.raises(ConfigError, match="has no GPUs"):
        plan_workers(cpu_nodes, "cuda", None)
    with pytest.raises(ConfigError, match="only the one GPU Ray gives it"):
        plan_workers(gpu_nodes, "cuda:1", None)


def test_journal_counts_whole_outputs_of_the_same_settings(tmp_path):
    src = tmp_path / "a.png"
    src.touch()
    output = tmp_path / "a_x4.png"
    output.write_bytes(b"12345")
    Journal("job1").record(src, output, 5, "sha")
    with open(tmp_path / JOURNAL_NAME, "a") as fh:
        fh.write('{"input": "cut short by a cr')  # a crash in the middle of a line
    assert Journal("job1").finished(src, tmp_path) == output
    assert Journal("job2").finished(src, tmp_path) is None  # other settings
    output.write_bytes(b"123")  # not the recorded size
    assert Journal("job1").finished(src, tmp_path) is None


def test_a_job_is_its_settings_and_model():
    config, encoding = UpscaleConfig(backend="onnx"), EncodeConfig()
    key = job_key(config, "same", encoding, "model sha")
    assert key == job_key(UpscaleConfig(backend="onnx"), "same", EncodeConfig(), "model sha")
    assert key == job_key(UpscaleConfig(backend="onnx", model="elsewhere/net.onnx"), "same", encoding, "model sha")
    assert key == job_key(UpscaleConfig(backend="onnx", job_pixels=10**8), "same", encoding, "model sha")  # work
    others = [
        job_key(config, "same", encoding, "another model sha"),
        job_key(config, "png", encoding, "model sha"),
        job_key(config, "same", EncodeConfig(png_compression=1), "model sha"),
        job_key(UpscaleConfig(backend="onnx", scale=2), "same", encoding, "model sha"),
    ]
    assert key not in others and len(set(others)) == len(others)
