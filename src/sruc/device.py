"""Choosing the device the model runs on, with errors that say what to do."""

from __future__ import annotations

import torch

from sruc.errors import DeviceError, UsageError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


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
        return dev
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
