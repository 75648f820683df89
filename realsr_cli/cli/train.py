"""`realsr train`: options -> TrainConfig (defaults < resumed run < --config TOML < options given), then
`Trainer(cfg).fit()` with a rich progress bar on a terminal or plain lines otherwise. No torch until it runs."""

from __future__ import annotations

from pathlib import Path

import rich_click as click
from click.core import ParameterSource
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from realsr_cli.cli._console import console, warning
from realsr_cli.config import AMP_CHOICES, TRAIN_PATH_KEYS, TrainConfig, load_train_toml, merge_config, with_value
from realsr_cli.errors import ConfigError
from realsr_cli.host import require_torch

_DEFAULT = TrainConfig()

# option name -> TrainConfig field (dotted for nested ones)
OPTION_KEYS = {
    "source_hr": "source_hr",
    "target_lr": "target_lr",
    "val_lr": "val_lr",
    "val_hr": "val_hr",
    "out": "out",
    "arch": "arch",
    "iters": "iters",
    "baseline": "baseline",
    "init_from": "init_from",
    "patch": "lr_patch",
    "batch_size": "batch_size",
    "lr": "optim.lr",
    "alpha": "weights.alpha",
    "beta": "weights.beta",
    "seed": "seed",
    "device": "device",
    "amp": "amp",
    "threads": "threads",
    "workers": "workers",
    "log_every": "log_every",
    "val_every": "val_every",
    "checkpoint_every": "checkpoint_every",
}

_dir = click.Path(file_okay=False, path_type=Path)


@click.command("train")
@click.option(
    "--source-hr", type=_dir, show_default=True, help="Folder of clean HR photos (source domain; subfolders included)."
)
@click.option(
    "--target-lr",
    type=_dir,
    show_default=True,
    help="Folder of your real LR photos (target domain, unpaired); required unless --baseline.",
)
@click.option(
    "--val-lr",
    type=_dir,
    show_default=True,
    help="Validation LR images (real degradation), paired with --val-hr by file name.",
)
@click.option("--val-hr", type=_dir, show_default=True, help="Validation HR ground truth, same file names as --val-lr.")
@click.option(
    "--out",
    type=_dir,
    show_default=True,
    help="Run folder: model.pth (the result: generators of best.pth), last.pth, step_*.pth, best.pth, log.jsonl, "
    "loss.png, config.json.",
)
@click.option("--arch", default=_DEFAULT.arch, show_default=True, help="Architecture preset: compact or paper.")
@click.option(
    "--iters",
    type=click.IntRange(min=1),
    default=_DEFAULT.iters,
    show_default=True,
    help="Total training steps (a resumed run continues up to this).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    show_default=True,
    help="Run TOML file; options given here override it.",
)
@click.option(
    "--resume",
    is_flag=True,
    default=False,
    show_default=True,
    help="Continue the run in --out from its last.pth, bit-exactly.",
)
@click.option(
    "--baseline",
    is_flag=True,
    default=False,
    show_default=True,
    help="Train E + G_SR with L_rec's pixel L1 alone on bicubic pairs (no target data).",
)
@click.option(
    "--init-from",
    type=click.Path(dir_okay=False, path_type=Path),
    show_default=True,
    help="Warm start the generators from this checkpoint (e.g. a baseline run).",
)
@click.option(
    "--patch",
    type=click.IntRange(min=8),
    default=_DEFAULT.lr_patch,
    show_default=True,
    help="LR crop edge in pixels (the HR crop is 4x).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=_DEFAULT.batch_size, show_default=True, help="Crops per step."
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULT.optim.lr,
    show_default=True,
    help="Adam learning rate of the generators.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0),
    default=_DEFAULT.weights.alpha,
    show_default=True,
    help="Weight of the VGG19 perceptual term L_fea; 0 = no VGG (offline).",
)
@click.option(
    "--beta",
    type=click.FloatRange(min=0),
    default=_DEFAULT.weights.beta,
    show_default=True,
    help="Weight of the adversarial term against D_HR; 0 = no D_HR.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=_DEFAULT.seed,
    show_default=True,
    help="Seed of the initial weights and of every crop.",
)
@click.option(
    "--device", default=_DEFAULT.device, show_default=True, help="Auto (CUDA when available), cpu, cuda or cuda:N."
)
@click.option(
    "--amp",
    type=click.Choice(AMP_CHOICES),
    default=_DEFAULT.amp,
    show_default=True,
    help="Mixed precision; auto = bf16/fp16 on CUDA, fp32 on CPU.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=_DEFAULT.threads,
    show_default=True,
    help="CPU threads for torch; 0 = one per core.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=_DEFAULT.workers,
    show_default=True,
    help="Threads decoding the images at start-up; 0 = one per core.",
)
@click.option(
    "--log-every",
    type=click.IntRange(min=1),
    default=_DEFAULT.log_every,
    show_default=True,
    help="Steps between progress lines when not on a terminal.",
)
@click.option(
    "--val-every",
    type=click.IntRange(min=0),
    default=_DEFAULT.val_every,
    show_default=True,
    help="Steps between validations; 0 = at the end only.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=_DEFAULT.checkpoint_every,
    show_default=True,
    help="Steps between checkpoints.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    default=False,
    show_default=True,
    help="No progress output, only warnings and errors.",
)
@click.pass_context
def train(ctx: click.Context, config_file: Path | None, resume: bool, quiet: bool, **options) -> None:
    """Train the method's networks on unpaired data: clean HR photos (--source-hr) and real LR photos (--target-lr).

    Every loss term is logged per step to RUN_DIR/log.jsonl, with a loss plot at each checkpoint. Ctrl-C saves
    last.pth first; --resume continues from it. `realsr train --out RUN_DIR --resume` alone reuses the run's config.

    \b
    Examples:
      realsr train --source-hr data/hr --target-lr my_photos --out runs/mine
      realsr train --config run.toml --out runs/mine --device cuda:1
      realsr train --out runs/mine --resume             go on after Ctrl-C
      realsr export runs/mine/model.pth -o export/      then: realsr upscale --model
    """
    require_torch("realsr train")  # before the trainer, which imports torch at module level
    from realsr_cli.training.trainer import Trainer, resume_config

    cfg = build_config(ctx, config_file, resume, options, resume_config)
    reporter = ConsoleReporter(cfg, mode="quiet" if quiet else ("bar" if console.is_terminal else "lines"))
    try:
        last = Trainer(cfg, reporter).fit()
    finally:
        reporter.close()
    click.echo(str(last))


def build_config(
    ctx: click.Context, config_file: Path | None, resume: bool, options: dict, resume_config
) -> TrainConfig:
    """Defaults, then the resumed run's own config, then the TOML file, then the options given on the command line."""
    given = {
        name: value for name, value in options.items() if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }
    for name, value in given.items():
        if OPTION_KEYS[name] in TRAIN_PATH_KEYS and value is not None:
            given[name] = str(Path(value).resolve())
    toml = {}
    if config_file is not None:
        toml = load_train_toml(config_file)
        TrainConfig.from_dict(toml, str(config_file))  # strict check, naming the file
    data = TrainConfig().to_dict()
    if resume:
        out = given.get("out") or toml.get("out")
        if not out:
            raise ConfigError("--resume needs --out (the run folder to continue)")
        data = resume_config(out).to_dict()
    cfg = TrainConfig.from_dict(merge_config(data, toml), str(config_file) if config_file else "train config")
    for name, value in given.items():
        cfg = with_value(cfg, OPTION_KEYS[name], value)
    return with_value(cfg, "resume", resume)


class ConsoleReporter:
    """Renders TrainEvents: a live bar with ETA and current losses on a terminal, a line every log_every steps
    otherwise (`step 100: loss_g 0.412 loss_d 0.233 lr 1.0e-04 5.2 it/s`), nothing but warnings when quiet."""

    def __init__(self, cfg: TrainConfig, mode: str) -> None:
        self.cfg = cfg
        self.mode = mode
        self.progress: Progress | None = None
        self.task = None

    def __call__(self, event) -> None:
        kind, v = event.kind, event.values
        if kind == "warning":
            warning(event.message)
        elif self.mode == "quiet":
            return
        elif kind == "info":
            console.print(escape(event.message))
        elif kind == "start":
            gen = sum(val for key, val in v.items() if key in ("params_encoder", "params_sr_decoder"))
            nets = ", ".join(key.removeprefix("params_") for key in v if key.startswith("params_"))
            data = f"{int(v['source_images'])} source"
            if "target_images" in v:
                data += f" + {int(v['target_images'])} target"
            console.print(
                f"training {nets} (E+G_SR {gen / 1e6:.2f} M params) on {escape(event.message)}; {data} images, "
                f"{int(v['val_pairs'])} val pairs; steps {event.step} -> {event.total}"
            )
            if self.mode == "bar":
                self.progress = Progress(
                    BarColumn(bar_width=16),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                    TextColumn("{task.description}"),
                    console=console,
                    transient=True,
                )
                self.progress.start()
                self.task = self.progress.add_task("", total=event.total, completed=event.step)
        elif kind == "step":
            if self.progress is not None:
                self.progress.update(self.task, completed=event.step, description=_bar_summary(v))
            elif event.step % self.cfg.log_every == 0 or event.step == event.total:
                console.print(f"step {event.step}: {_summary(v)}")
        elif kind == "val":
            console.print(f"step {event.step}: val PSNR-Y {v['val_psnr_y']:.3f} dB, SSIM-Y {v['val_ssim_y']:.4f}")
        elif kind == "checkpoint" and (self.mode == "lines" or "interrupted" in event.message):
            console.print(f"saved {escape(event.message)}")
        elif kind == "done":
            self.close()
            console.print(f"done in {v['wall_time_s'] / 60:.1f} min of training: {escape(event.message)}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _summary(v: dict) -> str:
    parts = [f"loss_g {v['loss_g']:.3f}"]
    if "loss_d" in v:
        parts.append(f"loss_d {v['loss_d']:.3f}")
    parts.append(f"lr {v['lr']:.1e}")
    parts.append(_rate(v["it_s"]))
    return " ".join(parts)


def _bar_summary(v: dict) -> str:
    """Short enough for an 80-column terminal next to the bar: G and D totals, L_rec, speed."""
    parts = [f"G {v['loss_g']:.3f}"]
    if "loss_d" in v:
        parts.append(f"D {v['loss_d']:.3f}")
    parts.append(f"rec {v['l_rec']:.4f}")
    parts.append(_rate(v["it_s"]))
    return " ".join(parts)


def _rate(it_s: float) -> str:
    return f"{it_s:.2f} it/s" if it_s < 10 else f"{it_s:.1f} it/s"
