"""Winograd convolution for fp32 (and bf16-product) 3x3 layers on CPUs.

In fp32 on CPUs (``--engine auto`` or ``winograd``) VDSR's eighteen 64 -> 64
middle layers run through this module. Winograd's minimal filtering algorithm
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016)
computes an m x m block of a 3x3 convolution from the (m+2) x (m+2) input
window around it:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

where ``g`` is a 3x3 kernel, ``d`` the input window, ``*`` the element-wise
product summed over input channels. Summed over channels, the (m+2)^2
element-wise products are independent matrix products ``(T x C) @ (C x K)``
over the T blocks of the image. Two variants:

- F(6x6, 3x3) (64 products, 1.78 multiplies an output against the direct 9),
  with the compiled kernels (:mod:`sruc.engine.native`, ``winograd.c``): each
  layer is one C call that transforms, multiplies and transforms back a group
  of blocks at a time while they are in the core's cache; with a
  :class:`WinogradStack`'s ``head`` and ``tail`` the convolutions before and
  after the stack (VDSR's 1 -> 64 and 64 -> 1) run in C too, straight into and
  out of its buffers (:class:`sruc.engine.fused.ConvChain` does this for VDSR);
- F(4x4, 3x3) (36 products, 2.25 multiplies an output): where no C compiler
  works, its transforms as a handful of whole-tensor PyTorch additions over a
  strip of blocks at a time and the products as one ``torch.bmm``; and with
  bf16 products (compiled transforms, oneDNN's bf16 ``bmm``), whose rounding
  F(6x6, 3x3)'s larger coefficients would amplify.

What this gives (``benchmarks/engines.py``, README "Speed"): the fastest fp32
route sruc has on CPUs, and so what ``--engine auto`` runs in fp32 there. The
result equals the direct convolution to fp32 rounding (relative error ~1e-6),
not to the bit, so a tiled run differs from an untiled one in the last bits
(at most one 8-bit level, in under 1% of pixels); ``--engine torch`` is the
exact direct path.

Layout: activations live in two zero-padded NHWC buffers (``N, m*th+2,
m*tw+2, C`` for ``th x tw`` blocks), one read and one written per layer, so no
layer pads or copies its input. Every view the transforms use is made once per
geometry (:class:`Plan`), and a :class:`WinogradStack` keeps the last plan.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from sruc.engine.native import Kernels

#: The 6x3 kernel transform of F(4x4, 3x3) with the points 0, +-1, +-2 (Lavin & Gray);
#: B^T and A^T are written out as additions in :func:`_input_rows` and :func:`_output_rows`.
_G = torch.tensor(
    [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    dtype=torch.float64,
)  # fmt: skip
#: The element of the 6x6 product whose output transform is 1 at all 16 positions
#: (column 1 of A^T is all ones): a bias added there is added to every output.
_BIAS_AT = 1 * 6 + 1
#: A plan whose buffers are larger than this (each) is not kept for the next call:
#: tiles (512 px and their margins on CPUs: 78 MB) reuse theirs, a whole large
#: image frees its own.
KEEP_PLAN_BYTES = 96 * 2**20
#: The 8x3 kernel transform of F(6x6, 3x3), points 0, +-1, +-2, +-1/2 (Lavin & Gray;
#: its B^T and A^T are in scripts/gen_winograd6.py, which writes them into winograd.c).
_G6 = torch.tensor(
    [[1, 0, 0], [-2 / 9, -2 / 9, -2 / 9], [-2 / 9, 2 / 9, -2 / 9],
     [1 / 90, 1 / 45, 2 / 45], [1 / 90, -1 / 45, 2 / 45],
     [32 / 45, 16 / 45, 8 / 45], [32 / 45, -16 / 45, 8 / 45], [0, 0, 1]],
    dtype=torch.float64,
)  # fmt: skip
#: Blocks per strip and thread aimed at by F(4x4, 3x3) (compiled F(6x6, 3x3) works in
#: groups instead): about 300 keep one strip's transforms (36 x T x C floats in and
#: out) in a CPU's last-level cache.
_STRIP_BLOCKS = 288
#: Blocks per group of the compiled F(6x6, 3x3) layer: each thread transforms a group,
#: multiplies it and transforms it back while its V and M (64 x 12 x C floats each:
#: 393 KB together for 64 channels) are in the core's L2 cache.
_GROUP_BLOCKS = 12


def block_size(kernels: Kernels | None, products: torch.dtype, channels: int) -> int:
    """The output block of the Winograd variant a stack runs: 6 (F(6x6, 3x3): 1.78
    multiplies per output against 2.25, fewer passes over memory) with the compiled
    transforms in float32, else 4 (F(4x4, 3x3): the PyTorch transforms, and bf16
    products, whose rounding F(6x6, 3x3)'s larger coefficients would amplify)."""
    from sruc.engine.native import LANES

    compiled = kernels is not None and channels % LANES == 0
    return 6 if compiled and products == torch.float32 else 4


def transform_weights(
    weight: torch.Tensor, block: int = 4, compute: torch.dtype = torch.float64
) -> torch.Tensor:
    """``(K, C, 3, 3)`` kernels -> ``G g G^T`` for each, as ``(a*a, C, K)`` float32
    (``a`` = ``block`` + 2 points), computed in ``compute`` (float64 for inference's
    once-per-model transform; training's every-step ones in float32)."""
    g = (_G if block == 4 else _G6).to(compute)
    k, c = weight.shape[:2]
    a = g.shape[0]
    # (3, 3, C, K), then G along each of the first two axes: plain matrix products
    # that write (a, a, C, K) in place (a batch of 3x3 ones, or a permuted copy of the
    # result, would take longer than the arithmetic).
    w = weight.detach().to(device="cpu", dtype=compute).permute(2, 3, 1, 0).reshape(3, -1)
    t = (g @ w).view(a, 3, c * k)
    return (g @ t).view(a * a, c, k).float().contiguous()


def weight_gradient(du: torch.Tensor, block: int = 6) -> torch.Tensor:
    """The backward of :func:`transform_weights`: the gradient of ``(a*a, C, K)``
    transformed kernels -> that of the ``(K, C, 3, 3)`` kernels, ``G^T du G``."""
    g = (_G if block == 4 else _G6).to(du.dtype)
    a, c, k = g.shape[0], du.shape[1], du.shape[2]
    t = (g.T @ du.reshape(a, -1)).view(3, a, c * k)
    return (g.T @ t).view(3, 3, c, k).permute(3, 2, 0, 1)


def _input_rows(d: list[torch.Tensor], o: list[torch.Tensor], t: list[torch.Tensor]) -> None:
    """``o = B^T d`` along a list of six equally shaped tensors (rows of the window), in
    12 passes with the shared terms once; ``t``: two scratch tensors of the same shape."""
    d0, d1, d2, d3, d4, d5 = d
    o0, o1, o2, o3, o4, o5 = o
    a, b = t
    torch.add(d4, d2, alpha=-4, out=a)
    torch.add(d3, d1, alpha=-4, out=b)
    torch.add(a, b, out=o1)  # -4 d1 - 4 d2 + d3 + d4
    torch.sub(a, b, out=o2)  # 4 d1 - 4 d2 - d3 + d4
    torch.sub(d4, d2, out=a)
    torch.sub(d3, d1, out=b)
    torch.add(a, b, alpha=2, out=o3)  # -2 d1 - d2 + 2 d3 + d4
    torch.add(a, b, alpha=-2, out=o4)  # 2 d1 - d2 - 2 d3 + d4
    torch.add(d4, d0, alpha=4, out=o0).add_(d2, alpha=-5)  # 4 d0 - 5 d2 + d4
    torch.add(d5, d1, alpha=4, out=o5).add_(d3, alpha=-5)  # 4 d1 - 5 d3 + d5


def _output_rows(m: list[torch.Tensor], y: list[torch.Tensor], t: list[torch.Tensor]) -> None:
    """``y = A^T m`` along a list of six equally shaped tensors; ``t``: four scratch ones."""
    m0, m1, m2, m3, m4, m5 = m
    y0, y1, y2, y3 = y
    s12, d12, s34, d34 = t
    torch.add(m1, m2, out=s12)
    torch.sub(m1, m2, out=d12)
    torch.add(m3, m4, out=s34)
    torch.sub(m3, m4, out=d34)
    torch.add(s12, s34, out=y0).add_(m0)  # m0 + m1 + m2 + m3 + m4
    torch.add(d12, d34, alpha=2, out=y1)  # m1 - m2 + 2 (m3 - m4)
    torch.add(s12, s34, alpha=4, out=y2)  # m1 + m2 + 4 (m3 + m4)
    torch.add(d12, d34, alpha=8, out=y3).add_(m5)  # m1 - m2 + 8 (m3 - m4) + m5


class _Strip(NamedTuple):
    """The views one strip of block rows works on (made once, by :class:`Plan`)."""

    rows_in: list[torch.Tensor]  # the six window rows of every block: (N, na, Wp, C)
    rows_out: list[torch.Tensor]
    rows_tmp: list[torch.Tensor]
    cols_in: list[torch.Tensor]  # their six window columns: (6, N, na, tw, C)
    cols_out: list[torch.Tensor]  # into v
    cols_tmp: list[torch.Tensor]
    v: torch.Tensor  # (36, T, C), T = N * na * tw blocks
    m: torch.Tensor  # (36, T, K)
    m_rows: list[torch.Tensor]
    q: list[torch.Tensor]
    q_tmp: list[torch.Tensor]
    q_cols: list[torch.Tensor]
    pixels: list[torch.Tensor]  # the output pixels (4p + i, 4q + j) for one j each
    pixels_tmp: list[torch.Tensor]
    out: torch.Tensor  # the strip's output rows, for the ReLU
    bias_at: torch.Tensor  # m's element whose output transform is all ones


class Plan:
    """Buffers and views for one geometry: ``n`` images of ``height x width`` with
    ``channels`` channels in and out of every layer. With ``kernels`` (and a multiple
    of :data:`~sruc.engine.native.LANES` channels) the transforms run compiled."""

    def __init__(
        self,
        n: int,
        height: int,
        width: int,
        channels: int,
        threads: int = 1,
        kernels: Kernels | None = None,
        products: torch.dtype = torch.float32,
    ) -> None:
        from sruc.engine.native import LANES

        self.shape = (n, height, width, channels)
        self.threads = threads
        self.kernels = kernels if kernels is not None and channels % LANES == 0 else None
        if products != torch.float32 and (self.kernels is None or products != torch.bfloat16):
            raise ValueError("bf16 products need the compiled transforms and a multiple of 16")
        self.products = products
        self.block = b = block_size(self.kernels, products, channels)
        th, tw = -(-height // b), -(-width // b)
        hp, wp, c = b * th + 2, b * tw + 2, channels
        self.bufs = [torch.zeros(n, hp, wp, c), torch.zeros(n, hp, wp, c)]
        self.current = 0
        self.strips: list[list[_Strip]] = []
        self.zero_bias = torch.zeros(c)
        if b == 6:  # whole layers in C, each thread in its own scratch (made on use)
            self.tiles = (th, tw)
            self.scratch = torch.empty(0)
            return
        # block rows per strip: each thread takes its share of every pass over a strip
        blocks = _STRIP_BLOCKS * max(1, threads)
        rows = max(1, min(th, blocks // max(1, n * tw)))
        t_max = n * rows * tw
        if self.kernels is not None:
            points = (b + 2) ** 2  # the compiled transforms need only v and m
            self.v = torch.empty(points, t_max, c, dtype=products)
            self.m = torch.empty(points, t_max, c, dtype=products)
            self.rows = [(a0, min(rows, th - a0)) for a0 in range(0, th, rows)]
            return
        r = torch.empty(6, n, rows, wp, c)
        tr = torch.empty(2, n, rows, wp, c)  # scratch of the row transform
        tc = torch.empty(2, 6, n, rows, tw, c)  # and of the column transform
        v = torch.empty(36, t_max, c)
        m = torch.empty(36, t_max, c)
        q = torch.empty(4, 6, t_max, c)
        tq = torch.empty(4, 6, t_max, c)
        to = torch.empty(4, 4, t_max, c)
        for src, dst in ((self.bufs[0], self.bufs[1]), (self.bufs[1], self.bufs[0])):
            steps = []
            for a0 in range(0, th, rows):
                na = min(rows, th - a0)
                t = n * na * tw
                x = src[:, 4 * a0 : 4 * (a0 + na) + 2]
                rn = r[:, :, :na]
                vt, mt = v[:, :t], m[:, :t]
                vv, mv = vt.view(6, 6, n, na, tw, c), mt.view(6, 6, t, c)
                out = dst[:, 1 + 4 * a0 : 1 + 4 * (a0 + na), 1 : 1 + 4 * tw]
                # (4 rows p, 4 columns q, n, na, tw, c): output pixel (4a + p, 4b + q)
                o6 = out.unflatten(1, (na, 4)).unflatten(3, (tw, 4)).permute(2, 4, 0, 1, 3, 5)
                steps.append(
                    _Strip(
                        rows_in=[x[:, i::4][:, :na] for i in range(6)],  # window rows
                        rows_out=list(rn),
                        rows_tmp=list(tr[:, :, :na]),
                        cols_in=[rn[:, :, :, j::4][:, :, :, :tw] for j in range(6)],
                        cols_out=[vv[:, j] for j in range(6)],
                        cols_tmp=list(tc[:, :, :, :na]),
                        v=vt,
                        m=mt,
                        m_rows=[mv[i] for i in range(6)],
                        q=[q[p, :, :t] for p in range(4)],
                        q_tmp=[tq[p, :, :t] for p in range(4)],
                        q_cols=[q[:, j, :t].view(4, n, na, tw, c) for j in range(6)],
                        pixels=[o6[:, k] for k in range(4)],
                        pixels_tmp=[to[k, :, :t].view(4, n, na, tw, c) for k in range(4)],
                        out=out,
                        bias_at=mt[_BIAS_AT],
                    )
                )
            self.strips.append(steps)

    def load(self, x: torch.Tensor) -> None:
        """Put ``x`` (N, C, H, W; any memory layout) in the first buffer."""
        _, h, w, _ = self.shape
        buf = self.bufs[0]
        buf[:, 1 : 1 + h, 1 : 1 + w] = x.permute(0, 2, 3, 1)
        buf[:, 1 + h :].zero_()
        buf[:, :, 1 + w :].zero_()
        self.current = 0

    def head(self, x: torch.Tensor, conv: EdgeConv) -> None:
        """Put ``conv(x)`` (x: N, Cin, H, W float32; the compiled kernels only) in the
        first buffer: the convolution before the stack, computed into its padding."""
        assert self.kernels is not None
        n, h, w, c = self.shape
        if tuple(x.shape) != (n, conv.weight.shape[0] // 9, h, w) or conv.weight.shape[1] != c:
            raise ValueError(f"a head of {tuple(conv.weight.shape)} cannot read {tuple(x.shape)}")
        xp = F.pad(x.float(), (1, 1, 1, 1)).contiguous()  # NCHW with its zero border
        buf = self.bufs[0]
        _, hp, wp, _ = buf.shape
        self.kernels.lib.sruc_conv_head(
            xp.data_ptr(), n, x.shape[1], h, w, conv.weight.data_ptr(), conv.bias.data_ptr(),
            int(conv.relu), None, buf.data_ptr(), hp, wp, c, torch.get_num_threads(),
        )  # fmt: skip
        buf[:, 1 + h :].zero_()
        buf[:, :, 1 + w :].zero_()
        self.current = 0

    def tail(self, conv: EdgeConv) -> torch.Tensor:
        """``conv`` of the current buffer, the convolution after the stack (the compiled
        kernels only), as a new (N, Kout, H, W) float32 tensor."""
        assert self.kernels is not None
        n, h, w, c = self.shape
        src = self.bufs[self.current]
        _, hp, wp, _ = src.shape
        kout = conv.weight.shape[0]
        y = torch.empty(n, kout, h, w)
        self.kernels.lib.sruc_conv_tail(
            src.data_ptr(), n, hp, wp, c, h, w, conv.weight.data_ptr(), conv.bias.data_ptr(),
            int(conv.relu), y.data_ptr(), kout, torch.get_num_threads(),
        )  # fmt: skip
        return y

    def conv(self, u: torch.Tensor, bias: torch.Tensor | None, relu: bool) -> None:
        """One 3x3 convolution (padding 1) of the current buffer into the other."""
        if self.kernels is not None:
            self._conv_compiled(self.kernels, u, bias, relu)
            return
        for st in self.strips[self.current]:
            _input_rows(st.rows_in, st.rows_out, st.rows_tmp)  # B^T d along the rows ...
            _input_rows(st.cols_in, st.cols_out, st.cols_tmp)  # ... and the columns
            torch.bmm(st.v, u, out=st.m)  # (36, T, C) @ (36, C, K)
            if bias is not None:
                st.bias_at.add_(bias)
            _output_rows(st.m_rows, st.q, st.q_tmp)  # A^T m along one axis ...
            _output_rows(st.q_cols, st.pixels, st.pixels_tmp)  # ... the other, into pixels
            if relu:
                st.out.relu_()
        self.current = 1 - self.current
        _, h, w, _ = self.shape
        dst = self.bufs[self.current]
        dst[:, 1 + h :].zero_()  # the blocks' overhang past the image is padding again
        dst[:, :, 1 + w :].zero_()

    def _conv_compiled(
        self, k: Kernels, u: torch.Tensor, bias: torch.Tensor | None, relu: bool
    ) -> None:
        """:meth:`conv` with the fused transforms of ``winograd.c`` (which also zero the
        blocks' overhang past the image)."""
        n, h, w, c = self.shape
        src, dst = self.bufs[self.current], self.bufs[1 - self.current]
        _, hp, wp, _ = src.shape
        b = (self.zero_bias if bias is None else bias).contiguous()
        threads = torch.get_num_threads()
        r = int(relu)
        x_, d_ = src.data_ptr(), dst.data_ptr()
        if self.block == 6:  # F(6x6, 3x3), float32: transforms and products in one call
            th, tw = self.tiles
            groups = -(-n * th * tw // _GROUP_BLOCKS)
            per = 64 * _GROUP_BLOCKS * 2 * c  # scratch floats per thread
            if self.scratch.numel() < threads * per:
                self.scratch = torch.empty(threads * per)
            s_ = self.scratch.data_ptr()

            def run(part: int, g0: int, g1: int, omp_threads: int) -> None:
                k.lib.sruc_wino6_layer(
                    x_, hp, wp, c, th, tw, n, u.data_ptr(), b.data_ptr(), r, h, w, d_,
                    s_ + part * per * 4, _GROUP_BLOCKS, g0, g1, omp_threads,
                )  # fmt: skip

            if k.openmp or threads == 1:
                run(0, 0, groups, threads)
            else:  # a build without OpenMP (Apple's clang): ranges of groups on threads
                _run_parts(run, groups, threads)
            self.current = 1 - self.current
            return
        tw = (wp - 2) // self.block
        v, m = self.v, self.m
        stride = v.shape[1] * c
        bf16 = int(self.products == torch.bfloat16)
        v_, m_ = v.data_ptr(), m.data_ptr()
        for a0, na in self.rows:
            t = n * na * tw
            k.lib.sruc_wino_in(x_, hp, wp, c, a0, na, tw, n, v_, stride, bf16, threads)
            torch.bmm(v[:, :t], u, out=m[:, :t])
            k.lib.sruc_wino_out(
                m_, stride, bf16, b.data_ptr(), r, a0, na, tw, n, h, w, d_, hp, wp, c, threads
            )
        self.current = 1 - self.current

    def result(self) -> torch.Tensor:
        """The current buffer's image as an (N, C, H, W) view of NHWC memory."""
        _, h, w, _ = self.shape
        return self.bufs[self.current][:, 1 : 1 + h, 1 : 1 + w].permute(0, 3, 1, 2)


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _run_parts(run: Callable[[int, int, int, int], None], groups: int, threads: int) -> None:
    """``run(part, g0, g1, 1)`` for ``threads`` ranges of the ``groups`` at once, on
    Python threads: ctypes lets go of the GIL for a call, so they run in parallel
    (how compiled kernels without OpenMP still use every thread)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < threads:
            # (a smaller pool is left to finish what other stacks gave it, not shut down)
            _pool_size = max(threads, os.cpu_count() or 1)
            _pool = ThreadPoolExecutor(_pool_size, "sruc-winograd")
        pool = _pool
    step = -(-groups // threads)
    parts = [
        pool.submit(run, i, g0, min(groups, g0 + step), 1)
        for i, g0 in enumerate(range(0, groups, step))
    ]
    for part in parts:
        part.result()


class EdgeConv(NamedTuple):
    """A 3x3, padding-1 convolution before (``head``) or after (``tail``) a compiled
    stack, its weights in the layout of ``winograd.c``'s ``sruc_conv_head`` / ``_tail``."""

    weight: torch.Tensor
    bias: torch.Tensor
    relu: bool

    @classmethod
    def head(cls, w: torch.Tensor, b: torch.Tensor | None, relu: bool) -> EdgeConv:
        k, cin = w.shape[:2]  # -> (9 * Cin, K), row (dy * 3 + dx) * Cin + ci
        weight = w.detach().float().cpu().permute(2, 3, 1, 0).reshape(9 * cin, k)
        return cls(weight.contiguous(), _bias(b, k), relu)

    @classmethod
    def tail(cls, w: torch.Tensor, b: torch.Tensor | None, relu: bool) -> EdgeConv:
        k, c = w.shape[:2]  # -> (Kout, 9 * C), column (dy * 3 + dx) * C + c
        weight = w.detach().float().cpu().permute(0, 2, 3, 1).reshape(k, 9 * c)
        return cls(weight.contiguous(), _bias(b, k), relu)


def _bias(b: torch.Tensor | None, k: int) -> torch.Tensor:
    return torch.zeros(k) if b is None else b.detach().float().cpu().contiguous()


class WinogradStack:
    """Consecutive 3x3, padding-1 convolutions of ``C -> C`` channels, each optionally
    followed by a ReLU, through Winograd on the CPU (the variant: :func:`block_size`)."""

    def __init__(
        self,
        layers: list[tuple[torch.Tensor, torch.Tensor | None, bool]],
        kernels: Kernels | None = None,
        products: torch.dtype = torch.float32,
        head: tuple[torch.Tensor, torch.Tensor | None, bool] | None = None,
        tail: tuple[torch.Tensor, torch.Tensor | None, bool] | None = None,
    ) -> None:
        """``kernels``: the compiled transforms (:func:`sruc.engine.native.kernels`), or
        None for the PyTorch ones. ``products``: the dtype of the 36 matrix products,
        float32, or bfloat16 on CPUs that have it (the compiled transforms only: the
        transforms and the activations between layers stay float32). ``head``, ``tail``
        (compiled kernels only): a 3x3, padding-1 convolution from the input's channels
        into the stack and one out of it, each ``(weight, bias, relu)``, run in float32
        straight into and out of the stack's buffers (:func:`edges_fit` says when)."""
        if (head is not None or tail is not None) and kernels is None:
            raise ValueError("head and tail convolutions need the compiled kernels")
        self.kernels = kernels
        self.products = products
        self.head = None if head is None else EdgeConv.head(*head)
        self.tail = None if tail is None else EdgeConv.tail(*tail)
        self.block = block_size(kernels, products, layers[0][0].shape[1]) if layers else 4
        self.layers = [
            (
                transform_weights(w, self.block).to(products),
                None if b is None else b.detach().float().cpu(),
                relu,
            )
            for w, b, relu in layers
        ]
        self._plan: Plan | None = None
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, C, H, W) float32 (or bfloat16) on the CPU (with a ``head``: its
        input). Returns the result as a new float32 tensor: channels-last (what the next
        convolution reads), or with a ``tail`` its (N, Kout, H, W) output. Calls from
        several threads take turns: the kept buffers serve one call at a time."""
        n, _, h, w = x.shape
        c = self.layers[0][0].shape[1] if self.layers else x.shape[1]
        key, threads = (n, h, w, c), torch.get_num_threads()
        with self._lock:
            if self._plan is None or (self._plan.shape, self._plan.threads) != (key, threads):
                self._plan = None  # free the old buffers before making the new ones
                self._plan = Plan(n, h, w, c, threads, self.kernels, self.products)
            plan = self._plan
            if self.head is not None:
                plan.head(x, self.head)
            else:
                plan.load(x)
            for u, b, relu in self.layers:
                plan.conv(u, b, relu)
            if self.tail is not None:
                out = plan.tail(self.tail)
            else:
                out = plan.result().contiguous(memory_format=torch.channels_last)
            if plan.bufs[0].nbytes > KEEP_PLAN_BYTES:
                self._plan = None  # a whole big image's buffers go with this call
            return out


def edges_fit(
    head: torch.Tensor, tail: torch.Tensor, head_padding: int, tail_padding: int, channels: int
) -> bool:
    """Whether convolutions with these weights can be a compiled stack's ``head`` and
    ``tail``: 3x3, padding 1, from and into ``channels`` (a multiple of
    :data:`~sruc.engine.native.LANES`)."""
    from sruc.engine.native import LANES

    return (
        channels % LANES == 0
        and tuple(head.shape[2:]) == (3, 3) == tuple(tail.shape[2:])
        and head_padding == 1 == tail_padding
        and head.shape[0] == channels == tail.shape[1]
    )


def eligible(weight: torch.Tensor, padding: int, min_channels: int) -> bool:
    """Whether a convolution can run in a :class:`WinogradStack`: 3x3, padding 1,
    as many outputs as inputs, at least ``min_channels`` of them."""
    k, c, kh, kw = weight.shape
    return (kh, kw) == (3, 3) and padding == 1 and k == c and c >= min_channels


__all__ = [
    "KEEP_PLAN_BYTES",
    "EdgeConv",
    "Plan",
    "WinogradStack",
    "edges_fit",
    "eligible",
    "transform_weights",
    "weight_gradient",
]
