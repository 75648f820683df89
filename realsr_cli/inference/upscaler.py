"""The upscale job as a Python API, the one the `realsr upscale` command is a thin layer over.

`Upscaler` opens a model once and upscales numpy arrays, PIL images, files and batches of files. An image file
takes one path through it: `decode`, `plan_image` (its sizes and tiles, decided once), `upscale_photo` (the
inference), `encode`. `upscale_files` runs these steps in the batch pipeline (`realsr_cli.inference.pipeline`),
which overlaps them across images and goes on past bad files; `upscale_file` is a batch of one. Nothing here
prints: progress goes to callbacks, notices to `notice`. No torch here (the TorchScript backend imports it when
it is used).

    >>> from realsr_cli import Upscaler
    >>> with Upscaler("export/realsr-compact-x4.onnx", tile=512) as up:
    ...     big = up.upscale(photo_array)          # uint8/uint16/float array or PIL image in, same kind out
    >>> with Upscaler(width=3840) as up:           # the native pass, then Lanczos to 3840 pixels wide
    ...     up.upscale_file("photo.jpg", "photo_4k.jpg")
    ...     for result in up.upscale_files(["photos/"], out_dir="out", recursive=True):
    ...         print(result.status, result.dst)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from realsr_cli.config import DEFAULT_PNG_COMPRESSION, EncodeConfig, TileConfig, UpscaleConfig
from realsr_cli.errors import ConfigError, InputError
from realsr_cli.inference.inputs import InputItem, expand_inputs
from realsr_cli.inference.pipeline import (
    DEFAULT_MAX_INFLIGHT_BYTES,
    BatchOptions,
    ImageCallback,
    UpscaleResult,
    run_batch,
)
from realsr_cli.inference.runtime import Backend, Notice, open_backend, stated_scale
from realsr_cli.inference.tiling import TilePlan, TileProgress, plan_tiles, run_tiled
from realsr_cli.photo.pixels import compose, resize, to_pil
from realsr_cli.photo.read import Animation, Photo, photo_from_array, photo_from_pil, read_image, upright_size
from realsr_cli.photo.write import encoder_settings, new_canvas, write_image
from realsr_cli.spec import ModelSpec


@dataclass(frozen=True)
class ImagePlan:
    """One image's upscale, decided once before the work: its sizes and its tiles."""

    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]  # at the upscaler's scale
    tiles: TilePlan  # of one frame
    frames: int = 1  # an animation's frame count; each is upscaled by the same plan

    @property
    def tile_count(self) -> int:
        """Tiles of the whole image, every frame of an animation included."""
        return self.tiles.count * self.frames


@dataclass
class Upscaled:
    """An upscaled photo before encoding: integer pixels and alpha, plus what of the source is written back
    (`Upscaler.encode` takes it). Holds no reference to the decoded input, so the input's pixels can be freed
    while this is encoded."""

    pixels: np.ndarray  # (H, W, 3) uint8, or uint16 for 16-bit photos
    alpha: np.ndarray | None  # (H, W), same dtype
    grayscale: bool
    icc_profile: bytes | None
    exif: bytes | None
    input_size: tuple[int, int]  # (width, height)
    warnings: list[str]  # from decoding
    jpeg_quality: int | None = None  # a JPEG source's estimated quality and chroma subsampling (`Photo`'s)
    jpeg_subsampling: str | None = None
    animation: Animation | None = None  # an animation's other frames, upscaled

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def check_sizes(config: UpscaleConfig, items: Iterable[InputItem]) -> None:
    """Check, before the model is loaded, what can be: the scale against the native scale the model file states,
    and each input's output size (`UpscaleConfig.output_size`, from the image header: nothing is decoded). Inputs
    that cannot be opened are left to the batch, which reports them. Raises ConfigError; a model file that states
    no scale is checked once it is opened."""
    native = stated_scale(config)
    if native is None:
        return
    config.check_scale(native)
    if config.width is None and config.height is None:
        return  # a scale, or a cap on the long side, fits any input
    for item, (width, height) in header_sizes(items):
        try:
            config.output_size(width, height, native)
        except ConfigError as err:
            raise ConfigError(f"{item.path}: {err}") from None


def header_sizes(items: Iterable[InputItem]) -> Iterator[tuple[InputItem, tuple[int, int]]]:
    """(item, `header_size(item)`) of each input whose header can be read. A header's warnings are passed over
    (decoding reports them once, naming the file)."""
    for item in items:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            size = header_size(item)
        if size is not None:
            yield item, size


def header_size(item: InputItem) -> tuple[int, int] | None:
    """(width, height) of an input as displayed, from its header (nothing is decoded); None for an input that
    cannot be opened, which the batch reports."""
    if item.error is not None:
        return None
    try:
        return upright_size(item.path)
    except InputError:
        return None


# beyond this many input pixels a job's start-up is noise next to its inference (`job_pixels` stops counting)
JOB_PIXELS_COUNTED = 200_000_000


def job_pixels(items: Iterable[InputItem]) -> int:
    """Input pixels of a job's inputs, read from their headers (nothing is decoded), for `UpscaleConfig.job_pixels`;
    counting stops at JOB_PIXELS_COUNTED. Inputs that cannot be opened count nothing (the batch reports them)."""
    total = 0
    for _, (width, height) in header_sizes(items):
        total += width * height
        if total >= JOB_PIXELS_COUNTED:
            break
    return min(total, JOB_PIXELS_COUNTED)


class Upscaler:
    """A model opened once, ready to upscale images, files and batches. Use as a context manager or call close().

    Raises on construction: ConfigError (bad option, scale outside 1..native), InputError (missing/corrupt model,
    no bundled model), ModelError, BackendError. Methods raise the same error classes; `upscale_files` reports
    per-file errors in its results instead.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        backend: str = "auto",
        device: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        overlap: int | None = None,
        batch: int = 1,
        scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        max_size: int | None = None,
        scale_hint: int | None = None,
        max_pixels: int = UpscaleConfig.max_pixels,
        notice: Notice | None = None,
    ) -> None:
        config = UpscaleConfig(
            model=None if model is None else os.fspath(model),
            backend=backend,
            device=device,
            precision=precision,
            tile=TileConfig(tile=tile, overlap=overlap, batch=batch),
            scale=scale,
            width=width,
            height=height,
            max_size=max_size,
            scale_hint=scale_hint,
            max_pixels=max_pixels,
        )
        check_sizes(config, ())  # the scale against what the model file states, before the seconds a load takes
        self._open(config, notice)

    @classmethod
    def from_config(cls, config: UpscaleConfig, notice: Notice | None = None) -> Upscaler:
        """An Upscaler for a config already built and checked against its inputs with `check_sizes`, as `realsr
        upscale` makes one (the scale is checked again once the model is open)."""
        upscaler = cls.__new__(cls)
        upscaler._open(config, notice)
        return upscaler

    def _open(self, config: UpscaleConfig, notice: Notice | None) -> None:
        self.config = config
        self._backend: Backend | None = None
        self._backend = open_backend(config, notice)
        native = self._backend.spec.scale
        try:
            config.check_scale(native)
        except ConfigError:
            self.close()
            raise
        self.scale: float = float(config.scale if config.scale is not None else native)
        """Output scale (1 .. native) of the scale option, and the `_x<scale>` of output names: the native pass,
        then Lanczos downsampling when below native. Output sizes (`output_size`) also follow width, height and
        max_size."""
        balance = config.tile.balance
        self._balance = (self._backend.device != "cuda") if balance is None else balance

    # -- facts

    @property
    def spec(self) -> ModelSpec:
        return self._require().spec

    @property
    def backend_name(self) -> str:
        return self._require().name

    @property
    def device(self) -> str:
        return self._require().device

    @property
    def precision(self) -> str:
        """The arithmetic the model runs in: fp32, fp16, bf16 or int8."""
        return self._require().precision

    @property
    def model_path(self) -> Path:
        """The file actually loaded (an fp16/fp32 sibling may stand in for the one named)."""
        return self._require().path

    @property
    def native_scale(self) -> int:
        return self.spec.scale

    def plan(self, width: int, height: int) -> TilePlan:
        """The tile plan for a width x height input (tile shape actually used, tile count)."""
        return plan_tiles(height, width, self.spec, self.config.tile, balance=self._balance)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the output for a width x height input at this upscaler's scale or size
        (`UpscaleConfig.output_size`). Raises ConfigError for a size above the native scale."""
        return self.config.output_size(width, height, self.native_scale)

    def _require(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("this Upscaler is closed")
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one image, step by step (the batch pipeline runs these)

    def decode(self, path: str | os.PathLike) -> Photo:
        """Read an image file, refusing one above `config.max_pixels` before decoding it. Raises InputError."""
        return read_image(path, max_pixels=self.config.max_pixels)

    def plan_image(self, photo: Photo) -> ImagePlan:
        """The sizes and tiles of `photo`'s upscale."""
        height, width = photo.rgb.shape[:2]
        frames = 1 + (len(photo.animation.frames) if photo.animation is not None else 0)
        return ImagePlan((width, height), self.output_size(width, height), self.plan(width, height), frames)

    def upscale_photo(
        self,
        photo: Photo,
        *,
        image_plan: ImagePlan | None = None,
        fmt: str | None = None,
        on_tile: TileProgress | None = None,
    ) -> Upscaled:
        """Upscale a decoded photo: colour through the model (tiled), alpha resized separately, then both brought
        down to this upscaler's scale when it is below native; every frame of an animation alike (`on_tile` counts
        the tiles of all frames). Pixels are uint8, or uint16 for 16-bit photos. `image_plan` is
        `plan_image(photo)`, made here when not given. `fmt`, the format the result will be written in, lets the
        pixels be laid out for that encoder (`new_canvas`); the values are the same either way."""
        image_plan = image_plan or self.plan_image(photo)
        frames = [(photo.rgb, photo.alpha), *(photo.animation.frames if photo.animation is not None else [])]
        upscaled = []
        for index, (rgb, alpha) in enumerate(frames):
            progress = on_tile
            if on_tile is not None and len(frames) > 1:  # frame k's tile j is tile k * count + j of the image

                def progress(done, _total, offset=index * image_plan.tiles.count):
                    on_tile(offset + done, image_plan.tile_count)

            upscaled.append(self._upscale_frame(rgb, alpha, photo.bit_depth, image_plan, fmt, progress))
        (pixels, alpha), others = upscaled[0], upscaled[1:]
        animation = None if photo.animation is None else replace(photo.animation, frames=others)
        return Upscaled(
            pixels,
            alpha,
            photo.grayscale,
            photo.icc_profile,
            photo.exif,
            image_plan.input_size,
            list(photo.warnings),
            photo.jpeg_quality,
            photo.jpeg_subsampling,
            animation,
        )

    def _upscale_frame(
        self,
        rgb: np.ndarray,
        alpha: np.ndarray | None,
        bit_depth: int,
        image_plan: ImagePlan,
        fmt: str | None,
        on_tile: TileProgress | None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(pixels, alpha) of one frame upscaled, as `upscale_photo` describes."""
        backend = self._require()
        (w, h), size = image_plan.input_size, image_plan.output_size
        s = backend.spec.scale
        dtype = np.uint16 if bit_depth == 16 else np.uint8
        native = size == (w * s, h * s)  # else the native pass is resized, and the resize makes the final array
        pixels = run_tiled(
            rgb,
            backend.run,
            image_plan.tiles,
            s,
            out=new_canvas(h * s, w * s, dtype, fmt if native else None),
            batch=self.config.tile.batch,
            fixed_batch=backend.device == "cuda",  # one input shape per image for cuDNN
            progress=on_tile,
        )
        if not native:
            pixels = resize(pixels, size)
        # alpha never goes through the model: Lanczos takes it to the output size
        return pixels, None if alpha is None else resize(alpha, size)

    def encode(self, upscaled: Upscaled, dst: Path, fmt: str, encoding: EncodeConfig) -> list[str]:
        """Write `upscaled` to `dst` atomically in `fmt` as `encoding` says (its quality and subsampling resolved
        against the source by `encoder_settings`); returns warnings about what the format could not keep.
        Raises InputError (unwritable destination) or ConfigError (an image the format cannot hold)."""
        quality, subsampling = encoder_settings(encoding, fmt, upscaled.jpeg_quality, upscaled.jpeg_subsampling)
        return write_image(
            dst,
            upscaled.pixels,
            alpha=upscaled.alpha,
            grayscale=upscaled.grayscale,
            icc_profile=upscaled.icc_profile,
            exif=None if encoding.strip_metadata else upscaled.exif,
            fmt=fmt,
            quality=quality,
            subsampling=subsampling,
            compress_level=encoding.png_compression,
            strip_gps=encoding.strip_gps,
            animation=upscaled.animation,
        )

    # -- in memory

    def upscale(self, image, *, on_tile: TileProgress | None = None):
        """Upscale a numpy array or PIL image; returns the same kind.

        Arrays: (H, W) gray, (H, W, 1), (H, W, 2) gray+alpha, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, uint16 or
        float in [0, 1] -> the same shape layout and dtype, scaled (floats carry 16-bit precision). PIL images:
        L, LA, RGB, RGBA and I;16 keep their mode; palette, CMYK and others come back as RGB(A) or L(A).
        Alpha never goes through the model (it is resized separately). Raises InputError for an unusable image.
        """
        from PIL import Image

        if isinstance(image, Image.Image):
            photo = photo_from_pil(image)
            result = self.upscale_photo(photo, on_tile=on_tile)
            if image.mode.startswith("I;16") and result.pixels.dtype == np.uint16:
                out = Image.fromarray(compose(result.pixels, None, True))  # 2-D uint16 -> I;16
            else:
                out = to_pil(result.pixels, result.alpha, result.grayscale)
            if photo.icc_profile:
                out.info["icc_profile"] = photo.icc_profile
            return out
        array = np.asarray(image)
        photo = photo_from_array(array)
        result = self.upscale_photo(photo, on_tile=on_tile)
        out = compose(result.pixels, result.alpha, photo.grayscale)
        if array.ndim == 3 and out.ndim == 2:  # (H, W, 1) in -> (H, W, 1) out
            out = out[..., None]
        if array.dtype.kind == "f":
            return (out * (1.0 / np.iinfo(out.dtype).max)).astype(array.dtype)
        return out.astype(array.dtype, copy=False)

    # -- files

    def upscale_file(
        self,
        src: str | os.PathLike,
        dst: str | os.PathLike | None = None,
        *,
        out_dir: str | os.PathLike | None = None,
        fmt: str = "same",
        quality: int | None = None,
        subsampling: str = "keep",
        png_compression: int = DEFAULT_PNG_COMPRESSION,
        strip_metadata: bool = False,
        strip_gps: bool = False,
        on_tile: TileProgress | None = None,
    ) -> UpscaleResult:
        """Upscale one file to `dst` (default: `<stem>_x<scale>.<ext>` beside it, or in `out_dir`), written
        atomically: a batch of one, so every rule of `upscale_files` holds (the encoding options too). With an
        explicit `dst`, `fmt` "same" follows dst's extension.

        Raises what that batch would report: InputError (unreadable or too large input, unwritable output, out of
        memory), ConfigError (format/quality, an output the format cannot hold) or the backend's errors.
        """
        encoding = EncodeConfig(quality, subsampling, png_compression, strip_metadata, strip_gps)
        options = BatchOptions(out_dir=out_dir, fmt=fmt, encoding=encoding, on_tile=on_tile)
        item = InputItem(Path(src), dst=None if dst is None else Path(dst))
        (job,) = run_batch(self, [item], options)
        if job.error is not None:
            raise job.error
        return job.result

    def upscale_files(
        self,
        inputs: Iterable[str | os.PathLike | InputItem],
        *,
        out_dir: str | os.PathLike | None = None,
        fmt: str = "same",
        quality: int | None = None,
        subsampling: str = "keep",
        png_compression: int = DEFAULT_PNG_COMPRESSION,
        strip_metadata: bool = False,
        strip_gps: bool = False,
        recursive: bool = False,
        skip_existing: bool = False,
        on_image: ImageCallback | None = None,
        on_tile: TileProgress | None = None,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    ) -> Iterator[UpscaleResult]:
        """Upscale many files, yielding one `UpscaleResult` per input, in input order, as each is written.

        `inputs`: paths, folders, globs (expanded by `expand_inputs`), or `InputItem`s already expanded (so a
        caller can count them first for a progress bar). A bad input (unreadable, too large, unwritable output,
        inference failure) gives a "failed" result and the batch goes on; with `skip_existing` an input whose
        output exists gives "skipped" without being decoded. Decoding of the next image, inference of the current
        one and encoding of the previous one overlap; `max_inflight_bytes` bounds the upscaled outputs held at
        once (one is always allowed). `on_image` and `on_tile` run on the calling thread. Breaking out of the loop
        or Ctrl-C stops the workers; an output being written is completed or removed, never left partial.
        `quality`, `subsampling`, `png_compression`, `strip_metadata` and `strip_gps` are `EncodeConfig`'s (None and
        "keep" follow the source). Raises ConfigError at once for a bad `fmt` or encoding option.
        """
        options = BatchOptions(
            out_dir=out_dir,
            fmt=fmt,
            encoding=EncodeConfig(quality, subsampling, png_compression, strip_metadata, strip_gps),
            skip_existing=skip_existing,
            on_image=on_image,
            on_tile=on_tile,
            max_inflight_bytes=max_inflight_bytes,
        )
        args = list(inputs)
        if not any(isinstance(arg, InputItem) for arg in args):
            items = expand_inputs(args, recursive)
        else:  # already expanded (perhaps mixed with raw arguments, expanded one by one)
            items = []
            for arg in args:
                items.extend([arg] if isinstance(arg, InputItem) else expand_inputs([arg], recursive))
        return self.upscale_batch(items, options)

    def upscale_batch(self, items: list[InputItem], options: BatchOptions) -> Iterator[UpscaleResult]:
        """`upscale_files` for inputs already expanded and options already made, as `realsr upscale` and a Ray
        worker hold them."""
        return (job.result for job in run_batch(self, items, options))
