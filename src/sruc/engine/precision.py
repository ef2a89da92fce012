"""The one precision policy: what ``--precision`` means on a device, for inference and training.

``auto`` picks a reduced precision only where the hardware runs it natively:
bf16 on CPUs with AVX512-BF16 or AMX, bf16 on CUDA GPUs that have it, else
fp16 on CUDA; fp32 everywhere else. (For inference the pipeline then keeps
the reduced precision only if the weights pass an accuracy probe.) A forced
``bf16`` or ``fp16`` that the device cannot run at all is refused before any
work with a :class:`PrecisionError` that says what is missing.

The CPU checks honour the caps users and benchmarks put on the instruction
set: ``ONEDNN_MAX_CPU_ISA`` (e.g. ``AVX2``, oneDNN's own cap on the kernels
it dispatches) and ``ATEN_CPU_CAPABILITY`` (``default``, ``avx2``, ``avx512``:
PyTorch's cap), so a bf16 machine capped to AVX2 behaves as an AVX2 one.

torch is imported inside the functions only, so the CLI can take
:data:`PRECISIONS` from here without paying for it at ``sruc --help``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from sruc.errors import DeviceError, UsageError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
#: The values ``precision`` takes, as the CLI lists them.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

if TYPE_CHECKING:
    import torch

#: oneDNN's ISA names in increasing order (``ONEDNN_MAX_CPU_ISA``), as documented
#: by oneDNN's "CPU dispatcher control"; unknown names are treated as no cap.
_ONEDNN_ISAS = (
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX",
    "AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16",
)  # fmt: skip


class PrecisionError(DeviceError):
    """A forced precision that this device cannot run (exit 2, like a bad option)."""

    exit_code = 2


def _isa_rank(env: Mapping[str, str]) -> int:
    """How far the caps in ``env`` let oneDNN go (an index of _ONEDNN_ISAS)."""
    rank = len(_ONEDNN_ISAS)
    cap = env.get("ONEDNN_MAX_CPU_ISA", env.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    if cap in _ONEDNN_ISAS:
        rank = _ONEDNN_ISAS.index(cap)
    aten = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if aten in ("default", "avx2"):
        rank = min(rank, _ONEDNN_ISAS.index("AVX2"))
    return rank


def _cpu_flag(name: str) -> bool:
    import torch

    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn is not None and fn())
    except RuntimeError:
        return False


def cpu_has_native_bf16(env: Mapping[str, str] | None = None) -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX), within the caps."""
    rank = _isa_rank(os.environ if env is None else env)
    native = _cpu_flag("_is_avx512_bf16_supported") or _cpu_flag("_is_amx_tile_supported")
    return native and rank >= _ONEDNN_ISAS.index("AVX512_CORE_BF16")


def cpu_has_amx(env: Mapping[str, str] | None = None) -> bool:
    """Whether oneDNN may run bf16 on the CPU's matrix units (AMX), within the caps."""
    rank = _isa_rank(os.environ if env is None else env)
    return _cpu_flag("_is_amx_tile_supported") and rank >= _ONEDNN_ISAS.index("AVX10_1_512_AMX")


def cpu_can_run_bf16(env: Mapping[str, str] | None = None) -> bool:
    """Whether oneDNN runs bf16 convolutions here at all (natively, or emulated with
    AVX-512 F/BW/VL/DQ), within the caps; without it they fail at the first call."""
    if cpu_has_native_bf16(env):
        return True
    rank = _isa_rank(os.environ if env is None else env)
    return _cpu_flag("_is_avx512_supported") and rank >= _ONEDNN_ISAS.index("AVX512_CORE")


def cpu_vector_isa(env: Mapping[str, str] | None = None) -> str:
    """The widest x86 vector ISA this CPU has and the caps allow: ``"avx512"``,
    ``"avx2"`` or ``"none"`` (what compiled kernels may use: :mod:`sruc.engine.native`)."""
    rank = _isa_rank(os.environ if env is None else env)
    if _cpu_flag("_is_avx512_supported") and rank >= _ONEDNN_ISAS.index("AVX512_CORE"):
        return "avx512"
    if _cpu_flag("_is_avx2_supported") and rank >= _ONEDNN_ISAS.index("AVX2"):
        return "avx2"
    return "none"


def resolve_precision(precision: str, device: torch.device, fast_fp32: bool = False) -> str:
    """``fp32``, ``bf16`` or ``fp16``: what ``precision`` means on ``device``.

    ``auto`` becomes a reduced precision where the hardware runs it natively
    (see the module docstring), else ``fp32``; never fp16 on a CPU. With
    ``fast_fp32`` (the work has a float32 route faster than oneDNN's bf16 direct
    convolutions: training VDSR through compiled Winograd kernels,
    :mod:`sruc.engine.wino_train`), ``auto`` is fp32 on CPUs without AMX, whose
    bf16 runs on the vector units (a 2-core Zen 4: 1.45x faster a VDSR step, and
    exact to float32 rounding); AMX CPUs keep bf16 on their matrix units.

    Raises:
        UsageError: an unknown precision.
        PrecisionError: bf16 or fp16 forced where the device cannot run it.
    """
    import torch

    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    kind = device.type
    if precision == "fp16" and kind not in ("cuda", "mps"):
        raise PrecisionError(
            f"--precision fp16 needs a GPU: the {kind.upper()} has no fast half-precision "
            "convolutions; use --precision bf16 or fp32, or --device cuda"
        )
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise PrecisionError(f"{device} has no bfloat16 support; use --precision fp16 or fp32")
    if precision == "bf16" and kind == "cpu" and not cpu_can_run_bf16():
        raise PrecisionError(
            "--precision bf16 cannot run on this CPU: it lacks AVX512-BF16/AMX and the "
            "AVX-512 F/BW/VL/DQ that oneDNN needs to emulate bf16 (or ONEDNN_MAX_CPU_ISA / "
            "ATEN_CPU_CAPABILITY caps them); use --precision fp32 or auto"
        )
    if precision != "auto":
        return precision
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu" and cpu_has_native_bf16() and not (fast_fp32 and not cpu_has_amx()):
        return "bf16"
    return "fp32"


def dtype_of(precision: str) -> torch.dtype:
    """The torch dtype of a resolved precision (``fp32``, ``bf16``, ``fp16``)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: float32, no autocast)."""
    return None if precision == "fp32" else dtype_of(precision)


__all__ = [
    "PRECISIONS",
    "Precision",
    "PrecisionError",
    "autocast_dtype",
    "cpu_can_run_bf16",
    "cpu_has_amx",
    "cpu_has_native_bf16",
    "dtype_of",
    "resolve_precision",
]
