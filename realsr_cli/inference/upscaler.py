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
    ...     for result in up.upscale_files(["photos/"], out_dir="out", recursive=True):
    ...         print(result.status, result.dst)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realsr_cli.config import TileConfig, UpscaleConfig
from realsr_cli.errors import ConfigError
from realsr_cli.inference.inputs import InputItem, expand_inputs
from realsr_cli.inference.pipeline import (
    DEFAULT_MAX_INFLIGHT_BYTES,
    BatchOptions,
    ImageCallback,
    UpscaleResult,
    run_batch,
)
from realsr_cli.inference.runtime import Backend, Notice, open_backend
from realsr_cli.inference.tiling import TilePlan, TileProgress, plan_tiles, run_tiled
from realsr_cli.photo.pixels import compose, resize, scaled_size, to_pil
from realsr_cli.photo.read import Photo, photo_from_array, photo_from_pil, read_image
from realsr_cli.photo.write import new_canvas, write_image
from realsr_cli.spec import ModelSpec


@dataclass(frozen=True)
class ImagePlan:
    """One image's upscale, decided once before the work: its sizes and its tiles."""

    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]  # at the upscaler's scale
    tiles: TilePlan


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

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


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
            scale_hint=scale_hint,
            max_pixels=max_pixels,
        )
        self.config = config
        self._backend: Backend | None = open_backend(config, notice)
        native = self._backend.spec.scale
        if config.scale is not None and config.scale > native:
            self.close()
            raise ConfigError(f"scale {config.scale:g} is above the model's native x{native}; choose 1 to {native}")
        self.scale: float = float(config.scale if config.scale is not None else native)
        """Output scale (1 .. native): the native pass, then Lanczos downsampling when below native."""
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
        """The arithmetic the model runs in: fp32, fp16 or bf16."""
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
        """(width, height) of the output for a width x height input at this upscaler's scale."""
        return scaled_size(width, height, self.scale)

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
        return ImagePlan((width, height), self.output_size(width, height), self.plan(width, height))

    def upscale_photo(
        self,
        photo: Photo,
        *,
        image_plan: ImagePlan | None = None,
        fmt: str | None = None,
        on_tile: TileProgress | None = None,
    ) -> Upscaled:
        """Upscale a decoded photo: colour through the model (tiled), alpha resized separately, then both brought
        down to this upscaler's scale when it is below native. Pixels are uint8, or uint16 for 16-bit photos.
        `image_plan` is `plan_image(photo)`, made here when not given. `fmt`, the format the result will be written
        in, lets the pixels be laid out for that encoder (`new_canvas`); the values are the same either way."""
        backend = self._require()
        image_plan = image_plan or self.plan_image(photo)
        (w, h), size = image_plan.input_size, image_plan.output_size
        s = backend.spec.scale
        dtype = np.uint16 if photo.bit_depth == 16 else np.uint8
        native = size == (w * s, h * s)  # else the native pass is resized, and the resize makes the final array
        pixels = run_tiled(
            photo.rgb,
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
        alpha = None if photo.alpha is None else resize(photo.alpha, size)
        return Upscaled(pixels, alpha, photo.grayscale, photo.icc_profile, photo.exif, (w, h), list(photo.warnings))

    def encode(self, upscaled: Upscaled, dst: Path, fmt: str, quality: int) -> list[str]:
        """Write `upscaled` to `dst` atomically in `fmt`; returns warnings about what the format could not keep.
        Raises InputError (unwritable destination) or ConfigError (an image the format cannot hold)."""
        return write_image(
            dst,
            upscaled.pixels,
            alpha=upscaled.alpha,
            grayscale=upscaled.grayscale,
            icc_profile=upscaled.icc_profile,
            exif=upscaled.exif,
            fmt=fmt,
            quality=quality,
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
        quality: int = 95,
        on_tile: TileProgress | None = None,
    ) -> UpscaleResult:
        """Upscale one file to `dst` (default: `<stem>_x<scale>.<ext>` beside it, or in `out_dir`), written
        atomically: a batch of one, so every rule of `upscale_files` holds. With an explicit `dst`, `fmt` "same"
        follows dst's extension.

        Raises what that batch would report: InputError (unreadable or too large input, unwritable output, out of
        memory), ConfigError (format/quality, an output the format cannot hold) or the backend's errors.
        """
        options = BatchOptions(out_dir=out_dir, fmt=fmt, quality=quality, on_tile=on_tile)
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
        quality: int = 95,
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
        Raises ConfigError at once for a bad `fmt` or `quality`.
        """
        options = BatchOptions(
            out_dir=out_dir,
            fmt=fmt,
            quality=quality,
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
        return (job.result for job in run_batch(self, items, options))
