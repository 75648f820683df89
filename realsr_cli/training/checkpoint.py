"""The self-describing checkpoint: one file holding a run's architecture, spec, weights and training state, read
back as untrusted input (weights_only=True).

The file is one dict of plain data (dicts, lists, numbers, strings, tensors), so a safe load needs no realsr class.
Its keys: "format", "version", "arch", "spec", "states", "ema_states", "step", "optimizers", "config",
"provenance". Runs resume from these files, so the layout changes only with CHECKPOINT_VERSION.
"""

from __future__ import annotations

import copy
import io
import os
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from realsr_cli._files import atomic_write, file_sha256, first_line
from realsr_cli.errors import InputError, ModelError
from realsr_cli.spec import ModelSpec
from realsr_cli.training.nets import (
    DISCRIMINATOR_ROLES,
    GENERATOR_ROLES,
    ArchConfig,
    SRNet,
    build_generator,
    build_networks,
    measure_receptive_field,
)

CHECKPOINT_FORMAT = "realsr-checkpoint"
CHECKPOINT_VERSION = 1


def spec_for(arch: ArchConfig, source_sha256: str = "") -> ModelSpec:
    """The ModelSpec a checkpoint of `arch` carries (and its exports start from)."""
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
    """Write a self-describing checkpoint atomically (temp file + rename), loadable with weights_only=True; a full
    disk is an InputError and leaves the previous file in place.

    `networks` maps roles (GENERATOR_ROLES, DISCRIMINATOR_ROLES) to modules; `optimizers` maps names to optimizer
    state dicts; `config` is the training config as plain data; `provenance` says where the weights came from;
    `ema` maps generator roles to the moving averages of their weights.
    """
    ema = ema or {}
    unknown = sorted(set(networks) - set(GENERATOR_ROLES) - set(DISCRIMINATOR_ROLES)) + sorted(
        set(ema) - set(GENERATOR_ROLES)
    )
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
    # into memory first: torch's own file writer reports a full disk as a vague RuntimeError
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(path) as fh:
        fh.write(buffer.getbuffer())
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


def _not_a_checkpoint(path: Path) -> str | None:
    """What the file is when it cannot be a checkpoint (torch.save writes a zip archive with a pickle inside), or
    None. torch's own errors on such files mislead: random bytes read as a refused pickle, text as an IndexError."""
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if not head:
        return "an empty file (0 bytes)"
    if not head.startswith(b"PK\x03\x04"):
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError:
            return "not the zip archive torch.save writes (random bytes, or another kind of file)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "truncated or damaged (its zip archive has no intact central directory)"
    if not any(name.endswith("/data.pkl") for name in names):
        return "a zip archive without torch's data.pkl"
    return None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint as untrusted input (weights_only=True). Raises InputError or ModelError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    what = _not_a_checkpoint(path)
    if what:
        raise InputError(f"{path}: not a readable realsr checkpoint: {what}")
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
            f"{path}: checkpoint format version {data['version']} is newer than this realsr reads "
            f"({CHECKPOINT_VERSION})"
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
