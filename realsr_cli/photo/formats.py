"""The format table: which files realsr reads as images, which formats it writes, under which names and
extensions, how large each can be, and the output names that follow. The table itself is pure Python, so the CLI
builds its choices from here without loading an image library; what this machine can decode and encode is asked
of Pillow (and pillow-heif, whose HEIF codec is registered here, once) when a function needs it. No torch here.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from realsr_cli.errors import ConfigError


@dataclass(frozen=True)
class OutputFormat:
    """A format realsr writes, as Pillow names it, with the names it goes by."""

    name: str  # Pillow's format name: "PNG", "JPEG", "WEBP", "TIFF", "AVIF", "HEIF", "GIF"
    choices: tuple[str, ...]  # `--format` values asking for it; the first is the one the CLI offers
    extensions: tuple[str, ...]  # file extensions that mean it; the first is the one outputs get
    max_side: int | None = None  # the encoder's largest width or height; None: no limit a photo reaches
    animated: bool = False  # holds an animation: an animated source keeps every frame
    quality: int | None = None  # the default quality of a lossy format (`--quality` left out); None: lossless

    @property
    def extension(self) -> str:
        """The extension outputs get: ".png", ".jpg", ".webp", ".tif", ".avif", ".heic" or ".gif"."""
        return self.extensions[0]


OUTPUT_FORMATS = {
    f.name: f
    for f in (
        # the largest sides are libjpeg's, libwebp's and GIF's limits; PNG and (Big)TIFF go far beyond. AVIF and
        # HEIC: libavif refuses to decode a side above 32768 (its default limit), and x265 via libheif fails to
        # encode 66000 while 33000 works, so 32768 keeps every output readable
        # default qualities: JPEG 90 at 4:2:0 is what phones and cameras write, visually transparent on photos.
        # Each codec's scale is its own: on a 16 MP upscale, JPEG 90 scores 40.5 dB PSNR in 3.7 MB, AVIF 85
        # 41.0 dB in 2.8 MB and HEIC 65 40.7-41.3 dB in 2.9-3.5 MB, while HEIC 90 takes 8.6 MB
        OutputFormat("PNG", ("png",), (".png",)),
        OutputFormat("JPEG", ("jpg", "jpeg"), (".jpg", ".jpeg", ".jpe", ".jfif"), max_side=65500, quality=90),
        OutputFormat("WEBP", ("webp",), (".webp",), max_side=16383, animated=True, quality=90),
        OutputFormat("TIFF", ("tiff", "tif"), (".tif", ".tiff")),
        OutputFormat("AVIF", ("avif",), (".avif",), max_side=32768, quality=85),
        OutputFormat("HEIF", ("heic", "heif"), (".heic", ".heif", ".hif"), max_side=32768, quality=65),
        OutputFormat("GIF", ("gif",), (".gif",), max_side=65535, animated=True),
    )
}
"""The formats realsr writes, by Pillow name."""

_BY_CHOICE = {choice: f.name for f in OUTPUT_FORMATS.values() for choice in f.choices}
_BY_EXTENSION = {ext: f.name for f in OUTPUT_FORMATS.values() for ext in f.extensions}

FORMAT_CHOICES = ("same", *(f.choices[0] for f in OUTPUT_FORMATS.values()))
"""What `realsr upscale --format` offers: "same" (keep the source's format) or one format realsr writes."""

ANIMATED_SOURCES = ("GIF", "WEBP")
"""Source formats whose animations are read whole (each frame upscaled); other multi-frame files (APNG, multi-page
TIFF, MPO previews) give their first frame."""

# formats Pillow opens but cannot decode pixels of by itself: scientific and vector stubs (BUFR, GRIB, HDF5, WMF)
# need a handler registered by the application, MPEG is read for its header only, and EPS needs Ghostscript
_HEADER_ONLY = frozenset({"MPEG"})


@functools.cache
def register_codecs() -> None:
    """Make every decoder and encoder realsr uses known to Pillow: its own plugins, plus HEIF through pillow-heif
    (without thumbnails, depth maps or auxiliary images, which realsr never reads). Runs once; without pillow-heif,
    HEIF files are simply not images this machine reads."""
    from PIL import Image

    Image.init()
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


@functools.cache
def image_extensions() -> frozenset[str]:
    """File extensions a folder or glob input picks up (an explicitly named file is read whatever its name): every
    extension Pillow registers for a format it can decode here, HEIF included (".jpg", ".heic", ".avif", ...)."""
    from PIL import EpsImagePlugin, Image, ImageFile

    register_codecs()
    decodable = {
        fmt
        for fmt, (factory, _) in Image.OPEN.items()
        if not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))
        and fmt not in _HEADER_ONLY
        and (fmt != "EPS" or EpsImagePlugin.has_ghostscript())
    }
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in decodable)


def check_encoder(fmt: str) -> None:
    """Raise ConfigError when this machine's Pillow cannot write `fmt` (AVIF without libavif, HEIC without
    pillow-heif's HEVC encoder). PNG and TIFF are always written."""
    from PIL import Image

    register_codecs()
    if fmt not in Image.SAVE:
        need = {"AVIF": "a Pillow built with libavif", "HEIF": "pillow-heif with an HEVC (x265) encoder"}
        choice = OUTPUT_FORMATS[fmt].choices[0]
        raise ConfigError(
            f"--format {choice}: this installation cannot write {choice.upper()} (it needs {need.get(fmt, 'Pillow')}); "
            "choose another format"
        )


def format_of(path: str | os.PathLike) -> str:
    """The output format a file's extension names ("JPEG" for .jpg, .jpeg, ...); "" for any other extension."""
    return _BY_EXTENSION.get(Path(path).suffix.lower(), "")


def output_format_for(source_format: str, requested: str, *, animated: bool = False) -> str:
    """The output format (a key of OUTPUT_FORMATS) for a `--format` value (one of FORMAT_CHOICES, any case).

    "same" keeps the source's format where realsr writes it and this machine has its encoder, an animated GIF
    included; a still GIF and anything else (BMP, ...) become PNG (a still GIF's 256 colours would throw away
    what the upscale adds). Raises ConfigError for an unknown requested format, or one this machine cannot write.
    """
    requested = requested.lower()
    if requested == "same":
        if source_format not in OUTPUT_FORMATS or (source_format == "GIF" and not animated):
            return "PNG"
        try:
            check_encoder(source_format)
        except ConfigError:
            return "PNG"
        return source_format
    if requested not in _BY_CHOICE:
        offered = ", ".join(FORMAT_CHOICES[1:])
        raise ConfigError(f"unknown output format {requested!r} (expected {offered} or same)")
    check_encoder(_BY_CHOICE[requested])
    return _BY_CHOICE[requested]


def check_output_size(fmt: str, width: int, height: int) -> None:
    """Raise ConfigError when `fmt` cannot hold a width x height image (more than its `max_side`, e.g. WebP's 16383).

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
    """Where the upscaled `src` goes: `<stem>_x<scale>.<ext>` (scale as 4 or 2.5; ext as `OutputFormat.extension`).

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
