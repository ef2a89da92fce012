"""Plain, loop-based float64 reference for MATLAB's ``imresize(A, scale, 'bicubic')``.

This module is written from MATLAB's documented algorithm only, independently of
``sruc.core.resize``, so that the two can be checked against each other.  It is deliberately
slow and simple: pure Python loops over output pixels and kernel taps, numpy only as a
container.  Do not "optimise" it; its value is that every step is easy to read.

Algorithm (per dimension, 1-based indices as in MATLAB):

* Keys cubic kernel with ``a = -0.5``::

      |x| <= 1:      1.5|x|^3 - 2.5|x|^2 + 1
      1 < |x| <= 2: -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2
      otherwise:     0

* kernel width 4; when the scale ``s < 1`` (antialiasing) the kernel is stretched:
  ``h(x) = s * cubic(s * x)`` with width ``4 / s``.
* output index ``i = 1..out``: ``u = i/s + 0.5*(1 - 1/s)``,
  ``left = floor(u - width/2)``, ``P = ceil(width) + 2``, taps ``j = left + 0..P-1``,
  weights ``h(u - j)`` normalised to sum to 1; out-of-range taps are mirrored
  symmetrically (``0 -> 1``, ``-1 -> 2``, ``n+1 -> n``, period ``2n``).
* the two dimensions are resized in order of increasing scale (rows first on a tie),
  in double precision with no rounding between the passes.
* output length ``ceil(in * s)``, guarded against float error so that e.g.
  ``255 * (1/3) == 85`` and ``50 * 1.1 == 55.00000000000001`` give 85 and 55.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

KERNEL_WIDTH = 4.0

# Relative tolerance under which ``in * scale`` is taken to be the integer it is
# within float error of, before the ceiling is applied.
_SIZE_RTOL = 1e-10


def ref_cubic(x: float) -> float:
    """Keys cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    ax = abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    if ax <= 1.0:
        return 1.5 * ax3 - 2.5 * ax2 + 1.0
    if ax <= 2.0:
        return -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    return 0.0


def ref_output_length(in_length: int, scale: float) -> int:
    """Return ``ceil(in_length * scale)``, guarded against float error."""
    x = in_length * scale
    nearest = round(x)
    if abs(x - nearest) <= _SIZE_RTOL * max(1.0, abs(x)):
        return int(nearest)
    return math.ceil(x)


def ref_mirror_index(j: int, n: int) -> int:
    """Map a 1-based index ``j`` onto ``1..n`` by symmetric mirroring.

    The index sequence is ``[1, 2, ..., n, n, n-1, ..., 1]`` repeated with period
    ``2n``, so ``0 -> 1``, ``-1 -> 2`` and ``n+1 -> n``.
    """
    aux = list(range(1, n + 1)) + list(range(n, 0, -1))
    return aux[(j - 1) % (2 * n)]


def ref_contributions(
    in_length: int, out_length: int, scale: float, antialias: bool = True
) -> list[list[tuple[int, float]]]:
    """Return, per output index, the list of ``(0-based input index, weight)`` taps.

    With ``antialias=False`` (MATLAB's ``'Antialiasing', false``) the kernel is not
    stretched when shrinking.
    """
    if scale < 1.0 and antialias:
        width = KERNEL_WIDTH / scale

        def h(x: float) -> float:
            return scale * ref_cubic(scale * x)

    else:
        width = KERNEL_WIDTH

        def h(x: float) -> float:
            return ref_cubic(x)

    num_taps = math.ceil(width) + 2
    result: list[list[tuple[int, float]]] = []
    for i in range(1, out_length + 1):
        u = i / scale + 0.5 * (1.0 - 1.0 / scale)
        left = math.floor(u - width / 2.0)
        taps = [left + p for p in range(num_taps)]
        weights = [h(u - j) for j in taps]
        total = 0.0
        for w in weights:
            total += w
        row: list[tuple[int, float]] = []
        for j, w in zip(taps, weights, strict=True):
            row.append((ref_mirror_index(j, in_length) - 1, w / total))
        result.append(row)
    return result


def ref_resize_rows(
    a: np.ndarray, out_rows: int, scale: float, antialias: bool = True
) -> np.ndarray:
    """Resize along dimension 0 (rows / height) of a 2-D float64 array."""
    in_rows, cols = a.shape
    contrib = ref_contributions(in_rows, out_rows, scale, antialias)
    out = np.zeros((out_rows, cols), dtype=np.float64)
    for i in range(out_rows):
        for c in range(cols):
            acc = 0.0
            for k, w in contrib[i]:
                acc += w * float(a[k, c])
            out[i, c] = acc
    return out


def ref_resize_cols(
    a: np.ndarray, out_cols: int, scale: float, antialias: bool = True
) -> np.ndarray:
    """Resize along dimension 1 (columns / width) of a 2-D float64 array."""
    rows, in_cols = a.shape
    contrib = ref_contributions(in_cols, out_cols, scale, antialias)
    out = np.zeros((rows, out_cols), dtype=np.float64)
    for r in range(rows):
        for i in range(out_cols):
            acc = 0.0
            for k, w in contrib[i]:
                acc += w * float(a[r, k])
            out[r, i] = acc
    return out


def ref_imresize(
    a: np.ndarray,
    scale: float | Sequence[float] | None = None,
    size: Sequence[int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """MATLAB ``imresize(a, scale, 'bicubic')`` (antialiased) for a 2-D array.

    Exactly one of ``scale`` (a number, or a per-dimension pair) and ``size``
    (``(rows, cols)``) must be given.  With ``size`` the per-dimension scale is
    ``out / in``.  ``antialias=False`` is MATLAB's ``'Antialiasing', false``.
    Computation is in float64 and the result is float64.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {a.shape}")
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    in_rows, in_cols = a.shape
    if size is not None:
        out_rows, out_cols = int(size[0]), int(size[1])
        s_rows = out_rows / in_rows
        s_cols = out_cols / in_cols
    else:
        assert scale is not None
        if isinstance(scale, (int, float)):
            s_rows = s_cols = float(scale)
        else:
            s_rows, s_cols = float(scale[0]), float(scale[1])
        out_rows = ref_output_length(in_rows, s_rows)
        out_cols = ref_output_length(in_cols, s_cols)

    # Increasing scale; rows first on a tie (a stable sort, as MATLAB's sort is).
    if s_cols < s_rows:
        tmp = ref_resize_cols(a, out_cols, s_cols, antialias)
        return ref_resize_rows(tmp, out_rows, s_rows, antialias)
    tmp = ref_resize_rows(a, out_rows, s_rows, antialias)
    return ref_resize_cols(tmp, out_cols, s_cols, antialias)
