"""The method's networks, their architecture presets, and the receptive-field probe (the checkpoint file that
stores them is `checkpoint.py`).

Paper names -> names here, used everywhere in realsr:
    E     -> encoder       (LR image -> degradation-free features, full LR resolution)
    G_SR  -> sr_decoder    (features -> HR image, x scale)
    G_t   -> lr_decoder    (features -> LR image in the target domain's degradation style)
    D_f   -> feature_disc  (source features vs target features)
    D_t   -> lr_disc       (real target LR vs generated x_{s->t})
    D_HR  -> hr_disc       (real HR vs super-resolved)
Inference is `sr_decoder(encoder(x))`, wrapped as `SRNet` for export. The paper gives no layer-level design;
the `paper` preset follows the public re-implementation described in docs/method.md, `compact` is this project's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from realsr_cli._strict import check_choices, dataclass_from_dict
from realsr_cli.errors import ModelError

GENERATOR_ROLES = ("encoder", "sr_decoder", "lr_decoder")
DISCRIMINATOR_ROLES = ("feature_disc", "lr_disc", "hr_disc")


@dataclass(frozen=True)
class ArchConfig:
    """Every hyperparameter that shapes the networks; a checkpoint rebuilds its networks from this alone."""

    name: str = "compact"
    scale: int = 4
    in_channels: int = 3
    channels: int = 48  # feature width everywhere in the generators; a multiple of 16 suits AVX-512 kernels
    encoder_block: Literal["conv", "residual"] = "residual"  # conv + LeakyReLU, or conv-act-conv + skip
    encoder_blocks: int = 3
    # the decoders' block; rrdb: ESRGAN's residual-in-residual dense block
    body_block: Literal["residual", "rrdb"] = "residual"
    sr_blocks: int = 4
    lr_blocks: int = 3
    growth: int = 32  # rrdb growth channels
    # one x scale step, or ESRGAN's x2 nearest + conv, repeated
    upsample: Literal["pixelshuffle", "nearest"] = "pixelshuffle"
    hr_channels: int = (
        16  # pixelshuffle only: channels after the shuffle, smoothed by one HR conv; 0 = shuffle straight to RGB
    )
    # fully convolutional, LSGAN per patch; or strided VGG + BatchNorm + 2 linear
    disc: Literal["patch", "vgg"] = "patch"
    # D_HR's kind; "" = `disc`. "unet": Real-ESRGAN's U-Net critic with spectral normalisation, one score per pixel,
    # so it judges fine texture and the global shape at once and cannot reward one sub-pixel phase over another
    hr_disc_type: Literal["", "patch", "vgg", "unet"] = ""
    disc_channels: int = 32
    # D_HR's base width; 0 = disc_channels. D_HR sees scale**2 times the pixels of D_t, so at full width it costs more
    # than all three generators together; at 16 its forward+backward is ~3x cheaper (compact, 192 px HR crops, CPU)
    hr_disc_channels: int = 0

    def __post_init__(self) -> None:
        check_choices(self, ModelError)
        if self.scale < 1:
            raise ModelError(f"scale must be a positive integer, got {self.scale}")
        if self.upsample == "nearest" and self.scale & (self.scale - 1):
            raise ModelError(f"nearest upsampling needs a power-of-two scale, got {self.scale}")
        for key in (
            "channels",
            "encoder_blocks",
            "sr_blocks",
            "lr_blocks",
            "growth",
            "disc_channels",
            "hr_disc_channels",
        ):
            if getattr(self, key) < (1 if key == "channels" else 0):
                raise ModelError(f"{key} must not be negative, got {getattr(self, key)}")

    @classmethod
    def from_dict(cls, data: dict) -> ArchConfig:
        """Strictly (`_strict`): unknown keys and wrong types raise ModelError."""
        return dataclass_from_dict(cls, data, "architecture", ModelError)


PRESETS: dict[str, ArchConfig] = {
    # the shipped model's family: ~0.44 M parameters in encoder + sr_decoder, fast on CPU
    "compact": ArchConfig(),
    # docs/method.md: the public re-implementation: E = 5 convs, G_SR = 23 RRDB + nearest x2 twice, G_t = 10 RRDB,
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
    """Fully convolutional LSGAN critic: (N, in_channels, H, W) -> (N, 1, H / 2**downsamples, W / 2**downsamples)
    scores.

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
        self.down = nn.ModuleList(
            sn(nn.Conv2d(a, b, 4, 2, 1, bias=False)) for a, b in ((c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c))
        )
        self.up = nn.ModuleList(
            sn(nn.Conv2d(a, b, 3, 1, 1, bias=False)) for a, b in ((8 * c, 4 * c), (4 * c, 2 * c), (2 * c, c))
        )
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
                nn.Conv2d(ch, ch, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch),
                _act(),
                nn.Conv2d(ch, nxt, 3, 1, 1, bias=False),
                nn.BatchNorm2d(nxt),
                _act(),
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
