"""Hostile writes: full disks (a write that stops after N bytes, the kernel's RLIMIT_FSIZE, and a real tmpfs when
one can be mounted), failed syncs, signals mid-write and writers killed outright. Whatever happens, no partial file
lies under a final name, no temporary file survives, and the user gets a one-line error with its exit code."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from realsr_cli._files import append_whole, atomic_write
from realsr_cli.cli import cli, interrupt_on_signals
from realsr_cli.config import ExportConfig
from realsr_cli.errors import InputError
from realsr_cli.photo.write import write_image

DISK_FULL = "cannot write (No space left on device): the disk may be full"
# the CLI in a child process, the way the console script runs it (and with its signal handlers)
CLI = [sys.executable, "-c", "import sys; from realsr_cli.cli import main; sys.argv[0] = 'realsr'; main()"]


def _listing(folder: Path) -> list[str]:
    """Every file below `folder`, hidden temporary files included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _assert_one_line_error(stderr: str) -> str:
    """The one line of `stderr` that reports the full disk, after checking there is no traceback."""
    assert "Traceback" not in stderr, stderr
    (line,) = [line for line in stderr.splitlines() if DISK_FULL in line]
    return line


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk(room)`: from now on, only `room` more bytes fit, as on a real disk: the write that crosses the
    limit is cut short, the next one fails with ENOSPC."""

    def fill(room: int) -> None:
        real_write = os.write
        left = [room]

        def write(fd: int, data) -> int:
            if fd <= 2:  # the test's own terminal output
                return real_write(fd, data)
            if left[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written = real_write(fd, bytes(memoryview(data).cast("B")[: left[0]]))
            left[0] -= written
            return written

        monkeypatch.setattr(os, "write", write)

    return fill


def _file_size_limit(limit: int):
    """A preexec_fn: the child may write files of at most `limit` bytes, as on a nearly full disk. The kernel cuts
    the write that crosses the limit short and fails the next with EFBIG (SIGXFSZ ignored)."""
    resource = pytest.importorskip("resource")

    def limit_child() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_child


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(kib)`: a real tmpfs of that size, unmounted afterwards; skips where it cannot be mounted."""
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command: the kernel's full-disk behaviour is covered by the RLIMIT_FSIZE tests")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if proc.returncode:
            reason = proc.stderr.strip() or f"exit {proc.returncode}"
            pytest.skip(f"cannot mount a tmpfs ({reason}; needs root): RLIMIT_FSIZE tests cover the kernel's side")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def photo(tmp_path, odd_image) -> Path:
    path = tmp_path / "in" / "photo.jpg"
    path.parent.mkdir()
    Image.fromarray((odd_image * 255).round().astype(np.uint8)).save(path, quality=95)
    return path


# ---- item 1: every writer detects a short or failed write


ENCODINGS = {
    "jpeg": ("JPEG", np.uint8),
    "png": ("PNG", np.uint8),
    "webp": ("WEBP", np.uint8),
    "tiff": ("TIFF", np.uint8),
    "png16": ("PNG", np.uint16),
    "tiff16": ("TIFF", np.uint16),
}


@pytest.mark.parametrize("kind", ENCODINGS)
def test_a_full_disk_fails_every_encoder_and_keeps_the_old_file(tmp_path, full_disk, kind, rng):
    fmt, dtype = ENCODINGS[kind]
    pixels = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8).astype(dtype) * (257 if dtype == np.uint16 else 1)
    out = tmp_path / f"out.{kind}"
    out.write_bytes(b"previous result")
    full_disk(500)  # far less than any of these files
    with pytest.raises(InputError) as caught:
        write_image(out, pixels, fmt=fmt)
    assert str(caught.value) == f"{out}: {DISK_FULL}"
    assert _listing(tmp_path) == [out.name]
    assert out.read_bytes() == b"previous result"


def test_a_write_that_writes_nothing_is_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(InputError, match="cut short.*the disk may be full"), atomic_write(tmp_path / "x") as fh:
        fh.write(b"data")
    assert _listing(tmp_path) == []


def test_the_file_is_synced_before_the_rename_and_a_failed_sync_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    with atomic_write(tmp_path / "x") as fh:
        fh.write(b"data")
    assert calls == ["fsync", "replace"]
    assert (tmp_path / "x").read_bytes() == b"data"

    def failing_sync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", failing_sync)
    with (
        pytest.raises(InputError, match=r"y: cannot write \(Input/output error\)$"),
        atomic_write(tmp_path / "y") as fh,
    ):
        fh.write(b"data")
    assert _listing(tmp_path) == ["x"]


def test_an_append_is_whole_or_not_at_all(tmp_path, full_disk):
    log = tmp_path / "log.jsonl"
    append_whole(log, b'{"step": 1}\n')
    full_disk(5)
    with pytest.raises(InputError, match=re.escape(f"{log}: {DISK_FULL}")):
        append_whole(log, b'{"step": 2}\n')
    assert log.read_bytes() == b'{"step": 1}\n'  # cut back: no half line


def test_a_nearly_full_disk_fails_the_upscale_instead_of_keeping_a_cut_jpeg(tmp_path, tiny_exports, photo):
    out = tmp_path / "out"
    args = ["upscale", str(photo), "--model", str(tiny_exports["onnx"]), "-o", str(out), "--json"]
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, preexec_fn=_file_size_limit(1024))
    assert proc.returncode == 3, proc.stderr
    (line,) = proc.stdout.splitlines()
    result = json.loads(line)
    assert result["status"] == "failed"
    assert f"{out / 'photo_x4.jpg'}: cannot write (File too large): the disk may be full" in result["error"]
    assert _listing(out) == []
    # the same run with room to spare writes the whole JPEG, larger than the limit: the limit did cut it
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "photo_x4.jpg").stat().st_size > 1024


def test_a_nearly_full_tmpfs_fails_the_upscale_instead_of_keeping_a_cut_jpeg(photo, small_disk):
    disk = small_disk(64)
    stat = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 8192))  # 8 KiB left
    # the bundled model: its JPEG of this photo (16 KB) leaves Pillow's encoder in one write, which the kernel cuts
    proc = subprocess.run([*CLI, "upscale", str(photo), "-o", str(disk / "out")], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    _assert_one_line_error(proc.stderr)
    assert _listing(disk) == ["filler"]


# ---- item 3: realsr export on a full disk


@pytest.mark.parametrize("formats", [("onnx",), ("torchscript",), ("onnx", "torchscript")])
def test_export_to_a_full_disk_is_an_input_error_and_leaves_nothing(tiny_checkpoint, tmp_path, full_disk, formats):
    from realsr_cli.training.export import export_model

    out = tmp_path / "out"
    out.mkdir()
    full_disk(2000)
    with pytest.raises(InputError, match=rf"^{out}/tiny_checkpoint\.(onnx|ts): {re.escape(DISK_FULL)}$"):
        export_model(tiny_checkpoint, out, ExportConfig(formats=formats), stem="tiny_checkpoint")
    assert _listing(out) == []


def test_torchscript_export_past_a_file_size_limit_exits_3_not_134(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    args = ["export", str(tiny_checkpoint), "-o", str(out), "--format", "torchscript"]
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, preexec_fn=_file_size_limit(4096))
    assert proc.returncode == 3, proc.stderr  # torch.jit.save to a file aborted the process: 134
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {out / tiny_checkpoint.stem}.ts: cannot write (File too large)")
    assert _listing(out) == []


def test_export_to_a_full_tmpfs_leaves_nothing(tiny_checkpoint, small_disk):
    disk = small_disk(64)
    proc = subprocess.run([*CLI, "export", str(tiny_checkpoint), "-o", str(disk)], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    _assert_one_line_error(proc.stderr)
    assert _listing(disk) == []


# ---- item 4: realsr train on a full disk


@pytest.fixture
def train_args(tmp_path, tiny_arch) -> list[str]:
    """`realsr train` arguments for a 4-step baseline run of the tiny net; the test adds the run folder."""
    source = tmp_path / "source"
    source.mkdir()
    rng = np.random.default_rng(7)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(source / f"s{i}.png")
    toml = tmp_path / "run.toml"
    arch = "\n".join(f"{k} = {json.dumps(v)}" for k, v in asdict(tiny_arch).items())
    toml.write_text(f"lr_patch = 8\nbatch_size = 2\nthreads = 1\nworkers = 1\n[arch_overrides]\n{arch}\n")
    return ["train", "--source-hr", str(source), "--baseline", "--config", str(toml), "--iters", "4"]


def _assert_run_consistent(run: Path, checkpoint_step: int) -> None:
    """config.json and every log line parse, last.pth is the last good checkpoint, and no temporary file is left."""
    from realsr_cli.training.checkpoint import load_checkpoint

    assert json.loads((run / "config.json").read_text())["iters"] == 4
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps[:checkpoint_step] == list(range(1, checkpoint_step + 1))
    assert load_checkpoint(run / "last.pth").step == checkpoint_step
    assert not [name for name in _listing(run) if name.startswith(".")]


@pytest.mark.parametrize("room", [0, 1500], ids=["log-fails", "checkpoint-fails"])
def test_train_on_a_full_disk_is_one_line_and_keeps_the_run(train_args, tmp_path, full_disk, monkeypatch, room):
    from realsr_cli.training.trainer import Trainer

    real_checkpoint = Trainer._checkpoint

    def checkpoint_then_fill_the_disk(self):
        real_checkpoint(self)
        full_disk(room)

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_fill_the_disk)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, [*train_args, "--checkpoint-every", "2", "--out", str(run)])
    assert result.exit_code == 3, result.output
    assert _assert_one_line_error(result.stderr).startswith(f"error: {run}/")
    _assert_run_consistent(run, checkpoint_step=2)
    monkeypatch.undo()  # room again: the run resumes from its last good checkpoint
    result = CliRunner().invoke(cli, ["train", "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output


def test_train_on_a_full_tmpfs_is_one_line_and_keeps_the_run(train_args, tmp_path, small_disk):
    probe = tmp_path / "probe"  # what a run holds after its first checkpoint, to size the disk for that alone
    assert subprocess.run([*CLI, *train_args, "--iters", "2", "--out", str(probe)], capture_output=True).returncode == 0
    pages = sum(-(-p.stat().st_size // 4096) for p in probe.iterdir() if p.name != "model.pth")  # tmpfs counts pages
    half_a_checkpoint = (probe / "last.pth").stat().st_size // 8192  # in pages: the next checkpoint cannot fit
    disk = small_disk(4 * (pages + half_a_checkpoint + 1))
    run = disk / "run"
    proc = subprocess.run(
        [*CLI, *train_args, "--checkpoint-every", "2", "--out", str(run)], capture_output=True, text=True
    )
    assert proc.returncode == 3, proc.stderr
    _assert_one_line_error(proc.stderr)
    _assert_run_consistent(run, checkpoint_step=2)


# ---- item 5: SIGTERM and SIGHUP are Ctrl-C; killed writers' temporary files are removed later


def _slow_rename_cli(*args: str) -> list[str]:
    """The CLI in a child whose renames announce themselves on stderr and wait 3 s first: a signal sent then lands
    while a finished temporary file waits for its rename."""
    code = (
        "import os, sys, time\n"
        "real = os.replace\n"
        "def slow(a, b):\n"
        "    print('renaming', file=sys.stderr, flush=True); time.sleep(3); real(a, b)\n"
        "os.replace = slow\n"
        "from realsr_cli.cli import main\n"
        "sys.argv[0] = 'realsr'\n"
        "main()\n"
    )
    return [sys.executable, "-c", code, *args]


def _signal_at_rename(command: list[str], sig: int) -> subprocess.Popen:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("renaming"):
            proc.send_signal(sig)
            break
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_term_and_hup_mid_write_exit_like_ctrl_c_and_leave_no_temporary_file(tiny_checkpoint, tmp_path, sig):
    out = tmp_path / "out"
    proc = _signal_at_rename(_slow_rename_cli("export", str(tiny_checkpoint), "-o", str(out)), sig)
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, stderr
    assert "interrupted" in stderr
    assert _listing(out) == []


def test_a_killed_writers_temporary_file_is_removed_by_the_next_run(tmp_path, tiny_exports, photo):
    out = tmp_path / "out"
    proc = _signal_at_rename(
        _slow_rename_cli("upscale", str(photo), "--model", str(tiny_exports["onnx"]), "-o", str(out)), signal.SIGKILL
    )
    proc.wait(timeout=60)
    (left,) = _listing(out)  # SIGKILL cannot be caught: the temporary file stays
    assert left.startswith(".photo_x4.jpg.") and left.endswith(".tmp")
    old = time.time() - 3600
    os.utime(out / left, (old, old))
    proc = subprocess.run([*CLI, "upscale", str(photo), "--model", str(tiny_exports["onnx"]), "-o", str(out), "-q"])
    assert proc.returncode == 0
    assert _listing(out) == ["photo_x4.jpg"]


def test_only_stale_temporary_files_of_dead_writers_are_removed(tmp_path, rng):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    names = {
        f".a.png.{dead_pid}-0123abcd.tmp": False,  # stale: removed
        f".b.png.{os.getpid()}-0123abcd.tmp": True,  # a live writer (this process)
        f".c.png.{dead_pid}-4567cdef.tmp": True,  # touched just now: maybe a writer on another machine
        ".d.png.0123456789ab.tmp": True,  # not the pattern (an older realsr's name, its writer unknown)
        ".e.tmp": True,
        "notes.txt": True,
    }
    old = time.time() - 3600
    for name in names:
        (tmp_path / name).write_bytes(b"x")
        if not name.startswith(".c."):
            os.utime(tmp_path / name, (old, old))
    write_image(tmp_path / "o.png", rng.integers(0, 256, (23, 31, 3), dtype=np.uint8))
    assert _listing(tmp_path) == sorted([*(n for n, kept in names.items() if kept), "o.png"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_training_stops_at_the_next_step_on_term_and_hup(train_args, tmp_path, sig):
    from realsr_cli.training.checkpoint import load_checkpoint
    from realsr_cli.training.trainer import Trainer

    original = signal.getsignal(sig)
    real_step = Trainer.train_step

    def step_then_signal(self, batch):
        record = real_step(self, batch)
        if self.step == 1:
            os.kill(os.getpid(), sig)  # deferred: the step finishes, the run saves it and stops
        return record

    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "train_step", step_then_signal)
        result = CliRunner().invoke(cli, [*train_args, "--out", str(run)])
    assert result.exit_code == 130, result.output
    assert load_checkpoint(run / "last.pth").step == 1
    assert signal.getsignal(sig) is original


def test_term_raises_keyboard_interrupt_and_signals_ignored_at_start_stay_ignored():
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        interrupt_on_signals()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
