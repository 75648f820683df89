"""Networks, presets, receptive-field probe, checkpoint round trip, and the strict loader's Literal fields."""

from dataclasses import asdict, dataclass, replace
from typing import Literal

import pytest
import torch
from conftest import flops_per_input_pixel

from realsr_cli._strict import check_choices, dataclass_from_dict
from realsr_cli.errors import ConfigError, InputError, ModelError
from realsr_cli.training.checkpoint import load_checkpoint, save_checkpoint
from realsr_cli.training.nets import (
    ArchConfig,
    build_generator,
    build_networks,
    count_parameters,
    measure_receptive_field,
    preset,
)


def test_compact_preset_is_small_and_upsamples_x4():
    arch = preset("compact")
    net = build_generator(arch)
    assert count_parameters(net) <= 1_500_000
    assert net(torch.rand(1, 3, 9, 13)).shape == (1, 3, 36, 52)


def test_paper_preset_is_the_17m_rrdb_design():
    net = build_generator(preset("paper"))
    assert 16_000_000 < count_parameters(net) < 18_000_000


def test_all_six_networks_take_their_inputs(tiny_arch):
    nets = build_networks(tiny_arch)
    lr = torch.rand(2, 3, 32, 32)
    feat = nets["encoder"](lr)
    assert feat.shape == (2, tiny_arch.channels, 32, 32)
    assert nets["sr_decoder"](feat).shape == (2, 3, 128, 128)
    assert nets["lr_decoder"](feat).shape == (2, 3, 32, 32)
    assert nets["feature_disc"](feat).shape[:2] == (2, 1)
    assert nets["lr_disc"](lr).shape[:2] == (2, 1)
    assert nets["hr_disc"](torch.rand(2, 3, 128, 128)).shape[:2] == (2, 1)


@pytest.mark.parametrize(
    "arch, expected",
    [
        # counted by hand: convs at LR resolution, each adding 1 pixel of radius, + 1 for the HR conv
        (ArchConfig(encoder_blocks=0, sr_blocks=0, hr_channels=0), 4),  # conv_in, conv_out, conv_body, conv_up
        (ArchConfig(encoder_blocks=1, sr_blocks=0, hr_channels=0), 6),
        (ArchConfig(encoder_blocks=0, sr_blocks=0, hr_channels=16), 5),
        (preset("compact"), 19),  # 8 encoder + 10 decoder convs + the HR conv
    ],
)
def test_receptive_field_probe_matches_hand_count(arch, expected):
    assert measure_receptive_field(arch) == expected


def test_receptive_field_bounds_real_dependence():
    # changing an input pixel just outside the measured radius must leave the centre output block untouched
    arch = preset("compact")
    radius = measure_receptive_field(arch)
    torch.manual_seed(0)
    net = build_generator(arch).double().eval()
    with torch.no_grad():
        # the mid-grey output bias would absorb the faint far-field change below float64 precision
        net.sr_decoder.conv_hr.bias.zero_()
    size = 2 * radius + 9
    c = size // 2
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        base = net(x)[..., c * 4 : c * 4 + 4, c * 4 : c * 4 + 4]
        outside = x.clone()
        outside[..., c + radius + 1, c] += 1
        inside = x.clone()
        inside[..., c + radius, c] += 1
        assert torch.equal(net(outside)[..., c * 4 : c * 4 + 4, c * 4 : c * 4 + 4], base)
        assert not torch.equal(net(inside)[..., c * 4 : c * 4 + 4, c * 4 : c * 4 + 4], base)


def test_paper_receptive_field_is_probed_not_clipped():
    # 5 encoder convs + 23 RRDB x 15 convs + 1, plus the HR convs: far beyond the first probe size
    assert 350 <= measure_receptive_field(preset("paper")) <= 354


def test_checkpoint_round_trip(tmp_path, tiny_arch):
    torch.manual_seed(0)
    nets = build_networks(tiny_arch)
    path = save_checkpoint(tmp_path / "a.pth", tiny_arch, nets, step=7, provenance={"seed": 0})
    ckpt = load_checkpoint(path)
    assert asdict(ckpt.arch) == asdict(tiny_arch)
    assert ckpt.step == 7 and ckpt.provenance == {"seed": 0}
    assert ckpt.spec.scale == 4 and ckpt.spec.receptive_field == measure_receptive_field(tiny_arch)
    assert len(ckpt.sha256) == 64
    loaded = ckpt.networks()
    for role, net in nets.items():
        for key, value in net.state_dict().items():
            assert torch.equal(loaded[role].state_dict()[key], value), (role, key)
    x = torch.rand(1, 3, 11, 7)
    with torch.no_grad():
        expected = nets["sr_decoder"](nets["encoder"](x))
        assert torch.equal(ckpt.generator()(x), expected)
    assert not list(tmp_path.glob(".*.tmp")), "atomic save left its temporary file"


def test_missing_and_corrupt_checkpoints_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match="not a readable realsr checkpoint"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(InputError, match="not a realsr checkpoint"):
        load_checkpoint(foreign)


class Evil:
    """Any class: weights_only loading must refuse to rebuild it."""


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"format": "realsr-checkpoint", "obj": Evil()}, path)
    with pytest.raises(InputError):
        load_checkpoint(path)


def test_state_dict_mismatch_is_a_model_error(tmp_path, tiny_arch):
    nets = build_networks(tiny_arch)
    path = save_checkpoint(tmp_path / "a.pth", replace(tiny_arch, channels=16), nets)
    with pytest.raises(ModelError, match="do not fit"):
        load_checkpoint(path).generator()


def test_unknown_preset_and_arch_keys():
    with pytest.raises(ModelError, match="unknown architecture preset 'huge'"):
        preset("huge")
    with pytest.raises(ModelError, match="architecture: unknown key depth"):
        ArchConfig.from_dict({"depth": 3})
    with pytest.raises(ModelError, match="architecture: channels must be an integer"):
        ArchConfig.from_dict({"channels": "64"})


def test_arch_block_kinds_are_checked_against_their_literal_types():
    with pytest.raises(ModelError, match="architecture: disc must be one of 'patch', 'vgg', got 'unet'"):
        ArchConfig.from_dict({"disc": "unet"})  # unet is a D_HR kind only
    with pytest.raises(ModelError, match="hr_disc_type must be one of '', 'patch', 'vgg', 'unet', got 'u-net'"):
        ArchConfig(hr_disc_type="u-net")  # built directly: __post_init__ checks the same Literal
    assert ArchConfig.from_dict({"hr_disc_type": "unet", "body_block": "rrdb"}).hr_disc_type == "unet"


@dataclass(frozen=True)
class _Choices:
    mode: Literal["fast", "exact"] = "fast"
    level: Literal[0, 1] | None = None
    kinds: tuple[Literal["a", "b"], ...] = ()


def test_strict_loader_takes_only_a_literals_values():
    loaded = dataclass_from_dict(_Choices, {"mode": "exact", "level": 1, "kinds": ["b", "a"]}, "t")
    assert loaded == _Choices("exact", 1, ("b", "a"))
    assert dataclass_from_dict(_Choices, {"level": None}, "t").level is None
    with pytest.raises(ConfigError, match="t: mode must be one of 'fast', 'exact', got 'slow'"):
        dataclass_from_dict(_Choices, {"mode": "slow"}, "t")
    with pytest.raises(ConfigError, match=r"t: kinds\[1\] must be one of 'a', 'b', got 'c'"):
        dataclass_from_dict(_Choices, {"kinds": ["a", "c"]}, "t")
    with pytest.raises(ConfigError, match="t: level must be one of 0, 1, got True"):
        dataclass_from_dict(_Choices, {"level": True}, "t")  # True == 1, but a bool is not one of the listed ints
    with pytest.raises(ModelError, match="mode must be one of 'fast', 'exact', got 'slow'"):
        check_choices(_Choices(mode="slow"), ModelError)


def test_flops_per_input_pixel_matches_a_hand_count():
    arch = ArchConfig(channels=8, encoder_blocks=0, sr_blocks=0, hr_channels=4)
    c = 8
    # conv_in 3->c, conv_out c->c, conv_body c->c, conv_up c->4*16 at LR; conv_hr 4->3 at 16 HR pixels per LR pixel
    macs = 9 * (3 * c + c * c + c * c + c * 4 * 16) + 16 * 9 * 4 * 3
    assert flops_per_input_pixel(build_generator(arch)) == 2 * macs
