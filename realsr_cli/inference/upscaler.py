"""The upscale job, as a Python API the `realsr upscale` command is a thin layer over.

`Upscaler` opens a model once and upscales numpy arrays, PIL images, files, and batches of files. A batch
overlaps decoding of the next image, inference of the current one and encoding of the previous one (threads:
onnxruntime, numpy, Pillow and zlib release the GIL), goes on past bad files, and reports one `UpscaleResult`
per input. Nothing here prints: progress goes to callbacks, notices to `notice`. No torch here (the TorchScript
backend imports it when it is used).

    >>> from realsr_cli.inference.upscaler import Upscaler
    >>> with Upscaler("export/realsr-compact-x4.onnx", tile=512) as up:
    ...     big = up.upscale(photo_array)          # uint8/uint16/float array or PIL image in, same kind out
    ...     for result in up.upscale_files(["photos/"], out_dir="out", recursive=True):
    ...         print(result.status, result.dst)
"""

from __future__ import annotations

import glob
import importlib.resources
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realsr_cli.photo import imageio
from realsr_cli.config import TileConfig, UpscaleConfig
from realsr_cli.errors import ConfigError, InputError, RealSRError
from realsr_cli.inference.runtime import Backend, Notice, open_backend, preferred_backend
from realsr_cli.spec import ModelSpec
from realsr_cli.inference.tiling import TilePlan, TileProgress, plan_tiles, run_tiled

DEFAULT_MODEL_STEM = "realsr-compact-x4"
"""The bundled model's file stem: export/realsr-compact-x4.onnx (+ .fp16.onnx for CUDA) and .ts."""

# upscaled outputs (plus the encoder's working copy) held at once in a batch: smaller photos overlap inference
# with the previous photo's encoding; a 12 MP photo at x4 (576 MB out) waits for the previous one to be written
DEFAULT_MAX_INFLIGHT_BYTES = 3 << 29  # 1.5 GiB

_EXT_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


# ---- default model


def default_model_dirs() -> list[Path]:
    """Where the bundled model may live: inside the installed package (the wheel puts export/ there), then the
    source tree's top-level export/ folder."""
    dirs = []
    try:
        dirs.append(Path(str(importlib.resources.files("realsr_cli") / "export")))
    except (ModuleNotFoundError, TypeError):  # not importable as a regular package (zipimport etc.)
        pass
    dirs.append(Path(__file__).resolve().parents[2] / "export")
    return dirs


def resolve_model(model: str | os.PathLike | None, backend: str = "auto") -> Path:
    """The model file to open: `model` itself, or the bundled model for `backend` (ONNX first under auto).

    Raises InputError when no model is given and none is bundled.
    """
    if model is not None:
        return Path(model)
    names = {
        "auto": [f"{DEFAULT_MODEL_STEM}.onnx", f"{DEFAULT_MODEL_STEM}.ts"],
        "onnx": [f"{DEFAULT_MODEL_STEM}.onnx"],
        "torchscript": [f"{DEFAULT_MODEL_STEM}.ts"],
    }.get(backend, [])
    for folder in default_model_dirs():
        for name in names:
            if (folder / name).is_file():
                return folder / name
    looked = ", ".join(str(folder) for folder in default_model_dirs())
    raise InputError(
        f"the bundled model ({' or '.join(names)}) is missing from {looked}: reinstall realsr, or pass --model "
        "with an exported .onnx or .ts file (make one with `realsr export CHECKPOINT -o DIR`)"
    )


# ---- results and progress


@dataclass(frozen=True)
class InputItem:
    """One input image of a batch: its path, and the folder argument it was found under (outputs mirror the tree
    below it), or None for a file named directly. `error` is set for an argument that matched nothing."""

    path: Path
    root: Path | None = None
    error: str | None = None


@dataclass(frozen=True)
class ImageStart:
    """Passed to `on_image` when inference of an image begins."""

    index: int  # 0-based position in the batch
    total: int
    src: Path
    dst: Path
    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]
    tiles: int  # tiles of this image; `on_tile(done, tiles)` follows


@dataclass
class UpscaleResult:
    """The outcome for one input. `status` is "ok", "skipped" (output exists, --skip-existing) or "failed"."""

    src: Path
    status: str
    dst: Path | None = None
    error: str | None = None  # the user-facing message when failed
    exit_code: int = 0  # the failure's RealSRError exit code (0 unless failed)
    input_size: tuple[int, int] | None = None  # (width, height)
    output_size: tuple[int, int] | None = None
    seconds: float = 0.0  # wall time from the start of decoding to the file in place
    timings: dict[str, float] = field(default_factory=dict)  # "decode", "infer", "encode" seconds
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, sizes as [width, height]."""
        return {
            "input": str(self.src),
            "output": None if self.dst is None else str(self.dst),
            "status": self.status,
            "error": self.error,
            "input_size": None if self.input_size is None else list(self.input_size),
            "output_size": None if self.output_size is None else list(self.output_size),
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
        }


@dataclass
class Upscaled:
    """An upscaled photo before encoding: integer pixels and alpha, plus what of the source is written back
    (`imageio.write_image` and `imageio.compose` take these). Holds no reference to the decoded input, so the
    input's float pixels can be freed while this is encoded."""

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


ImageCallback = Callable[[ImageStart], None]


# ---- input expansion


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
            found = _folder_images(path, recursive)
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
            matches = [m for m in matches if m.suffix.lower() in imageio.IMAGE_EXTENSIONS]
            if not matches:
                items.append(InputItem(path, None, f"{text}: no images match"))
            root = _glob_root(text)
            for file in matches:
                if not _is_earlier_output(file):
                    add(file, root)
        else:
            items.append(InputItem(path, None, f"{path}: no such file or folder"))
    return items


_OUTPUT_STEM = re.compile(r"^(?P<stem>.+)_x\d+(?:\.\d+)?$")


def _is_earlier_output(path: Path) -> bool:
    """Whether a file found in a folder or glob is realsr's own output (`<stem>_x<scale>.<ext>` beside an image
    named `<stem>.*`), so that running again over a folder does not upscale its earlier outputs."""
    match = _OUTPUT_STEM.match(path.stem)
    if match is None:
        return False
    return any(
        sibling.stem == match["stem"] and sibling.suffix.lower() in imageio.IMAGE_EXTENSIONS
        for sibling in path.parent.glob(glob.escape(match["stem"]) + ".*")
    )


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in imageio.IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found)


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


# ---- the upscaler


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
        self._notice = notice or (lambda message: None)
        # the bundled model ships as ONNX and TorchScript: auto takes whichever runs faster here
        backend = config.backend
        if config.model is None and backend == "auto":
            backend = preferred_backend(config.device, config.precision)
        path = resolve_model(config.model, backend)
        self._backend: Backend | None = open_backend(
            path,
            config.backend,
            config.device,
            precision=config.precision,
            scale_hint=config.scale_hint,
            notice=self._notice,
        )
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
        return imageio.scaled_size(width, height, self.scale)

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

    # -- in memory

    def upscale_photo(
        self, photo: imageio.Photo, *, on_tile: TileProgress | None = None, fmt: str | None = None
    ) -> Upscaled:
        """Upscale a decoded photo: colour through the model (tiled), alpha resized separately, then both brought
        down to this upscaler's scale when it is below native. Pixels are uint8, or uint16 for 16-bit photos.
        `fmt`, the format the result will be written in, lets the pixels be laid out for that encoder
        (`imageio.new_canvas`); the values are the same either way."""
        backend = self._require()
        h, w = photo.rgb.shape[:2]
        s = backend.spec.scale
        plan = self.plan(w, h)
        dtype = np.uint16 if photo.bit_depth == 16 else np.uint8
        size = self.output_size(w, h)
        native = size == (w * s, h * s)  # else the native pass is resized, and the resize makes the final array
        pixels = run_tiled(
            photo.rgb,
            backend.run,
            plan,
            s,
            out=imageio.new_canvas(h * s, w * s, dtype, fmt if native else None),
            batch=self.config.tile.batch,
            fixed_batch=backend.device == "cuda",  # one input shape per image for cuDNN
            progress=on_tile,
        )
        if not native:
            pixels = imageio.resize(pixels, size)
        # alpha never goes through the model: Lanczos takes it to the output size
        alpha = None if photo.alpha is None else imageio.resize(photo.alpha, size)
        return Upscaled(pixels, alpha, photo.grayscale, photo.icc_profile, photo.exif, (w, h), list(photo.warnings))

    def upscale(self, image, *, on_tile: TileProgress | None = None):
        """Upscale a numpy array or PIL image; returns the same kind.

        Arrays: (H, W) gray, (H, W, 1), (H, W, 2) gray+alpha, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, uint16 or
        float in [0, 1] -> the same shape layout and dtype, scaled (floats carry 16-bit precision). PIL images:
        L, LA, RGB, RGBA and I;16 keep their mode; palette, CMYK and others come back as RGB(A) or L(A).
        Alpha never goes through the model (it is resized separately). Raises InputError for an unusable image.
        """
        from PIL import Image

        if isinstance(image, Image.Image):
            photo = imageio.photo_from_pil(image)
            result = self.upscale_photo(photo, on_tile=on_tile)
            if image.mode.startswith("I;16") and result.pixels.dtype == np.uint16:
                out = Image.fromarray(imageio.compose(result.pixels, None, True))  # 2-D uint16 -> I;16
            else:
                out = imageio.to_pil(result.pixels, result.alpha, result.grayscale)
            if photo.icc_profile:
                out.info["icc_profile"] = photo.icc_profile
            return out
        array = np.asarray(image)
        photo = imageio.photo_from_array(array)
        result = self.upscale_photo(photo, on_tile=on_tile)
        out = imageio.compose(result.pixels, result.alpha, photo.grayscale)
        if array.ndim == 3 and out.ndim == 2:  # (H, W, 1) in -> (H, W, 1) out
            out = out[..., None]
        if array.dtype.kind == "f":
            return (out * (1.0 / np.iinfo(out.dtype).max)).astype(array.dtype)
        return out.astype(array.dtype, copy=False)

    # -- files

    def output_path(
        self,
        src: str | os.PathLike,
        *,
        out_dir: str | os.PathLike | None = None,
        root: str | os.PathLike | None = None,
        fmt: str = "same",
        source_format: str | None = None,
    ) -> Path:
        """Where `src` goes: `<stem>_x<scale>.<ext>` beside it, or under out_dir (mirroring src's folder below
        `root`). With fmt "same" the source format decides the extension; before decoding it is guessed from
        src's extension."""
        src = Path(src)
        source_format = source_format or _EXT_FORMATS.get(src.suffix.lower(), "PNG")
        return imageio.output_path(src, out_dir, self.scale, imageio.output_format_for(source_format, fmt), root)

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
        """Upscale one file to `dst` (default: `output_path(src, out_dir=...)`), written atomically.

        Raises InputError (unreadable or too large input, unwritable output), ConfigError (format/quality, an output
        the format cannot hold) or the backend's errors. With an explicit `dst`, `fmt` "same" follows dst's extension.
        """
        _check_quality(quality)
        item = InputItem(Path(src))
        job = _Job(0, item, None if dst is None else Path(dst))
        t0 = time.perf_counter()
        photo = imageio.read_image(item.path, max_pixels=self.config.max_pixels)
        job.timings["decode"] = time.perf_counter() - t0
        fmt_name = self._output_format(job, photo, fmt)
        dst = job.dst or imageio.output_path(item.path, out_dir, self.scale, fmt_name, None)
        up = self._infer(job, photo, fmt_name, on_tile)
        del photo  # free the input's float pixels before encoding
        t1 = time.perf_counter()
        warnings = self._write(up, dst, fmt_name, quality)
        job.timings["encode"] = time.perf_counter() - t1
        return UpscaleResult(
            src=item.path,
            status="ok",
            dst=dst,
            input_size=up.input_size,
            output_size=up.size,
            seconds=time.perf_counter() - t0,
            timings=job.timings,
            warnings=up.warnings + warnings,
        )

    def _output_format(self, job: _Job, photo: imageio.Photo, fmt: str) -> str:
        if job.dst is not None and fmt == "same":
            return imageio.output_format_for(_EXT_FORMATS.get(job.dst.suffix.lower(), "PNG"), "same")
        return imageio.output_format_for(photo.format, fmt)

    def _infer(self, job: _Job, photo: imageio.Photo, fmt_name: str, on_tile: TileProgress | None) -> Upscaled:
        h, w = photo.rgb.shape[:2]
        imageio.check_output_size(fmt_name, *self.output_size(w, h))  # before the work, not after
        t0 = time.perf_counter()
        up = self.upscale_photo(photo, on_tile=on_tile, fmt=fmt_name)
        job.timings["infer"] = time.perf_counter() - t0
        return up

    @staticmethod
    def _write(up: Upscaled, dst: Path, fmt_name: str, quality: int) -> list[str]:
        return imageio.write_image(
            dst,
            up.pixels,
            alpha=up.alpha,
            grayscale=up.grayscale,
            icc_profile=up.icc_profile,
            exif=up.exif,
            fmt=fmt_name,
            quality=quality,
        )

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
        _check_quality(quality)
        imageio.output_format_for("PNG", fmt)  # validates fmt before any work
        args = list(inputs)
        if not any(isinstance(arg, InputItem) for arg in args):
            items = expand_inputs(args, recursive)
        else:  # already expanded (perhaps mixed with raw arguments, expanded one by one)
            items = []
            for arg in args:
                items.extend([arg] if isinstance(arg, InputItem) else expand_inputs([arg], recursive))
        return self._batch(items, out_dir, fmt, quality, skip_existing, on_image, on_tile, max_inflight_bytes)

    def _batch(self, items, out_dir, fmt, quality, skip_existing, on_image, on_tile, budget_bytes):
        jobs = [_Job(i, item, None) for i, item in enumerate(items)]
        pipeline = _Pipeline(self, jobs, out_dir, fmt, quality, skip_existing, budget_bytes)
        try:
            pipeline.start()
            for _ in jobs:
                job = pipeline.decoded.get()  # in input order
                pipeline.decode_slot.release()  # let the decoder start on the next image
                if job.photo is not None:
                    self._run_job(pipeline, job, on_image, on_tile)
                pipeline.encode_put(job)
                yield from pipeline.finished()
            pipeline.encode_put(None)
            yield from pipeline.finished(wait=True)
        finally:
            pipeline.stop()

    def _run_job(self, pipeline: _Pipeline, job: _Job, on_image, on_tile) -> None:
        photo = job.photo
        h, w = photo.rgb.shape[:2]
        size = self.output_size(w, h)
        channels = 3 + (photo.alpha is not None)
        # the output, and as much again for the encoder's working copy (Pillow holds 8-bit RGB as 4 bytes a pixel)
        job.nbytes = 2 * size[0] * size[1] * channels * (2 if photo.bit_depth == 16 else 1)
        try:
            imageio.check_output_size(job.fmt, *size)
            pipeline.budget.acquire(job.nbytes)
            job.holds_budget = True
            if on_image is not None:
                on_image(
                    ImageStart(job.index, pipeline.total, job.item.path, job.dst, (w, h), size, self.plan(w, h).count)
                )
            job.upscaled = self._infer(job, photo, job.fmt, on_tile)
        except RealSRError as err:
            job.fail(err)
        except MemoryError:
            job.fail(InputError(f"{job.item.path}: out of memory upscaling {w}x{h}; try a smaller --tile"))
        finally:
            job.photo = None  # the input is no longer needed: free it before the next image


def _check_quality(quality: int) -> None:
    if not 1 <= quality <= 100:
        raise ConfigError(f"quality must be 1 to 100, got {quality}")


@dataclass(eq=False)
class _Job:
    """One input moving through the pipeline: decode thread -> caller's thread (inference) -> encode thread."""

    index: int
    item: InputItem
    dst: Path | None
    fmt: str = "PNG"
    photo: imageio.Photo | None = None
    upscaled: Upscaled | None = None
    result: UpscaleResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    nbytes: int = 0
    holds_budget: bool = False

    def fail(self, err: RealSRError) -> None:
        self.photo = None
        self.upscaled = None
        self.result = UpscaleResult(
            src=self.item.path,
            status="failed",
            dst=self.dst,
            error=str(err),
            exit_code=err.exit_code,
            seconds=time.perf_counter() - self.started if self.started else 0.0,
            timings=self.timings,
        )


class _Budget:
    """Bytes of upscaled output in flight (computed, not yet written). Acquire blocks while the budget is
    exceeded, except that one item is always allowed, so any single image can run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n

    def release(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


class _Pipeline:
    """The two worker threads of a batch and the queues between them and the caller's thread."""

    def __init__(self, upscaler: Upscaler, jobs: list[_Job], out_dir, fmt, quality, skip_existing, budget) -> None:
        self.up = upscaler
        self.jobs = jobs
        self.total = len(jobs)
        self.out_dir = out_dir
        self.fmt = fmt
        self.quality = quality
        self.skip_existing = skip_existing
        self.budget = _Budget(budget)
        self.stopping = threading.Event()
        self.decoded: queue.Queue[_Job] = queue.Queue()
        self.decode_slot = threading.Semaphore(1)  # decode at most one image ahead of inference
        self.claimed: dict[Path, Path] = {}  # output path -> the input writing it (only the decode thread uses it)
        self.to_encode: queue.Queue[_Job | None] = queue.Queue()
        self.done: queue.Queue[_Job] = queue.Queue()
        self.yielded = 0
        self.threads = [
            threading.Thread(target=self._decode_loop, name="realsr-decode", daemon=True),
            threading.Thread(target=self._encode_loop, name="realsr-encode", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Stop the workers: the decoder after its current image, the encoder after its current write (which
        completes atomically or removes its temporary file). Queued work is dropped."""
        self.stopping.set()
        self.decode_slot.release()
        self.to_encode.put(None)
        with self.budget.cond:
            self.budget.cond.notify_all()
        for thread in self.threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join()

    # -- decode thread

    def _decode_loop(self) -> None:
        for job in self.jobs:
            self.decode_slot.acquire()
            if self.stopping.is_set():
                return
            try:
                self._decode(job)
            except Exception as err:  # a bug must not hang the batch: report it on this file and go on
                job.fail(RealSRError(f"{job.item.path}: unexpected error while decoding ({type(err).__name__}: {err})"))
            self.decoded.put(job)

    def _decode(self, job: _Job) -> None:
        job.started = time.perf_counter()
        item = job.item
        if item.error is not None:
            job.fail(InputError(item.error))
            return
        try:
            if self.skip_existing:
                guess = self.up.output_path(item.path, out_dir=self.out_dir, root=item.root, fmt=self.fmt)
                if guess.exists():
                    job.dst = guess
                    job.result = UpscaleResult(src=item.path, status="skipped", dst=guess)
                    return
            photo = imageio.read_image(item.path, max_pixels=self.up.config.max_pixels)
            job.fmt = imageio.output_format_for(photo.format, self.fmt)
            job.dst = imageio.output_path(item.path, self.out_dir, self.up.scale, job.fmt, item.root)
            claimed_by = self.claimed.setdefault(job.dst.resolve(), item.path)
            if claimed_by != item.path:  # photo.jpg and photo.png in one folder, both written as photo_x4.png
                raise InputError(
                    f"{item.path}: its output {job.dst} is already the output of {claimed_by} in this batch "
                    "(rename one of them, or keep each input's format with --format same)"
                )
            job.timings["decode"] = time.perf_counter() - job.started
            if self.skip_existing and job.dst.exists():  # the real format differed from the extension's guess
                job.result = UpscaleResult(src=item.path, status="skipped", dst=job.dst)
                return
            job.photo = photo
        except RealSRError as err:
            job.fail(err)
        except MemoryError:
            job.fail(InputError(f"{item.path}: out of memory decoding the image"))

    # -- encode thread

    def encode_put(self, job: _Job | None) -> None:
        self.to_encode.put(job)

    def _encode_loop(self) -> None:
        while True:
            job = self.to_encode.get()
            if job is None or self.stopping.is_set():
                if job is not None and job.holds_budget:
                    self.budget.release(job.nbytes)
                if job is None:
                    return
                continue
            if job.result is None and job.upscaled is not None:
                try:
                    self._encode(job)
                except Exception as err:  # a bug must not hang the batch: report it on this file and go on
                    job.fail(RealSRError(f"{job.dst}: unexpected error while encoding ({type(err).__name__}: {err})"))
            if job.holds_budget:
                self.budget.release(job.nbytes)
                job.holds_budget = False
            self.done.put(job)

    def _encode(self, job: _Job) -> None:
        up = job.upscaled
        t0 = time.perf_counter()
        try:
            warnings = self.up._write(up, job.dst, job.fmt, self.quality)
        except RealSRError as err:
            job.fail(err)
            return
        except MemoryError:
            job.fail(InputError(f"{job.dst}: out of memory encoding the image"))
            return
        finally:
            job.upscaled = None
        job.timings["encode"] = time.perf_counter() - t0
        job.result = UpscaleResult(
            src=job.item.path,
            status="ok",
            dst=job.dst,
            input_size=up.input_size,
            output_size=up.size,
            seconds=time.perf_counter() - job.started,
            timings=job.timings,
            warnings=up.warnings + warnings,
        )

    # -- results, in input order

    def finished(self, wait: bool = False) -> Iterator[UpscaleResult]:
        while self.yielded < self.total:
            try:
                job = self.done.get(block=wait)
            except queue.Empty:
                return
            self.yielded += 1
            yield job.result
