"""The method's losses, one function per term of the paper (docs/method.md), least-squares GAN everywhere.

Every function returns a float32 scalar: inputs produced under autocast (bf16/fp16) are upcast before the
difference is taken, so the reductions run in fp32. Scores are discriminator outputs of any shape (per patch
or per image); E[.] is their mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Score = Callable[[Tensor], Tensor]
# D_HR seen by the generator: an SR image -> (D_HR's scores, the feature-matching distance L_fm to y_s or None)
Critic = Callable[[Tensor], tuple[Tensor, Tensor | None]]


def lsgan(score: Tensor, target: float) -> Tensor:
    """Least-squares GAN term E[(score - target)^2] (Mao et al. 2017)."""
    return (score.float() - target).square().mean()


def l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference, in fp32."""
    return (a.float() - b.float()).abs().mean()


def l_fea(sr_features: Tensor, hr_features: Tensor) -> Tensor:
    """L_fea: L1 between perceptual features (VGG19 conv5_4 before ReLU, see realsr_cli.training.vgg) of SR and HR."""
    return l1(sr_features, hr_features)


def l_fm(sr_features: list[Tensor], hr_features: list[Tensor]) -> Tensor:
    """L_fm, this project's perceptual term (not the paper's; pix2pixHD's feature matching): the mean over D_HR's
    layers of the L1 distance between its activations on SR and on y_s. It needs no pretrained weights, so it
    stands in for the VGG19 term where those cannot be downloaded."""
    return sum(l1(a, b) for a, b in zip(sr_features, hr_features, strict=True)) / len(sr_features)


def l_adv_generator(fake_score: Tensor) -> Tensor:
    """L_adv, the generator's LSGAN term against D_HR: push D_HR(sr) to 1 (real)."""
    return lsgan(fake_score, 1.0)


def l_adv_disc(fake_score: Tensor, real_score: Tensor) -> Tensor:
    """D_HR's LSGAN loss: D_HR(sr) -> 0, D_HR(y_s) -> 1."""
    return lsgan(fake_score, 0.0) + lsgan(real_score, 1.0)


def l_rec(
    source_hr: Tensor,
    sr: Tensor,
    *,
    alpha: float = 0.0,
    beta: float = 0.0,
    fm: float = 0.0,
    fea: Score | None = None,
    critic: Critic | None = None,
) -> Tensor:
    """L_rec = |y_s - G_SR(E(x_s))|_1 + alpha * L_fea(y_s, sr) + beta * L_adv(sr) + fm * L_fm(sr, y_s).

    `fea(sr)` returns L_fea against y_s (the caller binds y_s's features once); `critic(sr)` returns D_HR's scores
    and L_fm (one D_HR pass serves both). Each is called only when a weight needs it, so alpha = 0 never touches
    VGG and beta = fm = 0 never D_HR.
    """
    loss = l1(source_hr, sr)
    if alpha:
        loss = loss + alpha * fea(sr)
    if beta or fm:
        scores, matching = critic(sr)
        if beta:
            loss = loss + beta * l_adv_generator(scores)
        if fm:
            loss = loss + fm * matching
    return loss


def l_cyc(source_hr: Tensor, cycle_sr: Tensor, **terms) -> Tensor:
    """L_cyc = |y_s - G_SR(E(G_t(E(x_s))))|_1 plus the same perceptual, adversarial and feature-matching terms as
    L_rec (docs/method.md; `terms` are l_rec's keywords): the source image carried into the target style must still
    super-resolve to y_s."""
    return l_rec(source_hr, cycle_sr, **terms)


def l_align_encoder(target_score: Tensor, source_score: Tensor) -> Tensor:
    """L_align(E) = E[(D_f(E(x_t)) - 0.5)^2] + E[(D_f(E(x_s)) - 0.5)^2]: make both domains' features ambiguous."""
    return lsgan(target_score, 0.5) + lsgan(source_score, 0.5)


def l_align_disc(target_score: Tensor, source_score: Tensor) -> Tensor:
    """L_align(D_f) = E[(D_f(E(x_t)) - 0)^2] + E[(D_f(E(x_s)) - 1)^2]: D_f tells target (0) from source (1)."""
    return lsgan(target_score, 0.0) + lsgan(source_score, 1.0)


def l_res(target_lr: Tensor, restored_target_lr: Tensor) -> Tensor:
    """L_res = |x_t - G_t(E(x_t))|_1: the target decoder reconstructs the target image from its features."""
    return l1(target_lr, restored_target_lr)


def l_sty_generator(fake_score: Tensor) -> Tensor:
    """L_sty(E, G_t) = E[(D_t(G_t(E(x_s))) - 1)^2]: x_{s->t} should look like a real target image."""
    return lsgan(fake_score, 1.0)


def l_sty_disc(fake_score: Tensor, real_score: Tensor) -> Tensor:
    """L_sty(D_t) = E[(D_t(x_{s->t}) - 0)^2] + E[(D_t(x_t) - 1)^2]."""
    return lsgan(fake_score, 0.0) + lsgan(real_score, 1.0)


def l_idt(source_features: Tensor, cycle_features: Tensor) -> Tensor:
    """L_idt = |E(x_s) - E(G_t(E(x_s)))|_1: x_{s->t} has x_s's content, so its degradation-free features must match."""
    return l1(source_features, cycle_features)


_LUMA_8BIT = (0.299 * 255, 0.587 * 255, 0.114 * 255)  # BT.601 luma of a [0, 1] RGB image, in 8-bit levels


def l_grid(sr: Tensor, period: int = 4) -> Tensor:
    """L_grid, this project's addition (not the paper's): the sub-pixel grid of an x`period` SR output.

    Per image: high-pass the luma (minus its 5x5 box mean, edges mirrored as gridscore.py does), average it over
    each of the period x period output positions (y mod period, x mod period), and take the spread of those means;
    the loss is its mean over the batch. This is the grid score of shared/tools/gridscore.py, in 8-bit luma levels, made
    differentiable: natural images score ~0.1, a PixelShuffle checkerboard far more. Adversarial and style
    terms reward that periodic texture (and NIQE scores it as detail), so this term keeps it out. `sr` (N, 3, H, W)
    with H and W multiples of `period` (crops are cut on the scale grid, so position mod period is the phase).
    """
    x = sr.float()
    luma = (x[:, 0] * _LUMA_8BIT[0] + x[:, 1] * _LUMA_8BIT[1] + x[:, 2] * _LUMA_8BIT[2]).unsqueeze(1)
    high = highpass(luma).squeeze(1)  # (N, H, W)
    n, h, w = high.shape
    phases = high.reshape(n, h // period, period, w // period, period).mean(dim=(1, 3)).reshape(n, -1)
    # sqrt(var + eps), not std: std's gradient is undefined where all phases agree
    return (phases.var(dim=1, unbiased=False) + 1e-8).sqrt().mean()


def l_colour(source_hr: Tensor, sr: Tensor, block: int = 8) -> Tensor:
    """L_colour, this project's addition (not the paper's): L1 between the `block` x `block` means of y_s and of an
    SR image. L1 on pixels fits the median of the plausible outputs, and the adversarial and feature-matching terms
    are blind to a slow shift, so GAN training drifted the colours a level or two (the model card's bias column);
    averaged blocks carry the colour and tone but none of the texture, which stays the other terms' to shape."""
    return l1(F.avg_pool2d(source_hr.float(), block), F.avg_pool2d(sr.float(), block))


def highpass(images: Tensor) -> Tensor:
    """Images minus their 5x5 box mean (edges mirrored as gridscore.py does), per channel: (N, C, H, W) -> same."""
    blurred = F.avg_pool2d(_pad_symmetric(images, 2), 5, stride=1)
    return images - blurred


def _pad_symmetric(x: Tensor, pad: int) -> Tensor:
    """Mirror-pad the last two dims including the edge pixel (numpy's "symmetric"; torch's "reflect" skips it)."""
    x = torch.cat([x[..., :pad, :].flip(-2), x, x[..., -pad:, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :pad].flip(-1), x, x[..., -pad:].flip(-1)], dim=-1)


def generator_objective(terms: dict[str, Tensor], weights) -> Tensor:
    """L = sum of weight * term over the terms present, weights named as the terms without the `l_` prefix
    (`weights.rec` for `l_rec`; a LossWeights)."""
    total = torch.zeros((), dtype=torch.float32, device=next(iter(terms.values())).device)
    for name, value in terms.items():
        total = total + getattr(weights, name.removeprefix("l_")) * value
    return total
