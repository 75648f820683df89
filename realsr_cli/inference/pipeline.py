"""The batch pipeline behind `Upscaler.upscale_files` and `Upscaler.upscale_file`: while the caller's thread
runs inference on one image, a decode thread reads the next and an encode thread writes the previous one
(onnxruntime, numpy, Pillow and zlib release the GIL). It goes on past bad files and reports one `UpscaleResult`
per input, in input order.

Each input is a `Job` that takes the Upscaler's steps in turn: `decode` (decode thread), `upscale_photo`
(caller's thread), `encode` (encode thread). What is decided about an image (output format and path, sizes, tile
plan, whether the format holds it) is decided once, right after it is decoded. No torch here.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from realsr_cli.config import EncodeConfig
from realsr_cli.errors import InputError, RealSRError
from realsr_cli.inference.inputs import InputItem
from realsr_cli.inference.tiling import TileProgress
from realsr_cli.photo.formats import OUTPUT_FORMATS, check_output_size, format_of, output_format_for, output_path
from realsr_cli.photo.read import Photo
from realsr_cli.photo.write import animation_notice

if TYPE_CHECKING:
    from realsr_cli.inference.upscaler import ImagePlan, Upscaled, Upscaler

# upscaled outputs (plus the encoder's working copy) held at once in a batch: smaller photos overlap inference
# with the previous photo's encoding; a 12 MP photo at x4 (576 MB out) waits for the previous one to be written
DEFAULT_MAX_INFLIGHT_BYTES = 3 << 29  # 1.5 GiB


Status = Literal["ok", "skipped", "failed"]  # what became of one input of a batch


@dataclass(frozen=True)
class ImageStart:
    """Passed to `on_image` when inference of an image begins."""

    index: int  # 0-based position in the batch
    total: int
    src: Path
    dst: Path
    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]
    tiles: int  # tiles of this image (of all its frames, for an animation); `on_tile(done, tiles)` follows


@dataclass
class UpscaleResult:
    """The outcome for one input. `status` is "ok", "skipped" (output exists, --skip-existing) or "failed"."""

    src: Path
    status: Status
    dst: Path | None = None
    error: str | None = None  # the user-facing message when failed
    exit_code: int = 0  # the failure's RealSRError exit code (0 unless failed)
    input_size: tuple[int, int] | None = None  # (width, height)
    output_size: tuple[int, int] | None = None
    # the image's own work: its decode, inference and encode seconds added up, not the time it waited in the
    # pipeline for the images before it (in a batch the stages of neighbouring images overlap)
    seconds: float = 0.0
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


ImageCallback = Callable[[ImageStart], None]
ResultCallback = Callable[[UpscaleResult], None]


@dataclass(frozen=True)
class BatchOptions:
    """How a batch names and writes its outputs, and whom it tells about its progress (see `upscale_files`)."""

    out_dir: str | Path | None = None
    fmt: str = "same"
    encoding: EncodeConfig = EncodeConfig()
    skip_existing: bool = False
    on_image: ImageCallback | None = None
    on_tile: TileProgress | None = None
    # called on the encode thread the moment each input's result is final (written, skipped or failed), in input
    # order: the batch yields it only once the next image is inferred, too late for a worker that may die meanwhile
    on_result: ResultCallback | None = None
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES

    def __post_init__(self) -> None:
        # raises ConfigError for an unknown format, or one this machine cannot write, before any work
        output_format_for("PNG", self.fmt)


@dataclass(eq=False)
class Job:
    """One input moving through the pipeline: decode thread -> caller's thread (inference) -> encode thread.
    Finished, it holds a `result`, and for a failure the `error` itself (`upscale_file` raises it)."""

    index: int
    item: InputItem
    fmt: str | None = None  # the output format and path, decided once the image is decoded
    dst: Path | None = None
    photo: Photo | None = None
    image_plan: ImagePlan | None = None
    upscaled: Upscaled | None = None
    result: UpscaleResult | None = None
    error: RealSRError | None = None
    timings: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    nbytes: int = 0
    holds_budget: bool = False

    def fail(self, err: RealSRError) -> None:
        self.photo = None
        self.upscaled = None
        self.error = err
        message = str(err)
        if str(self.item.path) not in message:  # "JPEG cannot hold a 500x193664 image" must say which input
            message = f"{self.item.path}: {message}"
        self.result = UpscaleResult(
            src=self.item.path,
            status="failed",
            dst=self.dst,
            error=message,
            exit_code=err.exit_code,
            seconds=sum(self.timings.values()),
            timings=self.timings,
        )


def run_batch(upscaler: Upscaler, items: list[InputItem], options: BatchOptions) -> Iterator[Job]:
    """Upscale `items` with `upscaler`, yielding each finished `Job` in input order. The workers start with the
    first `next` and stop when the batch ends, the caller stops iterating, or an exception (Ctrl-C) arrives."""
    pipeline = _Pipeline(upscaler, items, options)
    try:
        pipeline.start()
        for _ in pipeline.jobs:
            job = pipeline.decoded.get()  # in input order
            pipeline.decode_slot.release()  # let the decoder start on the next image
            if job.photo is not None:
                pipeline.infer(job)
            pipeline.to_encode.put(job)
            yield from pipeline.finished()
        pipeline.to_encode.put(None)
        yield from pipeline.finished(wait=True)
    finally:
        pipeline.stop()


def _unexpected(what: str, err: Exception) -> RealSRError:
    """A bug must not hang the batch: it is reported on the file it happened with, and the batch goes on."""
    error = RealSRError(f"{what} ({type(err).__name__}: {err})")
    error.__cause__ = err  # the traceback REALSR_DEBUG=1 shows
    return error


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

    def __init__(self, upscaler: Upscaler, items: list[InputItem], options: BatchOptions) -> None:
        self.up = upscaler
        self.options = options
        self.jobs = [Job(i, item) for i, item in enumerate(items)]
        self.total = len(self.jobs)
        self.budget = _Budget(options.max_inflight_bytes)
        self.stopping = threading.Event()
        self.decoded: queue.Queue[Job] = queue.Queue()
        self.decode_slot = threading.Semaphore(1)  # decode at most one image ahead of inference
        self.claimed: dict[Path, Path] = {}  # output path -> the input writing it (only the decode thread uses it)
        self.inputs = {item.path.resolve() for item in items if item.error is None}  # no output may replace one
        self.to_encode: queue.Queue[Job | None] = queue.Queue()
        self.done: queue.Queue[Job] = queue.Queue()
        self.callback_error: BaseException | None = None  # raised by on_result, re-raised on the caller's thread
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
            except Exception as err:
                job.fail(_unexpected(f"{job.item.path}: unexpected error while decoding", err))
            self.decoded.put(job)

    def _decode(self, job: Job) -> None:
        job.started = time.perf_counter()
        if job.item.error is not None:
            job.fail(InputError(job.item.error))
            return
        try:
            self._decode_and_decide(job)
        except RealSRError as err:
            job.fail(err)
        except MemoryError:
            job.fail(InputError(f"{job.item.path}: out of memory decoding the image"))

    def _decode_and_decide(self, job: Job) -> None:
        """Decode the job's image and decide everything about its output, or mark it skipped."""
        item = job.item
        # an output that exists is found before decoding, from the format the input's extension names
        if self.options.skip_existing and self._skipped(job, self._destination(item, format_of(item.path))[1]):
            return
        photo = self.up.decode(item.path)
        job.fmt, job.dst = self._destination(item, photo.format, animated=photo.animation is not None)
        if photo.animation is not None and not OUTPUT_FORMATS[job.fmt].animated:
            photo = photo.first_frame(animation_notice(job.fmt))  # before inference, which would be wasted
        self._claim(item, job.dst)
        job.timings["decode"] = time.perf_counter() - job.started
        if self.options.skip_existing and self._skipped(job, job.dst):  # the real format differed from the guess
            return
        job.image_plan = self.up.plan_image(photo)
        check_output_size(job.fmt, *job.image_plan.output_size)  # before the work, not after
        job.photo = photo

    def _claim(self, item: InputItem, dst: Path) -> None:
        """Make `dst` the output of `item`, refusing an output that is an input of this batch or another input's
        output (`realsr upscale z.png z_x4.png` would replace the input z_x4.png with z.png's upscale)."""
        key = dst.resolve()
        if key in self.inputs:
            raise InputError(
                f"{item.path}: its output {dst} is an input of this batch; an output never replaces an input "
                "(leave that file out, or write the outputs elsewhere with -o)"
            )
        claimed_by = self.claimed.setdefault(key, item.path)
        if claimed_by != item.path:  # photo.jpg and photo.png in one folder, both written as photo_x4.png
            raise InputError(
                f"{item.path}: its output {dst} is already the output of {claimed_by} in this batch "
                "(rename one of them, or keep each input's format with --format same)"
            )

    def _destination(self, item: InputItem, source_format: str, animated: bool = False) -> tuple[str, Path]:
        """The output format and path of `item`, whose source is in `source_format` (an animation when
        `animated`). A path the caller named is kept, and with format "same" its extension says the format."""
        if item.dst is not None:
            named = format_of(item.dst) if self.options.fmt == "same" else source_format
            # animated=True: a name the caller chose says the format, so even a still image named .gif is a GIF
            return output_format_for(named, self.options.fmt, animated=True), item.dst
        fmt = output_format_for(source_format, self.options.fmt, animated=animated)
        return fmt, output_path(item.path, self.options.out_dir, self.up.scale, fmt, item.root)

    def _skipped(self, job: Job, dst: Path) -> bool:
        """Whether `dst` exists, in which case the job is finished as skipped."""
        if not dst.exists():
            return False
        job.dst = dst
        job.result = UpscaleResult(src=job.item.path, status="skipped", dst=dst)
        return True

    # -- caller's thread

    def infer(self, job: Job) -> None:
        """Upscale a decoded job's photo, once the memory budget allows its output."""
        photo, image_plan = job.photo, job.image_plan
        (w, h), (ow, oh) = image_plan.input_size, image_plan.output_size
        channels = 3 + (photo.alpha is not None)
        # the output, and as much again for the encoder's working copy (Pillow holds 8-bit RGB as 4 bytes a pixel)
        job.nbytes = 2 * ow * oh * channels * (2 if photo.bit_depth == 16 else 1) * image_plan.frames
        try:
            self.budget.acquire(job.nbytes)
            job.holds_budget = True
            if self.options.on_image is not None:
                self.options.on_image(
                    ImageStart(job.index, self.total, job.item.path, job.dst, (w, h), (ow, oh), image_plan.tile_count)
                )
            t0 = time.perf_counter()
            job.upscaled = self.up.upscale_photo(
                photo, image_plan=image_plan, fmt=job.fmt, on_tile=self.options.on_tile
            )
            job.timings["infer"] = time.perf_counter() - t0
        except RealSRError as err:
            job.fail(err)
        except MemoryError:
            job.fail(InputError(f"{job.item.path}: out of memory upscaling {w}x{h}; try a smaller --tile"))
        finally:
            job.photo = None  # the input is no longer needed: free it before the next image

    # -- encode thread

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
                except Exception as err:
                    job.fail(_unexpected(f"{job.dst}: unexpected error while encoding", err))
            if job.holds_budget:
                self.budget.release(job.nbytes)
                job.holds_budget = False
            if self.options.on_result is not None and self.callback_error is None:
                try:
                    self.options.on_result(job.result)
                except Exception as err:  # the encoder goes on; the caller's thread raises it
                    self.callback_error = err
            self.done.put(job)

    def _encode(self, job: Job) -> None:
        up = job.upscaled
        t0 = time.perf_counter()
        try:
            warnings = self.up.encode(up, job.dst, job.fmt, self.options.encoding)
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
            seconds=sum(job.timings.values()),
            timings=job.timings,
            warnings=up.warnings + warnings,
        )

    # -- results, in input order

    def finished(self, wait: bool = False) -> Iterator[Job]:
        """The jobs the encoder has finished since the last call, in input order; with `wait`, all the rest."""
        while self.yielded < self.total:
            try:
                job = self.done.get(block=wait)
            except queue.Empty:
                return
            if self.callback_error is not None:
                raise self.callback_error
            self.yielded += 1
            yield job
