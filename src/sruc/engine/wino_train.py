"""Training VDSR-shaped chains through the compiled F(6x6, 3x3) Winograd kernels.

A training step runs every convolution three times: forward, the gradient of
its input, the gradient of its weights. On a CPU without AMX, oneDNN's bf16
direct convolutions already run near the core's peak (a 2-core Zen 4: 62 ms
per 64 -> 64 layer and 64 patches of 41 x 41, forward and backward), so the
way to go faster is fewer multiplications. F(6x6, 3x3) needs 1.78 per output
against 9 and runs in float32 (bf16 rounding would be amplified by its
coefficients). :class:`ChainTrainer` runs all three in ``winograd.c``:

- forward: the head (``sruc_conv_head``, 1 -> C, ReLU), the middle layers
  (``sruc_wino6_layer``, C -> C, ReLU), the tail (``sruc_conv_tail``, C -> 1),
  every activation kept in its own zero-padded NHWC buffer;
- backward, a middle layer in one pass (``sruc_wino6_backward``): its weight
  gradient in the Winograd domain (``dU[p] += V[p]^T dM[p]`` over the blocks,
  then ``G^T dU G``) and, for the same blocks while they are in cache, its input
  gradient: the same convolution with the kernels flipped and transposed, each
  output kept where the layer's input was positive (the ReLU's backward, a
  *gate*); the tail's input gradient is the head kernel with a gate, and the
  head's and tail's weight gradients are direct sums.

Outputs and gradients agree with the direct convolutions' in float64 to 1e-5 of
their magnitude on small chains (``tests/engine/test_wino_train.py``), and with
float32's to ~1e-4 through the full VDSR's 20 layers (bf16 autocast: 2e-2;
``benchmarks/train_step.py``). :func:`winograd_training` says when it
applies, and :func:`sruc.engine.precision.resolve_precision` when ``auto``
prefers it to bf16 (CPUs without AMX).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from sruc import archs
from sruc.engine.winograd import (
    _GROUP_BLOCKS,
    EdgeConv,
    _run_parts,
    transform_weights,
    weight_gradient,
)

if TYPE_CHECKING:
    from sruc.engine.native import Kernels

#: Blocks per group of the weight gradient: each group adds into the whole of its
#: slot's 64 x C x K sums (1 MB for 64 channels, out of a core's cache), so larger
#: groups than the layer's pay for that less often (64 patches of 41 x 41 on a 2-core
#: Zen 4: 18.1 ms a layer with 12, 15.0 with 48, 15.2 with 96).
_WGRAD_GROUP = 48
#: Runs of groups a weight gradient is cut into, each summed apart and taken by
#: whichever thread is free: enough for threads to even out a busy core, few enough
#: that zeroing and adding up the sums (1 MB each for 64 channels) stays cheap; and the
#: same for every thread count, so the gradients do not depend on it.
_WGRAD_SLOTS = 8


def winograd_training(module: nn.Module) -> ChainTrainer | None:
    """A trainer for ``module`` where it applies: a CPU module whose convolution plan
    is a chain of 3x3, padding-1 convolutions, cin -> C (ReLU), C -> C (ReLU) ...,
    C -> kout (no ReLU), C a multiple of 16, and compiled kernels on this machine."""
    spec = archs.conv_plan(module)
    if spec is None or any(p.device.type != "cpu" for p in module.parameters()):
        return None
    layers, residual = spec
    if len(layers) < 3:
        return None
    convs = [conv for conv, _ in layers]
    relus = [relu for _, relu in layers]
    c = convs[0].out_channels
    for conv in convs:
        plain = conv.stride == (1, 1) and conv.groups == 1 and conv.dilation == (1, 1)
        if not plain or conv.kernel_size != (3, 3) or conv.padding != (1, 1):
            return None
    if any(conv.in_channels != c or conv.out_channels != c for conv in convs[1:-1]):
        return None
    if convs[-1].in_channels != c or not all(relus[:-1]) or relus[-1]:
        return None
    from sruc.engine.native import LANES, kernels

    k = kernels()
    if k is None or c % LANES != 0:
        return None
    return ChainTrainer(convs, residual, k)


class _Buffers:
    """One geometry's activations and gradients, padded NHWC, their padding zero."""

    def __init__(self, n: int, h: int, w: int, c: int, depth: int, threads: int) -> None:
        self.key = (n, h, w, threads)
        self.tiles = th, tw = -(-h // 6), -(-w // 6)
        self.hp, self.wp = 6 * th + 2, 6 * tw + 2
        self.acts = [torch.zeros(n, self.hp, self.wp, c) for _ in range(depth)]
        self.grads = [torch.zeros(n, self.hp, self.wp, c) for _ in range(2)]
        self.groups = -(-n * th * tw // _GROUP_BLOCKS)
        # scratch floats per thread: V and M of a group (the weight gradient's the larger)
        self.per = 64 * max(_GROUP_BLOCKS, _WGRAD_GROUP) * 2 * c
        self.scratch = torch.empty(threads * self.per)
        # the weight gradient's sums (each slot zeroed by the kernel that fills it)
        self.du = torch.empty(_WGRAD_SLOTS, 64, c, c)
        self.dbias = torch.empty(_WGRAD_SLOTS, c)
        self.xp = torch.empty(0)  # the padded input of the last forward


class ChainTrainer:
    """Forward and backward of one conv chain through ``winograd.c``; its buffers
    serve one step at a time (a forward, then its backward)."""

    def __init__(self, convs: list[nn.Conv2d], residual: bool, k: Kernels) -> None:
        self.convs = convs
        self.residual = residual
        self.k = k
        self.c = convs[0].out_channels
        self._bufs: _Buffers | None = None
        self._generation = 0
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The chain's output for ``x`` (N, cin, H, W), with the residual; gradients
        flow to the convolutions' parameters. ``x`` is data: it may not require a
        gradient (the chain does not compute the first layer's input gradient)."""
        if x.requires_grad:
            raise ValueError("a Winograd training chain computes no gradient for its input")
        params: list[torch.Tensor | None] = []
        for conv in self.convs:
            params += [conv.weight, conv.bias]
        y = _Chain.apply(x, self, *params)
        return x + y if self.residual else y

    # -- the steps, called by _Chain -------------------------------------------------

    def forward(self, x: torch.Tensor, params: list[torch.Tensor | None]) -> torch.Tensor:
        n, cin, h, w = x.shape
        threads = torch.get_num_threads()
        with self._lock:
            b = self._bufs
            if b is None or b.key != (n, h, w, threads):
                self._bufs = None
                self._bufs = b = _Buffers(n, h, w, self.c, len(self.convs) - 1, threads)
            self._generation += 1
        lib, c = self.k.lib, self.c
        b.xp = F.pad(x.float(), (1, 1, 1, 1)).contiguous()
        head = EdgeConv.head(params[0].detach(), params[1], True)  # type: ignore[union-attr]
        lib.sruc_conv_head(
            b.xp.data_ptr(), n, cin, h, w, head.weight.data_ptr(), head.bias.data_ptr(), 1,
            None, b.acts[0].data_ptr(), b.hp, b.wp, c, threads,
        )  # fmt: skip
        for i in range(1, len(self.convs) - 1):
            wt, bias = params[2 * i], params[2 * i + 1]
            u = transform_weights(wt, 6, torch.float32)  # type: ignore[arg-type]
            self._layer(b, b.acts[i - 1], b.acts[i], u, _vector(bias, c), threads)
        tail = EdgeConv.tail(params[-2].detach(), params[-1], False)  # type: ignore[union-attr]
        kout = tail.weight.shape[0]
        y = torch.empty(n, kout, h, w)
        lib.sruc_conv_tail(
            b.acts[-1].data_ptr(), n, b.hp, b.wp, c, h, w, tail.weight.data_ptr(),
            tail.bias.data_ptr(), 0, y.data_ptr(), kout, threads,
        )  # fmt: skip
        return y

    def backward(
        self, gy: torch.Tensor, params: list[torch.Tensor | None], generation: int
    ) -> list[torch.Tensor | None]:
        b = self._bufs
        if b is None or generation != self._generation:
            raise RuntimeError("a Winograd chain's backward must follow its own forward")
        lib, c = self.k.lib, self.c
        n, kout, h, w = gy.shape
        cin = b.xp.shape[1]
        threads = b.key[3]
        gy = gy.float().contiguous()
        grads: list[torch.Tensor | None] = [None] * len(params)

        # The tail: its weight and bias gradients; then its input gradient, gated by
        # the ReLU before it, into the first gradient buffer.
        dw = torch.zeros(threads, kout, 9 * c)
        db = torch.zeros(threads, kout)
        lib.sruc_conv_tail_wgrad(
            b.acts[-1].data_ptr(), n, b.hp, b.wp, c, h, w, gy.data_ptr(), kout,
            dw.data_ptr(), db.data_ptr(), threads,
        )  # fmt: skip
        tail_w = params[-2]
        assert tail_w is not None
        grads[-2] = dw.sum(0).view(kout, 3, 3, c).permute(0, 3, 1, 2).to(tail_w.dtype)
        grads[-1] = db.sum(0) if params[-1] is not None else None
        back = EdgeConv.head(tail_w.detach().transpose(0, 1).flip(2, 3), None, False)
        gyp = F.pad(gy, (1, 1, 1, 1)).contiguous()
        cur = 0
        lib.sruc_conv_head(
            gyp.data_ptr(), n, kout, h, w, back.weight.data_ptr(), back.bias.data_ptr(), 0,
            b.acts[-1].data_ptr(), b.grads[cur].data_ptr(), b.hp, b.wp, c, threads,
        )  # fmt: skip

        # The middle layers, last first: weight gradients in the Winograd domain, then
        # the input gradient (flipped kernels, the ReLU's backward as the gate).
        zero = torch.zeros(c)
        for i in range(len(self.convs) - 2, 0, -1):
            wt, bias = params[2 * i], params[2 * i + 1]
            assert wt is not None
            src, g = b.acts[i - 1], b.grads[cur]
            ut = transform_weights(wt.transpose(0, 1).flip(2, 3), 6, torch.float32)
            du, dbias = self._backward(b, src, g, b.grads[1 - cur], ut, zero, threads)
            grads[2 * i] = weight_gradient(du).to(wt.dtype)
            grads[2 * i + 1] = dbias if bias is not None else None
            cur = 1 - cur

        # The head: its weight and bias gradients (no input gradient: x is data).
        dw = torch.zeros(threads, 9 * cin, c)
        db = torch.zeros(threads, c)
        lib.sruc_conv_head_wgrad(
            b.xp.data_ptr(), n, cin, h, w, b.grads[cur].data_ptr(), b.hp, b.wp, c,
            dw.data_ptr(), db.data_ptr(), threads,
        )  # fmt: skip
        head_w = params[0]
        assert head_w is not None
        grads[0] = dw.sum(0).view(3, 3, cin, c).permute(3, 2, 0, 1).to(head_w.dtype)
        grads[1] = db.sum(0) if params[1] is not None else None
        return grads

    def _layer(
        self, b: _Buffers, src: torch.Tensor, dst: torch.Tensor, u: torch.Tensor,
        bias: torch.Tensor, threads: int,
    ) -> None:  # fmt: skip
        """One F(6x6, 3x3) layer + ReLU, ``src`` -> ``dst`` (buffers of ``b``)."""
        th, tw = b.tiles
        n, h, w = b.key[:3]
        lib, c = self.k.lib, self.c
        x_, d_, u_, b_ = src.data_ptr(), dst.data_ptr(), u.data_ptr(), bias.data_ptr()
        s_, per = b.scratch.data_ptr(), b.per

        def run(part: int, g0: int, g1: int, omp: int) -> None:
            lib.sruc_wino6_layer(
                x_, b.hp, b.wp, c, th, tw, n, u_, b_, 1, h, w, d_,
                s_ + part * per * 4, _GROUP_BLOCKS, g0, g1, omp,
            )  # fmt: skip

        self._parts(run, b.groups, threads)

    def _backward(
        self, b: _Buffers, src: torch.Tensor, g: torch.Tensor, dst: torch.Tensor,
        ut: torch.Tensor, zero: torch.Tensor, threads: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """A middle layer's backward (buffers of ``b``): ``src`` its input, ``g`` its
        output's gradient, ``ut`` its flipped, transposed, transformed kernels. Writes its
        input's gradient to ``dst``; returns its kernel gradient in the Winograd domain,
        (64, C, C), and its bias gradient, (C,), each the sum of :data:`_WGRAD_SLOTS`
        parts in a fixed order."""
        th, tw = b.tiles
        n, h, w = b.key[:3]
        c, lib = self.c, self.k.lib
        du, dbias = b.du, b.dbias
        x_, g_, d_, s_ = src.data_ptr(), g.data_ptr(), dst.data_ptr(), b.scratch.data_ptr()
        du_, db_, u_, z_ = du.data_ptr(), dbias.data_ptr(), ut.data_ptr(), zero.data_ptr()
        per = b.per

        def run(part: int, s0: int, s1: int, omp: int) -> None:
            lib.sruc_wino6_backward(
                x_, g_, b.hp, b.wp, c, th, tw, n, h, w, u_, z_, d_, du_, db_,
                s_ + part * per * 4, _WGRAD_GROUP, _GROUP_BLOCKS, _WGRAD_SLOTS, s0, s1, omp,
            )  # fmt: skip

        self._parts(run, _WGRAD_SLOTS, threads)
        return du.sum(0), dbias.sum(0)

    def _parts(self, run: Callable[[int, int, int, int], None], groups: int, threads: int) -> None:
        if self.k.openmp or threads == 1:
            run(0, 0, groups, threads)
        else:  # a build without OpenMP: ranges of groups on Python threads
            _run_parts(run, groups, threads)


def _vector(bias: torch.Tensor | None, c: int) -> torch.Tensor:
    return torch.zeros(c) if bias is None else bias.detach().float().contiguous()


class _Chain(torch.autograd.Function):
    """The chain as one autograd node: :meth:`ChainTrainer.forward` and ``backward``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, trainer: ChainTrainer, *params: torch.Tensor | None
    ) -> torch.Tensor:
        listed = list(params)
        y = trainer.forward(x, listed)
        ctx.trainer = trainer
        ctx.generation = trainer._generation
        ctx.save_for_backward(*[p for p in listed if p is not None])
        ctx.has = [p is not None for p in listed]
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        saved = iter(ctx.saved_tensors)  # (checks that no step changed them in between)
        params = [next(saved) if has else None for has in ctx.has]
        grads = ctx.trainer.backward(gy, params, ctx.generation)
        return (None, None, *grads)


__all__ = ["ChainTrainer", "winograd_training"]
