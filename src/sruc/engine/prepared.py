"""A model made ready to run: on its device, at a precision, in the fastest layout.

:func:`prepare_model` places a model on its device once, at a precision
(``auto``, ``fp32``, ``bf16``, ``fp16``, decided by
:mod:`sruc.engine.precision`), as a flat chain of convolutions where its
spec allows (:class:`sruc.engine.fused.ConvChain`: the ReLU fused into the
convolution on CPUs). Reduced precision applies to the convolutions only:
VDSR's residual add and every output stay float32. ``auto`` keeps a reduced
precision only if the weights pass an accuracy probe (see
:data:`MAX_PSNR_DROP_DB`). The result, a :class:`PreparedModel`, is what the
pipeline and :class:`sruc.Upscaler` reuse for every image.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from sruc.core.tiling import (
    CPU_TILE,
    WINOGRAD_CPU_TILE,
    TileModel,
    default_batch,
    default_tile,
)
from sruc.engine.device import resolve_device, tune_cpu_allocator
from sruc.engine.fused import ConvChain
from sruc.engine.precision import dtype_of, resolve_precision
from sruc.engine.runtimes import Fallback, check_engine, choose_engine, engine_forward
from sruc.engine.threads import use_threads
from sruc.errors import SrucError, SrucWarning
from sruc.zoo.registry import DEFAULT_MODEL, LoadedModel, load_model

#: Largest PSNR drop, in dB, that ``auto`` accepts from reduced precision:
#: measured like the papers measure (:mod:`sruc.core.protocol`, x2, the scale with
#: the highest PSNR, where a loss of precision shows most) on built-in probe
#: images, since the Set5 images cannot ship with sruc.
MAX_PSNR_DROP_DB = 0.02
#: Edge of each probe image, in pixels, and their seeds: two images of 96 px
#: cost about 0.2 s for a full VDSR on a 2-core CPU, once per prepared model.
PROBE_EDGE = 96
PROBE_SEEDS = (0, 1)
PROBE_SCALE = 2


class _Autocast:
    """Any other module under autocast; the output comes back as float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, device: torch.device) -> None:
        self.module = module
        self.dtype = dtype
        self.device_type = device.type

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(x).float()


@dataclass
class PreparedModel:
    """A model placed on a device at a precision, ready for many images.

    Made by :func:`prepare_model`; pass it as ``model`` to
    :func:`upscale_picture` or :func:`upscale_file` to skip that work per
    image (their ``device`` and ``precision`` arguments are then ignored).
    It holds a snapshot of the weights taken when it was made.

    Attributes:
        loaded: the model as loaded (name, architecture, scales, radius).
        device: where it runs.
        precision: what the convolutions run in: ``fp32``, ``bf16`` or ``fp16``.
        requested: the precision asked for (``auto`` or one of the above).
        forward: the network as a float32-in, float32-out callable.
        forward_fp32: the same in float32 (16-bit images under ``auto`` use it).
        engine: what runs it: ``torch``, ``winograd``, ``nnpack`` (PyTorch with
            Winograd 3x3 layers), ``onnxruntime`` or ``openvino``
            (:mod:`sruc.engine.runtimes`).
        engine_fp32: the same for ``forward_fp32``.
    """

    loaded: LoadedModel
    device: torch.device
    precision: str
    requested: str
    forward: TileModel
    forward_fp32: TileModel
    engine: str = "torch"
    engine_fp32: str = "torch"  # what runs forward_fp32 (``engine`` when that is fp32)

    def runner(self, bits: int) -> tuple[TileModel, str]:
        """The callable and precision for an image of ``bits`` per sample.

        Under ``auto``, 16-bit images run in float32: a bf16 error of a
        twentieth of an 8-bit level is a dozen 16-bit levels.
        """
        if bits > 8 and self.requested == "auto":
            return self.forward_fp32, "fp32"
        return self.forward, self.precision

    def engine_of(self, bits: int) -> str:
        """What runs an image of ``bits`` per sample (see :meth:`runner`): ``torch``,
        ``winograd``, ``nnpack``, ``onnxruntime`` or ``openvino``."""
        forward, _ = self.runner(bits)
        return self.engine if forward is self.forward else self.engine_fp32

    @property
    def bytes_per_value(self) -> int:
        return 4 if self.precision == "fp32" else 2

    def tiling(
        self, height: int, width: int, bits: int, tile: int | None, channels: int = 1
    ) -> tuple[int, int]:
        """The tile edge and tiles per pass for a ``height x width`` input of
        ``bits`` per sample: ``tile`` if given, else chosen for the device
        (:func:`sruc.core.tiling.default_tile`). Whole and banded runs share it."""
        per_value = 4 if self.runner(bits)[1] == "fp32" else 2
        r = self.loaded.radius
        size = tile
        if size is None:
            wino = self.engine_of(bits) == "winograd"
            size = default_tile(
                self.device,
                height,
                width,
                r,
                channels=channels,
                bytes_per_value=per_value,
                cpu_tile=WINOGRAD_CPU_TILE if wino else CPU_TILE,
            )
        batch = default_batch(self.device, size, r, channels=channels, bytes_per_value=per_value)
        return size, batch


ModelSpec = str | os.PathLike[str] | nn.Module | LoadedModel | PreparedModel


def probe_image(seed: int, edge: int = PROBE_EDGE) -> torch.Tensor:
    """A synthetic photo-like luminance image, ``(1, edge, edge)`` on 0..255 (8-bit levels).

    Smooth shading, flat discs with hard edges, a patch of fine stripes and a
    little noise: the mix of content whose PSNR the papers report.
    """
    g = torch.Generator().manual_seed(seed)
    axis = torch.arange(edge, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    img = 0.45 + 0.25 * torch.sin(xx / 17.0 + yy / 23.0)
    for _ in range(12):
        cy, cx, r, v = torch.rand(4, generator=g, dtype=torch.float64).tolist()
        inside = (yy - cy * edge) ** 2 + (xx - cx * edge) ** 2 < (r * edge / 4 + 3) ** 2
        img = img + 0.5 * (v - 0.5) * inside
    img = img + 0.08 * torch.sin(xx * 0.9) * (yy > edge * 0.6)
    img = img + 0.02 * torch.randn(edge, edge, generator=g, dtype=torch.float64)
    return torch.round(img.clamp(0, 1) * 255)[None]


def _probe_passes(reduced: TileModel, exact: TileModel, device: torch.device) -> bool:
    """Whether ``reduced`` loses at most :data:`MAX_PSNR_DROP_DB` dB against ``exact``.

    Each probe image goes through the papers' protocol (:mod:`sruc.core.protocol`:
    8-bit LR by MATLAB bicubic, interpolated back, the network, rounded to 8
    bits, Y PSNR with the scale shaved); the drop is averaged over the probes.
    """
    from sruc.core.metrics import psnr
    from sruc.core.protocol import PEAK, degrade, interpolate, quantize

    drops = []
    with torch.inference_mode():
        for seed in PROBE_SEEDS:
            hr = probe_image(seed)
            up = interpolate(degrade(hr, PROBE_SCALE), (PROBE_EDGE, PROBE_EDGE))
            x = (up / PEAK).to(device, torch.float32)[None]  # (1, 1, H, W) in [0, 1]
            scores = []
            for net in (exact, reduced):
                y = net(x)[0].double().cpu() * PEAK
                if not bool(torch.isfinite(y).all()):
                    return False  # fp16 overflow: the "black images" users report
                scores.append(psnr(hr, quantize(y), shave=PROBE_SCALE, y_only=False))
            drops.append(scores[0] - scores[1])
    return sum(drops) / len(drops) <= MAX_PSNR_DROP_DB


def _has_hooks(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def prepare_model(
    model: ModelSpec = DEFAULT_MODEL,
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    scale: float | None = None,
    engine: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> PreparedModel:
    """Load ``model`` and make it ready to run on ``device`` at ``precision``.

    ``scale`` picks the file of a per-scale registry group (``srcnn``).

    Args:
        model: registry name, checkpoint path, nn.Module, loaded or prepared model.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto`` (bf16/fp16 where the device runs it natively and
            the weights pass the accuracy probe, else fp32), ``fp32``,
            ``bf16`` or ``fp16`` (GPUs only).
        engine: ``auto``, ``torch``, ``winograd``, ``nnpack``, ``onnxruntime`` or
            ``openvino`` (see
            :func:`sruc.engine.runtimes.choose_engine`; the engines run fp32 on CPUs,
            so a named one makes ``auto`` precision fp32).
        cache_dir: the weights cache, where an engine's exported graph is kept.

    Raises:
        UsageError: an unknown precision or engine.
        sruc.engine.runtimes.EngineError: an engine that is not installed or cannot
            run at this device and precision.
        sruc.engine.precision.PrecisionError: bf16/fp16 forced where the device cannot run it.
        DeviceError: the device is not there.
        ModelError: the model cannot be loaded.
    """
    if isinstance(model, PreparedModel):
        return model
    check_engine(engine)
    dev = resolve_device(device)
    tune_cpu_allocator()  # colour, resize and CPU forward passes reuse their buffers
    use_threads()  # the default thread policy, unless a count was chosen already
    candidate = resolve_precision(precision, dev)
    if engine not in ("auto", "torch"):
        # A named engine runs fp32 on the CPU: refused here, before any loading, if it
        # is not installed or cannot run at a forced precision.
        choose_engine(engine, dev, "fp32" if precision == "auto" else precision)
        if precision == "auto" or engine != "winograd":
            candidate = "fp32"  # (winograd also runs a forced bf16: choose_engine said so)
    lm = model if isinstance(model, LoadedModel) else load_model(model, scale=scale)
    if lm.identity:
        identity: TileModel = lambda x: x  # noqa: E731
        return PreparedModel(lm, dev, "fp32", precision, identity, identity)
    module = lm.module.to(dev).eval()
    # A hooked module runs as itself, so its hooks fire; the chain is measured
    # on CPUs and written for CUDA, other devices (MPS) run the module.
    chain_ok = not _has_hooks(module) and dev.type in ("cpu", "cuda")
    # fp32 3x3 layers through Winograd (ours, by default on CPUs, or NNPACK's), else direct
    fp32_engine = choose_engine(engine, dev, "fp32") if engine in ("auto", "winograd") else engine
    conv3x3 = fp32_engine if fp32_engine in ("winograd", "nnpack") else "direct"
    exact: TileModel | None = (
        ConvChain.of(module, torch.float32, dev, conv3x3=conv3x3) if chain_ok else None
    )
    if exact is None:
        # Unknown modules (or hooked ones) run as they are; auto keeps them in
        # fp32, since nothing is known about how they take reduced precision.
        exact = module
        if precision == "auto":
            candidate = "fp32"
    if candidate == "fp32":
        return _fp32(lm, dev, precision, exact, engine, cache_dir, isinstance(exact, ConvChain))
    dtype = dtype_of(candidate)
    # bf16 3x3 layers through Winograd with bf16 products where auto (or winograd) says so
    if engine in ("auto", "winograd") and choose_engine(engine, dev, candidate) == "winograd":
        conv3x3 = "winograd"
    else:
        conv3x3 = "direct"
    chain = ConvChain.of(module, dtype, dev, conv3x3=conv3x3) if chain_ok else None
    reduced: TileModel = chain if chain is not None else _Autocast(module, dtype, dev)
    if precision == "auto" and not _probe_passes(reduced, exact, dev):
        return _fp32(lm, dev, precision, exact, engine, cache_dir, isinstance(exact, ConvChain))
    return PreparedModel(
        lm,
        dev,
        candidate,
        precision,
        reduced,
        exact,
        engine=_chain_engine(reduced),
        engine_fp32=_chain_engine(exact),
    )


def _chain_engine(model: TileModel) -> str:
    """``winograd`` or ``nnpack`` for a chain that runs such 3x3 layers, else ``torch``."""
    if isinstance(model, ConvChain):
        if any(c.winograd for c in model.convs):
            return "winograd"
        if any(c.nnpack for c in model.convs):
            return "nnpack"
    return "torch"


def _fp32(
    lm: LoadedModel,
    dev: torch.device,
    requested: str,
    exact: TileModel,
    engine: str,
    cache_dir: str | os.PathLike[str] | None,
    known: bool,
) -> PreparedModel:
    """The fp32 model, in the engine :func:`~sruc.engine.runtimes.choose_engine` picks.

    ``known``: the network is a plain convolution chain without hooks; ``auto`` uses
    an engine only for those. An engine that cannot export or load the network is
    an error when named, a warning and PyTorch under ``auto``.
    """
    chosen = choose_engine(engine, dev, "fp32")
    if chosen in ("torch", "winograd", "nnpack") or (engine == "auto" and not known):
        ran = _chain_engine(exact)  # torch where the network has no Winograd layer
        return PreparedModel(lm, dev, "fp32", requested, exact, exact, ran, ran)
    try:
        run = engine_forward(lm, chosen, cache_dir)
    except SrucError as e:
        if engine != "auto":
            raise
        warnings.warn(f"{chosen} unavailable ({e}); running on torch", SrucWarning, stacklevel=3)
        return PreparedModel(lm, dev, "fp32", requested, exact, exact)
    fast = Fallback(chosen, run, exact)
    return PreparedModel(lm, dev, "fp32", requested, fast, fast, chosen, chosen)
