"""Each loss of the method against values worked out by hand on tiny tensors, plus the VGG19 perceptual network."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from realsr_cli.config import LossWeights
from realsr_cli.errors import ConfigError
from realsr_cli.training import losses


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_lsgan_is_the_mean_squared_distance_to_the_label():
    # ((0.2 - 1)^2 + (0.8 - 1)^2) / 2 = (0.64 + 0.04) / 2
    assert losses.lsgan(t(0.2, 0.8), 1.0).item() == pytest.approx(0.34)
    assert losses.lsgan(t(0.2, 0.8), 0.0).item() == pytest.approx((0.04 + 0.64) / 2)


def test_l_rec_pixel_term_alone():
    # |0 - .5| + |1 - .5| + |.5 - .5| + |.25 - .5| = 1.25, over 4 pixels
    hr, sr = t(0.0, 1.0, 0.5, 0.25).view(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    assert losses.l_rec(hr, sr).item() == pytest.approx(0.3125)


def test_l_rec_adds_alpha_perceptual_and_beta_adversarial_terms():
    hr, sr = t(0.0, 1.0, 0.5, 0.25).view(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    # L_fea stand-in: sum of sr = 2.0; D_HR stand-in: mean of sr = 0.5, so L_adv = (0.5 - 1)^2 = 0.25
    value = losses.l_rec(hr, sr, alpha=0.1, beta=0.5, fea=lambda x: x.sum(), critic=lambda x: (x.mean(), None))
    assert value.item() == pytest.approx(0.3125 + 0.1 * 2.0 + 0.5 * 0.25)


def test_l_rec_adds_fm_feature_matching_from_the_same_critic_pass():
    hr, sr = t(0.0, 1.0, 0.5, 0.25).view(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    calls = []

    def critic(x):
        calls.append(x)
        return x.mean(), t(0.4)

    value = losses.l_rec(hr, sr, beta=0.5, fm=2.0, critic=critic)
    assert value.item() == pytest.approx(0.3125 + 0.5 * 0.25 + 2.0 * 0.4)
    assert len(calls) == 1


def test_l_fm_averages_the_l1_distance_over_layers():
    sr_feats = [t(1.0, 2.0), t(0.0, 0.0, 0.0, 4.0)]
    hr_feats = [t(1.0, 0.0), t(0.0, 0.0, 0.0, 0.0)]
    # layer 1: (0 + 2) / 2 = 1; layer 2: 4 / 4 = 1; mean 1
    assert losses.l_fm(sr_feats, hr_feats).item() == pytest.approx(1.0)


def test_zero_weights_never_call_vgg_or_the_hr_discriminator():
    def boom(_):
        raise AssertionError("called although its weight is 0")

    hr, sr = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    assert losses.l_rec(hr, sr, alpha=0.0, beta=0.0, fea=boom, critic=boom).item() == pytest.approx(1.0)
    assert losses.l_cyc(hr, sr, alpha=0.0, beta=0.0, fea=boom, critic=boom).item() == pytest.approx(1.0)


def test_l_cyc_has_the_same_form_as_l_rec():
    # |1 - .75| + |1 - 1.5| = 0.75 over 2 pixels; L_adv with D = mean = 1.125: (1.125 - 1)^2 = 0.015625
    hr, cyc = t(1.0, 1.0), t(0.75, 1.5)
    assert losses.l_cyc(hr, cyc).item() == pytest.approx(0.375)
    assert losses.l_cyc(hr, cyc, beta=2.0, critic=lambda x: (x.mean(), None)).item() == pytest.approx(
        0.375 + 2 * 0.015625
    )


def test_l_align_encoder_pushes_both_domains_to_one_half():
    # target (0 - .5)^2, (1 - .5)^2 -> mean 0.25; source exactly 0.5 -> 0
    assert losses.l_align_encoder(t(0.0, 1.0), t(0.5, 0.5)).item() == pytest.approx(0.25)


def test_l_align_disc_labels_target_0_and_source_1():
    # target vs 0: (0 + 1) / 2 = 0.5; source vs 1: (.25 + .25) / 2 = 0.25
    assert losses.l_align_disc(t(0.0, 1.0), t(0.5, 0.5)).item() == pytest.approx(0.75)


def test_l_res_is_l1_between_target_and_its_reconstruction():
    x_t = t(0.1, 0.2, 0.3, 0.4).view(1, 1, 2, 2)
    rec = t(0.1, 0.1, 0.5, 0.4).view(1, 1, 2, 2)
    # |0| + |.1| + |.2| + |0| = 0.3 over 4
    assert losses.l_res(x_t, rec).item() == pytest.approx(0.075)


def test_l_sty_generator_and_disc():
    fake, real = t(0.0, 0.5), t(1.0, 0.0)
    # generator: ((0 - 1)^2 + (.5 - 1)^2) / 2 = 0.625
    assert losses.l_sty_generator(fake).item() == pytest.approx(0.625)
    # disc: fake vs 0: (0 + .25) / 2 = .125; real vs 1: (0 + 1) / 2 = .5
    assert losses.l_sty_disc(fake, real).item() == pytest.approx(0.625)


def test_l_idt_is_l1_between_features():
    assert losses.l_idt(t(1.0, -1.0), t(0.5, -1.5)).item() == pytest.approx(0.5)


def test_adversarial_hr_terms():
    assert losses.l_adv_generator(t(0.5, 1.5)).item() == pytest.approx(0.25)  # (.25 + .25) / 2
    assert losses.l_adv_disc(t(0.5), t(0.5)).item() == pytest.approx(0.5)  # .25 + .25


def test_l_fea_is_l1_between_feature_maps():
    assert losses.l_fea(t(1.0, 2.0, 3.0), t(1.0, 1.0, 1.0)).item() == pytest.approx(1.0)  # (0 + 1 + 2) / 3


def test_generator_objective_weights_each_term():
    terms = {"l_rec": t(2.0)[0], "l_align": t(3.0)[0], "l_cyc": t(1.0)[0]}
    weights = LossWeights(rec=1.0, align=0.01, cyc=0.5)
    assert losses.generator_objective(terms, weights).item() == pytest.approx(2.0 + 0.03 + 0.5)


def test_losses_reduce_in_fp32_for_half_inputs():
    a = torch.tensor([0.1, 0.2], dtype=torch.bfloat16)
    assert losses.l1(a, torch.zeros(2, dtype=torch.float16)).dtype == torch.float32
    assert losses.lsgan(a, 1.0).dtype == torch.float32


def test_loss_gradients_flow_into_both_arguments_of_l_idt():
    a = torch.tensor([1.0, -1.0], requires_grad=True)
    b = torch.tensor([0.5, -1.5], requires_grad=True)
    losses.l_idt(a, b).backward()
    assert a.grad.tolist() == [0.5, 0.5] and b.grad.tolist() == [-0.5, -0.5]


def _gridscore_reference(rgb8: np.ndarray, period: int = 4) -> float:
    """shared/tools/gridscore.py's measure, in numpy, on an (H, W, 3) uint8 image (PIL's "L" luma rounding aside)."""
    y = rgb8.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    p = np.pad(y, 2, mode="symmetric")
    c = np.pad(np.cumsum(np.cumsum(p, 0), 1), ((1, 0), (1, 0)))
    hp = y - (c[5:, 5:] - c[:-5, 5:] - c[5:, :-5] + c[:-5, :-5]) / 25.0
    h, w = hp.shape
    return float(hp.reshape(h // period, period, w // period, period).mean(axis=(0, 2)).std())


def test_l_grid_is_the_grid_score_of_each_image_averaged():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:48, :40]
    smooth = (120 + 50 * np.sin(yy / 3.7) * np.cos(xx / 5.3))[..., None] * np.array([1.0, 0.9, 0.8])  # no 4-px period
    period = np.array([[6, -6, 0, 3], [0, 2, -4, 0], [5, 0, 0, -2], [0, -3, 1, 0]], float)
    grid = np.tile(period[..., None], (12, 10, 3))
    images = [
        np.clip(smooth + rng.normal(0, 2, smooth.shape), 0, 255).round().astype(np.uint8),
        np.clip(smooth + grid, 0, 255).round().astype(np.uint8),
    ]
    batch = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2) / 255.0)
    expected = [_gridscore_reference(im) for im in images]
    assert expected[1] > 10 * expected[0]  # the fixture really has a grid in one image only
    assert losses.l_grid(batch).item() == pytest.approx(np.mean(expected), rel=1e-4)


def test_l_grid_has_a_finite_gradient_on_a_grid_free_image():
    flat = torch.full((1, 3, 16, 16), 0.5, requires_grad=True)
    loss = losses.l_grid(flat)
    loss.backward()
    assert loss.item() < 1e-3 and torch.isfinite(flat.grad).all()


def test_l_colour_sees_a_tone_shift_but_not_zero_mean_texture():
    hr = torch.rand(2, 3, 16, 16)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 8) * 0.1  # zero mean over every 8x8 block
    assert losses.l_colour(hr, hr + checker).item() < 1e-6
    assert losses.l_colour(hr, hr - 2 / 255).item() == pytest.approx(2 / 255, rel=1e-4)
    assert losses.l1(hr, hr + checker).item() == pytest.approx(0.1)  # the pixel L1 sees that texture


# ---- VGG19 for L_fea ------------------------------------------------------------------------------------------------


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache in tmp_path, and no network: a download raises URLError."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def test_vgg_offline_message_names_the_cache_path_and_alpha_0(torch_home):
    from realsr_cli.training.vgg import VGG19_URL, load_vgg19_features, vgg19_cache_path

    expected = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert vgg19_cache_path() == expected
    with pytest.raises(ConfigError) as err:
        load_vgg19_features(alpha=0.01)
    message = str(err.value)
    assert str(expected) in message and VGG19_URL in message
    assert "alpha = 0" in message and "alpha = 0.01" in message


def test_vgg_loads_torchvision_layout_from_the_cache(torch_home):
    from realsr_cli.training.vgg import VGG19Features, load_vgg19_features, vgg19_cache_path

    torch.manual_seed(0)
    fake = VGG19Features(last_layer=36).state_dict()  # the whole feature stack, as torchvision's file has
    fake["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file also holds the classifier
    path = vgg19_cache_path()
    path.parent.mkdir(parents=True)
    torch.save(fake, path)

    net = load_vgg19_features()
    assert torch.equal(net.features[34].weight, fake["features.34.weight"])  # conv5_4
    assert len(net.features) == 35  # stops at conv5_4, before its ReLU
    assert all(not p.requires_grad for p in net.parameters()) and not net.training
    out = net(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 512, 2, 2)
    assert (out < 0).any()  # pre-activation: a ReLU output would have no negative values


def test_vgg_broken_cache_file_is_an_input_error(torch_home):
    from realsr_cli.errors import InputError
    from realsr_cli.training.vgg import load_vgg19_features, vgg19_cache_path

    path = vgg19_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="delete it"):
        load_vgg19_features(alpha=0.01)
