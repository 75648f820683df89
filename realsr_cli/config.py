"""Frozen configuration objects, one per job. Core functions take one of these, never a Click context. No torch here."""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from realsr_cli._strict import check_choices, dataclass_from_dict
from realsr_cli.errors import ConfigError

# The names a config field takes, as types: the configs check their values (`_strict.check_choices`) and the CLI
# builds its choices from the tuples below.
ModelFormat = Literal["onnx", "torchscript"]  # the model files realsr writes and runs, and the backend for each
Backend = Literal["auto", ModelFormat]  # auto: whatever the model file is
# auto: CUDA when it really loads, else the CPU; cuda:N names a GPU by index (checked by `check_device`)
Device = str
# auto: fp16 on CUDA where the model supports half precision; on a CPU the fastest of the model's files and
# precisions, measured once on this machine (`inference.runtime.fastest`). int8: an ONNX <stem>.int8.onnx, on the CPU
Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]
Amp = Literal["auto", "off", "bf16", "fp16"]  # training's mixed precision; auto: bf16/fp16 on CUDA, off on CPU
StyInput = Literal["image", "highpass"]  # what D_t judges in L_sty (TrainConfig.sty_input)
# chroma resolution of lossy outputs; keep: a colour JPEG source's own, else 4:2:0 (`photo.write.encoder_settings`)
Subsampling = Literal["keep", "4:4:4", "4:2:2", "4:2:0"]

MODEL_FORMATS: tuple[str, ...] = get_args(ModelFormat)
BACKENDS: tuple[str, ...] = get_args(Backend)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")  # and cuda:N
PRECISIONS: tuple[str, ...] = get_args(Precision)
AMP_CHOICES: tuple[str, ...] = get_args(Amp)
SUBSAMPLINGS: tuple[str, ...] = get_args(Subsampling)


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) of an image upscaled by `scale`, rounded to whole pixels, at least 1x1."""
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


_CUDA_DEVICE = re.compile(r"cuda(?::(\d+))?")


def check_device(name: str) -> str:
    """`name` itself when it is a device inference runs on: auto, cpu, cuda or cuda:N (N a GPU index, cuda
    meaning cuda:0). Raises ConfigError otherwise."""
    if name in DEVICES or _CUDA_DEVICE.fullmatch(name):
        return name
    raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N (N a GPU index: cuda:0, cuda:1, ...)")


def split_device(name: str) -> tuple[str, int]:
    """("auto" | "cpu" | "cuda", GPU index) of a device name `check_device` accepts: "cuda:1" -> ("cuda", 1)."""
    match = _CUDA_DEVICE.fullmatch(check_device(name))
    if match is None:
        return name, 0
    return "cuda", int(match[1] or 0)


LARGE_PHOTO_PIXELS = 4_000_000
SMALL_PHOTO_TILE = 544
LARGE_PHOTO_TILE = 384


@dataclass(frozen=True)
class TileConfig:
    """How an image is cut into fixed-shape tiles for the backend and blended back.

    Tiles are never smaller than twice the overlap (smaller tiles would mostly recompute their neighbours), so a
    tiny `tile` is raised to that; the plan (`realsr_cli.inference.tiling.plan_tiles`) reports the shape actually used.
    """

    tile: int | None = None  # tiles hold at most tile x tile input pixels (balanced ones may be oblong); 0 = the
    # whole image; None = by photo size (`tile_for`)
    overlap: int | None = None  # input pixels shared by neighbouring tiles; None = from the model's receptive field
    batch: int = 1  # tiles per forward call; on 2 CPU cores batch 1 is as fast as larger batches
    # shrink tiles to the smallest equal shape that covers the image with the same tile count (less redundant work);
    # False keeps exactly `tile` for every image (one input shape across a whole batch: what cuDNN autotuning wants);
    # None = True on CPU, False on CUDA
    balance: bool | None = None

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile < 0:
            raise ConfigError(f"tile must be 0 (whole image) or a positive number of pixels, got {self.tile}")
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"overlap must not be negative, got {self.overlap}")
        if self.batch < 1:
            raise ConfigError(f"batch must be at least 1 tile, got {self.batch}")

    def tile_for(self, pixels: int) -> int:
        """The tile size for a photo of `pixels` input pixels: `tile` when set, else by photo size.

        Up to 4 MP the output is small, so tiles may be large: 544 lets a 1 MP photo run as 2x2 tiles with 8%
        overlap work. Above it the output canvas dominates memory (768 MB for 12 MP at x4), so tiles shrink to 384
        to keep a 12 MP photo within 1.5 GB (the compact model's activations take about 4 KB per tile pixel).
        """
        if self.tile is not None:
            return self.tile
        return SMALL_PHOTO_TILE if pixels <= LARGE_PHOTO_PIXELS else LARGE_PHOTO_TILE


@dataclass(frozen=True)
class UpscaleConfig:
    """What `realsr upscale` (and `realsr_cli.inference.upscaler.Upscaler`) runs: which model, where, at what scale."""

    # exported .onnx/.ts file, community .pth/.safetensors model, or a bundled model's name; None = the default one
    model: str | None = None
    backend: Backend = "auto"  # auto: the model file's own; for the bundled model the fastest here (choose_model)
    device: Device = "auto"
    precision: Precision = "auto"
    tile: TileConfig = TileConfig()
    scale: float | None = None  # output scale, 1 to the model's native scale; None = native
    # output size in pixels instead of a scale: width or height alone keeps the aspect ratio, both are a bounding
    # box; the model's native pass, then Lanczos to the size (`output_size`)
    width: int | None = None
    height: int | None = None
    max_size: int | None = None  # the output's long side at most this many pixels (smaller outputs are kept)
    scale_hint: int | None = None  # the native scale a model made elsewhere should have (checked by a probe run)
    # input pixels of the whole job when known (`realsr upscale` counts them from the headers): `--precision auto`
    # weighs each way's start-up against its speed (runtime.fastest); None: a job so large only speed counts
    job_pixels: int | None = None
    # refuse larger inputs before decoding (decompression bombs); the x4 output is 16 times as many pixels
    max_pixels: int = 64_000_000

    def __post_init__(self) -> None:
        check_choices(self)
        check_device(self.device)
        if self.scale is not None and not self.scale >= 1:  # also refuses NaN
            raise ConfigError(f"scale must be at least 1 (the input size), got {self.scale:g}")
        for name in ("width", "height", "max_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be a positive number of pixels, got {value}")
        if self.scale is not None and (self.width is not None or self.height is not None):
            raise ConfigError("give either a scale or an output width/height, not both (the size sets the scale)")
        if self.scale_hint is not None and self.scale_hint < 1:
            raise ConfigError(f"scale hint must be a positive integer, got {self.scale_hint}")
        if self.max_pixels < 1:
            raise ConfigError(f"max pixels must be positive, got {self.max_pixels}")

    def check_scale(self, native: int) -> None:
        """Raise ConfigError when the asked scale is above a model's `native` one (one pass of the model is all
        realsr runs; a second pass would cost 16 times the first and invent detail twice)."""
        if self.scale is not None and self.scale > native:
            raise ConfigError(f"scale {self.scale:g} is above the model's native x{native}; choose 1 to {native}")

    def output_size(self, width: int, height: int, native: int) -> tuple[int, int]:
        """(width, height) of the output for a `width` x `height` input and a model of scale `native`.

        The scale (native when unset) or the width/height (the side given is exact, the other follows the aspect
        ratio; both: the largest size inside that box), then brought down to `max_size` on the long side. Raises
        ConfigError when the size asks for more than the native scale.
        """
        if self.width is None and self.height is None:
            size = scaled_size(width, height, native if self.scale is None else self.scale)
        else:
            fit_w = math.inf if self.width is None else self.width / width
            fit_h = math.inf if self.height is None else self.height / height
            if fit_w <= fit_h:
                size = self.width, max(1, int(height * fit_w + 0.5))
            else:
                size = max(1, int(width * fit_h + 0.5)), self.height
            if size[0] > width * native or size[1] > height * native:
                asked = " x ".join(
                    f"{name} {value}" for name, value in (("width", self.width), ("height", self.height)) if value
                )
                raise ConfigError(
                    f"{asked} needs x{min(fit_w, fit_h):.3g} for a {width}x{height} input, above the model's native "
                    f"x{native}: at most {width * native}x{height * native} (one pass of the model)"
                )
        if self.max_size is not None and max(size) > self.max_size:
            fit = self.max_size / max(size)
            if size[0] >= size[1]:
                size = self.max_size, max(1, int(size[1] * fit + 0.5))
            else:
                size = max(1, int(size[0] * fit + 0.5)), self.max_size
        return size


# a JPEG source's own quality is kept within these: below 75 an upscale's smooth areas show 8x8 blocks the model
# just removed; above 95 the bytes grow fast (100 is about 3x 95) for nothing visible
KEPT_QUALITY = (75, 95)
# zlib level of PNG and TIFF outputs. A 16 MP output (a 1 MP photo at x4, inferred in 5.5 s on 2 cores): level 6
# writes 23.7 MB in 7.2 s, level 4 23.8 MB in 3.3 s, level 1 26.3 MB in 2.2 s, level 0 48 MB in 1.0 s; 4 keeps
# level 6's bytes in under half its time, and the encode thread hides it behind the next photo's inference
DEFAULT_PNG_COMPRESSION = 4


@dataclass(frozen=True)
class EncodeConfig:
    """How `realsr upscale` writes its outputs: lossy quality and chroma, PNG effort, which metadata travels."""

    # JPEG, WebP, AVIF and HEIC, 1-100 (WebP 100 = lossless); None = a JPEG source's own for JPEG, else the
    # format's default (`OutputFormat.quality`)
    quality: int | None = None
    subsampling: Subsampling = "keep"  # chroma of JPEG, AVIF and HEIC outputs
    png_compression: int = DEFAULT_PNG_COMPRESSION  # zlib level 0-9 of PNG and TIFF outputs
    strip_metadata: bool = False  # write no EXIF at all (GPS included); the ICC profile stays: it is colour
    strip_gps: bool = False  # write EXIF without its GPS block

    def __post_init__(self) -> None:
        check_choices(self)
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise ConfigError(f"quality must be 1 to 100, got {self.quality}")
        if not 0 <= self.png_compression <= 9:
            raise ConfigError(f"PNG compression must be 0 (none, fastest) to 9 (smallest), got {self.png_compression}")


# a Ray cluster's address as ray.init takes it: auto (the cluster `ray start` runs here), local (a new one),
# HOST:PORT, or ray://HOST[:PORT] (Ray Client)
_RAY_ADDRESS = re.compile(r"auto|local|ray://[^\s/]+|[\w.-]+:\d+")


@dataclass(frozen=True)
class ClusterConfig:
    """Where `realsr upscale --ray` runs: which Ray cluster, and how many workers it may start there."""

    # None: the cluster RAY_ADDRESS names (`ray job submit` sets it), else a local Ray started for the run
    address: str | None = None
    # workers (each one model, its pipeline, a GPU or a few cores); None = as many as the cluster holds now. An
    # autoscaling cluster grows to fit a larger number
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.address is not None and not _RAY_ADDRESS.fullmatch(self.address):
            raise ConfigError(
                f"--ray {self.address}: not a Ray cluster address (auto, local, HOST:PORT or ray://HOST:PORT); "
                "to start a local Ray for the run, put --ray after the inputs"
            )
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class ExportConfig:
    """What `realsr export` writes and how strictly it verifies it."""

    formats: tuple[ModelFormat, ...] = MODEL_FORMATS
    half: bool = False  # also write an fp16 ONNX variant for GPUs (fp32 inputs and outputs kept)
    opset: int = 17
    # verification sizes (height, width): odd and non-square, so dynamic axes and padding are exercised
    check_sizes: tuple[tuple[int, int], ...] = ((37, 53), (64, 41))
    tolerance: float = 1e-3  # max abs error against eager PyTorch, fp32 exports
    half_tolerance: float = 2e-2  # the fp16 variant, whose arithmetic is coarser by design


@dataclass(frozen=True)
class CompareConfig:
    """How `realsr compare` lays out its side-by-side crops."""

    crop: int = 48  # crop edge in LR pixels (the HR crop is scale times that)
    zoom: int = 2  # nearest-neighbour magnification of every cell, so single pixels are visible
    count: int = 4  # images (rows) when no names are given: the first ones by name
    scale: int = 4

    def __post_init__(self) -> None:
        for key in ("crop", "zoom", "count", "scale"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class BenchConfig:
    """What `realsr bench` measures. Sizes are megapixels of 4:3 photos (1 MP = 10^6 input pixels)."""

    model: str | None = None  # .onnx or .ts; its sibling with the other suffix is the other backend's; None = bundled
    backends: tuple[ModelFormat, ...] = MODEL_FORMATS
    device: Device = "auto"
    precision: Precision = "auto"  # as `realsr upscale --precision`; the reference convolution runs in the one chosen
    sizes_mp: tuple[float, ...] = (0.25, 1.0, 12.0)  # end-to-end photos; the one nearest 1 MP is also the tiling photo
    folder_count: int = 16  # photos in the batch-pipeline folder
    folder_mp: float = 0.25
    tile: int | None = None  # tile size of every run (None: as `realsr upscale` picks), compared with whole images
    repeats: int = 3  # timed runs of each measurement after the warm-up; the median is reported
    reference_edge: int = 256  # the reference convolution's input is 1 x 64 x edge x edge

    def __post_init__(self) -> None:
        if not self.sizes_mp:
            raise ConfigError("no photo sizes given: list at least one size in megapixels (--sizes 0.25,1,12)")
        for mp in (*self.sizes_mp, self.folder_mp):
            if not (math.isfinite(mp) and mp > 0):
                raise ConfigError(f"photo sizes must be positive numbers of megapixels, got {mp:g}")
        # sorted and each once: every size costs a fresh process
        object.__setattr__(self, "sizes_mp", tuple(sorted(set(self.sizes_mp))))
        if not self.backends:
            raise ConfigError(f"backends must be one or both of {', '.join(MODEL_FORMATS)}, got none")
        check_choices(self)
        check_device(self.device)
        if self.tile is not None and self.tile < 1:
            raise ConfigError(f"tile must be at least 1, got {self.tile}")
        for name in ("folder_count", "repeats", "reference_edge"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the method's objective, L = align*L_align + rec*L_rec + res*L_res + sty*L_sty + idt*L_idt + cyc*L_cyc.

    Defaults are docs/method.md's (from a public re-implementation; the paper gives none). `alpha` and `beta` weight the
    perceptual (VGG19 conv5_4) and adversarial (LSGAN against D_HR) terms inside L_rec and L_cyc. A weight of 0 turns
    its term off and with it every network only that term needs (alpha = 0: no VGG; beta = 0: no D_HR; ...).
    `grid` weights L_grid, which is not the paper's (losses.l_grid): + grid*L_grid, off by default; `fm` weights
    L_fm inside L_rec and L_cyc beside alpha and beta (losses.l_fm), off by default; `colour` weights L_colour
    (losses.l_colour), off by default.
    """

    rec: float = 1.0
    align: float = 0.01
    res: float = 1.0
    sty: float = 0.01
    idt: float = 0.01
    cyc: float = 1.0
    alpha: float = 0.01
    beta: float = 0.01
    # L_grid (losses.l_grid), this project's addition: penalises the sub-pixel grid of G_SR's outputs, on source,
    # cycle and real target crops alike
    grid: float = 0.0
    # L_fm (losses.l_fm), this project's addition inside L_rec and L_cyc: feature matching on D_HR's activations, a
    # perceptual signal that needs no downloaded weights (alpha's VGG19 does)
    fm: float = 0.0
    # L_colour (losses.l_colour), this project's addition: L1 on 8x8 block means of SR against y_s, on the source and
    # cycle SR, so the adversarial terms cannot drift tone and colour
    colour: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ConfigError(f"loss weight {f.name} must not be negative, got {getattr(self, f.name)}")


@dataclass(frozen=True)
class OptimConfig:
    """Adam for every network, with a step-halving learning-rate schedule (a pure function of the step)."""

    lr: float = 1e-4  # generators (E, G_SR, G_t)
    disc_lr: float | None = None  # discriminators; None = lr
    betas: tuple[float, float] = (0.9, 0.99)
    milestones: tuple[int, ...] = ()  # steps at which every learning rate is multiplied by gamma; empty = constant
    gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.lr <= 0 or (self.disc_lr is not None and self.disc_lr <= 0):
            raise ConfigError(f"learning rates must be positive, got lr {self.lr}, disc_lr {self.disc_lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"Adam betas must lie in [0, 1), got {self.betas}")
        if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"milestones must be increasing positive steps, got {self.milestones}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must lie in (0, 1], got {self.gamma}")

    def lr_at(self, step: int, base: float) -> float:
        """The learning rate for the update that makes step `step` + 1: base * gamma**(milestones passed)."""
        return base * self.gamma ** sum(step >= m for m in self.milestones)


@dataclass(frozen=True)
class DegradationConfig:
    """How x_s is made from a source HR crop. `enabled = false` keeps the paper's plain bicubic x_s.

    Every degraded crop is: [blur] -> resize to between 1x and 2x the LR size -> [noise] -> [JPEG], then with
    probability `second_order`: [mild blur] -> resize to the LR size -> [noise] -> [JPEG]; otherwise a resize to
    the LR size and a final [JPEG]. Each bracketed step happens with its probability. Noise sigmas are 8-bit
    levels; `gray_noise` is the share of noise that is luminance-only (the rest is independent per channel).
    """

    enabled: bool = False
    clean: float = 0.2  # share of crops left as plain bicubic x_s, so clean photos stay sharp
    blur: float = 0.7
    blur_sigma: tuple[float, float] = (0.2, 3.0)  # first blur, in HR pixels
    second_order: float = 0.6
    noise: float = 0.7
    noise_sigma: tuple[float, float] = (1.0, 25.0)
    gray_noise: float = 0.4
    jpeg: float = 0.8
    jpeg_quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        for key in ("clean", "blur", "second_order", "noise", "gray_noise", "jpeg"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"degradation.{key} is a probability in [0, 1], got {getattr(self, key)}")
        for key in ("blur_sigma", "noise_sigma", "jpeg_quality"):
            lo, hi = getattr(self, key)
            if not 0 <= lo <= hi:
                raise ConfigError(
                    f"degradation.{key} must be a range [low, high] with 0 <= low <= high, got {[lo, hi]}"
                )
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ConfigError(f"degradation.jpeg_quality must lie within [1, 100], got {list(self.jpeg_quality)}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `realsr train` needs; `Trainer(cfg).fit()` takes this and nothing else.

    Paths are strings (plain data for TOML and checkpoints); the CLI stores them absolute. Loaded from TOML with
    `load_train_toml` (strict: unknown keys and wrong types raise ConfigError).
    """

    source_hr: str = ""  # folder of clean HR photos (source domain y_s), subfolders included
    target_lr: str | None = None  # folder of real LR photos (target domain x_t), unpaired; not needed for baseline
    val_lr: str | None = None  # validation pairs: real LR and its HR, matched by file name
    val_hr: str | None = None
    out: str = ""  # run folder: checkpoints, log.jsonl, loss.png
    arch: str = "compact"  # architecture preset (realsr_cli.training.nets.PRESETS)
    arch_overrides: dict[str, Any] = field(default_factory=dict)  # ArchConfig fields replacing the preset's
    baseline: bool = False  # L_rec's pixel L1 alone on bicubic pairs: E + G_SR only, no target data, no discriminators
    init_from: str | None = None  # warm start: a checkpoint whose encoder/sr_decoder/lr_decoder weights start the run
    resume: bool = False  # continue the run in `out` from its last.pth, bit-exactly
    iters: int = 50_000  # total generator steps (a resumed run continues up to this)
    lr_patch: int = 48  # LR crop edge in pixels; the HR crop is scale times that
    batch_size: int = 16
    workers: int = 0  # threads that decode the images once at start-up; 0 = one per core
    seed: int = 0
    log_every: int = 100  # steps between progress lines (without a terminal)
    val_every: int = 1000  # steps between validations (needs val_lr and val_hr); 0 = only at the end
    checkpoint_every: int = 1000  # steps between checkpoints (step_NNNNNNN.pth and last.pth)
    keep_checkpoints: int = 3  # numbered checkpoints kept (oldest deleted first); 0 = keep all
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    amp: Amp = "auto"
    threads: int = 0  # CPU threads for torch; 0 = one per available core
    # what D_t judges in L_sty: "image" (the paper) or "highpass" (the image minus its 5x5 box blur: blur, noise and
    # sharpening but not colour; with whole images, G_t also copies the target photos' colour cast, and G_SR
    # learns to undo a cast that real inputs do not have)
    sty_input: StyInput = "image"
    # decay of an exponential moving average of the generators' weights, updated after every step; validation,
    # model.pth and exports use the average (a GAN's weights wander step to step; their average does not). 0 = off
    ema: float = 0.0
    weights: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # synthetic degradations of x_s besides bicubic (realsr_cli.quality.degrade); off = the paper's bicubic x_s
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self) -> None:
        for key in ("iters", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.lr_patch < 8:  # the discriminators downsample LR crops 4x
            raise ConfigError(f"lr_patch must be at least 8 pixels, got {self.lr_patch}")
        for key in ("workers", "seed", "val_every", "keep_checkpoints", "threads"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative, got {getattr(self, key)}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema must lie in [0, 1), got {self.ema}")
        check_choices(self)

    @property
    def effective_weights(self) -> LossWeights:
        """The weights training uses: `baseline` keeps only L_rec's pixel term (alpha = beta = 0, the rest 0)."""
        if self.baseline:
            return LossWeights(rec=self.weights.rec, align=0, res=0, sty=0, idt=0, cyc=0, alpha=0, beta=0, fm=0)
        return self.weights

    @property
    def needs_target(self) -> bool:
        """Whether any active loss reads target LR images (L_align, L_res, L_sty do; L_idt and L_cyc do not)."""
        w = self.effective_weights
        return w.align > 0 or w.res > 0 or w.sty > 0

    def check(self) -> None:
        """Raise ConfigError when the config cannot start a run (missing folders, half a validation pair)."""
        if not self.source_hr:
            raise ConfigError("source_hr (--source-hr) is required: a folder of clean HR photos")
        if not self.out:
            raise ConfigError("out (--out) is required: the run folder")
        if self.needs_target and not self.target_lr:
            raise ConfigError(
                "target_lr (--target-lr) is required unless baseline (--baseline) or the weights of "
                "align, res and sty are all 0"
            )
        if bool(self.val_lr) != bool(self.val_hr):
            raise ConfigError("validation needs both val_lr (--val-lr) and val_hr (--val-hr), or neither")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "train config") -> TrainConfig:
        """Build from plain data (TOML, a checkpoint's config), strictly: unknown keys and wrong types raise
        ConfigError."""
        return dataclass_from_dict(cls, data, where)


# keys a resumed run may change: they steer the run, not what it computes (the run folder may move, too)
RESUME_MUTABLE_KEYS = frozenset(
    {
        "out",
        "resume",
        "iters",
        "log_every",
        "val_every",
        "checkpoint_every",
        "keep_checkpoints",
        "workers",
        "device",
        "amp",
        "threads",
        "val_lr",
        "val_hr",
    }
)
# keys holding paths: relative ones in a TOML file are relative to that file's folder
TRAIN_PATH_KEYS = ("source_hr", "target_lr", "val_lr", "val_hr", "out", "init_from")


def load_train_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a run TOML file into plain data, with relative paths made absolute against the file's folder.

    The result is checked by `TrainConfig.from_dict` once merged with its base (see `merge_config`).
    Raises ConfigError for a missing or malformed file.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror or err})") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    for key in TRAIN_PATH_KEYS:
        if isinstance(data.get(key), str) and data[key]:
            data[key] = str((path.parent / data[key]).resolve())
    return data


def merge_config(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overlay`'s keys replacing its own; tables merge key by key (weights, optim, arch_overrides)."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def with_value(cfg: Any, dotted: str, value: Any) -> Any:
    """A copy of frozen dataclass `cfg` with the field at `dotted` ("optim.lr") replaced."""
    head, _, rest = dotted.partition(".")
    if rest:
        value = with_value(getattr(cfg, head), rest, value)
    return replace(cfg, **{head: value})


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (tables compared key by key)."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and key != "arch_overrides":
            diffs += config_differences(va, vb, f"{prefix}{key}.")
        elif _plain(va) != _plain(vb):
            diffs.append(prefix + key)
    return diffs


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
