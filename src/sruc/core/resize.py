"""MATLAB-exact bicubic ``imresize``, vectorised in torch (CPU and CUDA).

MATLAB's ``imresize(A, scale, 'bicubic')`` is what every super-resolution paper
uses to make its low-resolution inputs, so reproducing published numbers needs
exactly it (``docs/PROTOCOL.md``):

* Keys' cubic convolution kernel with ``a = -0.5``;
* when shrinking, antialiasing: the kernel is stretched by ``1/scale`` and its
  height scaled by ``scale``, so it averages over the source footprint;
* output size ``ceil(in * scale)``, output pixel ``x`` (1-based) sampled at
  ``u = x / scale + 0.5 * (1 - 1 / scale)`` in input coordinates;
* weights normalised to sum to one, out-of-range taps mirrored symmetrically
  (``... 2 1 1 2 ... n n n-1 ...``);
* the two dimensions resized one after the other, the one with the smaller
  scale first (rows first on a tie), in the input's floating-point precision.

``torch.nn.functional.interpolate(mode="bicubic")`` uses ``a = -0.75`` and no
antialiasing; it is a different resize and is not used here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch

# Keys' cubic parameter in MATLAB's imresize.
_A = -0.5
# Support of the unscaled cubic kernel, in pixels.
_KERNEL_WIDTH = 4.0
# Tolerance when rounding ``in * scale`` to an output size, so that e.g.
# 255 * (1/3) = 84.99999999999999 still gives 85 rather than 86.
_SIZE_EPS = 1e-9


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5, evaluated elementwise."""
    ax = x.abs()
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (_A + 2) * ax3 - (_A + 3) * ax2 + 1
    far = _A * ax3 - 5 * _A * ax2 + 8 * _A * ax - 4 * _A
    return torch.where(ax <= 1, near, torch.where(ax < 2, far, torch.zeros_like(ax)))


def output_size(in_size: int, scale: float) -> int:
    """MATLAB's output length for one dimension: ``ceil(in_size * scale)``."""
    return max(1, math.ceil(in_size * scale - _SIZE_EPS))


@lru_cache(maxsize=64)
def _contributions(
    in_len: int, out_len: int, scale: float, antialias: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (0-based, mirrored) and weights, each of shape ``(out_len, taps)``.

    Computed in float64 on the CPU; callers move and cast them.
    """
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    if scale < 1 and antialias:
        width = _KERNEL_WIDTH / scale
    else:
        width = _KERNEL_WIDTH
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based
    dist = u[:, None] - idx
    if scale < 1 and antialias:
        weights = scale * cubic(dist * scale)
    else:
        weights = cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric mirroring of 1-based indices: aux = [1..n, n..1], period 2n.
    period = 2 * in_len
    j = torch.remainder(idx.long() - 1, period)
    j = torch.where(j < in_len, j, period - 1 - j)
    return j, weights


def _resize_dim(
    x: torch.Tensor,
    dim: int,
    out_len: int,
    scale: float,
    antialias: bool,
    span: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Resize ``x`` along ``dim`` to ``out_len``, or only output indices ``[o0, o1)``.

    ``span = (o0, o1, offset, in_len)``: ``x`` then holds input indices
    ``[offset, offset + x.shape[dim])`` of an axis ``in_len`` long, and only those
    outputs are made. Taps are skipped by the whole axis's table, so each output
    is computed by the same operations in the same order as in a whole resize.
    """
    o0, o1, offset, in_len = span or (0, out_len, 0, x.shape[dim])
    idx, w = _contributions(in_len, out_len, float(scale), antialias)
    w = w.to(dtype=x.dtype)
    used = [t for t in range(idx.shape[1]) if bool((w[:, t] != 0).any())]
    idx = (idx[o0:o1] - offset).to(x.device)
    w = w[o0:o1].to(device=x.device)
    # Accumulate one tap at a time: memory stays at one output-sized tensor
    # plus one gathered slice, whatever the number of taps (6 when enlarging,
    # up to 4/scale + 2 when shrinking).
    shape = [1] * x.ndim
    shape[dim] = o1 - o0
    out: torch.Tensor | None = None
    for t in used:  # MATLAB drops all-zero taps; they would add nothing
        term = torch.index_select(x, dim, idx[:, t]) * w[:, t].reshape(shape)
        out = term if out is None else out.add_(term)
    assert out is not None
    return out


def _lengths_and_scales(
    h: int, w: int, scale: float | None, size: Sequence[int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """The output ``(height, width)`` and the per-dimension scales, as MATLAB."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"output size must be positive, got {out_h}x{out_w}")
        return (out_h, out_w), (out_h / h, out_w / w)
    assert scale is not None
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be a positive number, got {scale}")
    return (output_size(h, scale), output_size(w, scale)), (float(scale), float(scale))


def imresize(
    x: torch.Tensor,
    scale: float | None = None,
    size: Sequence[int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize the last two dimensions of ``x`` exactly as MATLAB ``imresize(..., 'bicubic')``.

    Args:
        x: a floating-point tensor ``(..., H, W)``; float64 reproduces MATLAB's
            double arithmetic, float32 is faster and within ~1e-6.
        scale: the scale factor for both dimensions; the output is
            ``ceil(H * scale) x ceil(W * scale)``.
        size: alternatively the output ``(height, width)``; the per-dimension
            scale is then ``out / in``, as in MATLAB.
        antialias: antialias when shrinking (MATLAB's default, True).

    Returns:
        The resized tensor, same dtype and device, not clamped or rounded.
    """
    _check(x)
    return imresize_rows(x, None, scale=scale, size=size, antialias=antialias)


def _check(x: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise TypeError(f"imresize needs a floating-point tensor, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"imresize needs at least 2 dimensions, got shape {tuple(x.shape)}")


def source_rows(
    height: int,
    rows: tuple[int, int],
    *,
    scale: float | None = None,
    size: Sequence[int] | None = None,
    antialias: bool = True,
) -> tuple[int, int]:
    """The input rows ``[a, b)`` that output rows ``rows`` of a resize of an image
    ``height`` rows tall read (``size`` is the whole output's ``(height, width)``;
    only its height matters here)."""
    if size is not None:
        size = (size[0], 1)
    (out_h, _), (s, _) = _lengths_and_scales(height, 1, scale, size)
    if out_h == height and s == 1.0:
        return rows
    idx, _ = _contributions(height, out_h, s, antialias)
    taps = idx[rows[0] : rows[1]]
    return int(taps.min()), int(taps.max()) + 1


def imresize_rows(
    x: torch.Tensor,
    rows: tuple[int, int] | None,
    *,
    scale: float | None = None,
    size: Sequence[int] | None = None,
    antialias: bool = True,
    height: int | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Rows ``rows = (r0, r1)`` of :func:`imresize`, bit for bit, from part of the input.

    ``x`` holds input rows ``[offset, offset + x.shape[-2])`` of an image
    ``height`` rows tall (default: ``x`` is the whole image); it must cover
    :func:`source_rows` of ``rows``. ``rows=None`` is the whole output. Each
    output row depends on its own window of input rows only, so a tall output
    can be made band by band with the memory of one band.
    """
    _check(x)
    h = x.shape[-2] if height is None else height
    lengths, scales = _lengths_and_scales(h, x.shape[-1], scale, size)
    r0, r1 = rows if rows is not None else (0, lengths[0])
    # Smaller scale first, rows first on a tie (Python's sort is stable, as
    # MATLAB's sort is).
    order = sorted(range(2), key=lambda d: scales[d])
    out = x
    for d in order:
        if d == 0:
            if lengths[0] == h and scales[0] == 1.0:  # identity along the rows
                out = out[..., r0 - offset : r1 - offset, :]
                continue
            span = (r0, r1, offset, h)
            out = _resize_dim(out, x.ndim - 2, lengths[0], scales[0], antialias, span)
        elif not (lengths[1] == out.shape[-1] and scales[1] == 1.0):
            out = _resize_dim(out, x.ndim - 1, lengths[1], scales[1], antialias)
    shared = out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    return out.clone() if shared else out
