"""A training run's folder without torch: file names, when a run may start or resume, numbered checkpoint copies
and their pruning, the step log, and the loss chart. Checkpoints here are stand-in bytes: the folder never reads
them."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from PIL import Image

from realsr_cli.config import TrainConfig
from realsr_cli.errors import ConfigError
from realsr_cli.training.plot import plot_losses
from realsr_cli.training.run_folder import RunFolder


def test_training_bookkeeping_imports_no_torch():
    code = (
        "import sys, realsr_cli.training.run_folder, realsr_cli.training.plot; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_file_names(tmp_path):
    run = RunFolder(tmp_path / "run")
    names = [p.name for p in (run.last, run.best, run.model, run.log, run.plot)]
    assert names == ["last.pth", "best.pth", "model.pth", "log.jsonl", "loss.png"]
    assert run.numbered(1234).name == "step_0001234.pth"
    assert sorted([run.numbered(10), run.numbered(9)]) == [run.numbered(9), run.numbered(10)]  # names sort by step


def test_a_run_starts_in_a_folder_without_one_and_resumes_only_one_that_has_it(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.check_start(resume=False)  # not even created yet
    with pytest.raises(ConfigError, match="nothing to resume in .*run: no last.pth there"):
        run.check_start(resume=True)
    run.path.mkdir()
    run.last.write_bytes(b"checkpoint")
    run.check_start(resume=True)
    with pytest.raises(ConfigError, match="already holds a run .*pass --resume"):
        run.check_start(resume=False)


def test_resume_may_change_only_the_mutable_keys(tmp_path):
    run = RunFolder(tmp_path / "run")
    started = TrainConfig(source_hr="hr", target_lr="lr", lr_patch=8)
    run.check_resumable(started.to_dict(), replace(started, iters=started.iters * 2, resume=True))
    changed = replace(started, lr_patch=12, weights=replace(started.weights, cyc=0.5))
    with pytest.raises(ConfigError, match=r"lr_patch: 8 in the run, 12 now; weights\.cyc: 1\.0 in the run, 0\.5 now"):
        run.check_resumable(started.to_dict(), changed)
    # a key added since the run started compares as its default
    old = started.to_dict()
    del old["sty_input"]
    run.check_resumable(old, started)


def test_numbered_copies_keep_the_newest(tmp_path):
    run = RunFolder(tmp_path)
    for step in (2, 4, 6, 8):
        run.last.write_bytes(f"state at {step}".encode())
        assert run.keep_numbered_copy(step, keep=2) == run.numbered(step)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_0000006.pth", "step_0000008.pth"]
    assert run.numbered(8).read_bytes() == b"state at 8"
    run.keep_numbered_copy(10, keep=0)  # 0 keeps every copy
    assert len(list(tmp_path.glob("step_*"))) == 3
    assert not list(tmp_path.glob(".*.tmp")), "a copy left its temporary file"


def test_model_pth_comes_from_best_pth_when_the_run_validated(tmp_path):
    run = RunFolder(tmp_path)
    assert run.release_source() == run.last
    run.best.write_bytes(b"best")
    assert run.release_source() == run.best


def test_log_read_skips_a_line_cut_short_and_trim_keeps_the_restored_steps(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_log() == []
    records = [{"step": 1, "loss_g": 0.5}, {"step": 2, "loss_g": 0.4}, {"step": 2, "val_psnr_y": 25.0}, {"step": 3}]
    run.log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 4, "loss_g"')  # a crash mid-line
    assert run.read_log() == records
    run.trim_log(2)
    assert run.read_log() == records[:3]
    run.trim_log(0)  # a new run starts an empty log
    assert run.log.read_text() == ""


def test_write_config_creates_the_folder(tmp_path):
    run = RunFolder(tmp_path / "new" / "run")
    cfg = TrainConfig(source_hr="hr", baseline=True)
    run.write_config(cfg.to_dict())
    assert json.loads((run.path / "config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))


def test_loss_plot_draws_every_series_atomically(tmp_path):
    history = [{"step": s, "loss_g": 1.0 / s, "lr": 1e-4, "time": 0.1 * s} for s in range(1, 1001)]
    history += [{"step": 500, "val_psnr_y": 24.0}, {"step": 1000, "val_psnr_y": float("nan")}]
    path = plot_losses(history, tmp_path / "loss.png", max_points=50)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (2 * 460 + 40, 2 * 190 + 40)  # 3 series: 2 x 2 panels
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]
