"""The banded upscale: the output made in horizontal bands of rows, for very large images.

The whole-image path (:func:`sruc.engine.pipeline._compute`) holds the bicubic
enlargement, the Y/Cb/Cr planes and the output in float32 at once: about 24
bytes per output value. Here each band of output rows is made from just the
rows it needs (:func:`sruc.core.resize.imresize_rows`), its Y goes through the
very tiles of the whole image's plan that cross it
(:func:`sruc.core.tiling.run_tiled_rows`), and it is quantised into a
preallocated integer raster (or a float32 picture) at once. Peak memory is the
input, the output and one band's working set.

Every operation is the one of the whole-image path on the same values (the
resize and colour steps are elementwise per pixel; each network tile sees
the same input window), so the output is bit-identical to it. Bands follow
the network's rows of tiles, so no tile runs twice; a band height that cuts
tiles (``band=``, for tests) is just as exact, at the cost of tiles recomputed.

``--tta`` bands too: each of its 8 passes tiles a rotated or mirrored image
from that image's own corner, so for each pass the band runs the tiles of
that image whose output falls in the band, on their own windows, and sums the
passes in the ensemble's order. A band then reads up to two rows of tiles in
some passes (they are not aligned with the band), so this is slower than the
whole image and used when memory asks for it. Not banded: ``--tile 0`` (the
network then sees the whole image).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sruc.core.color import rgb_to_ycbcr, ycbcr_to_rgb
from sruc.core.ensemble import TRANSFORMS, Rect, source_rect, transform, untransform
from sruc.core.resize import imresize_rows, output_size, source_rows
from sruc.core.tiling import (
    ProgressFn,
    Tile,
    TileModel,
    plan_tiles,
    run_tiled_rows,
    tiles_crossing,
    window_rows,
)
from sruc.engine.prepared import PreparedModel
from sruc.errors import ModelError
from sruc.files.images import Picture, from_raster, quantise
from sruc.scales import nearest_scale

#: Output rows per band where no network sets them (bicubic): about the work of a
#: network tile row, and a working set of a few MB per 1,000 px of width.
BICUBIC_BAND = 256

#: Input rows a resize reads beyond its output rows (6 taps when enlarging), rounded up.
_TAPS = 8

Rows = tuple[int, int]


@dataclass(frozen=True)
class BandPlan:
    """What one banded upscale computes.

    Attributes:
        out_size: the output ``(h, w)``.
        scale: the factor of the resize from input to output (``imresize(scale=)``).
        sized: the output is a given size instead (``imresize(size=out_size)``).
        exact: the network runs on the output's own bicubic (not a per-scale model
            at a size, whose network output is then resized).
        net_scale: the scale the network runs at: ``scale``, or a per-scale model's
            nearest trained one, followed by a resize to ``out_size`` (``exact`` False).
        net_size: the network's ``(h, w)``.
        tiles: the network's tile plan of the whole ``net_size`` image (empty: no network).
        uniform: the plan's tiles have equal windows, as the whole path cuts them to
            stack several per pass (GPUs); here they still run one at a time.
        passes: with ``--tta``, the tile plan of each of the 8 transformed images
            (:func:`sruc.core.ensemble.transform`), in their own coordinates; else empty.
    """

    out_size: tuple[int, int]
    scale: float
    sized: bool
    exact: bool
    net_scale: float
    net_size: tuple[int, int]
    tiles: list[Tile]
    uniform: bool = False
    passes: tuple[list[Tile], ...] = ()


def make_plan(
    pm: PreparedModel,
    pic: Picture,
    scale: float,
    out_size: tuple[int, int],
    sized: bool,
    tiling: Callable[[int, int], tuple[int, int]],
    tta: bool = False,
) -> BandPlan:
    """The plan of a banded upscale. ``tiling(h, w)``: the tile edge and tiles per pass
    the whole path uses for an ``h x w`` network input
    (:meth:`~sruc.engine.prepared.PreparedModel.tiling`)."""
    lm = pm.loaded
    exact = not sized or lm.identity or lm.multiscale or not lm.scales
    net_scale = scale if exact else nearest_scale(lm.scales, scale)
    net = out_size
    if not exact:
        net = (output_size(pic.height, net_scale), output_size(pic.width, net_scale))
    if lm.identity:
        return BandPlan(out_size, scale, sized, exact, net_scale, net, [])

    def plan(h: int, w: int) -> list[Tile]:
        tile, batch = tiling(h, w)
        return plan_tiles(h, w, tile, lm.radius, uniform=batch > 1)

    tiles = plan(*net)
    uniform = tiling(*net)[1] > 1
    turned = (net[1], net[0])
    passes = tuple(plan(*(turned if k % 2 else net)) for k in range(TRANSFORMS)) if tta else ()
    return BandPlan(out_size, scale, sized, exact, net_scale, net, tiles, uniform, passes)


def bands(plan: BandPlan, band: int | None = None) -> list[Rows]:
    """The output rows of each band: ``band`` rows each, else the network's rows of
    tiles (exact plans) or :data:`BICUBIC_BAND` rows."""
    h = plan.out_size[0]
    if band is None and plan.tiles and plan.exact:
        return sorted({(t.y0, t.y1) for t in plan.tiles})
    step = max(1, band or BICUBIC_BAND)
    return [(a, min(a + step, h)) for a in range(0, h, step)]


def band_rows(plan: BandPlan) -> int:
    """Rows of the largest band's working set: its tiles' input windows and the
    resize's taps (for the memory estimate). With ``--tta`` a band may read two
    rows of tiles: the transformed images' tiles start from other corners."""
    if not plan.tiles:
        return min(BICUBIC_BAND + _TAPS, plan.out_size[0])
    window = max(t.in_y1 - t.in_y0 for t in plan.tiles) * (2 if plan.passes else 1)
    return min(window + _TAPS, plan.net_size[0])


def upscale_banded(
    pm: PreparedModel,
    pic: Picture,
    plan: BandPlan,
    *,
    depth: int | None,
    progress: ProgressFn | None = None,
    band: int | None = None,
) -> Picture:
    """Upscale ``pic`` band by band; equal to the whole-image path, bit for bit.

    Args:
        depth: 8 or 16: the result is a raster picture of that depth (what the
            output file holds); None: a float32 picture, as the whole path's.
        band: output rows per band (None: follow the network's tiles).
    """
    h, w = plan.out_size
    channels = int(pic.color.shape[0]) + (pic.alpha is not None)
    store = _raster_store(h, w, channels, depth) if depth else _float_store(h, w, channels)
    spans = bands(plan, band)
    report = _progress(plan, spans, progress)
    with torch.inference_mode():
        for rows in spans:
            color = _band_color(pm, pic, plan, rows, report)
            if pic.alpha is not None:
                alpha = _resize(pic.alpha[None], plan, rows)[0].clamp_(0, 1)
                color = torch.cat([color, alpha])
            store.put(rows, color)
    if progress is not None and not plan.tiles:
        progress(1, 1)
    return store.picture(pic)


def _resize(x: torch.Tensor, plan: BandPlan, rows: Rows) -> torch.Tensor:
    """Output ``rows`` of the input-to-output resize of the whole ``x``."""
    if plan.sized:
        return imresize_rows(x, rows, size=plan.out_size)
    return imresize_rows(x, rows, scale=plan.scale)


def _band_color(
    pm: PreparedModel, pic: Picture, plan: BandPlan, rows: Rows, done: ProgressFn | None
) -> torch.Tensor:
    """The clamped colour ``(C, r1 - r0, W)`` of output ``rows``."""
    x = pic.color[None]
    if not plan.tiles:  # bicubic
        return _finite(pm, _resize(x, plan, rows)[0])
    net_rows = _net_rows(plan, rows)
    n0, n1 = _window(plan, net_rows)
    # As the whole path: the exact model's input is the output's own bicubic.
    if plan.exact:
        up = _resize(x, plan, (n0, n1))
    else:
        up = imresize_rows(x, (n0, n1), scale=plan.net_scale)
    net, _ = pm.runner(pic.bits)

    def network(y: torch.Tensor) -> torch.Tensor:
        if plan.passes:
            out = _ensemble_rows(net, y, plan, net_rows, n0, pm.device, done)
        else:
            out = run_tiled_rows(
                net, y, plan.tiles, net_rows, offset=n0, device=pm.device, done=done
            )
        if plan.exact:
            return out
        return imresize_rows(
            out, rows, size=plan.out_size, height=plan.net_size[0], offset=net_rows[0]
        )

    if pic.is_gray:
        color = network(up)[0]
    else:
        ycc = rgb_to_ycbcr(up)
        y = network(ycc[:, :1].contiguous())
        a, b = rows[0] - n0, rows[1] - n0
        chroma = ycc[:, 1:, a:b] if plan.exact else rgb_to_ycbcr(_resize(x, plan, rows))[:, 1:]
        color = ycbcr_to_rgb(torch.cat([y, chroma], dim=1))[0]
    return _finite(pm, color)


def _crossing(plan: BandPlan, rows: Rows) -> list[tuple[int, Tile, Rect]]:
    """The tiles that make network ``rows``: ``(k, tile, its output rectangle in the
    image's own orientation)``, k the transform (0 without ``--tta``)."""
    if not plan.passes:
        return [(0, t, (t.y0, t.y1, t.x0, t.x1)) for t in tiles_crossing(plan.tiles, rows)]
    h, w = plan.net_size
    found = []
    for k, tiles in enumerate(plan.passes):
        for t in tiles:
            rect = source_rect(k, h, w, (t.y0, t.y1, t.x0, t.x1))
            if rect[0] < rows[1] and rect[1] > rows[0]:
                found.append((k, t, rect))
    return found


def _window(plan: BandPlan, rows: Rows) -> Rows:
    """The network input rows that network output ``rows`` read."""
    if not plan.passes:
        return window_rows(plan.tiles, rows)
    h, w = plan.net_size
    spans = [source_rect(k, h, w, (t.in_y0, t.in_y1, t.in_x0, t.in_x1))
             for k, t, _ in _crossing(plan, rows)]  # fmt: skip
    return min(a for a, *_ in spans), max(b for _, b, *_ in spans)


def _ensemble_rows(
    net: TileModel,
    y: torch.Tensor,
    plan: BandPlan,
    rows: Rows,
    offset: int,
    device: torch.device,
    done: ProgressFn | None,
) -> torch.Tensor:
    """Rows ``rows`` of :func:`sruc.core.ensemble.self_ensemble` over the tiled network,
    from the input rows ``[offset, ...)`` in ``y``: each of the 8 passes runs the tiles
    its transformed image has in the whole run, on the same windows (cut here from
    the untransformed band and transformed), and the passes are summed in the same
    order, so the result is the whole ensemble's, bit for bit."""
    r0, r1 = rows
    h, w = plan.net_size
    parts = [y.new_empty((*y.shape[:-2], r1 - r0, w)) for _ in range(TRANSFORMS)]
    for k, t, (oy0, oy1, ox0, ox1) in _crossing(plan, rows):
        iy0, iy1, ix0, ix1 = source_rect(k, h, w, (t.in_y0, t.in_y1, t.in_x0, t.in_x1))
        inp = transform(y[:, :, iy0 - offset : iy1 - offset, ix0:ix1], k)
        res = net(inp.contiguous().to(device))
        keep = res[:, :, t.y0 - t.in_y0 : t.y1 - t.in_y0, t.x0 - t.in_x0 : t.x1 - t.in_x0]
        back = untransform(keep.to(y.device), k)
        a, b = max(oy0, r0), min(oy1, r1)
        parts[k][:, :, a - r0 : b - r0, ox0:ox1] = back[:, :, a - oy0 : b - oy0]
        if done is not None:
            done(1, 1)
    out = parts[0].clone()
    for part in parts[1:]:
        out.add_(part)
    return out.div_(TRANSFORMS)


def _finite(pm: PreparedModel, color: torch.Tensor) -> torch.Tensor:
    """``color`` clamped to [0, 1], after refusing NaN or infinity (clamp would hide it)."""
    if not bool(torch.isfinite(color).all()):
        raise ModelError(
            f"{pm.loaded.name} produced NaN or infinite values ({pm.precision} on "
            f"{pm.device}): its weights are damaged or do not suit this input; nothing "
            "was written"
        )
    return color.clamp_(0, 1)


class _RasterStore:
    """Bands quantised into one preallocated ``(H, W, C)`` integer array."""

    def __init__(self, raster: np.ndarray, depth: int) -> None:
        self.raster, self.depth = raster, depth

    def put(self, rows: Rows, values: torch.Tensor) -> None:
        self.raster[rows[0] : rows[1]] = quantise(values, self.depth)

    def picture(self, like: Picture) -> Picture:
        return from_raster(self.raster, like)


class _FloatStore:
    """Bands copied into one preallocated float32 ``(C, H, W)`` tensor."""

    def __init__(self, values: torch.Tensor, colours: int) -> None:
        self.values, self.colours = values, colours

    def put(self, rows: Rows, values: torch.Tensor) -> None:
        self.values[:, rows[0] : rows[1]] = values

    def picture(self, like: Picture) -> Picture:
        c = int(like.color.shape[0])
        alpha = self.values[c:] if self.values.shape[0] > c else None
        return like.with_pixels(self.values[:c], alpha)


def _raster_store(h: int, w: int, channels: int, depth: int) -> _RasterStore:
    return _RasterStore(np.empty((h, w, channels), np.uint8 if depth == 8 else np.uint16), depth)


def _float_store(h: int, w: int, channels: int) -> _FloatStore:
    return _FloatStore(torch.empty(channels, h, w), channels)


def _progress(plan: BandPlan, spans: list[Rows], progress: ProgressFn | None) -> ProgressFn | None:
    """Count tiles over all bands: ``done(1, n)`` after each becomes ``progress(k, total)``."""
    if progress is None or not plan.tiles:
        return None
    total = sum(len(_crossing(plan, _net_rows(plan, r))) for r in spans)
    count = [0]

    def done(step: int, _: int) -> None:
        count[0] += step
        progress(count[0], total)

    return done


def _net_rows(plan: BandPlan, rows: Rows) -> Rows:
    """The network's output rows that output ``rows`` need: themselves, or (a
    per-scale model at a size) the rows its final resize reads."""
    return rows if plan.exact else source_rows(plan.net_size[0], rows, size=plan.out_size)


__all__ = ["BICUBIC_BAND", "BandPlan", "band_rows", "bands", "make_plan", "upscale_banded"]
