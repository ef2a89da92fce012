"""Convolution + ReLU as one oneDNN call on CPUs, for inference and training.

A ReLU after a convolution is a pass of its own over a feature map: for a
full VDSR training step on a 2-core CPU (64 patches of 41 x 41, bf16), the
forward ReLUs took 13% of the time, as long as their backward. oneDNN can
apply the ReLU as the convolution writes its output
(``torch.ops.mkldnn._convolution_pointwise``), which saves the forward pass.
That op has no autograd formula, so :class:`_ConvReLU` supplies one: the
ReLU's backward on the saved output, then ATen's own convolution backward,
the very kernels autograd runs for ``relu(conv2d(x))``. Outputs come out
bit-identical, gradients equal up to float32 summation order
(``tests/test_fused.py``).

:class:`ConvChain` runs the same plan for inference: weights cast once to the
compute dtype in channels-last layout, the ReLU fused on CPUs.

:func:`training_forward` runs any architecture whose spec gives a convolution
plan (:attr:`sruc.archs.ArchSpec.conv_plan`: VDSR, SRCNN) that way, with autocast's casts
done by hand, so ``sruc train`` gets the same numbers faster.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from sruc import archs
from sruc.engine.winograd import WinogradStack, edges_fit, eligible

if TYPE_CHECKING:
    from sruc.engine.native import Kernels

#: Fewest input channels oneDNN handles on its fast path: it runs a one-channel
#: 3x3 convolution at 7 MP/s in bf16 on the 2-core AMX Xeon, against 94 MP/s
#: with four channels (three of them zero), copy included; 8 and 16 channels
#: are slower again. Training leaves such layers unfused; inference pads the
#: image with zero channels up to this (``sruc.engine.pipeline``).
MIN_FUSED_IN_CHANNELS = 4

ConvReLUOp = Callable[..., torch.Tensor]


@functools.cache
def conv_relu_op() -> ConvReLUOp | None:
    """oneDNN's convolution with a fused ReLU, if this build has it and it agrees
    with convolution + ReLU on a tiny input; checked once per process."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        g = torch.Generator().manual_seed(0)
        cl = torch.channels_last
        x = torch.rand(1, 4, 9, 9, generator=g).contiguous(memory_format=cl)
        w = torch.randn(4, 4, 3, 3, generator=g).contiguous(memory_format=cl)
        b = torch.randn(4, generator=g)
        got = op(x, w, b, [1, 1], [1, 1], [1, 1], 1, "relu", [None], None)
        want = torch.relu(F.conv2d(x, w, b, padding=1))
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        return None
    return op if torch.allclose(got, want, atol=1e-5) else None


class _ConvReLU(torch.autograd.Function):
    """``relu(conv2d(x, w, b, padding))``, stride 1, one group, fused forward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, padding: int
    ) -> torch.Tensor:
        op = conv_relu_op()
        assert op is not None
        p = [padding, padding]
        y = op(x, w, b, p, [1, 1], [1, 1], 1, "relu", [None], None)
        ctx.save_for_backward(x, w, y)
        ctx.padding = padding
        ctx.has_bias = b is not None
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, w, y = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(gy, y, 0)  # what ReluBackward0 does
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, x, w,
            [w.shape[0]] if ctx.has_bias else None,
            [1, 1], [ctx.padding, ctx.padding], [1, 1], False, [0, 0], 1,
            [need_x, need_w, bool(need_b and ctx.has_bias)],
        )  # fmt: skip
        return gx, gw, gb, None


def plain_padding(conv: nn.Conv2d) -> int | None:
    """The padding of a stride-1, one-group, undilated, square-padded convolution."""
    pad = conv.padding
    if conv.stride != (1, 1) or conv.groups != 1 or conv.dilation != (1, 1):
        return None
    if not (isinstance(pad, tuple) and pad[0] == pad[1]):
        return None
    return int(pad[0])


def training_forward(
    module: nn.Module, dtype: torch.dtype | None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``module(x)`` as ``torch.autocast("cpu", dtype)`` runs it (float32 if
    ``dtype`` is None), with each convolution + ReLU fused; None where that
    does not apply (another architecture or dtype than bf16/float32, weights
    off the CPU, or no fused op in this PyTorch build).

    The returned callable reads the module's parameters at every call, so it
    trains them; its output equals the autocast forward's, and so do the
    gradients. In float32, a VDSR-shaped chain runs through the compiled
    Winograd kernels instead (:func:`sruc.engine.wino_train.winograd_training`:
    gradients within ~1e-4 of float32's, ~3x faster than oneDNN's float32).
    """
    if dtype is None:
        from sruc.engine.wino_train import winograd_training

        trainer = winograd_training(module)
        if trainer is not None:
            return trainer
    spec = archs.conv_plan(module)
    if spec is None or dtype not in (None, torch.bfloat16) or conv_relu_op() is None:
        return None
    layers, residual = spec
    pads = [plain_padding(conv) for conv, _ in layers]
    if None in pads or any(p.device.type != "cpu" for p in module.parameters()):
        return None
    plan = [
        (conv, relu and conv.in_channels >= MIN_FUSED_IN_CHANNELS, relu, int(pad))  # type: ignore[arg-type]
        for (conv, relu), pad in zip(layers, pads, strict=True)
    ]

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return t if t is None or dtype is None else t.to(dtype)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            h = cast(x)
            assert h is not None
            for conv, fuse, relu, pad in plan:
                w, b = cast(conv.weight), cast(conv.bias)
                assert w is not None
                if fuse:
                    h = _ConvReLU.apply(h, w, b, pad)
                else:
                    h = F.conv2d(h, w, b, padding=pad)
                    if relu:
                        h = torch.relu(h)
            # Autocast's residual: float32 input + low-precision body -> float32.
            return x + h if residual else h

    return forward


#: Input channels the first convolution gets on CPUs (the image padded with
#: zero channels), to stay on oneDNN's fast path (see
#: :data:`sruc.engine.fused.MIN_FUSED_IN_CHANNELS`).
CPU_MIN_IN_CHANNELS = MIN_FUSED_IN_CHANNELS


#: Fewest input and output channels a 3x3 layer needs to run through NNPACK's
#: Winograd convolution on fp32 CPUs (:func:`winograd_available`): VDSR's 18 middle
#: 64 -> 64 layers; its 1 -> 64 and 64 -> 1 ends stay on oneDNN's direct path.
WINOGRAD_MIN_CHANNELS = 16


@functools.cache
def winograd_available() -> bool:
    """Whether NNPACK (in PyTorch's CPU builds; Winograd F(6x6, 3x3) for 3x3 layers)
    initialises on this CPU and agrees with ``F.conv2d`` to float32 rounding on a tiny
    input; checked once per process. It needs AVX2 + FMA on x86 (its own kernels,
    no AVX-512 ones, so ``ONEDNN_MAX_CPU_ISA`` does not change it) or NEON on ARM.

    fp32 VDSR on one CPU thread of an AMD EPYC (Zen 4): 1.39x a naive forward on a
    384 px tile, against 1.24x for oneDNN's direct path (1.7x against 1.1x on 160 px;
    ``benchmarks/engines.py``); the result differs from the direct one by about 1e-5
    (Winograd's rounding; Set5 PSNR unchanged to 0.0001 dB).
    """
    try:
        if not torch._nnpack_available():
            return False
        g = torch.Generator().manual_seed(0)
        x = torch.rand(1, 16, 13, 11, generator=g)
        w = torch.randn(16, 16, 3, 3, generator=g) / 12
        b = torch.randn(16, generator=g)
        got = torch._nnpack_spatial_convolution(x, w, b, [1, 1], [1, 1])
        want = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        return False
    return bool((got.double() - want).abs().max() <= 1e-5 * want.abs().max())


@dataclass(frozen=True)
class _Conv:
    weight: torch.Tensor
    bias: torch.Tensor | None
    padding: int
    relu: bool
    nnpack: bool = False  # NNPACK's Winograd, NCHW, fp32 (the weight is then NCHW)
    winograd: bool = False  # sruc.engine.winograd, fp32 on the CPU


class ConvChain:
    """VDSR or SRCNN as a flat list of convolutions, for speed.

    Weights are copied once in the compute dtype and the device's preferred
    memory layout (channels-last: oneDNN's and cuDNN's fast convolutions use
    it; on this project's CPUs bf16 in NCHW is barely faster than fp32, see
    README "Speed"). On CPUs the ReLU is fused into the convolution, which
    saves a pass over each 64-channel feature map, and the image gets zero
    channels up to :data:`CPU_MIN_IN_CHANNELS` (with zero weights: the sums
    are unchanged), which takes oneDNN off its slow one-channel path. In
    float32 on CPUs, as the engine policy says, 3x3 layers of at least
    :data:`WINOGRAD_MIN_CHANNELS` channels run Winograd
    (:mod:`sruc.engine.winograd`, ``--engine winograd``) or NNPACK's Winograd
    where it is available (:func:`winograd_available`, ``--engine nnpack``);
    with sruc's compiled kernels a VDSR chain runs whole in C (:attr:`whole`).
    Input and output are float32; VDSR adds its residual in float32.
    """

    def __init__(
        self,
        convs: list[_Conv],
        residual: bool,
        dtype: torch.dtype,
        device: torch.device,
        in_channels: int,
        kernels: Kernels | None = None,
        products: torch.dtype = torch.float32,
        image_channels: int | None = None,
    ) -> None:
        """``kernels``: the compiled Winograd transforms (None: the PyTorch ones);
        ``products``: the dtype of the Winograd layers' matrix products (bfloat16
        needs ``kernels``). :meth:`of` gives both. ``image_channels``: the first
        convolution's input channels before any zero padding (default: all)."""
        self.convs = convs
        # Runs of Winograd layers: (first, end) convolution indices.
        runs: list[tuple[int, int]] = []
        i = 0
        while i < len(convs):
            j = i
            while j < len(convs) and convs[j].winograd:
                j += 1
            if j > i:
                runs.append((i, j))
            i = max(j, i + 1)
        self.residual = residual
        self.dtype = dtype
        self.fused = conv_relu_op() if device.type == "cpu" else None
        self.in_channels = in_channels  # of the first weight, after any zero padding
        # With the compiled kernels, a chain that is one convolution, a Winograd stack and
        # one convolution (VDSR) runs whole in one stack: its first and last layers read
        # and write the stack's buffers (no channel padding, no copies in or out).
        self.whole: WinogradStack | None = None
        first, last = convs[0], convs[-1]
        head = tail = None
        if (
            kernels is not None
            and dtype == torch.float32
            and runs == [(1, len(convs) - 1)]
            and edges_fit(first.weight, last.weight, first.padding, last.padding,
                          int(first.weight.shape[0]))
        ):  # fmt: skip
            cin = in_channels if image_channels is None else image_channels
            head = (first.weight[:, :cin], first.bias, first.relu)
            tail = (last.weight, last.bias, last.relu)
        # The stacks, by the index of their first convolution.
        self.stacks: dict[int, tuple[int, WinogradStack]] = {}
        for i, j in runs:
            layers = [(c.weight, c.bias, c.relu) for c in convs[i:j]]
            self.stacks[i] = (j, WinogradStack(layers, kernels, products, head, tail))
        if head is not None:
            self.whole = self.stacks[1][1]

    @classmethod
    def of(
        cls,
        module: nn.Module,
        dtype: torch.dtype,
        device: torch.device,
        *,
        conv3x3: str = "direct",
    ) -> ConvChain | None:
        """The chain of a module whose spec gives a convolution plan, else None.

        ``conv3x3``: how eligible fp32 CPU 3x3 layers run: ``direct`` (oneDNN's
        direct convolution, ``--engine torch``), ``winograd``
        (:mod:`sruc.engine.winograd`, what ``auto`` runs) or ``nnpack`` (NNPACK's
        Winograd, where :func:`winograd_available`). Winograd's rounding depends on
        where a pixel falls in its blocks, so a tiled run differs from an untiled one
        in the last bits (and, rarely, by one 8-bit level); the direct path's tiles
        are exact."""
        spec = archs.conv_plan(module)
        if spec is None:
            return None
        layers, residual = spec
        fp32_cpu = device.type == "cpu" and dtype == torch.float32
        # winograd_available() also initialises NNPACK, which its op does not do itself.
        nnpack = conv3x3 == "nnpack" and fp32_cpu and winograd_available()
        ours = conv3x3 == "winograd" and fp32_cpu
        from sruc.engine.native import LANES
        from sruc.engine.native import kernels as compiled

        kernels, products = None, torch.float32
        if conv3x3 == "winograd" and device.type == "cpu" and dtype == torch.bfloat16:
            # bf16 products, with the compiled transforms only (else direct bf16); the
            # rest of the chain (first and last layers, activations) stays float32,
            # which halves the bf16 loss for a few percent of the time (README "Speed")
            kernels = compiled()
            if kernels is not None:
                ours, products, dtype = True, torch.bfloat16, torch.float32
        convs = []
        for i, (conv, relu) in enumerate(layers):
            pad = plain_padding(conv)
            if pad is None:
                return None
            w = conv.weight.detach()
            big3x3 = tuple(w.shape[2:]) == (3, 3) and min(w.shape[:2]) >= WINOGRAD_MIN_CHANNELS
            on_nnpack = nnpack and big3x3
            on_ours = ours and eligible(w, pad, WINOGRAD_MIN_CHANNELS)
            if products != torch.float32:  # bf16 products: whole compiled lanes only
                on_ours = on_ours and w.shape[0] % LANES == 0
            if i == 0 and device.type == "cpu" and w.shape[1] < CPU_MIN_IN_CHANNELS:
                w = F.pad(w, (0, 0, 0, 0, 0, CPU_MIN_IN_CHANNELS - w.shape[1]))  # zero weights
            layout = torch.contiguous_format if on_nnpack else torch.channels_last
            w = w.to(device, dtype).contiguous(memory_format=layout)
            b = conv.bias.detach().to(device, dtype) if conv.bias is not None else None
            convs.append(_Conv(w, b, pad, relu, on_nnpack, on_ours))
        if kernels is None and any(c.winograd for c in convs):
            kernels = compiled()  # fp32: the transforms compiled, where they can be
        chans = int(convs[0].weight.shape[1])
        image = int(layers[0][0].in_channels)
        return cls(convs, residual, dtype, device, chans, kernels, products, image)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) float32 on the chain's device
        if self.whole is not None:
            out = self.whole(x)
            return x + out if self.residual else out
        n, chans, height, width = x.shape
        if chans < self.in_channels:
            # (N, C', H, W) channels-last with zero channels after the image's
            h = x.new_zeros((n, self.in_channels, height, width), dtype=self.dtype)
            h = h.contiguous(memory_format=torch.channels_last)
            h[:, :chans] = x
        else:
            h = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        i = 0
        while i < len(self.convs):
            c = self.convs[i]
            if i in self.stacks:
                end, stack = self.stacks[i]
                h = stack(h)  # float32 channels-last, as the next layer reads it
                i = end
                continue
            i += 1
            p = [c.padding, c.padding]
            if c.nnpack:
                # NNPACK takes and gives NCHW; (N, C, H, W) contiguous
                h = torch._nnpack_spatial_convolution(h.contiguous(), c.weight, c.bias, p, [1, 1])
                if c.relu:
                    h = torch.relu_(h)
                continue
            # no copy unless after NNPACK or a Winograd stack
            h = h.contiguous(memory_format=torch.channels_last)
            if c.relu and self.fused is not None:
                h = self.fused(h, c.weight, c.bias, p, [1, 1], [1, 1], 1, "relu", [None], None)
            else:
                h = F.conv2d(h, c.weight, c.bias, padding=c.padding)
                if c.relu:
                    h = torch.relu_(h)
        out = h.float().contiguous()  # (N, C, H, W) float32 (a copy, never a buffer's view)
        return x + out if self.residual else out


__all__ = [
    "CPU_MIN_IN_CHANNELS",
    "MIN_FUSED_IN_CHANNELS",
    "WINOGRAD_MIN_CHANNELS",
    "ConvChain",
    "conv_relu_op",
    "plain_padding",
    "training_forward",
    "winograd_available",
]
