"""The upscaling pipeline.

decode -> EXIF orientation -> MATLAB bicubic upscale of the whole image ->
model on the Y channel (tiled, seam-free) -> Cb/Cr from the bicubic image ->
merge -> clamp and round -> encode. Gray images are their own Y (one channel,
no colour work); alpha is upscaled bicubically on its own.

Speed: :func:`prepare_model` places a model on its device once, at a
precision (``auto``, ``fp32``, ``bf16``, ``fp16``), in the memory layout the
device's convolutions are fastest with; :func:`upscale_picture` accepts the
result, so a batch pays for that once. VDSR and SRCNN run as a flat chain of
convolutions (ReLU fused into the convolution on CPUs); reduced precision
applies to the convolutions only: VDSR's residual add and every output stay
float32. ``auto`` picks a reduced precision only where the hardware runs it
natively and the weights pass an accuracy probe (see :data:`MAX_PSNR_DROP_DB`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sruc import archs
from sruc.core.color import rgb_to_ycbcr, ycbcr_to_rgb
from sruc.core.resize import imresize, output_size
from sruc.core.tiling import ProgressFn, TileModel, default_batch, default_tile, run_tiled
from sruc.engine.device import resolve_device, tune_cpu_allocator
from sruc.engine.fused import MIN_FUSED_IN_CHANNELS, conv_relu_op, plain_padding
from sruc.engine.precision import dtype_of, resolve_precision
from sruc.files import images
from sruc.files.images import Picture
from sruc.scales import check_scale
from sruc.zoo.registry import DEFAULT_MODEL, LoadedModel, load_model

ImageInput = str | os.PathLike[str] | Image.Image | Picture

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


#: Input channels the first convolution gets on CPUs (the image padded with
#: zero channels), to stay on oneDNN's fast path (see
#: :data:`sruc.engine.fused.MIN_FUSED_IN_CHANNELS`).
CPU_MIN_IN_CHANNELS = MIN_FUSED_IN_CHANNELS


@dataclass(frozen=True)
class _Conv:
    weight: torch.Tensor
    bias: torch.Tensor | None
    padding: int
    relu: bool


class _ConvChain:
    """VDSR or SRCNN as a flat list of convolutions, for speed.

    Weights are copied once in the compute dtype and the device's preferred
    memory layout (channels-last: oneDNN's and cuDNN's fast convolutions use
    it; on this project's CPUs bf16 in NCHW is barely faster than fp32, see
    README "Speed"). On CPUs the ReLU is fused into the convolution, which
    saves a pass over each 64-channel feature map, and the image gets zero
    channels up to :data:`CPU_MIN_IN_CHANNELS` (with zero weights: the sums
    are unchanged), which takes oneDNN off its slow one-channel path. Input
    and output are float32; VDSR adds its residual in float32.
    """

    def __init__(
        self,
        convs: list[_Conv],
        residual: bool,
        dtype: torch.dtype,
        device: torch.device,
        in_channels: int,
    ) -> None:
        self.convs = convs
        self.residual = residual
        self.dtype = dtype
        self.fused = conv_relu_op() if device.type == "cpu" else None
        self.in_channels = in_channels  # of the first weight, after any zero padding

    @classmethod
    def of(cls, module: nn.Module, dtype: torch.dtype, device: torch.device) -> _ConvChain | None:
        """The chain of a module whose spec gives a convolution plan, else None."""
        spec = archs.conv_plan(module)
        if spec is None:
            return None
        layers, residual = spec
        convs = []
        for i, (conv, relu) in enumerate(layers):
            pad = plain_padding(conv)
            if pad is None:
                return None
            w = conv.weight.detach()
            if i == 0 and device.type == "cpu" and w.shape[1] < CPU_MIN_IN_CHANNELS:
                w = F.pad(w, (0, 0, 0, 0, 0, CPU_MIN_IN_CHANNELS - w.shape[1]))  # zero weights
            w = w.to(device, dtype).contiguous(memory_format=torch.channels_last)
            b = conv.bias.detach().to(device, dtype) if conv.bias is not None else None
            convs.append(_Conv(w, b, pad, relu))
        return cls(convs, residual, dtype, device, int(convs[0].weight.shape[1]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) float32 on the chain's device
        n, chans, height, width = x.shape
        if chans < self.in_channels:
            # (N, C', H, W) channels-last with zero channels after the image's
            h = x.new_zeros((n, self.in_channels, height, width), dtype=self.dtype)
            h = h.contiguous(memory_format=torch.channels_last)
            h[:, :chans] = x
        else:
            h = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        for c in self.convs:
            p = [c.padding, c.padding]
            if c.relu and self.fused is not None:
                h = self.fused(h, c.weight, c.bias, p, [1, 1], [1, 1], 1, "relu", [None], None)
            else:
                h = F.conv2d(h, c.weight, c.bias, padding=c.padding)
                if c.relu:
                    h = torch.relu_(h)
        out = h.float().contiguous()  # (N, C, H, W) float32
        return x + out if self.residual else out


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
    """

    loaded: LoadedModel
    device: torch.device
    precision: str
    requested: str
    forward: TileModel
    forward_fp32: TileModel

    def runner(self, bits: int) -> tuple[TileModel, str]:
        """The callable and precision for an image of ``bits`` per sample.

        Under ``auto``, 16-bit images run in float32: a bf16 error of a
        twentieth of an 8-bit level is a dozen 16-bit levels.
        """
        if bits > 8 and self.requested == "auto":
            return self.forward_fp32, "fp32"
        return self.forward, self.precision

    @property
    def bytes_per_value(self) -> int:
        return 4 if self.precision == "fp32" else 2


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
) -> PreparedModel:
    """Load ``model`` and make it ready to run on ``device`` at ``precision``.

    ``scale`` picks the file of a per-scale registry group (``srcnn``).

    Args:
        model: registry name, checkpoint path, nn.Module, loaded or prepared model.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto`` (bf16/fp16 where the device runs it natively and
            the weights pass the accuracy probe, else fp32), ``fp32``,
            ``bf16`` or ``fp16`` (GPUs only).

    Raises:
        UsageError: an unknown precision.
        sruc.engine.precision.PrecisionError: bf16/fp16 forced where the device cannot run it.
        DeviceError: the device is not there.
        ModelError: the model cannot be loaded.
    """
    if isinstance(model, PreparedModel):
        return model
    dev = resolve_device(device)
    tune_cpu_allocator()  # colour, resize and CPU forward passes reuse their buffers
    candidate = resolve_precision(precision, dev)
    lm = model if isinstance(model, LoadedModel) else load_model(model, scale=scale)
    if lm.identity:
        identity: TileModel = lambda x: x  # noqa: E731
        return PreparedModel(lm, dev, "fp32", precision, identity, identity)
    module = lm.module.to(dev).eval()
    # A hooked module runs as itself, so its hooks fire; the chain is measured
    # on CPUs and written for CUDA, other devices (MPS) run the module.
    chain_ok = not _has_hooks(module) and dev.type in ("cpu", "cuda")
    exact: TileModel | None = _ConvChain.of(module, torch.float32, dev) if chain_ok else None
    if exact is None:
        # Unknown modules (or hooked ones) run as they are; auto keeps them in
        # fp32, since nothing is known about how they take reduced precision.
        exact = module
        if precision == "auto":
            candidate = "fp32"
    if candidate == "fp32":
        return PreparedModel(lm, dev, "fp32", precision, exact, exact)
    dtype = dtype_of(candidate)
    chain = _ConvChain.of(module, dtype, dev) if chain_ok else None
    reduced: TileModel = chain if chain is not None else _Autocast(module, dtype, dev)
    if precision == "auto" and not _probe_passes(reduced, exact, dev):
        return PreparedModel(lm, dev, "fp32", precision, exact, exact)
    return PreparedModel(lm, dev, candidate, precision, reduced, exact)


@dataclass
class UpscaleResult:
    """What :func:`upscale_file` did, for the CLI's summary."""

    output: Path
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    model: str
    scale: float
    device: str
    seconds: float
    precision: str = "fp32"


def _as_picture(image: ImageInput, max_pixels: int | None) -> Picture:
    if isinstance(image, Picture):
        return image
    if isinstance(image, Image.Image):
        return images.from_pil(image, max_pixels)
    return images.read_image(image, max_pixels)


def run_model(
    pm: PreparedModel,
    x: torch.Tensor,
    *,
    bits: int = 8,
    tile: int | None = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Run a prepared network on ``(1, C, H, W)`` float32 ``x``, tiled; same shape out.

    The tile comes from the device when ``tile`` is None (free memory on
    CUDA, :data:`sruc.core.tiling.CPU_TILE` on CPUs), and on CUDA several tiles
    run per forward pass.
    """
    net, precision = pm.runner(bits)
    per_value = 4 if precision == "fp32" else 2
    h, w = x.shape[-2], x.shape[-1]
    r = pm.loaded.radius
    if tile is None:
        tile = default_tile(pm.device, h, w, r, channels=x.shape[1], bytes_per_value=per_value)
    batch = default_batch(pm.device, tile, r, channels=x.shape[1], bytes_per_value=per_value)
    return run_tiled(net, x, radius=r, tile=tile, device=pm.device, progress=progress, batch=batch)


def upscale_picture(
    pic: Picture,
    scale: float,
    *,
    model: ModelSpec = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    tile: int | None = None,
    progress: ProgressFn | None = None,
    precision: str = "auto",
) -> Picture:
    """Upscale a decoded picture; the core of :func:`upscale`.

    Args:
        pic: the decoded image.
        scale: upscaling factor in (1, 8]; fractional scales work with
            multi-scale models (VDSR, bicubic).
        model: registry name, checkpoint path, nn.Module, loaded model, or a
            :class:`PreparedModel` (then ``device`` and ``precision`` are its own).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        tile: tile edge in pixels; 0 disables tiling; None picks one.
        progress: called with (tiles done, tiles total).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :func:`prepare_model`).
    """
    check_scale(scale)
    pm = prepare_model(model, device=device, precision=precision, scale=scale)
    pm.loaded.check_scale(scale)
    out_h, out_w = output_size(pic.height, scale), output_size(pic.width, scale)
    with torch.inference_mode():
        up = imresize(pic.color[None], scale)  # (1, C, H', W'), C = 1 or 3
        assert up.shape[-2:] == (out_h, out_w)
        alpha = imresize(pic.alpha[None], scale)[0].clamp_(0, 1) if pic.alpha is not None else None
        if pm.loaded.identity:
            color = up[0]
        elif pic.is_gray:
            color = run_model(pm, up, bits=pic.bits, tile=tile, progress=progress)[0]
        else:
            ycc = rgb_to_ycbcr(up)
            y = run_model(pm, ycc[:, :1].contiguous(), bits=pic.bits, tile=tile, progress=progress)
            color = ycbcr_to_rgb(torch.cat([y, ycc[:, 1:]], dim=1))[0]
        color = color.clamp_(0, 1)
    if progress is not None and pm.loaded.identity:
        progress(1, 1)
    return pic.with_pixels(color, alpha)


def upscale(
    image: ImageInput,
    scale: float,
    *,
    model: ModelSpec = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    tile: int | None = None,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    progress: ProgressFn | None = None,
    precision: str = "auto",
) -> Image.Image:
    """Upscale an image file or Pillow image and return a Pillow image.

    The ICC profile and EXIF (orientation reset) are in the result's ``info``.
    Pillow cannot hold 16-bit colour, so 16-bit RGB comes back as 8-bit here;
    :func:`upscale_file` keeps 16 bits when writing PNG or TIFF.

    Example:
        >>> import sruc
        >>> sruc.upscale("photo.jpg", 3).save("photo_x3.png")  # doctest: +SKIP
    """
    pic = _as_picture(image, max_pixels)
    return upscale_picture(
        pic,
        scale,
        model=model,
        device=device,
        tile=tile,
        progress=progress,
        precision=precision,
    ).to_pil()


def upscale_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    scale: float,
    *,
    model: ModelSpec = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    tile: int | None = None,
    quality: int | None = None,
    overwrite: bool = False,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    progress: ProgressFn | None = None,
    on_start: Callable[[Picture], None] | None = None,
    precision: str = "auto",
) -> UpscaleResult:
    """Upscale ``src`` into ``dst``, checking everything cheap before the work.

    The output is written atomically; the input is never overwritten.
    """
    started = time.perf_counter()
    check_scale(scale)
    dst = images.check_output(dst, overwrite=overwrite, inputs=(src,))
    pm = prepare_model(model, device=device, precision=precision, scale=scale)
    pm.loaded.check_scale(scale)
    pic = images.read_image(src, max_pixels)
    if on_start is not None:
        on_start(pic)
    out = upscale_picture(pic, scale, model=pm, tile=tile, progress=progress)
    images.write_image(out, dst, quality=quality, overwrite=overwrite)
    return UpscaleResult(
        output=dst,
        input_size=(pic.width, pic.height),
        output_size=(out.width, out.height),
        model=pm.loaded.name,
        scale=scale,
        device=str(pm.device),
        seconds=time.perf_counter() - started,
        precision=pm.runner(pic.bits)[1],
    )
