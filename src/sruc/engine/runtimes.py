"""What runs a network: the engine policy, and ONNX Runtime and OpenVINO for fp32 on CPUs.

On CPUs without native bf16 (every AVX2-only x86 CPU, most laptops) sruc runs
float32, where PyTorch's oneDNN direct convolution is little faster than a
naive forward. ``--engine auto|torch|winograd|nnpack|onnxruntime|openvino`` on
``up``, ``batch`` and ``bench`` (``engine=`` on :class:`sruc.Upscaler` and
:func:`sruc.engine.prepared.prepare_model`) chooses what runs it:

- :func:`choose_engine` is the one policy: what ``--engine`` means on a device
  at a precision. ``auto`` is PyTorch everywhere, with VDSR's 3x3 layers as
  Winograd (:mod:`sruc.engine.winograd`; F(6x6, 3x3) in C where a C compiler
  works) in fp32 on CPUs, the
  fastest fp32 route measured (``benchmarks/engines.py``, README "Speed").
  ``torch`` is PyTorch's direct convolution, whose tiles equal an untiled run to
  the bit; Winograd (ours, or NNPACK's: ``nnpack``) and the engines agree with it
  to fp32 rounding.
- ONNX Runtime and OpenVINO are optional (``pip install 'sruc[fast]'``). The graph
  is exported once by :func:`sruc.zoo.export.onnx_graph` (the one
  exporter) and cached in the weights cache (:func:`sruc.zoo.cache.cache_dir`),
  under ``engines/``, named by the SHA-256 of the weights, the engine, the ONNX
  opset and sruc's version. A sidecar file holds the graph's own SHA-256; a graph
  whose bytes do not match it (or that the engine cannot load) is rebuilt, never
  trusted.
- The engine runs each tile as PyTorch would (:mod:`sruc.core.tiling` is
  unchanged), float32 in and out. If it fails at run time, :class:`Fallback`
  warns once and runs PyTorch from then on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sruc import __version__
from sruc.errors import DeviceError, SrucError, SrucWarning, UsageError

if TYPE_CHECKING:
    import torch

    from sruc.zoo.registry import LoadedModel

#: The values ``engine`` takes, as the CLI lists them.
ENGINES: tuple[str, ...] = ("auto", "torch", "winograd", "nnpack", "onnxruntime", "openvino")
#: What to install for the engines.
FAST_EXTRA = "pip install 'sruc[fast]'"
#: Python modules each engine needs (the exporter's, then the runtime's).
_NEEDS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnx", "onnxscript", "onnxruntime"),
    "openvino": ("onnx", "onnxscript", "openvino"),
}
#: Sub-folder of the weights cache that holds exported graphs.
CACHE_SUBDIR = "engines"

TileFn = Callable[["torch.Tensor"], "torch.Tensor"]


class EngineError(DeviceError):
    """An engine that is not installed or cannot run here (exit 2, like a bad option)."""

    exit_code = 2


def installed(engine: str) -> bool:
    """Whether the modules ``engine`` needs can be imported (nothing is imported)."""
    if engine in ("torch", "winograd"):
        return True
    if engine == "nnpack":
        from sruc.engine.fused import winograd_available

        return winograd_available()
    return all(importlib.util.find_spec(m) is not None for m in _NEEDS[engine])


def check_engine(engine: str) -> str:
    """``engine`` checked against :data:`ENGINES`.

    Raises:
        UsageError: an unknown engine.
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
    return engine


def _compiled_winograd() -> bool:
    from sruc.engine.native import kernels

    return kernels() is not None


def _amx() -> bool:
    from sruc.engine.precision import cpu_has_amx

    return cpu_has_amx()


def choose_engine(engine: str, device: torch.device, precision: str) -> str:
    """The one engine policy: what ``engine`` means on ``device`` at a resolved ``precision``.

    Args:
        engine: ``auto``, ``torch``, ``winograd``, ``nnpack``, ``onnxruntime`` or
            ``openvino``.
        device: where the model runs.
        precision: the resolved precision (``fp32``, ``bf16``, ``fp16``).

    Returns:
        ``torch``, ``winograd``, ``nnpack``, ``onnxruntime`` or ``openvino``.

    Raises:
        UsageError: an unknown engine.
        EngineError: an engine that is not installed, or asked for off the CPU or in
            a reduced precision (the engines run fp32 on CPUs; ``winograd`` also bf16
            where its transforms are compiled, :mod:`sruc.engine.native`).
    """
    check_engine(engine)
    if engine == "torch":
        return engine
    if engine == "auto":
        # On a CPU, Winograd is the fastest route in fp32 (its transforms compiled or not)
        # and in bf16 where the compiled transforms run and there is no AMX (README
        # "Speed"); elsewhere torch. With AMX, oneDNN's direct bf16 convolutions run on
        # the matrix units (1.34 MP/s end to end on the 2-core AMX Xeon, 11.7x naive),
        # while Winograd's fp32 transforms alone would cap it near that (~6 ms a 384 px
        # layer on two Zen 4 cores: 1.4 MP/s for VDSR's 18 layers).
        cpu = device.type == "cpu"
        if cpu and precision == "fp32":
            return "winograd"
        if cpu and precision == "bf16" and _compiled_winograd() and not _amx():
            return "winograd"
        return "torch"
    if not installed(engine):
        if engine == "nnpack":
            raise EngineError(
                "--engine nnpack: NNPACK's Winograd convolution does not run on this CPU "
                "(it needs AVX2 and FMA, or NEON); use --engine torch"
            )
        raise EngineError(f"--engine {engine} needs the fast extra: {FAST_EXTRA}")
    if device.type != "cpu":
        raise EngineError(f"--engine {engine} runs on the CPU; use --engine torch on {device}")
    if engine == "winograd" and precision == "bf16":
        if _compiled_winograd():
            return engine
        from sruc.engine.native import status

        raise EngineError(
            f"--engine winograd runs bf16 only with its compiled transforms ({status()}); "
            "use --precision fp32, or --engine torch for bf16"
        )
    if precision != "fp32":
        raise EngineError(
            f"--engine {engine} runs fp32; use --precision fp32 or auto, or --engine torch "
            f"for {precision}"
        )
    return engine


# --- the cached graph ----------------------------------------------------------------------


def weights_sha256(module: torch.nn.Module) -> str:
    """The SHA-256 of a network's weights: every tensor of its state dict, by name, in
    order, with dtype and shape (the same for the same weights from any file)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def graph_name(lm: LoadedModel, engine: str) -> str:
    """The cache file name of ``lm``'s graph for ``engine``: keyed by the weights' SHA-256,
    the engine, the ONNX opset and sruc's version (a new sruc exports afresh)."""
    from sruc.zoo.export import ONNX_OPSET

    sha = weights_sha256(lm.module)
    return f"{lm.arch}-{sha[:32]}-{engine}-opset{ONNX_OPSET}-sruc{__version__}.onnx"


def cached_graph(
    lm: LoadedModel, engine: str, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[bytes, Path | None]:
    """``lm``'s ONNX graph for ``engine`` from the cache, verified, or exported and cached.

    A missing, damaged or tampered cached graph (its SHA-256 does not match its
    sidecar) is exported again and replaces it. A cache that cannot be written is
    not an error: the graph is then used from memory.

    Returns:
        The graph's bytes, and where it is cached (None: not cached).
    """
    from sruc.zoo import cache
    from sruc.zoo.export import onnx_graph

    folder = cache.cache_dir(cache_dir) / CACHE_SUBDIR
    path = folder / graph_name(lm, engine)
    data = cache.read_verified(path)
    if data is not None:
        return data, path
    data = onnx_graph(lm)
    try:
        cache.write_verified(path, data)
    except (OSError, SrucError):  # a cache is optional: use the graph from memory
        return data, None
    return data, path


# --- the engines ---------------------------------------------------------------------------


def _threads() -> int:
    import torch

    return max(1, torch.get_num_threads())  # what --threads / OMP_NUM_THREADS gave PyTorch


def _onnxruntime(data: bytes) -> TileFn:
    import onnxruntime as ort
    import torch

    from sruc.zoo.export import INPUT_NAME, OUTPUT_NAME

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the library never prints
    options.intra_op_num_threads = _threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        (y,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().cpu().float().numpy()})
        return torch.from_numpy(y)

    return run


def _openvino(data: bytes) -> TileFn:
    import openvino as ov
    import torch

    core = ov.Core()
    model = core.read_model(data)  # ONNX bytes, read in memory
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "f32",  # exact fp32, as the other engines
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": _threads(),
        },
    )
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        out = request.infer({0: x.detach().cpu().float().numpy()})
        return torch.from_numpy(out[0].copy())

    return run


#: How each engine turns graph bytes into a tile function.
_LOADERS: dict[str, Callable[[bytes], TileFn]] = {
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
}


def engine_forward(
    lm: LoadedModel, engine: str, cache_dir: str | os.PathLike[str] | None = None
) -> TileFn:
    """``lm``'s network in ``engine`` (``onnxruntime`` or ``openvino``), float32 in and out.

    The graph comes from :func:`cached_graph`; a cached graph the engine cannot
    load is exported again once (and the cache replaced) before giving up.

    Raises:
        ModelError: the graph cannot be exported or loaded.
    """
    from sruc.errors import ModelError

    load = _LOADERS[engine]
    data, path = cached_graph(lm, engine, cache_dir)
    try:
        return load(data)
    except Exception:  # a cached graph is never trusted: rebuild it
        if path is None:
            raise
        path.unlink(missing_ok=True)
        data, _ = cached_graph(lm, engine, cache_dir)
        try:
            return load(data)
        except Exception as e:
            raise ModelError(
                f"{engine} cannot load {lm.name}'s graph ({e}); use --engine torch"
            ) from None


class Fallback:
    """An engine's tile function, with PyTorch behind it: if the engine fails at run
    time, one :class:`~sruc.errors.SrucWarning` and PyTorch from then on (same result
    within float32 rounding)."""

    def __init__(self, engine: str, run: TileFn, torch_run: TileFn) -> None:
        self.engine = engine
        self.run: TileFn | None = run
        self.torch_run = torch_run

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.run is not None:
            try:
                return self.run(x)
            except Exception as e:  # any engine failure falls back, once
                self.run = None
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
                warnings.warn(
                    f"{self.engine} failed ({first}); running on torch instead",
                    SrucWarning,
                    stacklevel=2,
                )
        return self.torch_run(x)


__all__ = [
    "ENGINES",
    "FAST_EXTRA",
    "EngineError",
    "Fallback",
    "cached_graph",
    "check_engine",
    "choose_engine",
    "engine_forward",
    "graph_name",
    "installed",
    "weights_sha256",
]
