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
    x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool
) -> torch.Tensor:
    in_len = x.shape[dim]
    idx, w = _contributions(in_len, out_len, float(scale), antialias)
    idx = idx.to(x.device)
    w = w.to(device=x.device, dtype=x.dtype)
    # Accumulate one tap at a time: memory stays at one output-sized tensor
    # plus one gathered slice, whatever the number of taps (6 when enlarging,
    # up to 4/scale + 2 when shrinking).
    shape = [1] * x.ndim
    shape[dim] = out_len
    out: torch.Tensor | None = None
    for t in range(idx.shape[1]):
        wt = w[:, t]
        if not bool((wt != 0).any()):
            continue  # MATLAB drops all-zero taps; they would add nothing
        term = torch.index_select(x, dim, idx[:, t]) * wt.reshape(shape)
        out = term if out is None else out.add_(term)
    assert out is not None
    return out


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
    if not x.is_floating_point():
        raise TypeError(f"imresize needs a floating-point tensor, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"imresize needs at least 2 dimensions, got shape {tuple(x.shape)}")
    h, w = x.shape[-2], x.shape[-1]
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"output size must be positive, got {out_h}x{out_w}")
        scales = (out_h / h, out_w / w)
    else:
        assert scale is not None
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"scale must be a positive number, got {scale}")
        scales = (float(scale), float(scale))
        out_h, out_w = output_size(h, scale), output_size(w, scale)
    lengths = (out_h, out_w)
    # Smaller scale first, rows first on a tie (Python's sort is stable, as
    # MATLAB's sort is).
    order = sorted(range(2), key=lambda d: scales[d])
    out = x
    for d in order:
        if lengths[d] == out.shape[d - 2] and scales[d] == 1.0:
            continue  # identity along this dimension
        out = _resize_dim(out, x.ndim - 2 + d, lengths[d], scales[d], antialias)
    return out if out is not x else x.clone()
