"""The format table: which files realsr reads as images, which formats it writes, under which names and
extensions, how large each can be, and the output names that follow. Pure Python (no numpy, no Pillow), so the
CLI builds its choices from here without loading an image library. No torch here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from realsr_cli.errors import ConfigError


@dataclass(frozen=True)
class OutputFormat:
    """A format realsr writes, as Pillow names it, with the names it goes by."""

    name: str  # Pillow's format name: "PNG", "JPEG", "WEBP", "TIFF"
    choices: tuple[str, ...]  # `--format` values asking for it; the first is the one the CLI offers
    extensions: tuple[str, ...]  # file extensions that mean it; the first is the one outputs get
    max_side: int | None = None  # the encoder's largest width or height; None: no limit a photo reaches

    @property
    def extension(self) -> str:
        """The extension outputs get: ".png", ".jpg", ".webp" or ".tif"."""
        return self.extensions[0]


OUTPUT_FORMATS = {
    f.name: f
    for f in (
        # the largest sides are libjpeg's and libwebp's limits; PNG and (Big)TIFF go far beyond
        OutputFormat("PNG", ("png",), (".png",)),
        OutputFormat("JPEG", ("jpg", "jpeg"), (".jpg", ".jpeg", ".jpe", ".jfif"), max_side=65500),
        OutputFormat("WEBP", ("webp",), (".webp",), max_side=16383),
        OutputFormat("TIFF", ("tiff", "tif"), (".tif", ".tiff")),
    )
}
"""The formats realsr writes, by Pillow name."""

_BY_CHOICE = {choice: f.name for f in OUTPUT_FORMATS.values() for choice in f.choices}
_BY_EXTENSION = {ext: f.name for f in OUTPUT_FORMATS.values() for ext in f.extensions}

FORMAT_CHOICES = ("same", *(f.choices[0] for f in OUTPUT_FORMATS.values()))
"""What `realsr upscale --format` offers: "same" (keep the source's format) or one format realsr writes."""

IMAGE_EXTENSIONS = frozenset(_BY_EXTENSION) | {".bmp", ".gif", ".tga", ".ppm", ".pgm", ".pnm"}
"""File extensions a folder or glob input picks up (an explicitly named file is read whatever its name)."""


def format_of(path: str | os.PathLike) -> str:
    """The output format a file's extension names ("JPEG" for .jpg, .jpeg, ...); "" for any other extension."""
    return _BY_EXTENSION.get(Path(path).suffix.lower(), "")


def output_format_for(source_format: str, requested: str) -> str:
    """The output format ("PNG", "JPEG", "WEBP" or "TIFF") for a `--format` value (png, jpg, webp, tiff or same).

    "same" keeps PNG, JPEG, WebP and TIFF sources in their format; anything else (GIF, BMP, ...) becomes PNG.
    Raises ConfigError for an unknown requested format.
    """
    requested = requested.lower()
    if requested == "same":
        return source_format if source_format in OUTPUT_FORMATS else "PNG"
    if requested not in _BY_CHOICE:
        offered = ", ".join(FORMAT_CHOICES[1:])
        raise ConfigError(f"unknown output format {requested!r} (expected {offered} or same)")
    return _BY_CHOICE[requested]


def check_output_size(fmt: str, width: int, height: int) -> None:
    """Raise ConfigError when `fmt` cannot hold a width x height image (WebP: 16383 per side, JPEG: 65500).

    Call it before upscaling, so the user learns it before the work is done rather than after.
    """
    limit = OUTPUT_FORMATS[fmt].max_side
    if limit is not None and max(width, height) > limit:
        raise ConfigError(
            f"{fmt} cannot hold a {width}x{height} image (at most {limit} pixels per side); "
            "use --format png or tiff, or a smaller --scale"
        )


def output_path(
    src: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    scale: float,
    fmt: str,
    input_root: str | os.PathLike | None = None,
) -> Path:
    """Where the upscaled `src` goes: `<stem>_x<scale>.<ext>` (scale as 4 or 2.5; ext png, jpg, webp or tif).

    Beside `src` when `out_dir` is None, else in `out_dir`; when `src` was found under the folder `input_root`,
    its sub-folder relative to `input_root` is mirrored under `out_dir`.
    """
    src = Path(src)
    name = f"{src.stem}_x{scale:g}{OUTPUT_FORMATS[fmt].extension}"
    if out_dir is None:
        return src.with_name(name)
    folder = Path(out_dir)
    if input_root is not None:
        folder = folder / src.parent.relative_to(input_root)
    return folder / name
