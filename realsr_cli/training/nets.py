"""The method's networks, their architecture presets, and the self-describing checkpoint.

Paper names -> names here, used everywhere in realsr:
    E     -> encoder       (LR image -> degradation-free features, full LR resolution)
    G_SR  -> sr_decoder    (features -> HR image, x scale)
    G_t   -> lr_decoder    (features -> LR image in the target domain's degradation style)
    D_f   -> feature_disc  (source features vs target features)
    D_t   -> lr_disc       (real target LR vs generated x_{s->t})
    D_HR  -> hr_disc       (real HR vs super-resolved)
Inference is `sr_decoder(encoder(x))`, wrapped as `SRNet` for export. The paper gives no layer-level design;
the `paper` preset follows the public re-implementation described in method.md, `compact` is this project's.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from realsr_cli._files import atomic_write, file_sha256, first_line
from realsr_cli._strict import dataclass_from_dict
from realsr_cli.errors import InputError, ModelError
from realsr_cli.spec import ModelSpec

CHECKPOINT_FORMAT = "realsr-checkpoint"
CHECKPOINT_VERSION = 1

GENERATOR_ROLES = ("encoder", "sr_decoder", "lr_decoder")
DISCRIMINATOR_ROLES = ("feature_disc", "lr_disc", "hr_disc")


@dataclass(frozen=True)
class ArchConfig:
    """Every hyperparameter that shapes the networks; a checkpoint rebuilds its networks from this alone."""

    name: str = "compact"
    scale: int = 4
    in_channels: int = 3
    channels: int = 48  # feature width everywhere in the generators; a multiple of 16 suits AVX-512 kernels
    encoder_block: str = "residual"  # "conv" (conv + LeakyReLU) or "residual" (conv-act-conv + skip)
    encoder_blocks: int = 3
    body_block: str = "residual"  # decoders' block: "residual" or "rrdb" (ESRGAN's residual-in-residual dense block)
    sr_blocks: int = 4
    lr_blocks: int = 3
    growth: int = 32  # rrdb growth channels
    upsample: str = "pixelshuffle"  # "pixelshuffle" (one x scale step) or "nearest" (ESRGAN: x2 nearest + conv, repeated)
    hr_channels: int = 16  # pixelshuffle only: channels after the shuffle, smoothed by one HR conv; 0 = shuffle straight to RGB
    disc: str = "patch"  # "patch" (fully convolutional, LSGAN per patch) or "vgg" (strided VGG + BatchNorm + 2 linear)
    # D_HR's kind; "" = `disc`. "unet": Real-ESRGAN's U-Net critic with spectral normalisation, one score per pixel,
    # so it judges fine texture and the global shape at once and cannot reward one sub-pixel phase over another
    hr_disc_type: str = ""
    disc_channels: int = 32
    # D_HR's base width; 0 = disc_channels. D_HR sees scale**2 times the pixels of D_t, so at full width it costs more
    # than all three generators together; at 16 its forward+backward is ~3x cheaper (compact, 192 px HR crops, CPU)
    hr_disc_channels: int = 0

    def __post_init__(self) -> None:
        choices = {
            "encoder_block": ("conv", "residual"),
            "body_block": ("residual", "rrdb"),
            "upsample": ("pixelshuffle", "nearest"),
            "disc": ("patch", "vgg"),
            "hr_disc_type": ("", "patch", "vgg", "unet"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ModelError(f"unknown {key} {getattr(self, key)!r}; choose one of {', '.join(allowed)}")
        if self.scale < 1:
            raise ModelError(f"scale must be a positive integer, got {self.scale}")
        if self.upsample == "nearest" and self.scale & (self.scale - 1):
            raise ModelError(f"nearest upsampling needs a power-of-two scale, got {self.scale}")
        for key in ("channels", "encoder_blocks", "sr_blocks", "lr_blocks", "growth", "disc_channels", "hr_disc_channels"):
            if getattr(self, key) < (1 if key == "channels" else 0):
                raise ModelError(f"{key} must not be negative, got {getattr(self, key)}")

    @classmethod
    def from_dict(cls, data: dict) -> ArchConfig:
        """Strictly (`_strict`): unknown keys and wrong types raise ModelError."""
        return dataclass_from_dict(cls, data, "architecture", ModelError)


PRESETS: dict[str, ArchConfig] = {
    # the shipped model's family: ~0.44 M parameters in encoder + sr_decoder, fast on CPU
    "compact": ArchConfig(),
    # method.md's public re-implementation: E = 5 convs, G_SR = 23 RRDB + nearest x2 twice, G_t = 10 RRDB,
    # VGG discriminators; ~17 M parameters in encoder + sr_decoder
    "paper": ArchConfig(
        name="paper",
        channels=64,
        encoder_block="conv",
        encoder_blocks=3,
        body_block="rrdb",
        sr_blocks=23,
        lr_blocks=10,
        upsample="nearest",
        disc="vgg",
        disc_channels=64,
    ),
}


def preset(name: str) -> ArchConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown architecture preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def _conv(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2)


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


class ConvBlock(nn.Sequential):
    def __init__(self, channels: int) -> None:
        super().__init__(_conv(channels, channels), _act())


class ResidualBlock(nn.Module):
    """conv-act-conv plus identity; the residual branch starts small so a deep stack starts near identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)
        self.act = _act()
        _scale_init(self.conv2, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class DenseBlock(nn.Module):
    """ESRGAN's five-conv dense block, output scaled by 0.2 before the skip."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(channels + i * growth, growth) for i in range(4))
        self.conv_out = _conv(channels + 4 * growth, channels)
        self.act = _act()
        _scale_init(self.conv_out, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return x + 0.2 * self.conv_out(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block (ESRGAN)."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.dense = nn.Sequential(*(DenseBlock(channels, growth) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.dense(x)


def _scale_init(conv: nn.Conv2d, gain: float) -> None:
    with torch.no_grad():
        conv.weight.mul_(gain)
        conv.bias.zero_()


def _blocks(kind: str, count: int, arch: ArchConfig) -> nn.Sequential:
    if kind == "conv":
        return nn.Sequential(*(ConvBlock(arch.channels) for _ in range(count)))
    if kind == "residual":
        return nn.Sequential(*(ResidualBlock(arch.channels) for _ in range(count)))
    return nn.Sequential(*(RRDB(arch.channels, arch.growth) for _ in range(count)))


class Encoder(nn.Module):
    """E: (N, in_channels, H, W) image in [0, 1] -> (N, channels, H, W) features."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.conv_in = _conv(arch.in_channels, arch.channels)
        self.act = _act()
        self.body = _blocks(arch.encoder_block, arch.encoder_blocks, arch)
        self.conv_out = _conv(arch.channels, arch.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.body(self.act(self.conv_in(x))))


class SRDecoder(nn.Module):
    """G_SR: (N, channels, H, W) features -> (N, in_channels, H*scale, W*scale) image."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        c = arch.channels
        self.body = _blocks(arch.body_block, arch.sr_blocks, arch)
        self.conv_body = _conv(c, c)
        self.act = _act()
        self.upsample = arch.upsample
        self.scale = arch.scale
        if arch.upsample == "pixelshuffle":
            out = arch.hr_channels or arch.in_channels
            self.conv_up = _conv(c, out * arch.scale**2)
            _icnr_init(self.conv_up, arch.scale)
            self.shuffle = nn.PixelShuffle(arch.scale)
            self.conv_hr = _conv(arch.hr_channels, arch.in_channels) if arch.hr_channels else None
            last = self.conv_hr or self.conv_up
        else:
            steps = arch.scale.bit_length() - 1  # log2(scale)
            self.up_convs = nn.ModuleList(_conv(c, c) for _ in range(steps))
            self.conv_hr = _conv(c, c)
            self.conv_last = _conv(c, arch.in_channels)
            last = self.conv_last
        # start at mid-grey rather than at black: images live in [0, 1], and an untrained net's
        # output then lies inside that range instead of being clamped away
        with torch.no_grad():
            last.bias.fill_(0.5)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        x = feat + self.conv_body(self.body(feat))
        if self.upsample == "pixelshuffle":
            x = self.shuffle(self.conv_up(x))
            if self.conv_hr is not None:
                x = self.conv_hr(self.act(x))
            return x
        for conv in self.up_convs:
            x = self.act(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        return self.conv_last(self.act(self.conv_hr(x)))


def _icnr_init(conv: nn.Conv2d, scale: int) -> None:
    """ICNR: every sub-pixel of a shuffle group starts with the same kernel, so the untrained shuffle is a
    nearest-neighbour upsampling and shows no checkerboard grid (Aitken et al. 2017)."""
    with torch.no_grad():
        out_ch = conv.out_channels // scale**2
        base = torch.empty(out_ch, conv.in_channels, *conv.kernel_size)
        nn.init.kaiming_normal_(base, a=0.2)
        conv.weight.copy_(base.repeat_interleave(scale**2, dim=0) * 0.1)
        conv.bias.zero_()


class LRDecoder(nn.Module):
    """G_t: (N, channels, H, W) features -> (N, in_channels, H, W) LR image in the target domain's style."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.body = _blocks(arch.body_block, arch.lr_blocks, arch)
        self.conv_out = _conv(arch.channels, arch.in_channels)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.conv_out(feat + self.body(feat))


class PatchDiscriminator(nn.Module):
    """Fully convolutional LSGAN critic: (N, in_channels, H, W) -> (N, 1, H / 2**downsamples, W / 2**downsamples) scores.

    `features(x)` returns the activations after each LeakyReLU and the scores, for feature matching."""

    def __init__(self, in_channels: int, base: int, downsamples: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(in_channels, base), _act()]
        ch = base
        for _ in range(downsamples):
            nxt = min(ch * 2, base * 8)
            layers += [_conv(ch, nxt, stride=2), _act(), _conv(nxt, nxt), _act()]
            ch = nxt
        layers.append(_conv(ch, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return x, feats


class UNetDiscriminator(nn.Module):
    """Real-ESRGAN's critic (Wang et al. 2021): three strided spectral-normalised convs down, three bilinear x2 up
    with skip additions, two convs, one score per input pixel: (N, in_channels, H, W) -> (N, 1, H, W), H and W
    multiples of 8. Spectral normalisation bounds its Lipschitz constant, which keeps the GAN stable at small batch.
    """

    def __init__(self, in_channels: int, base: int) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        c = base
        self.conv0 = _conv(in_channels, c)
        self.down = nn.ModuleList(sn(nn.Conv2d(a, b, 4, 2, 1, bias=False)) for a, b in ((c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c)))
        self.up = nn.ModuleList(sn(nn.Conv2d(a, b, 3, 1, 1, bias=False)) for a, b in ((8 * c, 4 * c), (4 * c, 2 * c), (2 * c, c)))
        self.tail = nn.ModuleList(sn(nn.Conv2d(c, c, 3, 1, 1, bias=False)) for _ in range(2))
        self.conv_out = _conv(c, 1)
        self.act = nn.LeakyReLU(0.2)  # not in place: the skips reuse the activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The scores and every intermediate activation (for feature matching)."""
        skips = [self.act(self.conv0(x))]
        for conv in self.down:
            skips.append(self.act(conv(skips[-1])))
        feats = list(skips)
        x = skips.pop()
        for conv in self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = self.act(conv(x)) + skips.pop()
            feats.append(x)
        for conv in self.tail:
            x = self.act(conv(x))
        feats.append(x)
        return self.conv_out(x), feats


class VGGDiscriminator(nn.Module):
    """The re-implementation's critic: conv pairs (3x3, then strided 4x4) with BatchNorm and LeakyReLU, pooled to 4x4,
    then two linear layers -> (N, 1). Adaptive pooling lets it take any patch size of at least 4 * 2**downsamples."""

    def __init__(self, in_channels: int, base: int, downsamples: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(in_channels, base), _act()]
        ch = base
        for i in range(downsamples):
            nxt = min(base * 2 ** (i + 1), base * 8)
            layers += [
                nn.Conv2d(ch, ch, 4, 2, 1, bias=False), nn.BatchNorm2d(ch), _act(),
                nn.Conv2d(ch, nxt, 3, 1, 1, bias=False), nn.BatchNorm2d(nxt), _act(),
            ]
            ch = nxt
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(ch * 16, 100), _act(), nn.Linear(100, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def _discriminator(arch: ArchConfig, in_channels: int, downsamples: int, base: int = 0, kind: str = "") -> nn.Module:
    kind = kind or arch.disc
    if kind == "unet":
        return UNetDiscriminator(in_channels, base or arch.disc_channels)
    cls = PatchDiscriminator if kind == "patch" else VGGDiscriminator
    return cls(in_channels, base or arch.disc_channels, downsamples)


class SRNet(nn.Module):
    """The inference network, y = G_SR(E(x)): (N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale), unclamped."""

    def __init__(self, encoder: Encoder, sr_decoder: SRDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.sr_decoder = sr_decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sr_decoder(self.encoder(x))


def build_generator(arch: ArchConfig) -> SRNet:
    return SRNet(Encoder(arch), SRDecoder(arch))


def build_networks(arch: ArchConfig) -> dict[str, nn.Module]:
    """All six networks of the method, keyed by role."""
    return {
        "encoder": Encoder(arch),
        "sr_decoder": SRDecoder(arch),
        "lr_decoder": LRDecoder(arch),
        # D_f sees LR-resolution features, D_t LR images, D_HR HR images (scale times larger: more downsampling)
        "feature_disc": _discriminator(arch, arch.channels, 2),
        "lr_disc": _discriminator(arch, arch.in_channels, 2),
        "hr_disc": _discriminator(
            arch, arch.in_channels, 2 + max(arch.scale.bit_length() - 1, 0), arch.hr_disc_channels, arch.hr_disc_type
        ),
    }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops_per_input_pixel(net: nn.Module, in_channels: int = 3) -> float:
    """Floating-point operations (2 per multiply-add) the network spends per input pixel, counted from its
    convolutions and linear layers on a probe input (activations, additions and the shuffle are not counted:
    they are a rounding error beside the convolutions)."""
    macs = 0

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    size = 32
    try:
        with torch.no_grad():
            net(torch.zeros(1, in_channels, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return 2.0 * macs / (size * size)


@functools.lru_cache(maxsize=16)
def measure_receptive_field(arch: ArchConfig) -> int:
    """Radius in input pixels of the region whose pixels can change one output pixel of `SRNet`, found by probing.

    The field depends on the layer topology only, so a thin copy of the network (4 channels, float64) is probed
    with the gradient of one input pixel's output block: it is non-zero exactly inside the field. Kernels are
    symmetric, so one-pixel-wide strips along each axis suffice. Every weight is set to 1 and every bias to 0, so
    all paths add positive amounts that cannot cancel, and the far paths cannot underflow: with random or
    normalised weights, the far paths of a deep residual stack fall below float64's range and the field reads
    far too small. Near the centre the sums overflow to inf, which is still non-zero; nothing subtracts.
    """
    thin = replace(arch, channels=4, growth=4, hr_channels=4 if arch.hr_channels else 0)
    net = build_generator(thin).double().eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
    net.requires_grad_(False)
    radius = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # strips are tiny: extra threads only spin, and on a busy machine they crawl
    try:
        for axis in (2, 3):
            radius = max(radius, _probe_axis(net, thin, axis))
    finally:
        torch.set_num_threads(threads)
    return radius


def _probe_axis(net: SRNet, thin: ArchConfig, axis: int) -> int:
    s = thin.scale
    size = 65
    while True:
        shape = [1, thin.in_channels, 1, 1]
        shape[axis] = size
        x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
        centre = size // 2
        y = net(x)
        y.narrow(axis, centre * s, s).sum().backward()  # the output block of the centre pixel
        grad = x.grad[0].sum(dim=0).flatten()
        assert not grad.isnan().any(), "receptive-field probe produced NaN"
        touched = (grad > 0).nonzero().flatten()
        radius = int((touched - centre).abs().max())
        if radius < centre:  # the field fits inside the probe: measured, not clipped
            return radius
        size = 2 * size + 1


def spec_for(arch: ArchConfig, source_sha256: str = "") -> ModelSpec:
    return ModelSpec(
        scale=arch.scale,
        channels=arch.in_channels,
        size_multiple=1,
        receptive_field=measure_receptive_field(arch),
        supports_half=True,
        architecture=arch.name,
        source_sha256=source_sha256,
    )


@dataclass
class Checkpoint:
    """A loaded checkpoint: architecture, spec, per-role state dicts, and training state when present."""

    arch: ArchConfig
    spec: ModelSpec
    states: dict[str, dict]  # role -> state dict
    ema_states: dict[str, dict]  # generator role -> the moving average of its weights (training with ema > 0)
    step: int
    optimizers: dict
    config: dict
    provenance: dict
    sha256: str
    path: Path

    @property
    def final_states(self) -> dict[str, dict]:
        """The weights to use: each generator's moving average where the run kept one, else its raw weights."""
        return {**self.states, **self.ema_states}

    def generator(self) -> SRNet:
        """E + G_SR with this checkpoint's final weights (`final_states`), in eval mode."""
        net = build_generator(self.arch)
        _load_state(net.encoder, self.final_states, "encoder", self.path)
        _load_state(net.sr_decoder, self.final_states, "sr_decoder", self.path)
        return net.eval()

    def networks(self) -> dict[str, nn.Module]:
        """Every network the checkpoint holds weights for, loaded with its final weights; networks it lacks keep
        their fresh initialisation."""
        nets = build_networks(self.arch)
        for role, net in nets.items():
            if role in self.states:
                _load_state(net, self.final_states, role, self.path)
        return nets


def _load_state(net: nn.Module, states: dict, role: str, path: Path) -> None:
    if role not in states:
        raise ModelError(f"{path}: checkpoint has no {role} weights")
    try:
        net.load_state_dict(states[role])
    except RuntimeError as err:
        raise ModelError(f"{path}: {role} weights do not fit the checkpoint's architecture: {first_line(err)}") from err


def save_checkpoint(
    path: str | os.PathLike,
    arch: ArchConfig,
    networks: dict[str, nn.Module],
    *,
    step: int = 0,
    optimizers: dict | None = None,
    config: dict | None = None,
    provenance: dict | None = None,
    ema: dict[str, nn.Module] | None = None,
) -> Path:
    """Write a self-describing checkpoint atomically (temp file + rename), loadable with weights_only=True.

    `networks` maps roles (GENERATOR_ROLES, DISCRIMINATOR_ROLES) to modules; `optimizers` maps names to optimizer
    state dicts; `config` is the training config as plain data; `provenance` says where the weights came from;
    `ema` maps generator roles to the moving averages of their weights.
    """
    ema = ema or {}
    unknown = sorted(set(networks) - set(GENERATOR_ROLES) - set(DISCRIMINATOR_ROLES)) + sorted(set(ema) - set(GENERATOR_ROLES))
    if unknown:
        raise ModelError(f"unknown network roles: {', '.join(unknown)}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": asdict(arch),
        "spec": spec_for(arch).to_dict(),
        "states": {role: _cpu_state(net) for role, net in networks.items()},
        "ema_states": {role: _cpu_state(net) for role, net in ema.items()},
        "step": int(step),
        "optimizers": copy.deepcopy(optimizers or {}),
        "config": config or {},
        "provenance": provenance or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path


def _cpu_state(net: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def release_checkpoint(source: Checkpoint, path: str | os.PathLike) -> Path:
    """Write the shippable form of a trained checkpoint: the generators it holds (E, G_SR and G_t when trained) with
    their final weights (the moving average where the run kept one), its config and provenance, without optimizer,
    discriminator or raw-weight state (a fraction of the size)."""
    nets = source.networks()
    generators = {role: nets[role] for role in GENERATOR_ROLES if role in source.states}
    provenance = {**source.provenance, "released_from": {"path": str(source.path), "sha256": source.sha256}}
    return save_checkpoint(path, source.arch, generators, step=source.step, config=source.config, provenance=provenance)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint as untrusted input (weights_only=True). Raises InputError or ModelError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types on garbage input (IndexError, UnpicklingError, ...)
        text = str(err).strip()
        if "Weights only load failed" in text:
            reason = "it holds Python objects that a safe (weights-only) load refuses"
        else:
            reason = first_line(err)
        raise InputError(f"{path}: not a readable realsr checkpoint ({reason})") from err
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a realsr checkpoint (no '{CHECKPOINT_FORMAT}' format marker)")
    if data.get("version", 0) > CHECKPOINT_VERSION:
        raise InputError(
            f"{path}: checkpoint format version {data['version']} is newer than this realsr reads ({CHECKPOINT_VERSION})"
        )
    arch = ArchConfig.from_dict(data["arch"])
    sha = file_sha256(path)
    return Checkpoint(
        arch=arch,
        spec=replace(ModelSpec.from_dict(data["spec"]), source_sha256=sha),
        states=data["states"],
        ema_states=data.get("ema_states", {}),
        step=int(data.get("step", 0)),
        optimizers=data.get("optimizers", {}),
        config=data.get("config", {}),
        provenance=data.get("provenance", {}),
        sha256=sha,
        path=path,
    )
