"""Seam-free tiled inference.

A model made of "same"-padded convolutions computes each output pixel from the
input pixels within its receptive-field radius ``r``. If each tile is cut from
the input with a margin of at least ``r`` on every side that is not an image
border, and only the tile's centre is kept, every kept pixel sees exactly what
it would see in a whole-image pass: at a true image border the tile's zero
padding is the image's zero padding. The stitched result then equals the
untiled one (up to float rounding of a different convolution algorithm), so
there are no seams to hide and no blending is needed.

Several tiles can run in one forward pass (``batch``, used on GPUs): the plan
then gives every tile an input window of the same size, shifted inwards at
the image borders. A window with more context than ``r`` is just as exact, so
batched and one-at-a-time runs agree too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from sruc.errors import DeviceError, UsageError

#: Smallest tile worth running; below this an out-of-memory error is final.
MIN_TILE = 32
#: Default tile edge on CPUs, in output pixels. Measured with
#: ``benchmarks/tile_size.py --single`` (full VDSR, one interior tile, best of
#: 25-40 interleaved runs) on a 2-core AMX Xeon: bf16 gives 1.0-1.4 MP/s of
#: output from 256 to 352 px tiles (the best of those changes from run to run),
#: then falls to 0.7 at 384 and 0.5 at 512, when a tile's 64-channel feature
#: maps (128 bytes a pixel) no longer fit in cache; fp32 is flat within noise
#: (0.15-0.16 MP/s from 256 to 768). 256 sits on the plateau with room to
#: spare for CPUs with smaller caches; its 20 px margins are paid back by the
#: cache.
CPU_TILE = 256
#: Default CPU tile edge where the 3x3 layers run as Winograd (``--engine auto`` on
#: CPUs): its transforms work in strips of blocks that stay in cache whatever the
#: tile, so a tile is only a bound on memory, and a larger one pays less for its
#: 20 px margins ((552/512)^2 = 1.16 against (296/256)^2 = 1.34). Measured with
#: ``sruc.Upscaler`` on a 1560x1560 output x3, 2 threads, AMD EPYC Zen 4, best of
#: 2 interleaved: fp32 12.9 s at 256 px, 10.05 s at 384, 512 and 768; bf16 8.5 s
#: at 256, 8.1 at 512, 7.7 at 768.
WINOGRAD_CPU_TILE = 512
#: Upper bound for tiles chosen from free GPU memory.
MAX_GPU_TILE = 2048
#: Share of free GPU memory a forward pass's activations may take.
GPU_MEMORY_SHARE = 0.5
#: Most tiles stacked into one forward pass on a GPU.
MAX_GPU_BATCH = 8

ProgressFn = Callable[[int, int], None]
#: Maps ``(N, C, H, W)`` to the same shape: an ``nn.Module`` or any callable.
TileModel = Callable[[torch.Tensor], torch.Tensor]


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


def check_tile(tile: int | None, radius: int) -> int | None:
    """``--tile`` for a network of receptive ``radius``: None (choose), 0 (no tiling),
    or at least twice the radius (and 1): each tile computes its ``radius``-wide
    margins again, so a smaller one more than quadruples the work (at --tile 1 a
    VDSR would compute a 41x41 window for every output pixel).

    Raises:
        UsageError: a negative tile, or one below the bound.
    """
    if tile is None or tile == 0:
        return tile
    least = max(1, 2 * radius)
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < least:
        raise UsageError(
            f"--tile {tile} is too small: tiles overlap by {radius} px, so use 0 (no "
            f"tiling) or at least {least} pixels"
        )
    return tile


def plan_tiles(
    height: int, width: int, tile: int, radius: int, *, uniform: bool = False
) -> list[Tile]:
    """Cover ``height x width`` with tiles of at most ``tile`` pixels a side.

    Tiles step by ``tile`` from the top-left; the last row and column are
    smaller when the size is not a multiple. Input regions add ``radius``
    pixels of context wherever that context exists.

    With ``uniform``, tiles are spread evenly instead (their sizes differ by
    at most one pixel per axis) and every input window has the same size,
    ``tile + 2 * radius`` per axis or the whole axis if that is shorter, moved
    inwards at the borders; such tiles can be stacked into one batch.
    """
    if tile <= 0 or (tile >= height and tile >= width):
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    if uniform:
        rows, cols = _uniform_axis(height, tile, radius), _uniform_axis(width, tile, radius)
        return [Tile(y0, y1, x0, x1, iy0, iy1, ix0, ix1)
                for (y0, y1, iy0, iy1) in rows for (x0, x1, ix0, ix1) in cols]  # fmt: skip
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


def _uniform_axis(size: int, tile: int, radius: int) -> list[tuple[int, int, int, int]]:
    """Even spans along one axis: (start, stop, window start, window stop), equal windows."""
    n = math.ceil(size / tile)
    step = math.ceil(size / n)
    window = min(size, step + 2 * radius)
    spans = []
    for i in range(n):
        a, b = i * step, min((i + 1) * step, size)
        if a >= b:
            break
        # Centre the window on the span, then slide it inside the image: a
        # margin is then either >= radius or reaches the border.
        w0 = min(max(0, a - radius), size - window)
        spans.append((a, b, w0, w0 + window))
    return spans


def iter_tiles(
    model: TileModel, x: torch.Tensor, tile: int, radius: int, device: torch.device
) -> Iterator[tuple[Tile, torch.Tensor]]:
    """Run ``model`` tile by tile; yields each tile and its kept output (on ``x``'s device)."""
    _, _, h, w = x.shape
    for t in plan_tiles(h, w, tile, radius):
        inp = x[:, :, t.in_y0 : t.in_y1, t.in_x0 : t.in_x1].to(device, non_blocking=True)
        out = model(inp)
        keep = out[:, :, t.y0 - t.in_y0 : t.y1 - t.in_y0, t.x0 - t.in_x0 : t.x1 - t.in_x0]
        yield t, keep.to(x.device)


def run_tiled(
    model: nn.Module | TileModel,
    x: torch.Tensor,
    *,
    radius: int,
    tile: int | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
    batch: int = 1,
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
        batch: tiles per forward pass (more than 1 pays off on GPUs; see
            :func:`default_batch`). Tiles then get equal input windows.

    Returns:
        The output, same shape, dtype and device as ``x``.

    Raises:
        DeviceError: out of GPU memory even at the smallest tile.
    """
    device = torch.device(device)
    if tile is None:
        tile = default_tile(device, x.shape[-2], x.shape[-1], radius, channels=x.shape[1])
    batch = max(1, batch)
    while True:
        try:
            if batch > 1:
                return _run_batched(model, x, tile, radius, device, progress, batch)
            return _run(model, x, tile, radius, device, progress)
        except torch.OutOfMemoryError:
            if device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            if batch > 1:  # fewer tiles at once first: the tile size stays as chosen
                batch //= 2
                continue
            current = tile if tile > 0 else max(x.shape[-2], x.shape[-1])
            tile = current // 2
            if tile < MIN_TILE:
                raise DeviceError(
                    f"out of GPU memory even with {current}px tiles; free GPU memory "
                    "or use --device cpu"
                ) from None


def _run(
    model: TileModel,
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


def _run_batched(
    model: TileModel,
    x: torch.Tensor,
    tile: int,
    radius: int,
    device: torch.device,
    progress: ProgressFn | None,
    batch: int,
) -> torch.Tensor:
    n, _, h, w = x.shape
    tiles = plan_tiles(h, w, tile, radius, uniform=True)
    out = torch.empty_like(x)
    done = 0
    for start in range(0, len(tiles), batch):
        group = tiles[start : start + batch]
        # Equal windows: the tiles stack along the batch axis, ``n`` rows each.
        inp = torch.cat([x[:, :, t.in_y0 : t.in_y1, t.in_x0 : t.in_x1] for t in group])
        y = model(inp.to(device, non_blocking=True)).to(x.device)
        for k, t in enumerate(group):
            out[:, :, t.y0 : t.y1, t.x0 : t.x1] = y[
                k * n : (k + 1) * n,
                :,
                t.y0 - t.in_y0 : t.y1 - t.in_y0,
                t.x0 - t.in_x0 : t.x1 - t.in_x0,
            ]
            done += 1
            if progress is not None:
                progress(done, len(tiles))
    return out


def tiles_crossing(tiles: list[Tile], rows: tuple[int, int]) -> list[Tile]:
    """The tiles of a plan whose output rows meet ``rows = (r0, r1)``."""
    return [t for t in tiles if t.y0 < rows[1] and t.y1 > rows[0]]


def window_rows(tiles: list[Tile], rows: tuple[int, int]) -> tuple[int, int]:
    """The input rows ``[a, b)`` read by the tiles that make output ``rows``."""
    crossing = tiles_crossing(tiles, rows)
    return min(t.in_y0 for t in crossing), max(t.in_y1 for t in crossing)


def run_tiled_rows(
    model: TileModel,
    x: torch.Tensor,
    tiles: list[Tile],
    rows: tuple[int, int],
    *,
    offset: int,
    device: torch.device | str = "cpu",
    done: ProgressFn | None = None,
) -> torch.Tensor:
    """Output rows ``rows`` of a tiled run, bit for bit, from a band of the input.

    ``tiles`` is the whole image's plan (:func:`plan_tiles`); ``x`` holds input
    rows ``[offset, ...)`` covering :func:`window_rows`. Every tile crossing
    ``rows`` runs on exactly the window it has in the whole run, so its output
    is the same; only the rows in ``rows`` are kept. ``done(1, n)`` after each
    of the ``n`` tiles.
    """
    device = torch.device(device)
    r0, r1 = rows
    crossing = tiles_crossing(tiles, rows)
    out = x.new_empty((*x.shape[:-2], r1 - r0, x.shape[-1]))
    for t in crossing:
        inp = x[:, :, t.in_y0 - offset : t.in_y1 - offset, t.in_x0 : t.in_x1]
        y = model(inp.to(device, non_blocking=True))
        a, b = max(t.y0, r0), min(t.y1, r1)
        keep = y[:, :, a - t.in_y0 : b - t.in_y0, t.x0 - t.in_x0 : t.x1 - t.in_x0]
        out[:, :, a - r0 : b - r0, t.x0 : t.x1] = keep.to(x.device)
        if done is not None:
            done(1, len(crossing))
    return out


def _activation_bytes_per_px(width_ch: int, channels: int, bytes_per_value: int) -> int:
    # Peak live activations of a conv stack in inference mode: about three
    # feature maps of ``width_ch`` channels per pixel, plus the fp32 image.
    return 3 * width_ch * bytes_per_value + 4 * channels


def default_tile(
    device: torch.device,
    height: int,
    width: int,
    radius: int,
    channels: int = 1,
    width_ch: int = 64,
    bytes_per_value: int = 4,
    cpu_tile: int = CPU_TILE,
) -> int:
    """A tile edge for ``device``: free-memory based on CUDA, measured on CPU.

    Args:
        bytes_per_value: size of one activation (4 for fp32, 2 for bf16/fp16).
        cpu_tile: the edge on CPUs (:data:`CPU_TILE`, or :data:`WINOGRAD_CPU_TILE`
            where the network runs Winograd).

    Returns 0 (no tiling) when the image fits in one tile.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        per_px = _activation_bytes_per_px(width_ch, channels, bytes_per_value)
        side = int(math.sqrt(free * GPU_MEMORY_SHARE / per_px)) - 2 * radius
        tile = max(MIN_TILE * 4, min(MAX_GPU_TILE, side // 64 * 64))
    else:
        tile = cpu_tile
    return 0 if tile >= height and tile >= width else tile


def default_batch(
    device: torch.device,
    tile: int,
    radius: int,
    channels: int = 1,
    width_ch: int = 64,
    bytes_per_value: int = 4,
) -> int:
    """Tiles per forward pass: as many as fit in the GPU memory share, 1 elsewhere.

    A CPU gains nothing from a batch (its cores are busy with one tile; a
    bigger working set only falls out of cache), so batching is GPU-only.
    """
    if device.type != "cuda" or tile <= 0:
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_px = _activation_bytes_per_px(width_ch, channels, bytes_per_value)
    fits = int(free * GPU_MEMORY_SHARE // (per_px * (tile + 2 * radius) ** 2))
    return max(1, min(MAX_GPU_BATCH, fits))
