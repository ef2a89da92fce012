"""Choosing the device the model runs on, with errors that say what to do."""

from __future__ import annotations

import ctypes
import os
import platform

import torch

from sruc.errors import DeviceError, UsageError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"

#: Set to 1 to leave the C allocator as it is (see :func:`tune_cpu_allocator`).
NO_MALLOPT_ENV = "SRUC_NO_MALLOPT"
#: Blocks up to this size come from the reusable heap: glibc's upper limit.
MMAP_THRESHOLD = 32 << 20
#: Free heap memory kept for reuse rather than handed back to the system.
TRIM_THRESHOLD = 512 << 20
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_allocator_tuned: bool | None = None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def tune_cpu_allocator() -> bool:
    """Let glibc reuse freed activation buffers instead of mapping fresh pages each time.

    A CPU forward pass allocates and frees feature maps of several MB for every
    layer. glibc serves blocks that large with ``mmap`` and gives them back
    with ``munmap`` when freed, so every layer touches brand-new pages: 25,000
    page faults (100 MB of zeroed memory) per 128x128 image upscaled x3 by
    VDSR, and 137,000 a second while training SRCNN. Fixing the mmap threshold
    at glibc's 32 MB maximum and keeping up to 512 MB of free heap makes those
    buffers come back from the heap: no page faults at all after the first
    image. The cost is that the process keeps its peak working memory until
    it exits (what a batch or a training run needs again anyway).

    Process-wide and done once; a no-op where the C library is not glibc
    (macOS, Windows, musl) or when the ``SRUC_NO_MALLOPT`` environment
    variable is set to 1.

    Returns:
        Whether the allocator is tuned.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if os.environ.get(NO_MALLOPT_ENV, "") not in ("", "0") or platform.libc_ver()[0] != "glibc":
            return False
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
        except (OSError, AttributeError):
            return False
        _allocator_tuned = ok
    return _allocator_tuned


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a device that really exists.

    ``auto`` prefers CUDA, then Apple MPS, then the CPU. Asking for a device
    that is not there is an error, never a silent fall-back to the CPU.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = spec.strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r}; use {DEVICE_CHOICES}") from None
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise UsageError(f"--device {spec}: the CPU takes no index; use --device cpu")
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = torch.__version__
            why = (
                "this PyTorch build has no CUDA support"
                if torch.version.cuda is None
                else "no NVIDIA GPU or driver was found"
            )
            raise DeviceError(
                f"--device {spec} asked for CUDA but {why} (torch {build}); "
                "install a CUDA build of torch or use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"--device {spec}: only {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(f"--device {spec}: Apple MPS is not available here; use --device cpu")
        return dev
    raise UsageError(f"unsupported device {spec!r}; use {DEVICE_CHOICES}")
