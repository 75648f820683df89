"""The training framework: which parameters each step owns, skipped networks, the CLI end to end, bit-exact resume,
Ctrl-C, config strictness and warm start. Tiny nets and tiny images: every test runs in seconds on a CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from realsr_cli.cli import cli
from realsr_cli.config import DegradationConfig, TrainConfig, load_train_toml
from realsr_cli.errors import ConfigError, ModelError
from realsr_cli.training import losses
from realsr_cli.training.checkpoint import load_checkpoint
from realsr_cli.training.nets import DISCRIMINATOR_ROLES, GENERATOR_ROLES
from realsr_cli.training.trainer import Trainer, TrainEvent, active_roles


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The trainer sets torch's thread count for the whole process; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _image(rng, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 3 + y / 7), np.cos(y / 4), np.sin((x - y) / 5)], axis=-1) * 90 + 128
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    """Tiny source HR, target LR and validation folders."""
    rng = np.random.default_rng(7)
    paths = {name: tmp_path / name for name in ("source", "target", "val_lr", "val_hr")}
    for path in paths.values():
        path.mkdir()
    for i in range(3):
        Image.fromarray(_image(rng, 40 + 4 * i, 48)).save(paths["source"] / f"s{i}.png")
        Image.fromarray(_image(rng, 12, 14 + i)).save(paths["target"] / f"t{i}.png")
    for i in range(2):
        hr = _image(rng, 48, 40)
        Image.fromarray(hr).save(paths["val_hr"] / f"v{i}.png")
        Image.fromarray(hr).resize((10, 12), Image.BICUBIC).save(paths["val_lr"] / f"v{i}.png")
    return paths


@pytest.fixture
def make_cfg(tmp_path, folders, tiny_arch):
    """A full-method config on the tiny arch (alpha = 0: no VGG), with overrides."""

    def make(out: str = "run", **overrides) -> TrainConfig:
        weights = overrides.pop("weights", {})
        arch = {**asdict(tiny_arch), **overrides.pop("arch_overrides", {})}
        fields = {"lr_patch": 8, "batch_size": 2, "iters": 4, "threads": 1, "workers": 1, "checkpoint_every": 2}
        cfg = TrainConfig(
            source_hr=str(folders["source"]),
            target_lr=str(folders["target"]),
            out=str(tmp_path / out),
            arch_overrides=arch,
            **{**fields, **overrides},
        )
        return replace(cfg, weights=replace(cfg.weights, **{"alpha": 0.0, **weights}))

    return make


def _states(nets: dict) -> dict[str, dict[str, torch.Tensor]]:
    return {role: {k: v.detach().clone() for k, v in net.state_dict().items()} for role, net in nets.items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_step_changes_only_the_parameters_it_owns(make_cfg):
    # vgg discriminators: BatchNorm running statistics must not move in the generator step either
    trainer = Trainer(make_cfg(arch_overrides={"disc": "vgg"}, weights={"beta": 0.01}))
    trainer.setup()
    assert set(trainer.nets) == set(GENERATOR_ROLES) | set(DISCRIMINATOR_ROLES)
    x = trainer.inputs(trainer.data.batch(0))

    before = _states(trainer.nets)
    _, fakes = trainer.generator_step(x)
    after_g = _states(trainer.nets)
    for role in GENERATOR_ROLES:
        assert not _same(before[role], after_g[role]), f"generator step left {role} unchanged"
    for role in DISCRIMINATOR_ROLES:
        assert _same(before[role], after_g[role]), f"generator step changed {role} (parameters or BatchNorm stats)"
        assert all(p.grad is None for p in trainer.nets[role].parameters()), f"generator step left grads in {role}"

    trainer.discriminator_step(x, fakes)
    after_d = _states(trainer.nets)
    for role in GENERATOR_ROLES:
        assert _same(after_g[role], after_d[role]), f"discriminator step changed {role}"
    for role in DISCRIMINATOR_ROLES:
        assert not _same(after_g[role], after_d[role]), f"discriminator step left {role} unchanged"
        running = [k for k in after_d[role] if k.endswith("running_mean")]
        assert running and not all(torch.equal(after_g[role][k], after_d[role][k]) for k in running)


def test_zero_weights_drop_their_networks():
    from realsr_cli.config import LossWeights

    full = LossWeights()
    assert active_roles(full) == (*GENERATOR_ROLES, *DISCRIMINATOR_ROLES)
    assert "hr_disc" not in active_roles(replace(full, beta=0))
    assert "feature_disc" not in active_roles(replace(full, align=0))
    assert "lr_disc" not in active_roles(replace(full, sty=0))
    assert "lr_decoder" not in active_roles(replace(full, res=0, sty=0, idt=0, cyc=0))
    assert active_roles(TrainConfig(baseline=True).effective_weights) == ("encoder", "sr_decoder")


def test_baseline_trains_only_encoder_and_sr_decoder_without_target_data(make_cfg):
    cfg = replace(make_cfg(baseline=True), target_lr=None)
    trainer = Trainer(cfg)
    trainer.fit()
    ckpt = load_checkpoint(Path(cfg.out) / "last.pth")
    assert set(ckpt.states) == {"encoder", "sr_decoder"}
    assert set(ckpt.optimizers) == {"encoder", "sr_decoder"}
    records = [json.loads(line) for line in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert set(records[0]) == {"step", "loss_g", "l_rec", "lr", "time"}


def test_target_data_required_unless_baseline(make_cfg):
    with pytest.raises(ConfigError, match="target_lr .* required unless baseline"):
        Trainer(replace(make_cfg(), target_lr=None))


def test_cli_end_to_end_checkpoint_loads_and_upscales(tmp_path, folders, tiny_arch):
    toml = tmp_path / "run.toml"
    arch = "\n".join(f"{k} = {json.dumps(v)}" for k, v in asdict(tiny_arch).items())
    toml.write_text(
        f"lr_patch = 8\nbatch_size = 2\nthreads = 1\niters = 100\n[weights]\nalpha = 0.0\n[arch_overrides]\n{arch}\n"
    )
    out = tmp_path / "run"
    args = [
        "train",
        "--source-hr",
        str(folders["source"]),
        "--target-lr",
        str(folders["target"]),
        "--val-lr",
        str(folders["val_lr"]),
        "--val-hr",
        str(folders["val_hr"]),
        "--out",
        str(out),
        "--config",
        str(toml),
        "--iters",
        "3",
        "--checkpoint-every",
        "2",
        "--val-every",
        "2",
        "--log-every",
        "1",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("last.pth")
    assert "step 2: loss_g" in result.output and "it/s" in result.output and "val PSNR-Y" in result.output

    ckpt = load_checkpoint(out / "last.pth")
    assert ckpt.step == 3
    assert set(ckpt.states) == set(GENERATOR_ROLES) | set(DISCRIMINATOR_ROLES)
    assert ckpt.config["iters"] == 3 and ckpt.config["lr_patch"] == 8  # the option overrides the TOML's 100
    assert ckpt.provenance["source_hr"] == str(folders["source"].resolve()) and ckpt.provenance["wall_time_s"] > 0
    net = ckpt.generator()
    with torch.no_grad():
        sr = net(torch.rand(1, 3, 9, 11))
    assert sr.shape == (1, 3, 36, 44) and torch.isfinite(sr).all()

    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_g" in r]
    vals = [r for r in records if "val_psnr_y" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and [r["step"] for r in vals] == [2, 3]
    for term in ("l_rec", "l_align", "l_res", "l_sty", "l_idt", "l_cyc", "d_align", "d_sty", "d_adv", "loss_d"):
        assert all(np.isfinite(r[term]) for r in steps), term
    assert {"step_0000002.pth", "step_0000003.pth", "best.pth", "loss.png", "config.json"} <= {
        p.name for p in out.iterdir()
    }
    with Image.open(out / "loss.png") as plot:
        assert plot.format == "PNG" and plot.width > 400
    best = load_checkpoint(out / "best.pth")
    assert best.provenance["best_val_psnr_y"] == max(r["val_psnr_y"] for r in vals)

    # the run's result: best.pth's generators and config, no optimizer or discriminator state
    model = load_checkpoint(out / "model.pth")
    assert set(model.states) == set(GENERATOR_ROLES) and model.optimizers == {}
    for role in GENERATOR_ROLES:
        assert _same(model.states[role], best.states[role]), role
    assert model.provenance["released_from"]["sha256"] == best.sha256

    # ... and it exports and upscales through the installed console script
    realsr = Path(sys.executable).with_name("realsr")
    exported = subprocess.run(
        [str(realsr), "export", str(out / "model.pth"), "-o", str(tmp_path / "exp")], capture_output=True, text=True
    )
    assert exported.returncode == 0, exported.stderr
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / "in.png")
    upscaled = subprocess.run(
        [
            str(realsr),
            "upscale",
            str(tmp_path / "in.png"),
            "--model",
            str(tmp_path / "exp" / "model.onnx"),
            "-o",
            str(tmp_path / "up"),
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert upscaled.returncode == 0, upscaled.stderr
    with Image.open(tmp_path / "up" / "in_x4.png") as sr_image:
        assert sr_image.size == (120, 80)


def _run(cfg: TrainConfig, reporter=None) -> Trainer:
    trainer = Trainer(cfg, reporter)
    trainer.fit()
    return trainer


def _assert_bit_identical(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.step == cb.step
    assert ca.states.keys() == cb.states.keys()
    for role in ca.states:
        assert _same(ca.states[role], cb.states[role]), f"{role} differs"
    for role in ca.optimizers:
        sa, sb = ca.optimizers[role]["state"], cb.optimizers[role]["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            assert _same(sa[i], sb[i]), f"{role} optimizer state {i} differs"


def test_resume_continues_bit_exactly_through_the_cli(make_cfg, tmp_path):
    straight = _run(make_cfg("straight"))
    _run(make_cfg("split", iters=2))
    with (tmp_path / "split" / "log.jsonl").open("a") as log:  # a step logged after the checkpoint, then a crash
        log.write('{"step": 3, "loss_g": 123.0}\n{"step": 4, "loss_g"')
    # resume with no other option: the run's own config comes from its last.pth; only --iters changes
    result = CliRunner().invoke(
        cli, ["train", "--out", str(tmp_path / "split"), "--resume", "--iters", "4"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    _assert_bit_identical(Path(straight.cfg.out) / "last.pth", tmp_path / "split" / "last.pth")
    records = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and records[2]["loss_g"] != 123.0


def test_resume_warns_when_the_data_changed(make_cfg, folders):
    cfg = make_cfg("changed", iters=1)
    _run(cfg)
    Image.fromarray(_image(np.random.default_rng(1), 40, 40)).save(folders["source"] / "new.png")
    events = []
    _run(replace(cfg, resume=True, iters=2), events.append)
    assert any(e.kind == "warning" and "data folders changed" in e.message for e in events)


def test_ctrl_c_saves_whole_steps_and_resume_matches(make_cfg):
    straight = _run(make_cfg("straight"))

    def interrupt_at_2(event: TrainEvent) -> None:
        if event.kind == "step" and event.step == 2:
            raise KeyboardInterrupt

    cfg = make_cfg("interrupted")
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, interrupt_at_2)
    assert load_checkpoint(Path(cfg.out) / "last.pth").step == 2
    _run(replace(cfg, resume=True))
    _assert_bit_identical(Path(straight.cfg.out) / "last.pth", Path(cfg.out) / "last.pth")


def test_real_sigint_stops_at_the_next_step_boundary(make_cfg):
    def press_ctrl_c(event: TrainEvent) -> None:
        if event.kind == "step" and event.step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # handled: training finishes the step, saves, re-raises

    cfg = make_cfg("sigint", iters=3)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, press_ctrl_c)
    assert load_checkpoint(Path(cfg.out) / "last.pth").step == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cli_exits_130_after_saving_on_ctrl_c(tmp_path, folders, tiny_arch, monkeypatch):
    from realsr_cli.training import trainer as train_module

    real_step = train_module.Trainer.train_step

    def step_then_ctrl_c(self, batch):
        if self.step == 1:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(train_module.Trainer, "train_step", step_then_ctrl_c)
    toml = tmp_path / "run.toml"
    arch = "\n".join(f"{k} = {json.dumps(v)}" for k, v in asdict(tiny_arch).items())
    toml.write_text(f"lr_patch = 8\nbatch_size = 2\nthreads = 1\nbaseline = true\n[arch_overrides]\n{arch}\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["train", "--source-hr", str(folders["source"]), "--out", str(out), "--config", str(toml)]
    )
    assert result.exit_code == 130, result.output
    assert load_checkpoint(out / "last.pth").step == 1


def test_resume_errors(make_cfg):
    with pytest.raises(ConfigError, match="nothing to resume"):
        Trainer(make_cfg("empty", resume=True)).fit()
    cfg = make_cfg("done", iters=1)
    _run(cfg)
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(cfg).fit()
    with pytest.raises(ConfigError, match=r"lr_patch: 8 in the run, 12 now; weights\.cyc: 1\.0 in the run, 0\.5 now"):
        Trainer(replace(cfg, resume=True, lr_patch=12, weights=replace(cfg.weights, cyc=0.5))).fit()


def test_a_run_from_before_a_config_key_existed_resumes_with_its_default(make_cfg):
    cfg = make_cfg("old", iters=2)
    _run(cfg)
    last = Path(cfg.out) / "last.pth"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["config"]["sty_input"], ckpt["config"]["weights"]["grid"]  # as an earlier version wrote it
    torch.save(ckpt, last)
    trainer = _run(replace(cfg, resume=True, iters=3))
    assert trainer.step == 3


def test_grid_term_and_highpass_style_input(make_cfg, monkeypatch):
    trainer = Trainer(make_cfg(sty_input="highpass", weights={"beta": 0.0, "grid": 0.5}))
    trainer.setup()
    seen = []
    disc = trainer.nets["lr_disc"]
    monkeypatch.setattr(disc, "forward", lambda x: seen.append(x.detach()) or x.mean(dim=(1, 2, 3)))
    x = trainer.inputs(trainer.data.batch(0))
    terms, fakes = trainer.generator_step(x)
    trainer.discriminator_step(x, fakes)
    assert "l_grid" in terms and terms["l_grid"] > 0
    real = seen[-1]  # D_t's view of x_t in the discriminator step
    torch.testing.assert_close(real, losses.highpass(x["target_lr"]))
    assert real.mean().abs() < 0.05 * x["target_lr"].mean()  # no colour left, only detail
    with pytest.raises(ConfigError, match="sty_input must be one of 'image', 'highpass', got 'lowpass'"):
        make_cfg(sty_input="lowpass")


def test_toml_unknown_keys_and_wrong_types_are_config_errors(tmp_path, folders):
    bad = tmp_path / "bad.toml"
    base = [
        "train",
        "--source-hr",
        str(folders["source"]),
        "--baseline",
        "--out",
        str(tmp_path / "r"),
        "--config",
        str(bad),
    ]
    bad.write_text("iterz = 5\n")
    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 2 and "unknown key iterz" in result.output and "valid keys: source_hr" in result.output
    bad.write_text("[weights]\nalhpa = 0.0\n")
    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 2 and "weights: unknown key alhpa" in result.output and "alpha" in result.output
    bad.write_text('iters = "many"\n')
    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 2 and "iters must be an integer" in result.output
    bad.write_text("iters = [\n")
    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 2 and "not valid TOML" in result.output
    bad.write_text("[arch_overrides]\nchanels = 8\n")
    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 2 and "arch_overrides: unknown key chanels" in result.output


def test_toml_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "run.toml"
    path.write_text('source_hr = "../data/hr"\nout = "runs/a"\n')
    data = load_train_toml(path)
    assert data["source_hr"] == str((tmp_path / "data" / "hr").resolve())
    assert data["out"] == str((tmp_path / "cfg" / "runs" / "a").resolve())


def test_cli_requires_target_lr_unless_baseline(tmp_path, folders):
    result = CliRunner().invoke(cli, ["train", "--source-hr", str(folders["source"]), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--target-lr" in result.output


def test_alpha_0_never_touches_vgg_and_alpha_stops_at_start_up_offline(make_cfg, monkeypatch, tmp_path):
    import urllib.error

    from realsr_cli.training import vgg

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    # alpha > 0: stops before reading any data (the source folder does not even exist)
    cfg = replace(make_cfg("vgg", weights={"alpha": 0.01}), source_hr=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="set alpha = 0"):
        Trainer(cfg).fit()
    assert not (tmp_path / "vgg").exists()

    def forbidden(*args, **kwargs):
        raise AssertionError("VGG loaded although alpha = 0")

    monkeypatch.setattr(vgg, "load_vgg19_features", forbidden)
    trainer = _run(make_cfg("novgg", iters=1))
    assert trainer.vgg is None and trainer.step == 1


def test_alpha_trains_with_a_frozen_vgg(make_cfg, monkeypatch, tmp_path):
    from realsr_cli.training.vgg import VGG19Features, vgg19_cache_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    path = vgg19_cache_path()
    path.parent.mkdir(parents=True)
    fake = VGG19Features()
    for conv in fake.features:
        if isinstance(conv, torch.nn.Conv2d):  # He init keeps conv5_4's activations at a readable scale
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    torch.save(fake.state_dict(), path)  # random weights in torchvision's layout
    trainer = Trainer(make_cfg("alpha", iters=1, weights={"alpha": 1.0, "beta": 0.0}))
    trainer.setup()
    vgg_before = {k: v.clone() for k, v in trainer.vgg.state_dict().items()}
    x = trainer.inputs(trainer.data.batch(0))
    terms, fakes = trainer.generator_step(x)
    assert _same(vgg_before, trainer.vgg.state_dict())
    assert all(p.grad is None for p in trainer.vgg.parameters())
    pixel = (x["source_hr"] - fakes["sr"]).abs().mean().item()  # L_rec without its L_fea term
    assert terms["l_rec"].item() > pixel + 1e-3


def test_init_from_warm_starts_the_generators(make_cfg):
    base = _run(make_cfg("base", baseline=True, iters=2))
    source = load_checkpoint(Path(base.cfg.out) / "last.pth")
    trainer = Trainer(make_cfg("warm", init_from=str(source.path)))
    trainer.setup()
    for role in ("encoder", "sr_decoder"):
        assert _same(source.states[role], {k: v.cpu() for k, v in trainer.nets[role].state_dict().items()})
    assert trainer.step == 0 and trainer.init_info["roles"] == ["encoder", "sr_decoder"]
    with pytest.raises(ModelError, match="channels"):
        Trainer(make_cfg("warm2", init_from=str(source.path), arch_overrides={"channels": 16})).setup()
    # the discriminators are not warm-started, so their width may change
    narrow = Trainer(make_cfg("warm3", init_from=str(source.path), arch_overrides={"hr_disc_channels": 4}))
    narrow.setup()
    assert _same(source.states["encoder"], {k: v.cpu() for k, v in narrow.nets["encoder"].state_dict().items()})


def test_learning_rate_halves_at_milestones(make_cfg):
    from realsr_cli.config import OptimConfig

    cfg = make_cfg("sched", baseline=True, optim=OptimConfig(lr=1e-3, milestones=(2, 3)))
    trainer = _run(cfg)
    records = [json.loads(line) for line in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == [1e-3, 1e-3, 5e-4, 2.5e-4]
    assert trainer.optimizers["encoder"].param_groups[0]["lr"] == 2.5e-4


def test_resume_needs_out():
    result = CliRunner().invoke(cli, ["train", "--resume"])
    assert result.exit_code == 2 and "--resume needs --out" in result.output


def test_unet_d_hr_with_feature_matching_and_degraded_source(make_cfg):
    cfg = make_cfg(
        arch_overrides={"hr_disc_type": "unet"},
        weights={"beta": 0.1, "fm": 1.0},
        degradation=DegradationConfig(enabled=True, clean=0.0),
    )
    trainer = Trainer(cfg)
    trainer.setup()
    assert type(trainer.nets["hr_disc"]).__name__ == "UNetDiscriminator"
    x = trainer.inputs(trainer.data.batch(0))
    sr = trainer.nets["sr_decoder"](trainer.nets["encoder"](x["source_lr"]))
    scores, features = trainer.nets["hr_disc"].features(sr)
    assert scores.shape == (2, 1, 32, 32) and len(features) == 8  # one score per HR pixel
    with torch.no_grad():
        plain = losses.l_rec(x["source_hr"], sr).item()
        matching = losses.l_fm(features, trainer.nets["hr_disc"].features(x["source_hr"])[1]).item()
    assert matching > 0
    terms, fakes = trainer.generator_step(x)
    assert terms["l_rec"].item() > plain  # the adversarial and feature-matching terms are in L_rec
    assert "d_adv" in trainer.discriminator_step(x, fakes)


def test_colour_term_is_logged_and_weighted_into_the_generator_loss(make_cfg):
    trainer = Trainer(make_cfg(weights={"colour": 2.0}))
    trainer.setup()
    x = trainer.inputs(trainer.data.batch(0))
    with torch.no_grad():
        terms, _ = trainer._generator_terms(x)
    assert terms["l_colour"].item() > 0
    with_colour = losses.generator_objective(terms, trainer.weights).item()
    without = losses.generator_objective({k: v for k, v in terms.items() if k != "l_colour"}, trainer.weights)
    assert with_colour == pytest.approx(without.item() + 2.0 * terms["l_colour"].item(), rel=1e-5)


def test_feature_matching_needs_a_d_hr_with_features(make_cfg):
    with pytest.raises(ConfigError, match="feature matching"):
        Trainer(make_cfg(arch_overrides={"disc": "vgg"}, weights={"fm": 1.0}))


def test_ema_follows_the_generators_and_ships_in_model_pth(make_cfg):
    cfg = make_cfg("ema", ema=0.5, iters=2)
    trainer = Trainer(cfg)
    trainer.setup()
    start = _states(trainer.nets)["sr_decoder"]
    trainer.train_step(trainer.data.batch(0))
    raw, average = trainer.nets["sr_decoder"].state_dict(), trainer.ema["sr_decoder"].state_dict()
    for key in start:  # decay 0.5: after one step the average lies halfway between start and now
        torch.testing.assert_close(average[key], (start[key] + raw[key]) / 2)
    trainer.fit()
    last = load_checkpoint(Path(cfg.out) / "last.pth")
    assert set(last.ema_states) == {"encoder", "sr_decoder", "lr_decoder"}
    released = load_checkpoint(Path(cfg.out) / "model.pth")
    assert not released.ema_states
    for key, value in released.states["sr_decoder"].items():  # model.pth ships the average, not the raw weights
        assert torch.equal(value, last.ema_states["sr_decoder"][key])
    assert any(not torch.equal(v, last.states["sr_decoder"][k]) for k, v in released.states["sr_decoder"].items())
    resumed = _run(replace(cfg, resume=True, iters=3))
    assert resumed.step == 3
