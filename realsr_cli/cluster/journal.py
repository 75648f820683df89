"""The journal of `realsr upscale --ray`: one line per finished output, in `.realsr-journal.jsonl` in the folder
the output is in, so that a rerun of the same command after a crash, a lost node or Ctrl-C redoes only what is
missing. No torch and no ray here.

A line is written only after its output was written, synced and renamed into place (`atomic_write`), so it never
names a partial file. Lines are appended whole (`append_whole`) and not synced: if the machine loses its last
lines, their outputs are merely redone; a last line cut short by a crash is skipped when the journal is read. An
entry counts only for the settings that wrote it (`job_key`): a rerun with another model, size or encoding redoes
its outputs, as a local run would.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from realsr_cli._files import append_whole
from realsr_cli.config import EncodeConfig, UpscaleConfig

# hidden, so folder inputs never take it for a photo, and a rerun over the output folder passes it by
JOURNAL_NAME = ".realsr-journal.jsonl"


@dataclass(frozen=True)
class JournalEntry:
    """One finished output."""

    input: str  # the input's resolved path
    output: str  # the output's file name, in the journal's folder
    size: int  # bytes
    sha256: str  # of the output's bytes, to check a copy or a suspect disk against
    job: str  # `job_key` of the settings that wrote it


# UpscaleConfig fields left out of `job_key`: the model is keyed by its file's content instead of its path, and
# job_pixels is how much work a job has (it changes as photos are added), not what its outputs are
_NOT_KEYED = ("model", "job_pixels")


def job_key(config: UpscaleConfig, fmt: str, encoding: EncodeConfig, model: str) -> str:
    """A short digest of everything that decides an output's bytes: the upscale settings, the output format and
    encoding, and `model`, which says which model file (its SHA-256, or a bundled model's name and realsr version)."""
    upscale = {name: value for name, value in asdict(config).items() if name not in _NOT_KEYED}
    text = json.dumps({"model": model, "config": upscale, "format": fmt, "encoding": asdict(encoding)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_journal(folder: Path) -> dict[tuple[str, str], JournalEntry]:
    """The entries of `folder`'s journal by (input, job), a later line replacing an earlier one; empty when there is
    no journal. Lines that do not parse (a last line cut short by a crash) are skipped."""
    try:
        text = (folder / JOURNAL_NAME).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    entries = {}
    for line in text.splitlines():
        try:
            entry = JournalEntry(**json.loads(line))
        except (ValueError, TypeError):
            continue
        entries[entry.input, entry.job] = entry
    return entries


class Journal:
    """The journals of the folders one job writes to, each read once, for one job's settings (`job_key`)."""

    def __init__(self, job: str) -> None:
        self.job = job
        self._folders: dict[str, dict[tuple[str, str], JournalEntry]] = {}

    def finished(self, src: Path, folder: Path) -> Path | None:
        """The output in `folder` that this job's settings made from input `src`, when the journal there lists it
        and the file is still whole (the size the journal recorded); else None."""
        entry = self._entries(folder).get((str(src.resolve()), self.job))
        if entry is None:
            return None
        output = folder / entry.output
        try:
            return output if output.stat().st_size == entry.size else None
        except OSError:
            return None

    def record(self, src: Path, output: Path, size: int, sha256: str) -> None:
        """Append the line for `output`, made from `src` and `size` bytes long, to the journal of its folder.
        Raises InputError when the folder cannot be written."""
        entry = JournalEntry(str(src.resolve()), output.name, size, sha256, self.job)
        append_whole(output.parent / JOURNAL_NAME, (json.dumps(asdict(entry)) + "\n").encode())
        self._entries(output.parent)[entry.input, entry.job] = entry

    def _entries(self, folder: Path) -> dict[tuple[str, str], JournalEntry]:
        key = os.path.abspath(folder)
        if key not in self._folders:
            self._folders[key] = read_journal(folder)
        return self._folders[key]
