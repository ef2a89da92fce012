"""Seam-free tiled inference.

A model made of "same"-padded convolutions computes each output pixel from the
input pixels within its receptive-field radius ``r``. If each tile is cut from
the input with a margin of at least ``r`` on every side that is not an image
border, and only the tile's centre is kept, every kept pixel sees exactly what
it would see in a whole-image pass: at a true image border the tile's zero
padding is the image's zero padding. The stitched result then equals the
untiled one (up to float rounding of a different convolution algorithm), so
there are no seams to hide and no blending is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from sruc.errors import DeviceError

#: Smallest tile worth running; below this an out-of-memory error is final.
MIN_TILE = 32
#: Default tile edge on CPUs, in output pixels: measured on a 2-core Xeon
#: (benchmarks/tile_size.py), larger tiles gain under 2% and cost memory.
CPU_TILE = 512
#: Upper bound for tiles chosen from free GPU memory.
MAX_GPU_TILE = 2048
#: Share of free GPU memory a tile's activations may take.
GPU_MEMORY_SHARE = 0.5

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Tile:
    """One tile: the output region it fills and the input region it reads."""

    y0: int
    y1: int
    x0: int
    x1: int
    in_y0: int
    in_y1: int
    in_x0: int
    in_x1: int


def plan_tiles(height: int, width: int, tile: int, radius: int) -> list[Tile]:
    """Cover ``height x width`` with tiles of at most ``tile`` pixels a side.

    Tiles step by ``tile`` from the top-left; the last row and column are
    smaller when the size is not a multiple. Input regions add ``radius``
    pixels of context wherever that context exists.
    """
    if tile <= 0 or (tile >= height and tile >= width):
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    tiles = []
    for y0 in range(0, height, tile):
        y1 = min(y0 + tile, height)
        for x0 in range(0, width, tile):
            x1 = min(x0 + tile, width)
            tiles.append(
                Tile(
                    y0, y1, x0, x1,
                    max(0, y0 - radius), min(height, y1 + radius),
                    max(0, x0 - radius), min(width, x1 + radius),
                )
            )  # fmt: skip
    return tiles


def iter_tiles(
    model: nn.Module, x: torch.Tensor, tile: int, radius: int, device: torch.device
) -> Iterator[tuple[Tile, torch.Tensor]]:
    """Run ``model`` tile by tile; yields each tile and its kept output (on ``x``'s device)."""
    _, _, h, w = x.shape
    for t in plan_tiles(h, w, tile, radius):
        inp = x[:, :, t.in_y0 : t.in_y1, t.in_x0 : t.in_x1].to(device, non_blocking=True)
        out = model(inp)
        keep = out[:, :, t.y0 - t.in_y0 : t.y1 - t.in_y0, t.x0 - t.in_x0 : t.x1 - t.in_x0]
        yield t, keep.to(x.device)


def run_tiled(
    model: nn.Module,
    x: torch.Tensor,
    *,
    radius: int,
    tile: int | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Apply a same-size model to ``x`` in tiles, seam-free.

    Args:
        model: maps ``(N, C, H, W)`` to the same shape; already on ``device``.
        x: input on any device (kept there; tiles move to ``device``).
        radius: the model's receptive-field radius: the tile overlap.
        tile: tile edge in pixels; 0 runs the whole image at once; None picks
            one for the device (:func:`default_tile`).
        device: where the model runs.
        progress: called with (tiles done, tiles total) after each tile.

    Returns:
        The output, same shape, dtype and device as ``x``.

    Raises:
        DeviceError: out of GPU memory even at the smallest tile.
    """
    device = torch.device(device)
    if tile is None:
        tile = default_tile(device, x.shape[-2], x.shape[-1], radius, channels=x.shape[1])
    while True:
        try:
            return _run(model, x, tile, radius, device, progress)
        except torch.OutOfMemoryError:
            if device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            current = tile if tile > 0 else max(x.shape[-2], x.shape[-1])
            tile = current // 2
            if tile < MIN_TILE:
                raise DeviceError(
                    f"out of GPU memory even with {current}px tiles; free GPU memory "
                    "or use --device cpu"
                ) from None


def _run(
    model: nn.Module,
    x: torch.Tensor,
    tile: int,
    radius: int,
    device: torch.device,
    progress: ProgressFn | None,
) -> torch.Tensor:
    _, _, h, w = x.shape
    total = len(plan_tiles(h, w, tile, radius))
    out = torch.empty_like(x)
    for i, (t, y) in enumerate(iter_tiles(model, x, tile, radius, device), start=1):
        out[:, :, t.y0 : t.y1, t.x0 : t.x1] = y
        if progress is not None:
            progress(i, total)
    return out


def default_tile(
    device: torch.device,
    height: int,
    width: int,
    radius: int,
    channels: int = 1,
    width_ch: int = 64,
) -> int:
    """A tile edge for ``device``: free-memory based on CUDA, measured on CPU.

    Returns 0 (no tiling) when the image fits in one tile.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Peak live activations of a 64-wide conv stack in inference mode:
        # about three float32 feature maps of ``width_ch`` channels per pixel.
        bytes_per_px = 3 * width_ch * 4 + 4 * channels
        side = int(math.sqrt(free * GPU_MEMORY_SHARE / bytes_per_px)) - 2 * radius
        tile = max(MIN_TILE * 4, min(MAX_GPU_TILE, side // 64 * 64))
    else:
        tile = CPU_TILE
    return 0 if tile >= height and tile >= width else tile
