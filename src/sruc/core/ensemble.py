"""Self-ensemble (``--tta``): the network on the 8 flips and rotations of its input.

A convolutional network trained on flipped and rotated patches is nearly, but
not exactly, equivariant to those transforms: its errors differ from one
orientation to another. Running it on each of the 8 symmetries of the square
(the dihedral group: 4 rotations, each with and without a mirror), undoing each
on its output and averaging the 8 cancels part of those errors, the "geometric
self-ensemble" of Lim et al. (EDSR, 2017), at 8 times the work.

Each of the 8 passes is an ordinary run (tiled as without the ensemble, so it
stays seam-free and equal to the untiled result); only the input and output of
the network are transformed, never the bicubic upscale or the colour.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: The number of transforms: 4 rotations by 90 degrees, each with and without a mirror.
TRANSFORMS = 8

ProgressFn = Callable[[int, int], None]


def transform(x: torch.Tensor, k: int) -> torch.Tensor:
    """Transform ``k`` (0..7) of the last two dimensions: ``k % 4`` quarter turns
    anticlockwise, then a left-right mirror when ``k >= 4``. ``k = 0`` is ``x`` itself."""
    y = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def untransform(y: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`transform`: ``untransform(transform(x, k), k) == x``."""
    x = torch.flip(y, dims=(-1,)) if k >= 4 else y
    return torch.rot90(x, -(k % 4), dims=(-2, -1)) if k % 4 else x


def self_ensemble(
    run: Callable[[torch.Tensor, ProgressFn | None], torch.Tensor],
    x: torch.Tensor,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """The mean of ``untransform(run(transform(x, k)), k)`` over the 8 transforms.

    Args:
        run: the network on ``(N, C, H, W)`` (tiled or not), returning the same
            shape; called with a progress function of its own pass (or None).
        x: the network's input.
        progress: called with (steps done, steps total) over all 8 passes, where
            one pass reports ``total`` steps (its tiles).

    The sum is accumulated in ``x``'s dtype in a fixed order, so a result is
    reproducible and a tiled ensemble equals the untiled one exactly.
    """
    out: torch.Tensor | None = None
    for k in range(TRANSFORMS):
        step = None if progress is None else _offset(progress, k)
        y = untransform(run(transform(x, k).contiguous(), step), k)
        out = y.clone() if out is None else out.add_(y)
    assert out is not None
    return out.div_(TRANSFORMS)


Rect = tuple[int, int, int, int]


def source_rect(k: int, height: int, width: int, rect: Rect) -> Rect:
    """The rectangle of ``x`` (``height x width``) that the rectangle ``rect`` of
    ``transform(x, k)`` shows, both as ``(y0, y1, x0, x1)``:
    ``transform(x[..., y0:y1, x0:x1], k)`` is that part of ``transform(x, k)``."""
    y0, y1, x0, x1 = rect
    corners = [_source_point(k, height, width, y, x) for y, x in ((y0, x0), (y1 - 1, x1 - 1))]
    ys, xs = [c[0] for c in corners], [c[1] for c in corners]
    return min(ys), max(ys) + 1, min(xs), max(xs) + 1


def _source_point(k: int, height: int, width: int, i: int, j: int) -> tuple[int, int]:
    """The pixel of ``x`` shown at ``(i, j)`` of ``transform(x, k)``."""
    if k >= 4:  # undo the mirror of the transformed image (width ``height`` if turned)
        j = (height if k % 2 else width) - 1 - j
    m = k % 4  # undo m quarter turns anticlockwise
    if m == 1:
        return j, width - 1 - i
    if m == 2:
        return height - 1 - i, width - 1 - j
    if m == 3:
        return height - 1 - j, i
    return i, j


def _offset(progress: ProgressFn, k: int) -> ProgressFn:
    def report(done: int, total: int) -> None:
        progress(k * total + done, TRANSFORMS * total)

    return report


__all__ = ["TRANSFORMS", "self_ensemble", "source_rect", "transform", "untransform"]
