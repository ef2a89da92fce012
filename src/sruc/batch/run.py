"""Upscaling whole folders: :func:`run_batch`.

Reads top to bottom: what counts as an image, planning (inputs -> files ->
output names, duplicates and clashes, skip-existing, shards), the report, then
the run itself.

The run keeps the model busy: while the main thread runs the network on image
``i``, a small thread pool decodes image ``i + 1`` and encodes image ``i - 1``
(Pillow and PyTorch release the GIL while they work); :func:`io_plan` sizes
it (two threads where the network runs on the CPU, one per free core on a
GPU). At most :data:`PREFETCH` decoded images wait, and a few results wait to
be written (:data:`PENDING_WRITE_MEGAPIXELS` of them at most beyond the
first), so memory stays bounded whatever the folder size.
Outputs are written atomically (:func:`sruc.files.images.write_image`), so a killed
batch never leaves a half-written image, and existing outputs are skipped, so
running the same command again resumes where it stopped.

Scale-out: each process can take a disjoint, deterministic share of the files
(``shard``; under ``torchrun`` the ``RANK``/``WORLD_SIZE`` variables add to
it), chosen by a stable hash of the output's relative path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import UnidentifiedImageError

from sruc.engine.launch import torchrun
from sruc.engine.pipeline import ModelSpec, PreparedModel, prepare_model, upscale_picture
from sruc.errors import InputError, OutputError, SrucError, UsageError
from sruc.files import discovery, images
from sruc.files.images import Picture
from sruc.scales import check_scale
from sruc.zoo.registry import DEFAULT_MODEL

#: Output formats by ``output_format`` name; ``same`` keeps the input's
#: extension where sruc can write it and falls back to PNG.
OUTPUT_FORMATS = ("same", "png", "jpg", "webp", "tif")
FALLBACK_EXTENSION = ".png"
#: Decoded images waiting for the model, beyond the one it is running on.
PREFETCH = 1
#: Upscaled images waiting to be encoded and written, at least (see :func:`io_plan`).
MAX_PENDING_WRITES = 2
#: Background I/O threads where the model runs on the CPU: one decoding while
#: another encodes. More would only take cores from the model.
IO_THREADS = 2
#: Most I/O threads where the CPU's cores are free (a GPU model, or bicubic).
#: PNG encoding of upscaled photos runs at about 7.7 MP/s per core (130 ms/MP,
#: zlib level 4, measured on this project's 2-core Xeon), far below what a GPU
#: model produces, so encoding needs every core it can get there.
MAX_IO_THREADS = 8
#: Megapixels of upscaled images that may wait to be written beyond the first
#: (float32 RGB: 12 bytes a pixel, so 48 MP is 576 MB).
PENDING_WRITE_MEGAPIXELS = 48.0
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))

#: Statuses of a file in the report.
DONE, SKIPPED, FAILED, IGNORED, PENDING = "done", "skipped", "failed", "ignored", "pending"


# --------------------------------------------------------------------------- planning


@dataclass
class BatchItem:
    """One input file and what became of it.

    Attributes:
        source: the input file.
        output: where its result goes (or went).
        status: ``done``; ``skipped`` (the output exists); ``failed`` (see
            ``error``); ``ignored`` (not an image: a file found by a folder
            walk or glob whose content is not an image); ``pending`` (the
            batch stopped before it, or the shard is another process's).
        error: why it failed, one line.
        claimed: the extension says it is an image, or the user named the file.
        key: the output's path relative to the output folder: the shard key.
        input_size, output_size: (width, height) in pixels, once known.
        seconds: work time spent on it (decode, model, encode).
        model_seconds: of which the model (bicubic resize, network, colour).
        precision: what the network ran in.
    """

    source: Path
    output: Path
    status: str = PENDING
    error: str | None = None
    claimed: bool = True
    key: str = ""
    input_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    seconds: float = 0.0
    model_seconds: float = 0.0
    precision: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "input": str(self.source),
            "output": str(self.output),
            "status": self.status,
            "error": self.error,
            "input_size": list(self.input_size) if self.input_size else None,
            "output_size": list(self.output_size) if self.output_size else None,
            "seconds": round(self.seconds, 4),
            "model_seconds": round(self.model_seconds, 4),
            "precision": self.precision,
        }

    @property
    def megapixels(self) -> float:
        """Output megapixels (0 until written)."""
        if self.status != DONE or self.output_size is None:
            return 0.0
        return self.output_size[0] * self.output_size[1] / 1e6


def default_suffix(scale: float) -> str:
    """``_x3``, ``_x2.5``: the default output name suffix."""
    return f"_x{scale:g}"


def output_extension(source: Path, output_format: str) -> str:
    """The output's extension (with the dot) for ``source`` and an ``output_format`` name."""
    if output_format not in OUTPUT_FORMATS:
        raise UsageError(
            f"unknown output format {output_format!r}; use {', '.join(OUTPUT_FORMATS)}"
        )
    if output_format != "same":
        return f".{output_format}"
    ext = source.suffix.lower()
    return ext if ext in images.FORMATS else FALLBACK_EXTENSION


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` (1-based, as typed) -> ``(K - 1, N)``.

    Raises:
        UsageError: not of the form K/N with 1 <= K <= N.
    """
    try:
        k_text, n_text = spec.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard {spec!r} must look like K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"--shard {spec}: K/N needs 1 <= K <= N, e.g. 1/4 to 4/4")
    return k - 1, n


def effective_shard(
    shard: tuple[int, int] | None, env: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """The 0-based ``(index, count)`` this process takes, or None for everything.

    ``shard`` splits the files between machines; torchrun's ``RANK`` of
    ``WORLD_SIZE`` splits each share again between its processes, so
    ``--shard 2/3`` under a 4-process torchrun is share ``1 * 4 + rank`` of 12.
    """
    env = os.environ if env is None else env
    tr = torchrun(env)
    if tr is None:
        return shard
    rank, world = tr.rank, tr.world
    k, n = shard if shard is not None else (0, 1)
    return k * world + rank, n * world


def batch_device(device: str | torch.device, env: Mapping[str, str] | None = None) -> str:
    """Under torchrun, ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` (one GPU per process)."""
    env = os.environ if env is None else env
    text = str(device).strip().lower()
    tr = torchrun(env)
    if tr is None or text not in ("auto", "cuda"):
        return str(device)
    if text == "auto" and not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{tr.local_rank}"


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether the file with output key ``key`` belongs to ``shard``.

    A stable hash (SHA-256 of the relative output path), not Python's salted
    ``hash``: every process, machine and rerun agrees, and a file keeps its
    shard when others are added to the folder.
    """
    if shard is None:
        return True
    index, count = shard
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def _candidate(path: Path, rel: Path) -> _Source | None:
    """A file found by a folder walk or a glob, unless its name says it is no image."""
    if not discovery.is_candidate(path):
        return None
    return _Source(path, rel, discovery.claims_image(path))


@dataclass
class _Source:
    path: Path
    rel: Path  # where the output goes, relative to the output folder (before renaming)
    claimed: bool  # a failure to decode it is reported (else it is skipped silently)


def _prune_for(root: Path, out_dir: Path) -> Path | None:
    """The output folder, when it lies strictly inside input folder ``root``: never read it."""
    r, o = root.resolve(), out_dir.resolve()
    return o if r in o.parents else None


def _walk(
    folder: Path, recursive: bool, prune: Path | None, errors: list[BatchItem]
) -> Iterable[_Source]:
    """Image candidates under ``folder`` in sorted order; ``prune`` is not entered."""

    def onerror(e: OSError) -> None:
        where = Path(e.filename) if e.filename else folder
        errors.append(
            BatchItem(where, where, FAILED, f"{where}: cannot read folder ({e.strerror})")
        )

    exclude = [prune] if prune is not None else []
    for path in discovery.walk(folder, recursive=recursive, exclude=exclude, onerror=onerror):
        src = _candidate(path, path.relative_to(folder))
        if src is not None:
            yield src


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern starts from: its parts before the first wildcard."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


def _expand(
    inputs: Sequence[str | os.PathLike[str]], recursive: bool, out_dir: Path
) -> tuple[list[_Source], list[BatchItem]]:
    """Files, folders and glob patterns -> candidate files, in order; plus input errors.

    A file named on its own is always tried (the user asked for it); files
    found in folders or by patterns are filtered by name first.
    """
    found: list[_Source] = []
    errors: list[BatchItem] = []
    for arg in inputs:
        text = os.fspath(arg)
        path = Path(text)
        if path.is_dir():
            found += _walk(path, recursive, _prune_for(path, out_dir), errors)
        elif path.exists() or path.is_symlink():
            found.append(_Source(path, Path(path.name), True))
        elif glob.has_magic(text):
            # Quoted patterns, or shells that do not expand them (Windows cmd).
            prune = _prune_for(_glob_base(text), out_dir)
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if prune is not None:
                matches = [m for m in matches if not _same_or_inside(m.resolve(), prune)]
            if not matches:
                errors.append(BatchItem(path, path, FAILED, f"{text}: no file matches"))
            for m in matches:
                if m.is_dir():
                    found += _walk(m, recursive, prune, errors)
                elif (src := _candidate(m, Path(m.name))) is not None:
                    found.append(src)
        else:
            errors.append(BatchItem(path, path, FAILED, f"{text}: no such file or folder"))
    return found, errors


def _same_or_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan_batch(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    scale: float,
    *,
    recursive: bool = False,
    overwrite: bool = False,
    suffix: str | None = None,
    output_format: str = "same",
    shard: tuple[int, int] | None = None,
) -> list[BatchItem]:
    """Every file the batch would touch, in order, with its output and status.

    Planned files are ``pending``; ``skipped`` ones already have an output;
    ``failed`` ones are inputs that do not exist, folders that cannot be read,
    or files whose output would clash with an earlier file's. The same file
    given twice appears once, and files that are outputs of this very batch
    (the output folder is, or is inside, an input folder) not at all. With
    ``shard``, other shards' files are left out; clashes are found over all
    files first, so every shard agrees. Input errors appear in every shard.

    Raises:
        UsageError: a bad scale, an unknown ``output_format``, or a suffix
            with a path separator.
    """
    check_scale(scale)
    suffix = default_suffix(scale) if suffix is None else suffix
    if "/" in suffix or os.sep in suffix:
        raise UsageError(f"--suffix {suffix!r} must not contain a path separator")
    if output_format not in OUTPUT_FORMATS:
        raise UsageError(
            f"unknown output format {output_format!r}; use {', '.join(OUTPUT_FORMATS)}"
        )
    out = Path(out_dir)
    sources, errors = _expand(inputs, recursive, out)
    unique: dict[Path, _Source] = {}
    for s in sources:
        unique.setdefault(s.path.resolve(), s)  # the same file given twice: once
    dst_of = {
        real: s.rel.with_name(s.rel.stem + suffix + output_extension(s.path, output_format))
        for real, s in unique.items()
    }
    produced = {(out / rel).resolve() for rel in dst_of.values()}
    items: list[BatchItem] = []
    owner: dict[Path, Path] = {}  # resolved output -> the file that claimed it first
    for real, s in unique.items():
        rel = dst_of[real]
        dst = out / rel
        if real in produced and real != dst.resolve():
            continue  # one of this batch's own outputs, found in an input folder
        item = BatchItem(s.path, dst, claimed=s.claimed, key=rel.as_posix())
        first = owner.setdefault(dst.resolve(), s.path)
        if first != s.path:
            item.status, item.error = (
                FAILED,
                (
                    f"{s.path}: its output {dst} is also the output of {first}; "
                    "rename one, or use --recursive or --suffix to tell them apart"
                ),
            )
        elif dst.resolve() == real:
            item.status = FAILED
            item.error = f"{s.path}: the output would replace the input; change -o or --suffix"
        elif dst.exists() and not overwrite:
            item.status = SKIPPED
        items.append(item)
    return errors + [i for i in items if in_shard(i.key, shard)]


# --------------------------------------------------------------------------- the report


@dataclass
class BatchReport:
    """What a batch did: one :class:`BatchItem` per file, and totals.

    Attributes:
        items: every file of this process's share, in order.
        seconds: wall time of the whole batch.
        model: the model's name; device, precision: where and how it ran.
        scale: the upscaling factor.
        shard: this process's 0-based (index, count), or None.
        stopped: why the batch stopped early (a full disk, Ctrl-C), or None.
        interrupted: stopped by Ctrl-C (KeyboardInterrupt).
    """

    items: list[BatchItem]
    seconds: float = 0.0
    model: str = ""
    device: str = ""
    precision: str = ""
    scale: float = 0.0
    shard: tuple[int, int] | None = None
    stopped: str | None = None
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def failed(self) -> list[BatchItem]:
        return [i for i in self.items if i.status == FAILED]

    @property
    def megapixels(self) -> float:
        """Output megapixels written."""
        return sum(i.megapixels for i in self.items)

    @property
    def model_seconds(self) -> float:
        """Time spent in the model (resize, network, colour), summed over files."""
        return sum(i.model_seconds for i in self.items)

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C, 1 if any file failed or the batch stopped early, else 0."""
        if self.interrupted:
            return 130
        return 1 if self.failed or self.stopped else 0

    def summary(self) -> dict[str, Any]:
        return {
            "done": self.count(DONE),
            "skipped": self.count(SKIPPED),
            "failed": self.count(FAILED),
            "ignored": self.count(IGNORED),
            "pending": self.count(PENDING),
            "megapixels": round(self.megapixels, 4),
            "seconds": round(self.seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
        }

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (``sruc batch --json`` prints it)."""
        return {
            "model": self.model,
            "scale": self.scale,
            "device": self.device,
            "precision": self.precision,
            "shard": list(self.shard) if self.shard else None,
            "stopped": self.stopped,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "files": [i.to_json() for i in self.items],
        }


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_batch`: the batch stopped cleanly; ``report`` says how far."""

    def __init__(self, report: BatchReport) -> None:
        super().__init__("batch interrupted")
        self.report = report


@dataclass
class BatchProgress:
    """A progress report to :func:`run_batch`'s callback (on the calling thread).

    Attributes:
        total: files to process in this run (skipped ones not counted).
        position: files through the model, plus the finished fraction of the
            current one (its tiles): what a progress bar shows.
        finished: files with a final status.
        megapixels: output megapixels through the model so far.
        elapsed: seconds since the batch started.
        item: the file that just got its final status (files failed or
            skipped while planning are reported once at the start), or None
            for a tile.
    """

    total: int
    position: float
    finished: int
    megapixels: float
    elapsed: float
    item: BatchItem | None = None


BatchProgressFn = Callable[[BatchProgress], None]


# --------------------------------------------------------------------------- the run


class _NotAnImage(Exception):
    """A file found by a walk or a glob whose content is not an image: skipped silently."""


class _DiskFull(Exception):
    """Writing failed for lack of space: every later file would fail the same way."""


def _megapixels(size: tuple[int, int] | None) -> float:
    return size[0] * size[1] / 1e6 if size else 0.0


def _free_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def io_plan(pm: PreparedModel, cores: int | None = None) -> tuple[int, int]:
    """How many I/O threads a batch runs, and how many results may wait to be written.

    Where the network runs on the CPU, :data:`IO_THREADS` (2) and
    :data:`MAX_PENDING_WRITES` (2): the model already keeps every core busy.
    Where it does not (a CUDA/MPS device, or the bicubic baseline, which is
    cheap), decoding and encoding are the bottleneck: one thread per free core
    but one (the main thread feeds the device), from 2 to :data:`MAX_IO_THREADS`,
    and as many writes in flight as threads.
    """
    cores = _free_cores() if cores is None else cores
    if pm.device.type == "cpu" and pm.loaded.arch != "bicubic":
        return IO_THREADS, MAX_PENDING_WRITES
    threads = max(IO_THREADS, min(MAX_IO_THREADS, cores - 1))
    return threads, max(MAX_PENDING_WRITES, threads)


def _io_thread_init() -> None:
    """Keep PyTorch to one OpenMP thread in each background I/O thread.

    Decoding and encoding run a few torch ops (the float conversion of the
    pixels). Each thread that does would get an OpenMP team as wide as the
    machine: more threads than cores, so libgomp parks its threads after every
    parallel region instead of spinning, and the model's own team pays for
    it. Measured on a 2-core CPU, a batch of 20 images: 9,000 context
    switches and a model 35% slower, against 350 and 12% with this.
    ``omp_set_num_threads`` changes the calling thread's setting only.
    """
    torch.get_num_threads()  # PyTorch's own per-thread OpenMP set-up runs first
    with contextlib.suppress(OSError, AttributeError, TypeError):
        # Not an OpenMP build, or no global symbol table (Windows): nothing to do.
        ctypes.CDLL(None).omp_set_num_threads(1)


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
    started: float = field(default_factory=time.perf_counter)
    position: float = 0.0
    finished: int = 0
    megapixels: float = 0.0

    def emit(self, item: BatchItem | None = None, fraction: float = 0.0) -> None:
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
            )
        )

    def finish(self, item: BatchItem, status: str, error: str | None = None) -> None:
        item.status, item.error = status, error
        self.finished += 1
        self.emit(item)

    # Runs on an I/O thread.
    def decode(self, item: BatchItem) -> tuple[Picture, float]:
        t0 = time.perf_counter()
        try:
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
        out = upscale_picture(pic, self.scale, model=self.model, tile=self.tile, progress=tiles)
        item.model_seconds = time.perf_counter() - t0
        item.input_size, item.output_size = (pic.width, pic.height), (out.width, out.height)
        item.precision = self.model.runner(pic.bits)[1]
        self.position += 1
        self.megapixels += out.width * out.height / 1e6
        return out

    def settle_write(self, item: BatchItem, fut: Future[float]) -> None:
        """Wait for one write and record it; raises _DiskFull after recording a full disk."""
        try:
            item.seconds += fut.result()
        except Exception as e:
            self.finish(item, FAILED, _one_line(item, e))
            if _disk_full(e):
                raise _DiskFull(item.error) from e
            return
        self.finish(item, DONE)

    def run(
        self, work: list[BatchItem], pool: ThreadPoolExecutor, max_writes: int = MAX_PENDING_WRITES
    ) -> str | None:
        """Process ``work`` in order; returns why it stopped early (disk full), or None.

        At most ``max_writes`` results wait to be written, and beyond the
        first no more than :data:`PENDING_WRITE_MEGAPIXELS` in all.
        """
        decodes: dict[int, Future[tuple[Picture, float]]] = {}
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
                try:
                    pic, seconds = fut.result()
                    item.seconds += seconds
                    out = self.upscale(item, pic)
                    del pic
                except _NotAnImage:
                    self.position += 1
                    self.finish(item, IGNORED, "not an image")
                    continue
                except Exception as e:  # one bad image never stops the batch
                    self.position += 1
                    self.finish(item, FAILED, _one_line(item, e))
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
            # Results already computed still get their chance to be written.
            while writes:
                with contextlib.suppress(_DiskFull):
                    self.settle_write(*writes.popleft())
            return f"disk full: {e}"
        finally:
            for f in decodes.values():
                f.cancel()
            # On Ctrl-C: images already upscaled are written (atomically) before
            # the interrupt goes on; nothing is left half-written either way.
            while writes:
                with contextlib.suppress(_DiskFull):  # recorded in the item already
                    self.settle_write(*writes.popleft())
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
    pm = prepare_model(model, device=batch_device(device, env), precision=precision, scale=scale)
    pm.loaded.check_scale(scale)
    report = BatchReport(
        items,
        model=pm.loaded.name,
        device=str(pm.device),
        precision=pm.precision,
        scale=scale,
        shard=share,
    )
    work = [i for i in items if i.status == PENDING]
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {out_dir}: {e.strerror}") from None
    run = _Run(pm, scale, tile, quality, overwrite, max_pixels, progress, total=len(work))
    run.emit()
    for item in items:
        if item.status != PENDING:  # decided while planning: failed inputs, clashes, skips
            run.emit(item)
    threads, max_writes = io_plan(pm)
    pool = ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix="sruc-io", initializer=_io_thread_init
    )
    try:
        report.stopped = run.run(work, pool, max_writes)
    except KeyboardInterrupt:
        report.stopped, report.interrupted = "interrupted", True
        report.seconds = time.perf_counter() - started
        raise BatchInterrupted(report) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        report.seconds = time.perf_counter() - started
    return report


__all__ = [
    "OUTPUT_FORMATS",
    "BatchInterrupted",
    "BatchItem",
    "BatchProgress",
    "BatchReport",
    "batch_device",
    "effective_shard",
    "in_shard",
    "io_plan",
    "parse_shard",
    "plan_batch",
    "run_batch",
]
