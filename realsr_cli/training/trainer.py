"""`Trainer(cfg).fit()`: the method's alternating generator and discriminator steps (docs/method.md), the learning-rate
schedule, per-step logging, validation, checkpoints, warm start and bit-exact resume.

The run folder's layout and bookkeeping live in `run_folder`, the checkpoint file in `checkpoint`, the loss chart
in `plot`. The CLI owns the console: this module reports through a `reporter(TrainEvent)` callback and never prints.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from realsr_cli import __version__
from realsr_cli._strict import dataclass_from_dict
from realsr_cli.config import LossWeights, TrainConfig, config_differences
from realsr_cli.errors import INTERRUPT_SIGNALS, ConfigError, InputError, ModelError
from realsr_cli.host import cpu_count
from realsr_cli.quality.datasets import load_val_pairs
from realsr_cli.training.checkpoint import Checkpoint, load_checkpoint, release_checkpoint, save_checkpoint
from realsr_cli.training.data import Batch, TrainingData
from realsr_cli.training.device import amp_name, pick_amp, pick_device
from realsr_cli.training.losses import (
    generator_objective,
    highpass,
    l_adv_disc,
    l_align_disc,
    l_align_encoder,
    l_colour,
    l_cyc,
    l_fea,
    l_fm,
    l_grid,
    l_idt,
    l_rec,
    l_res,
    l_sty_disc,
    l_sty_generator,
)
from realsr_cli.training.nets import (
    DISCRIMINATOR_ROLES,
    GENERATOR_ROLES,
    ArchConfig,
    build_networks,
    count_parameters,
    preset,
)
from realsr_cli.training.plot import plot_losses
from realsr_cli.training.run_folder import RunFolder


@dataclass(frozen=True)
class TrainEvent:
    """What the trainer tells its reporter.

    kind: "start" (values: parameter counts, images, start step), "step" (values: every loss term, lr, it_s),
    "val" (values: val_psnr_y, val_ssim_y), "checkpoint" (message: the path), "info" and "warning" (message),
    "done" (values: wall_time_s; message: the last checkpoint).
    """

    kind: Literal["start", "step", "val", "checkpoint", "info", "warning", "done"]
    step: int
    total: int
    values: dict[str, float] = field(default_factory=dict)
    message: str = ""


Reporter = Callable[[TrainEvent], None]


def active_roles(weights: LossWeights) -> tuple[str, ...]:
    """The networks a set of loss weights trains: a network only a zero-weight term needs is not even built."""
    w = weights
    roles = ["encoder", "sr_decoder"]
    if w.res or w.sty or w.idt or w.cyc:
        roles.append("lr_decoder")
    if w.align:
        roles.append("feature_disc")
    if w.sty:
        roles.append("lr_disc")
    if (w.beta or w.fm) and (w.rec or w.cyc):
        roles.append("hr_disc")
    return tuple(roles)


def build_arch(cfg: TrainConfig) -> ArchConfig:
    """The run's architecture: preset `cfg.arch` with `cfg.arch_overrides` replacing its fields (types checked)."""
    base = preset(cfg.arch)
    return dataclass_from_dict(ArchConfig, {**asdict(base), **cfg.arch_overrides}, "arch_overrides")


@contextlib.contextmanager
def frozen_bn_stats(modules: list[nn.Module]) -> Iterator[None]:
    """BatchNorm layers in `modules` keep normalising with batch statistics but leave their running statistics
    alone: the generator step must not change any discriminator state."""
    bns = [m for net in modules for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.track_running_stats = False
    try:
        yield
    finally:
        for bn in bns:
            bn.track_running_stats = True


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Defer the first Ctrl-C (or SIGTERM, SIGHUP: errors.INTERRUPT_SIGNALS) to the next step boundary, so an
    interrupted run saves whole steps and resumes bit-exactly; a second one interrupts at once. A signal ignored
    before (nohup) stays ignored. Yields a function telling whether one arrived."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed: list[bool] = []

    def handler(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(True)

    caught = [sig for sig in INTERRUPT_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, handler) for sig in caught}
    try:
        yield lambda: bool(pressed)
    finally:
        for sig, before in previous.items():
            # None: a handler not set from Python; SIGINT's default in Python is KeyboardInterrupt
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, before if before is not None else default)


class Trainer:
    """Trains the method's networks as `cfg` says. `fit()` runs to `cfg.iters` and returns the final checkpoint.

    Raises ConfigError (bad or conflicting config, resume mismatch, VGG weights missing for alpha > 0),
    InputError (data folders, checkpoints), ModelError (architecture mismatch), BackendError (device).
    Construction only checks the config; `setup()` (called by `fit()`) reads data, builds and restores networks.
    """

    def __init__(self, cfg: TrainConfig, reporter: Reporter | None = None) -> None:
        cfg.check()
        self.cfg = cfg
        self.report: Reporter = reporter or (lambda event: None)
        self.weights = cfg.effective_weights
        self.roles = active_roles(self.weights)
        self.arch = build_arch(cfg)
        if self.weights.fm and "hr_disc" in self.roles and (self.arch.hr_disc_type or self.arch.disc) == "vgg":
            raise ConfigError("feature matching (weights.fm) needs a patch or unet D_HR (arch hr_disc_type), not vgg")
        self.device = pick_device(cfg.device)
        self.amp_dtype = pick_amp(cfg.amp, self.device)
        self.run = RunFolder(cfg.out)
        self.step = 0
        self.nets: dict[str, nn.Module] = {}
        self.ema: dict[str, nn.Module] = {}  # generator role -> moving average of its weights (cfg.ema > 0)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.vgg: nn.Module | None = None
        self.data: TrainingData | None = None
        self.val_pairs: list = []
        self.best_val: float | None = None
        self.wall_time = 0.0  # seconds of training, summed over resumed sessions
        self.init_info: dict | None = None
        self.data_fingerprint = ""
        self._ready = False

    # ---- setup ----------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Check the run folder, load VGG (alpha > 0), data and networks, and restore a resumed run. Idempotent."""
        if self._ready:
            return
        torch.set_num_threads(self.cfg.threads or cpu_count())
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop shapes: autotuned kernels pay off
        resume_from, init_from = self._starting_point()
        self._read_inputs(resume_from)
        self._build_networks(resume_from, init_from)
        self.run.write_config(self.cfg.to_dict())
        self.run.trim_log(self.step)
        self._ready = True

    def _starting_point(self) -> tuple[Checkpoint | None, Checkpoint | None]:
        """The checkpoint a resumed run continues from (its config checked against this one), or the one a new run
        warm-starts its generators from (its architecture checked); at most one of the two."""
        self.run.check_start(self.cfg.resume)
        if self.cfg.resume:
            resume_from = load_checkpoint(self.run.last)
            self.run.check_resumable(resume_from.config, self.cfg)
            return resume_from, None
        if not self.cfg.init_from:
            return None, None
        init_from = load_checkpoint(self.cfg.init_from)
        # only the generators are warm-started, so the discriminators' shape may differ
        ignored = {"name", "disc", "disc_channels", "hr_disc_channels", "hr_disc_type"}
        differing = [k for k in config_differences(asdict(init_from.arch), asdict(self.arch)) if k not in ignored]
        if differing:
            raise ModelError(
                f"{self.cfg.init_from}: its architecture differs from this run's in {', '.join(differing)}; "
                "warm start needs the same architecture (set arch / arch_overrides to match)"
            )
        return None, init_from

    def _read_inputs(self, resume_from: Checkpoint | None) -> None:
        """The frozen VGG (alpha > 0), the training data and the validation pairs."""
        cfg, w = self.cfg, self.weights
        # VGG first: a missing weight file must stop the run before minutes of data loading
        if w.alpha and (w.rec or w.cyc):
            from realsr_cli.training.vgg import load_vgg19_features

            self.vgg = load_vgg19_features(alpha=w.alpha).to(self.device, memory_format=torch.channels_last)
        self.data = TrainingData.from_folders(
            cfg.source_hr,
            cfg.target_lr if cfg.needs_target else None,
            lr_patch=cfg.lr_patch,
            batch_size=cfg.batch_size,
            scale=self.arch.scale,
            seed=cfg.seed,
            degradation=cfg.degradation,
            workers=cfg.workers,
            warn=self._warn,
        )
        self.data_fingerprint = self.data.fingerprint()
        if resume_from is not None and resume_from.provenance.get("data_fingerprint") not in (
            None,
            self.data_fingerprint,
        ):
            self._warn(
                "the data folders changed since this run started (files added, removed or modified): "
                "the resumed run will not draw the crops an uninterrupted run would have"
            )
        if cfg.val_lr and cfg.val_hr:
            self.val_pairs = load_val_pairs(cfg.val_lr, cfg.val_hr, self.arch.scale)

    def _build_networks(self, resume_from: Checkpoint | None, init_from: Checkpoint | None) -> None:
        """The active networks, their optimizers (and fp16 GradScalers) and moving averages, restored from
        `resume_from` or with generators warm-started from `init_from`."""
        cfg = self.cfg
        if (
            self.device.type == "cpu"
            and self.amp_dtype == torch.bfloat16
            and not torch.ops.mkldnn._is_mkldnn_bf16_supported()
        ):
            self._warn("this CPU has no native bf16 (AVX512-BF16 or AMX): amp = bf16 will be slower than fp32")
        # all six are built from the seed, then the unused dropped: every config draws the same initial weights
        torch.manual_seed(cfg.seed)
        nets = build_networks(self.arch)
        # channels_last: oneDNN and cuDNN convolutions run faster on NHWC memory (fp32 CPU ~1.3x, bf16 ~1.5x)
        self.nets = {role: nets[role].to(self.device, memory_format=torch.channels_last).train() for role in self.roles}
        for role, net in self.nets.items():
            lr = cfg.optim.lr if role in GENERATOR_ROLES else (cfg.optim.disc_lr or cfg.optim.lr)
            self.optimizers[role] = torch.optim.Adam(net.parameters(), lr=lr, betas=cfg.optim.betas)
        if self.amp_dtype == torch.float16:
            self.scalers = {"generator": torch.amp.GradScaler("cuda"), "discriminator": torch.amp.GradScaler("cuda")}
        if resume_from is not None:
            self._restore(resume_from)
        elif init_from is not None:
            self._warm_start(init_from)
        if cfg.ema:
            self.ema = {
                r: copy.deepcopy(net).requires_grad_(False) for r, net in self.nets.items() if r in GENERATOR_ROLES
            }
            for role, average in self.ema.items():
                if resume_from is not None and role in resume_from.ema_states:
                    average.load_state_dict(resume_from.ema_states[role])

    def _warn(self, message: str) -> None:
        self.report(TrainEvent("warning", self.step, self.cfg.iters, message=message))

    def _restore(self, ckpt: Checkpoint) -> None:
        """Continue the run `ckpt` holds: weights and optimizer state of every active network, GradScalers, step,
        training time, best validation score, and where the run was warm-started from."""
        for role, net in self.nets.items():
            if role not in ckpt.states:
                raise ModelError(f"{ckpt.path}: no {role} weights to resume")
            net.load_state_dict(ckpt.states[role])
            self.optimizers[role].load_state_dict(ckpt.optimizers[role])
        for name, scaler in self.scalers.items():
            if f"scaler_{name}" in ckpt.optimizers:
                scaler.load_state_dict(ckpt.optimizers[f"scaler_{name}"])
        self.step = ckpt.step
        self.wall_time = float(ckpt.provenance.get("wall_time_s", 0.0))
        self.best_val = ckpt.provenance.get("best_val_psnr_y")
        self.init_info = ckpt.provenance.get("init_from")

    def _warm_start(self, ckpt: Checkpoint) -> None:
        """Start the active generators from `ckpt`'s final weights; everything else starts fresh."""
        loaded = [role for role in GENERATOR_ROLES if role in self.nets and role in ckpt.states]
        for role in loaded:
            self.nets[role].load_state_dict(ckpt.final_states[role])
        self.init_info = {"path": str(ckpt.path), "sha256": ckpt.sha256, "step": ckpt.step, "roles": loaded}
        message = f"warm start: {', '.join(loaded)} from {ckpt.path} (step {ckpt.step})"
        self.report(TrainEvent("info", 0, self.cfg.iters, message=message))

    # ---- one step ---------------------------------------------------------------------------------------------

    def inputs(self, batch: Batch) -> dict[str, Tensor]:
        """uint8 NCHW crops -> float32 tensors in [0, 1] on the device."""
        out = {}
        for name in ("source_lr", "source_hr", "target_lr"):
            arr = getattr(batch, name)
            if arr is not None:
                t = torch.from_numpy(arr).to(self.device, non_blocking=True).float().div_(255.0)
                out[name] = t.contiguous(memory_format=torch.channels_last)  # (N, 3, H, W), NHWC memory
        return out

    def train_step(self, batch: Batch) -> dict[str, float]:
        """Generator step then discriminator step on one batch; advances `self.step`; returns the logged values."""
        lr = self._set_lr()
        x = self.inputs(batch)
        g_terms, fakes = self.generator_step(x)
        d_terms = self.discriminator_step(x, fakes)
        names = list(g_terms) + list(d_terms)
        values = torch.stack([t.float() for t in (*g_terms.values(), *d_terms.values())]).tolist()  # one sync
        self.step += 1
        record = {"step": self.step, **dict(zip(names, values, strict=True)), "lr": lr}
        # fp16: an overflowing step is expected now and then, and GradScaler skips it; otherwise stop before saving
        if not self.scalers and not all(math.isfinite(v) for v in values):
            bad = ", ".join(k for k, v in zip(names, values, strict=True) if not math.isfinite(v))
            raise ModelError(f"training diverged at step {self.step}: {bad} not finite (lower the learning rate)")
        return record

    def generator_step(self, x: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One update of E, G_SR (and G_t) on the full objective; discriminators are frozen (no grads, no BN stats).

        Returns the weighted terms' values (detached) and the detached fakes the discriminator step reuses.
        """
        discs = [self.nets[r] for r in DISCRIMINATOR_ROLES if r in self.nets]
        for d in discs:
            d.requires_grad_(False)  # input gradients only: no weight gradients computed for D at all
        try:
            with self._autocast(), frozen_bn_stats(discs):
                terms, fakes = self._generator_terms(x)
            loss = generator_objective(terms, self.weights)
            self._update([r for r in GENERATOR_ROLES if r in self.nets], loss, "generator")
            self._update_ema()
        finally:
            for d in discs:
                d.requires_grad_(True)
        terms = {"loss_g": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        return terms, {k: v.detach() for k, v in fakes.items()}

    def _generator_terms(self, x: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The generators' loss terms on one batch, each computed only when its weight is non-zero, and the fakes
        the discriminator step judges: f_s, SR(x_s), f_t and x_{s->t} (the last two when computed)."""
        w, n = self.weights, self.nets
        encoder, sr_decoder, lr_decoder = n["encoder"], n["sr_decoder"], n.get("lr_decoder")
        feature_disc, lr_disc = n.get("feature_disc"), n.get("lr_disc")
        source_lr, source_hr, target_lr = x["source_lr"], x["source_hr"], x.get("target_lr")
        source_feat = encoder(source_lr)  # (N, C, P, P): f_s, reused by L_rec, L_align, L_sty, L_idt, L_cyc
        sr = sr_decoder(source_feat)  # (N, 3, P*s, P*s)
        sr_terms = self._sr_terms(source_hr)
        terms = {"l_rec": l_rec(source_hr, sr, **sr_terms)}
        fakes = {"source_feat": source_feat, "sr": sr}
        target_feat = encoder(target_lr) if (w.align or w.res) else None  # (N, C, P, P): f_t
        if w.align:
            terms["l_align"] = l_align_encoder(feature_disc(target_feat), feature_disc(source_feat))
        if w.res:
            terms["l_res"] = l_res(target_lr, lr_decoder(target_feat))
        cycle_sr = None
        fake_target_lr = lr_decoder(source_feat) if (w.sty or w.idt or w.cyc) else None  # x_{s->t}
        if w.sty:
            terms["l_sty"] = l_sty_generator(lr_disc(self._sty_view(fake_target_lr)))
        if w.idt or w.cyc:
            cycle_feat = encoder(fake_target_lr)  # E(x_{s->t})
            if w.idt:
                terms["l_idt"] = l_idt(source_feat, cycle_feat)
            if w.cyc:
                # L_cyc: x_s -> x_{s->t} -> SR should recover y_s
                cycle_sr = sr_decoder(cycle_feat)
                terms["l_cyc"] = l_cyc(source_hr, cycle_sr, **sr_terms)
        if w.colour:
            pairs = [sr] + ([cycle_sr] if cycle_sr is not None else [])
            terms["l_colour"] = sum(l_colour(source_hr, o) for o in pairs) / len(pairs)
        if w.grid:
            # every output G_SR makes, and the SR of the real target photos too: the grid shows most on
            # real inputs, whose SR no other term computes
            outputs = [sr] + ([cycle_sr] if cycle_sr is not None else [])
            if target_feat is not None:
                outputs.append(sr_decoder(target_feat))
            terms["l_grid"] = sum(l_grid(o, self.arch.scale) for o in outputs) / len(outputs)
        if target_feat is not None:
            fakes["target_feat"] = target_feat
        if fake_target_lr is not None:
            fakes["fake_target_lr"] = fake_target_lr
        return terms, fakes

    def _sr_terms(self, source_hr: Tensor) -> dict:
        """What L_rec and L_cyc add to their pixel L1, as `losses.l_rec` takes it: the weights, L_fea against y_s's
        VGG features, and D_HR's judgement of an SR image (with L_fm against y_s's D_HR features)."""
        w, vgg, hr_disc = self.weights, self.vgg, self.nets.get("hr_disc")
        fea = critic = None
        if vgg is not None:
            with torch.no_grad():
                hr_features = vgg(source_hr)  # y_s's features, shared by L_rec and L_cyc

            def fea(img: Tensor) -> Tensor:
                return l_fea(vgg(img), hr_features)

        if hr_disc is not None:
            hr_disc_features = None
            if w.fm:
                with torch.no_grad():
                    hr_disc_features = hr_disc.features(source_hr)[1]  # y_s's, shared by L_rec and L_cyc

            def critic(img: Tensor) -> tuple[Tensor, Tensor | None]:
                if not w.fm:
                    return hr_disc(img), None
                scores, features = hr_disc.features(img)
                return scores, l_fm(features, hr_disc_features)

        return {"alpha": w.alpha, "beta": w.beta, "fm": w.fm, "fea": fea, "critic": critic}

    def discriminator_step(self, x: dict[str, Tensor], fakes: dict[str, Tensor]) -> dict[str, Tensor]:
        """One LSGAN update of each active discriminator on the generator step's detached fakes."""
        n = self.nets
        roles = [r for r in DISCRIMINATOR_ROLES if r in n]
        if not roles:
            return {}
        terms = {}
        with self._autocast():
            if "feature_disc" in n:
                terms["d_align"] = l_align_disc(
                    n["feature_disc"](fakes["target_feat"]), n["feature_disc"](fakes["source_feat"])
                )
            if "lr_disc" in n:
                fake, real = self._sty_view(fakes["fake_target_lr"]), self._sty_view(x["target_lr"])
                terms["d_sty"] = l_sty_disc(n["lr_disc"](fake), n["lr_disc"](real))
            if "hr_disc" in n:
                terms["d_adv"] = l_adv_disc(n["hr_disc"](fakes["sr"]), n["hr_disc"](x["source_hr"]))
        loss = sum(terms.values())
        self._update(roles, loss, "discriminator")
        return {"loss_d": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def _sty_view(self, lr: Tensor) -> Tensor:
        """What D_t sees of an LR image: the image itself, or its high frequencies (cfg.sty_input)."""
        if self.cfg.sty_input == "highpass":
            return highpass(lr)
        return lr

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    def _set_lr(self) -> float:
        lr = self.cfg.optim.lr_at(self.step, self.cfg.optim.lr)
        disc_lr = self.cfg.optim.lr_at(self.step, self.cfg.optim.disc_lr or self.cfg.optim.lr)
        for role, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = lr if role in GENERATOR_ROLES else disc_lr
        return lr

    def _update(self, roles: list[str], loss: Tensor, side: str) -> None:
        opts = [self.optimizers[r] for r in roles]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        scaler = self.scalers.get(side)
        if scaler is None:
            loss.backward()
            for opt in opts:
                opt.step()
            return
        scaler.scale(loss).backward()
        for opt in opts:
            scaler.step(opt)
        scaler.update()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.ema
        for role, average in self.ema.items():
            torch._foreach_lerp_(list(average.parameters()), list(self.nets[role].parameters()), 1.0 - decay)

    # ---- the loop ---------------------------------------------------------------------------------------------

    def fit(self) -> Path:
        """Train up to `cfg.iters` steps; returns the path of last.pth. Ctrl-C (KeyboardInterrupt, also from the
        reporter; SIGTERM and SIGHUP alike) saves last.pth at the last whole step and re-raises. A full disk is an
        InputError that leaves config.json, log.jsonl and the last checkpoint whole."""
        self.setup()
        cfg = self.cfg
        self._report_start()
        session_start, session_wall = time.perf_counter(), self.wall_time
        times: deque[float] = deque([session_start], maxlen=21)
        saved_at = validated_at = self.step
        try:
            with deferred_interrupt() as interrupted:
                while self.step < cfg.iters:
                    record = self.train_step(self.data.batch(self.step))
                    times.append(time.perf_counter())
                    self.wall_time = session_wall + times[-1] - session_start
                    record["time"] = round(self.wall_time, 3)
                    self.run.append_log(record)
                    it_s = (len(times) - 1) / max(times[-1] - times[0], 1e-9)
                    self.report(TrainEvent("step", self.step, cfg.iters, {**record, "it_s": it_s}))
                    if self.val_pairs and cfg.val_every and self.step % cfg.val_every == 0:
                        self._validate_and_log()
                        validated_at = self.step
                    if self.step % cfg.checkpoint_every == 0:
                        self._checkpoint()
                        saved_at = self.step
                    if interrupted():
                        raise KeyboardInterrupt
                if self.val_pairs and validated_at != self.step:
                    self._validate_and_log()
                if saved_at != self.step or not self.run.last.exists():
                    self._checkpoint()
        except KeyboardInterrupt:
            path = self.save(self.run.last)
            self.report(TrainEvent("checkpoint", self.step, cfg.iters, message=f"interrupted: saved {path}"))
            raise
        # the run's result in shippable form: the best validated weights when there were validations
        release_checkpoint(load_checkpoint(self.run.release_source()), self.run.model)
        self.report(
            TrainEvent("done", self.step, cfg.iters, {"wall_time_s": self.wall_time}, message=str(self.run.model))
        )
        return self.run.last

    def _report_start(self) -> None:
        values = {f"params_{role}": float(count_parameters(net)) for role, net in self.nets.items()}
        values.update(start_step=float(self.step), source_images=float(len(self.data.source_hr)))
        if self.data.target_lr is not None:
            values["target_images"] = float(len(self.data.target_lr))
        values["val_pairs"] = float(len(self.val_pairs))
        self.report(
            TrainEvent("start", self.step, self.cfg.iters, values, message=f"{self.device}, {amp_name(self.amp_dtype)}")
        )

    def _validate_and_log(self) -> None:
        scores = self.validate()
        self.run.append_log({"step": self.step, **scores})
        self.report(TrainEvent("val", self.step, self.cfg.iters, scores))
        if self.best_val is None or scores["val_psnr_y"] > self.best_val:
            self.best_val = scores["val_psnr_y"]
            self.save(self.run.best)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR-Y and SSIM-Y (4-pixel border) of the in-memory E + G_SR (its EMA where kept), in fp32, on the
        full validation LR images."""
        from realsr_cli.quality.metrics import psnr, ssim

        nets = self.ema or self.nets  # the weights that ship
        encoder, sr_decoder = nets["encoder"], nets["sr_decoder"]
        encoder.eval(), sr_decoder.eval()
        psnrs, ssims = [], []
        try:
            for _name, lr, hr in self.val_pairs:
                x = torch.from_numpy(lr[None]).to(self.device).permute(0, 3, 1, 2).float() / 255.0  # channels_last
                y = sr_decoder(encoder(x))  # (1, 3, h*s, w*s); fp32 like the exported model, whatever amp trains with
                sr = y[0].float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
                psnrs.append(psnr(sr, hr, border=4, y_channel=True))
                ssims.append(ssim(sr, hr, border=4))
        finally:
            encoder.train(), sr_decoder.train()
        return {"val_psnr_y": float(np.mean(psnrs)), "val_ssim_y": float(np.mean(ssims))}

    def _checkpoint(self) -> None:
        """last.pth, its numbered copy (older ones pruned to keep_checkpoints) and the loss plot."""
        self.save(self.run.last)
        numbered = self.run.keep_numbered_copy(self.step, self.cfg.keep_checkpoints)
        plot_losses(self.run.read_log(), self.run.plot)  # re-read: the log, not memory, holds long runs
        self.report(TrainEvent("checkpoint", self.step, self.cfg.iters, message=str(numbered)))

    def save(self, path: Path) -> Path:
        """A full checkpoint: every network, optimizer (and GradScaler) state, step, config and provenance."""
        optimizers: dict = {role: opt.state_dict() for role, opt in self.optimizers.items()}
        for name, scaler in self.scalers.items():
            optimizers[f"scaler_{name}"] = scaler.state_dict()
        return save_checkpoint(
            path,
            self.arch,
            self.nets,
            step=self.step,
            optimizers=optimizers,
            config=self.cfg.to_dict(),
            provenance=self._provenance(),
            ema=self.ema,
        )

    def _provenance(self) -> dict:
        """Where a checkpoint's weights came from: data, seed, warm start, device, precision, time and versions."""
        cfg = self.cfg
        device = str(self.device)
        if self.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        return {
            "trained_by": "realsr train",
            "method": "baseline: L_rec pixel L1 on bicubic pairs"
            if cfg.baseline
            else "Wang et al. ICCV 2021 domain adaptation",
            "source_hr": cfg.source_hr,
            "target_lr": cfg.target_lr if cfg.needs_target else None,
            "val_lr": cfg.val_lr,
            "val_hr": cfg.val_hr,
            "source_images": len(self.data.source_hr) if self.data else 0,
            "target_images": len(self.data.target_lr) if self.data and self.data.target_lr is not None else 0,
            "data_fingerprint": self.data_fingerprint,
            "seed": cfg.seed,
            "step": self.step,
            "init_from": self.init_info,
            "wall_time_s": round(self.wall_time, 3),
            "device": device,
            "threads": torch.get_num_threads(),
            "amp": amp_name(self.amp_dtype),
            "best_val_psnr_y": self.best_val,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": {
                "realsr": __version__,
                "torch": str(torch.__version__),  # TorchVersion: a class weights-only loads refuse
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
        }


def resume_config(out: str | os.PathLike) -> TrainConfig:
    """The config a run in `out` was started with (from its last.pth), for `realsr train --resume`.
    Raises ConfigError when there is nothing to resume."""
    run = RunFolder(out)
    run.check_start(resume=True)
    ckpt = load_checkpoint(run.last)
    if not ckpt.config:
        raise InputError(f"{run.last}: holds no training config, so it cannot be resumed")
    return replace(TrainConfig.from_dict(ckpt.config, f"{run.last} config"), resume=True)
