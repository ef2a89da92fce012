"""Running a batch: :func:`run_batch`, the decode/upscale/encode pipeline.

:func:`run_batch` plans the batch (:mod:`sruc.batch.plan`), loads and prepares
the model once, and reports on every file (:mod:`sruc.batch.report`).

The run keeps the model busy: while the main thread runs the network on image
``i``, a small thread pool decodes image ``i + 1`` and encodes image ``i - 1``
(Pillow and PyTorch release the GIL while they work);
:func:`sruc.batch.pool.io_plan` sizes it (two threads where the network runs
on the CPU, one per free core on a GPU). At most :data:`PREFETCH` decoded
images wait, and a few results wait to be written
(:data:`PENDING_WRITE_MEGAPIXELS` of them at most beyond the first), so
memory stays bounded whatever the folder size.
Outputs are written atomically (:func:`sruc.files.images.write_image`), so a killed
batch never leaves a half-written image, and existing outputs are skipped, so
running the same command again resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import UnidentifiedImageError

from sruc.batch.plan import batch_device, effective_shard, plan_batch
from sruc.batch.pool import MAX_PENDING_WRITES, io_plan, io_pool
from sruc.batch.report import (
    DONE,
    FAILED,
    IGNORED,
    PENDING,
    BatchInterrupted,
    BatchItem,
    BatchProgress,
    BatchProgressFn,
    BatchReport,
)
from sruc.engine.pipeline import ModelSpec, PreparedModel, Upscaler, prepare_model
from sruc.errors import InputError, OutputError, SrucError, UsageError
from sruc.files import animation, images
from sruc.files.animation import Animation
from sruc.files.images import Picture
from sruc.scales import check_scale
from sruc.zoo.registry import DEFAULT_MODEL

#: Decoded images waiting for the model, beyond the one it is running on.
PREFETCH = 1
#: Megapixels of upscaled images that may wait to be written beyond the first
#: (float32 RGB: 12 bytes a pixel, so 48 MP is 576 MB).
PENDING_WRITE_MEGAPIXELS = 48.0
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class _NotAnImage(Exception):
    """A file found by a walk or a glob whose content is not an image: skipped silently."""


class _DiskFull(Exception):
    """Writing failed for lack of space: every later file would fail the same way."""


def _megapixels(size: tuple[int, int] | None) -> float:
    return size[0] * size[1] / 1e6 if size else 0.0


def _disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or what it was raised from) is ENOSPC/EDQUOT."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno in _DISK_FULL:
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _one_line(item: BatchItem, e: BaseException) -> str:
    """A one-line message that names the file."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if not isinstance(e, SrucError):
        text = f"unexpected {type(e).__name__}: {text}"
    return text if str(item.source) in text else f"{item.source}: {text}"


@dataclass
class _Run:
    """The state of one batch run; :func:`run_batch` is its front door."""

    model: PreparedModel
    scale: float
    tile: int | None
    quality: int | None
    overwrite: bool
    max_pixels: int | None
    progress: BatchProgressFn | None
    total: int
    upscaler: Upscaler | None = None  # around `model`, with the tile and --tta
    max_output_pixels: int | None = None
    started: float = field(default_factory=time.perf_counter)
    position: float = 0.0
    finished: int = 0
    megapixels: float = 0.0

    def emit(
        self,
        item: BatchItem | None = None,
        fraction: float = 0.0,
        frames: tuple[int, int] | None = None,
    ) -> None:
        if self.progress is None:
            return
        self.progress(
            BatchProgress(
                total=self.total,
                position=self.position + fraction,
                finished=self.finished,
                megapixels=self.megapixels,
                elapsed=time.perf_counter() - self.started,
                item=item,
                frames=frames,
            )
        )

    def finish(self, item: BatchItem, status: str, error: str | None = None) -> None:
        item.status, item.error = status, error
        self.finished += 1
        self.emit(item)

    def start(self, items: list[BatchItem]) -> None:
        """The first progress report, then one per file decided while planning
        (failed inputs, clashes, skips)."""
        self.emit()
        for item in items:
            if item.status != PENDING:
                self.emit(item)

    # Runs on an I/O thread.
    def decode(self, item: BatchItem) -> tuple[Picture | Animation, float]:
        """The decoded picture; for an animation, what its header says (its frames are
        decoded one at a time on the main thread, see :meth:`animate`)."""
        t0 = time.perf_counter()
        try:
            anim = animation.probe(item.source, self.max_pixels)
            if anim is not None:
                animation.check_output_format(anim, images.output_format(item.output))
                return anim, time.perf_counter() - t0
            pic = images.read_image(item.source, self.max_pixels)
        except InputError as e:
            # A file whose name does not claim an image (README, a file with no
            # extension) that turns out not to be one is none of our business.
            not_image = isinstance(e.__context__, UnidentifiedImageError) or _is_empty(item.source)
            if not item.claimed and not_image:
                raise _NotAnImage(str(item.source)) from e
            raise
        return pic, time.perf_counter() - t0

    # Runs on an I/O thread.
    def encode(self, item: BatchItem, out: Picture) -> float:
        t0 = time.perf_counter()
        try:
            item.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create folder {item.output.parent}: {e.strerror}") from e
        images.write_image(out, item.output, quality=self.quality, overwrite=self.overwrite)
        return time.perf_counter() - t0

    def upscale(self, item: BatchItem, pic: Picture) -> Picture:
        def tiles(done: int, total: int) -> None:
            self.emit(fraction=done / max(total, 1))

        t0 = time.perf_counter()
        assert self.upscaler is not None
        out = self.upscaler.upscale_picture(
            pic,
            self.scale,
            progress=tiles,
            target=item.output,
            max_output_pixels=self.max_output_pixels,
        )
        item.model_seconds = time.perf_counter() - t0
        item.input_size, item.output_size = (pic.width, pic.height), (out.width, out.height)
        item.precision = self.model.runner(pic.bits)[1]
        item.engine = self.model.engine_of(pic.bits)
        self.position += 1
        self.megapixels += out.width * out.height / 1e6
        return out

    def animate(self, item: BatchItem, anim: Animation) -> None:
        """Upscale and write an animation, frame by frame, on this thread (its frames are
        streamed through the model into the encoder, not queued for the I/O pool)."""

        def frames(done: int, total: int) -> None:
            self.emit(fraction=done / max(total, 1), frames=(done, total))

        assert self.upscaler is not None
        try:
            item.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create folder {item.output.parent}: {e.strerror}") from e
        result = self.upscaler.upscale_animation(
            anim,
            item.output,
            self.scale,
            quality=self.quality,
            overwrite=self.overwrite,
            progress=frames,
        )
        item.model_seconds = result.seconds
        item.seconds += result.seconds
        item.input_size, item.output_size = result.input_size, result.output_size
        item.precision = result.precision
        item.engine = result.engine
        self.position += 1
        self.megapixels += result.frames * result.output_size[0] * result.output_size[1] / 1e6

    def settle_write(self, item: BatchItem, fut: Future[float]) -> None:
        """Wait for one write and record it; raises _DiskFull after recording a full disk."""
        try:
            item.seconds += fut.result()
        except KeyboardInterrupt:
            # The write goes on in its thread: wait for it, so the report says what is
            # on disk, then let the interrupt go on.
            with contextlib.suppress(Exception):
                item.seconds += fut.result()
                self.finish(item, DONE)
            raise
        except Exception as e:
            self.finish(item, FAILED, _one_line(item, e))
            if _disk_full(e):
                raise _DiskFull(item.error) from e
            return
        self.finish(item, DONE)

    def settle_all(self, writes: deque[tuple[BatchItem, Future[float]]]) -> None:
        """Wait for every write left; a full disk is recorded in its item, not raised."""
        while writes:
            with contextlib.suppress(_DiskFull):
                self.settle_write(*writes.popleft())

    def through_model(
        self, item: BatchItem, fut: Future[tuple[Picture | Animation, float]]
    ) -> Picture | None:
        """``item``'s decoded picture upscaled; None when the file ends here (ignored,
        failed, or an animation, written here)."""
        try:
            pic, seconds = fut.result()
            item.seconds += seconds
            if isinstance(pic, Animation):
                self.animate(item, pic)
                self.finish(item, DONE)
                return None
            return self.upscale(item, pic)
        except _NotAnImage:
            self.position += 1
            self.finish(item, IGNORED, "not an image")
        except Exception as e:  # one bad image never stops the batch
            self.position += 1
            self.finish(item, FAILED, _one_line(item, e))
            if _disk_full(e):  # an animation, written here: a full disk stops the batch
                raise _DiskFull(item.error) from e
        return None

    def run(
        self, work: list[BatchItem], pool: ThreadPoolExecutor, max_writes: int = MAX_PENDING_WRITES
    ) -> str | None:
        """Process ``work`` in order; returns why it stopped early (disk full), or None.

        At most ``max_writes`` results wait to be written, and beyond the
        first no more than :data:`PENDING_WRITE_MEGAPIXELS` in all.
        """
        decodes: dict[int, Future[tuple[Picture | Animation, float]]] = {}
        writes: deque[tuple[BatchItem, Future[float]]] = deque()

        def pending_mp() -> float:
            return sum(_megapixels(it.output_size) for it, _ in writes)

        def prefetch(j: int) -> None:
            if j < len(work) and j not in decodes:
                decodes[j] = pool.submit(self.decode, work[j])

        try:
            for j in range(PREFETCH + 1):
                prefetch(j)
            for i, item in enumerate(work):
                fut = decodes.pop(i)
                prefetch(i + PREFETCH + 1)
                out = self.through_model(item, fut)
                if out is None:
                    continue
                while writes and (
                    len(writes) >= max_writes
                    or pending_mp() + _megapixels(item.output_size) > PENDING_WRITE_MEGAPIXELS
                ):
                    self.settle_write(*writes.popleft())
                item.seconds += item.model_seconds
                writes.append((item, pool.submit(self.encode, item, out)))
                del out
                while writes and writes[0][1].done():
                    self.settle_write(*writes.popleft())
            while writes:
                self.settle_write(*writes.popleft())
        except _DiskFull as e:
            self.settle_all(writes)  # results already computed still get their chance
            return f"disk full: {e}"
        finally:
            for f in decodes.values():
                f.cancel()
            # On Ctrl-C: images already upscaled are written (atomically) before
            # the interrupt goes on; nothing is left half-written either way.
            self.settle_all(writes)
        return None


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    scale: float,
    *,
    model: ModelSpec = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tile: int | None = None,
    recursive: bool = False,
    overwrite: bool = False,
    suffix: str | None = None,
    output_format: str = "same",
    quality: int | None = None,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    shard: tuple[int, int] | None = None,
    env: Mapping[str, str] | None = None,
    progress: BatchProgressFn | None = None,
    tta: bool = False,
    max_output_pixels: int | None = None,
    engine: str = "auto",
) -> BatchReport:
    """Upscale every image of ``inputs`` into ``out_dir``; one bad file never stops it.

    Args:
        inputs: files, folders and glob patterns (expanded here too), any number.
        out_dir: output folder (created if missing); outputs are named
            ``{stem}{suffix}.{ext}`` and, with ``recursive``, mirror the tree
            below each input folder.
        scale: upscaling factor in (1, 8].
        model: registry name, checkpoint path, module, loaded or prepared
            model; loaded and prepared once for the whole batch.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; under
            torchrun ``auto``/``cuda`` mean ``cuda:LOCAL_RANK``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see
            :func:`sruc.engine.pipeline.prepare_model`).
        tile: tile edge in pixels; 0 disables tiling; None picks one.
        recursive: walk sub-folders of input folders.
        overwrite: redo files whose output exists (default: skip them, so a
            rerun resumes an interrupted batch).
        suffix: added to each output's stem; default ``_x{scale}``.
        output_format: ``same`` (the input's format where sruc writes it,
            else PNG), ``png``, ``jpg``, ``webp`` or ``tif``.
        quality: JPEG/WebP quality, 1-100 (default 95).
        max_pixels: largest input accepted, in pixels (None: no limit).
        shard: this process's 0-based ``(index, count)`` share of the files;
            under torchrun each share is split again between its processes.
        env: environment to read torchrun's variables from (default: os.environ).
        progress: called on this thread after each tile and each file.
        tta: self-ensemble over the 8 flips and rotations of each image (8 times
            the work; see :mod:`sruc.core.ensemble`).
        max_output_pixels: largest output accepted, in pixels (None: no limit but
            memory); a larger one fails that image before its work.
        engine: ``auto``, ``torch``, ``onnxruntime`` or ``openvino`` (see
            :mod:`sruc.engine.runtimes`).

    Returns:
        The report; its ``exit_code`` is 1 if any file failed or the batch
        stopped early (a full disk stops it: every later file would fail).

    Raises:
        BatchInterrupted: on Ctrl-C, after images already upscaled are
            written; carries the report (``exit_code`` 130).
        SrucError: the model, device or arguments are unusable (before any work).
    """
    started = time.perf_counter()
    check_scale(scale)
    if quality is not None and not 1 <= quality <= 100:
        raise UsageError(f"quality must be 1..100, got {quality}")
    share = effective_shard(shard, env)
    items = plan_batch(
        inputs,
        out_dir,
        scale,
        recursive=recursive,
        overwrite=overwrite,
        suffix=suffix,
        output_format=output_format,
        shard=share,
    )
    pm = prepare_model(
        model,
        device=batch_device(device, env),
        precision=precision,
        scale=scale,
        engine=engine,
    )
    upscaler = Upscaler(pm, tile=tile, tta=tta)
    upscaler.prepared(scale)  # the scale, tile and --tta checked once, not once per image
    report = _report_for(items, pm, scale, share)
    work = [i for i in items if i.status == PENDING]
    _make_folder(out_dir)
    run = _Run(pm, scale, tile, quality, overwrite, max_pixels, progress, len(work), upscaler,
               max_output_pixels)  # fmt: skip
    run.start(items)
    _execute(run, work, report, started)
    return report


def _report_for(
    items: list[BatchItem], pm: PreparedModel, scale: float, share: tuple[int, int] | None
) -> BatchReport:
    """The report of a batch about to run ``items`` with ``pm``."""
    return BatchReport(
        items,
        model=pm.loaded.name,
        device=str(pm.device),
        precision=pm.precision,
        engine=pm.engine,
        scale=scale,
        shard=share,
    )


def _make_folder(out_dir: str | os.PathLike[str]) -> None:
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {out_dir}: {e.strerror}") from None


def _execute(run: _Run, work: list[BatchItem], report: BatchReport, started: float) -> None:
    """``run`` over ``work`` on a fresh I/O pool, into ``report`` (timed from ``started``).

    Raises:
        BatchInterrupted: on Ctrl-C, once the images already upscaled are written.
    """
    threads, max_writes = io_plan(run.model)
    pool = io_pool(threads)
    try:
        report.stopped = run.run(work, pool, max_writes)
    except KeyboardInterrupt:
        report.stopped, report.interrupted = "interrupted", True
        report.seconds = time.perf_counter() - started
        raise BatchInterrupted(report) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        report.seconds = time.perf_counter() - started


__all__ = ["PENDING_WRITE_MEGAPIXELS", "PREFETCH", "run_batch"]
