"""The layout of a training run's folder (`--out`): its file names, the numbered checkpoint copies and their
pruning, the step log, and the checks that say whether a run may start or resume there.

No torch here: the trainer writes the checkpoints, this module says where, which are kept, and what a resume may
change.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path

from realsr_cli._files import append_whole, atomic_write
from realsr_cli.config import RESUME_MUTABLE_KEYS, TrainConfig, config_differences
from realsr_cli.errors import ConfigError

LAST = "last.pth"  # the full state after the latest saved step: what --resume continues
BEST = "best.pth"  # the full state at the best validation PSNR-Y
MODEL = "model.pth"  # generators + config of best.pth (else last.pth), written when a run completes
LOG = "log.jsonl"  # one JSON record per step and per validation
PLOT = "loss.png"
CONFIG = "config.json"  # the run's config, for people: the checkpoints hold their own copy


class RunFolder:
    """One run's folder: where each of its files lives, and the bookkeeping between checkpoints."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.last = self.path / LAST
        self.best = self.path / BEST
        self.model = self.path / MODEL
        self.log = self.path / LOG
        self.plot = self.path / PLOT

    def numbered(self, step: int) -> Path:
        """The numbered copy of last.pth at `step`; the zero padding makes names sort by step."""
        return self.path / f"step_{step:07d}.pth"

    def check_start(self, resume: bool) -> None:
        """ConfigError unless the folder suits the request: a resumed run needs last.pth, a new run must not find
        one (it would overwrite another run)."""
        if resume and not self.last.is_file():
            raise ConfigError(f"nothing to resume in {self.path}: no {LAST} there (start the run without --resume)")
        if not resume and self.last.exists():
            raise ConfigError(
                f"{self.path} already holds a run ({LAST}); pass --resume to continue it, or choose another --out"
            )

    def check_resumable(self, run_config: dict, cfg: TrainConfig) -> None:
        """ConfigError when `cfg` differs from the config the run in last.pth was started with (`run_config`, as
        plain data) in a key that may not change on resume (config.RESUME_MUTABLE_KEYS)."""
        # through TrainConfig, so keys added since the run started compare as their defaults
        old = TrainConfig.from_dict(run_config, f"{self.last}: config").to_dict()
        new = cfg.to_dict()
        differing = [k for k in config_differences(old, new) if k.split(".")[0] not in RESUME_MUTABLE_KEYS]
        if differing:
            shown = "; ".join(f"{k}: {_dig(old, k)!r} in the run, {_dig(new, k)!r} now" for k in differing)
            raise ConfigError(
                f"cannot resume {self.last} with a different config ({shown}); only "
                f"{', '.join(sorted(RESUME_MUTABLE_KEYS - {'resume', 'out'}))} may change on resume"
            )

    def write_config(self, config: dict) -> None:
        """Create the folder and write the run's config (plain data) to config.json (atomically)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path / CONFIG) as fh:
            fh.write((json.dumps(config, indent=2) + "\n").encode())

    def keep_numbered_copy(self, step: int, keep: int) -> Path:
        """Copy last.pth to its numbered name for `step` (atomically), then delete all but the newest `keep`
        numbered copies (0: keep them all). Returns the copy's path."""
        numbered = self.numbered(step)
        with self.last.open("rb") as src, atomic_write(numbered) as fh:
            shutil.copyfileobj(src, fh)
        if keep:
            for old in sorted(self.path.glob("step_*.pth"))[:-keep]:
                old.unlink()
        return numbered

    def release_source(self) -> Path:
        """The checkpoint model.pth is made from: best.pth (the best validated weights) when the run validated,
        else last.pth."""
        return self.best if self.best.exists() else self.last

    def append_log(self, record: dict) -> None:
        """Append one record to log.jsonl as a whole line; a failed write (a full disk) leaves the log as it was and
        raises an InputError."""
        append_whole(self.log, (json.dumps(record) + "\n").encode())

    def read_log(self) -> list[dict]:
        """The records of log.jsonl (step records and validation records); [] when absent. A line cut short by a
        crash is skipped."""
        if not self.log.is_file():
            return []
        records = []
        with self.log.open(encoding="utf-8") as fh:
            for line in fh:
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
        return records

    def trim_log(self, step: int) -> None:
        """Keep the log's records up to `step`, the restored step (a crash may have logged steps no checkpoint
        holds); step 0, a new run, starts an empty log. Atomic: a full disk leaves the old log whole."""
        kept = [r for r in self.read_log() if r.get("step", math.inf) <= step] if step else []
        with atomic_write(self.log) as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in kept).encode())


def _dig(data: dict, dotted: str):
    """The value at a dotted key ("weights.cyc") of nested dicts; None where a level is missing."""
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data
