"""The batch's background I/O threads: how many, and how each is set up.

:func:`io_plan` sizes the pool from where the network runs (the model's own
cores are not to be taken) and :func:`io_pool` makes it, with each thread kept
to one OpenMP thread of PyTorch.
"""

from __future__ import annotations

import contextlib
import ctypes
from concurrent.futures import ThreadPoolExecutor

import torch

from sruc.engine.pipeline import PreparedModel
from sruc.engine.threads import available_cpus

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


def io_plan(pm: PreparedModel, cores: int | None = None) -> tuple[int, int]:
    """How many I/O threads a batch runs, and how many results may wait to be written.

    Where the network runs on the CPU, :data:`IO_THREADS` (2) and
    :data:`MAX_PENDING_WRITES` (2): the model already keeps every core busy.
    Where it does not (a CUDA/MPS device, or the bicubic baseline, which is
    cheap), decoding and encoding are the bottleneck: one thread per free core
    but one (the main thread feeds the device), from 2 to :data:`MAX_IO_THREADS`,
    and as many writes in flight as threads.
    """
    cores = available_cpus() if cores is None else cores
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


def io_pool(threads: int) -> ThreadPoolExecutor:
    """The background I/O threads (``sruc-io-N``), each set up by :func:`_io_thread_init`."""
    return ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix="sruc-io", initializer=_io_thread_init
    )


__all__ = ["IO_THREADS", "MAX_IO_THREADS", "MAX_PENDING_WRITES", "io_plan", "io_pool"]
