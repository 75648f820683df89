"""VGG19's convolutional features for the perceptual loss L_fea, built here (no torchvision dependency) with
torchvision's state-dict layout, so the standard ImageNet weight file loads as is from torch's hub cache.

Only training with alpha > 0 imports this module.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from realsr_cli.errors import ConfigError, InputError, ModelError

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's name; the 8 hex digits are the prefix of the file's sha256
# torchvision's configuration "E": conv widths, "M" = 2x2 max-pool
_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
CONV5_4 = 34  # index of conv5_4 in torchvision's `vgg19().features`; its output before the ReLU at 35 is L_fea's

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """`features[0 .. last_layer]` of torchvision's VGG19 with ImageNet normalisation in front:
    (N, 3, H, W) RGB in [0, 1] -> (N, 512, H / 16, W / 16) conv5_4 activations before their ReLU (by default).

    The state dict has torchvision's keys (`features.0.weight`, ...); the normalisation constants are not in it.
    """

    def __init__(self, last_layer: int = CONV5_4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers[: last_layer + 1])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


def vgg19_cache_path() -> Path:
    """Where torch's hub cache keeps the weight file: $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth
    (TORCH_HOME defaults to ~/.cache/torch; `torch.hub.set_dir` moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def load_vgg19_features(alpha: float | None = None) -> VGG19Features:
    """VGG19 up to conv5_4 with torchvision's ImageNet weights, frozen and in eval mode, on the CPU.

    Downloads the file into torch's hub cache when it is absent (checking its hash). Offline without the file it
    raises ConfigError saying where to put the file or to set alpha = 0; a present but broken file is an InputError.
    `alpha` only makes the message concrete.
    """
    path = vgg19_cache_path()
    existed = path.is_file()
    try:
        state = torch.hub.load_state_dict_from_url(
            VGG19_URL,
            model_dir=str(path.parent),
            map_location="cpu",
            progress=False,
            check_hash=True,
            file_name=VGG19_FILE,
            weights_only=True,
        )
    except Exception as err:  # URLError, HTTPError, hash mismatch, unpickling errors, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if existed:
            raise InputError(
                f"{path}: cannot read the VGG19 weight file ({reason[:200]}); delete it so it is fetched again, "
                f"or replace it with {VGG19_URL}"
            ) from err
        weight = f"alpha = {alpha:g}" if alpha is not None else "alpha > 0"
        raise ConfigError(
            f"the perceptual loss L_fea ({weight}) needs VGG19's ImageNet weights, which are not in torch's hub "
            f"cache and could not be downloaded ({reason[:200]}). Download {VGG19_URL} and save it as {path} "
            f"(the folder follows TORCH_HOME), or set alpha = 0 (--alpha 0, or alpha under [weights] in the run "
            f"TOML) to train without the perceptual loss."
        ) from err
    net = VGG19Features()
    wanted = net.state_dict()
    missing = [key for key in wanted if key not in state]
    if missing:
        raise ModelError(f"{path}: not torchvision's VGG19 weights (no {missing[0]})")
    try:
        net.load_state_dict({key: state[key] for key in wanted})
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelError(f"{path}: VGG19 weights do not fit VGG19 ({first})") from err
    return net.requires_grad_(False).eval()
