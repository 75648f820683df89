"""What a batch upscales: files, folders and glob patterns expanded into one `InputItem` per image, and the one
folder walker of realsr (also behind the data-set folders of `train`, `eval` and `degrade`). No torch here.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from realsr_cli.photo.formats import image_extensions

_OUTPUT_STEM = re.compile(r"^(?P<stem>.+)_x\d+(?:\.\d+)?$")


@dataclass(frozen=True)
class InputItem:
    """One input image of a batch: its path, and the folder argument it was found under (outputs mirror the tree
    below it), or None for a file named directly. `error` is set for an argument that matched nothing; `dst` is an
    output path the caller chose (`Upscaler.upscale_file`'s), None to name the output by the usual rule."""

    path: Path
    root: Path | None = None
    error: str | None = None
    dst: Path | None = None


def expand_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[InputItem]:
    """Files, folders (their images; sub-folders with `recursive`) and glob patterns -> one item per image.

    Order: arguments in the order given, each folder's or glob's files sorted. Hidden files are skipped in
    folders. A file found twice is listed once. An argument that matches nothing becomes an item with `error`.
    """
    items: list[InputItem] = []
    seen: set[Path] = set()

    def add(path: Path, root: Path | None) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append(InputItem(path, root))

    for arg in inputs:
        text = os.fspath(arg)
        path = Path(text)
        if path.is_dir():
            found = folder_images(path, recursive)
            if not found:
                hint = "" if recursive else " (use -r/--recursive for sub-folders)"
                items.append(InputItem(path, None, f"{path}: no images found in folder{hint}"))
            for file in found:
                if not _is_earlier_output(file):
                    add(file, path)
        elif path.exists():
            add(path, None)
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=recursive) if os.path.isfile(m))
            matches = [m for m in matches if m.suffix.lower() in image_extensions()]
            if not matches:
                items.append(InputItem(path, None, f"{text}: no images match"))
            root = _glob_root(text)
            for file in matches:
                if not _is_earlier_output(file):
                    add(file, root)
        else:
            items.append(InputItem(path, None, f"{path}: no such file or folder"))
    return items


def folder_images(folder: Path, recursive: bool) -> list[Path]:
    """The image files in `folder` (and with `recursive` in its sub-folders), sorted: those whose extension a
    decoder here reads (`image_extensions`: .jpg, .png, .heic, .avif, ...). Hidden files and hidden folders
    (".thumbnails", ".git", ...) are skipped: they hold caches and copies, not the user's photos."""
    extensions = image_extensions()
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                found.append(Path(dirpath) / name)
    return sorted(found)


def _is_earlier_output(path: Path) -> bool:
    """Whether a file found in a folder or glob is realsr's own output (`<stem>_x<scale>.<ext>` beside an image
    named `<stem>.*`), so that running again over a folder does not upscale its earlier outputs."""
    match = _OUTPUT_STEM.match(path.stem)
    if match is None:
        return False
    return any(
        sibling.stem == match["stem"] and sibling.suffix.lower() in image_extensions()
        for sibling in path.parent.glob(glob.escape(match["stem"]) + ".*")
    )


def _glob_root(pattern: str) -> Path | None:
    """The folder part of a glob before its first wildcard ("photos/**/*.jpg" -> photos), so outputs mirror the
    tree under it; None when the wildcard is in the first component's file name ("*.jpg")."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else None
