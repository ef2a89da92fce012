"""A small line chart drawn with Pillow (no plotting dependency).

Used by ``sruc train`` for ``val_psnr.png``: validation PSNR per scale over the
training steps, with each scale's bicubic baseline as a dashed line. Pure:
returns a :class:`PIL.Image.Image`; the caller writes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

# Canvas and margins, in pixels.
WIDTH, HEIGHT = 800, 500
LEFT, RIGHT, TOP, BOTTOM = 80, 130, 50, 60
FONT_SIZE = 14
TICKS = 6  # about how many ticks per axis
#: Line colours, one per series, in order.
PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))
AXIS, GRID, TEXT = (0, 0, 0), (225, 225, 225), (20, 20, 20)


def nice_ticks(lo: float, hi: float, count: int = TICKS) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 x 10^k) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = [round(first, 10)]
    while ticks[-1] < hi:
        ticks.append(round(first + len(ticks) * step, 10))
    return ticks


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.0e}"


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    baselines: Mapping[str, float] | None = None,
) -> Image.Image:
    """Draw ``series`` (name -> ``(x, y)`` points) as lines with markers.

    Args:
        series: the lines, drawn in :data:`PALETTE` order.
        title: centred above the plot.
        xlabel: below the x axis.
        ylabel: left of the y axis, rotated.
        baselines: name -> y of a dashed horizontal line in the colour of the
            series of the same name.

    Returns:
        An RGB image of :data:`WIDTH` x :data:`HEIGHT` pixels.
    """
    baselines = dict(baselines or {})
    font = ImageFont.load_default(FONT_SIZE)
    im = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(im)

    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts if math.isfinite(y)]
    ys += [y for y in baselines.values() if math.isfinite(y)]
    xt = nice_ticks(min(xs, default=0.0), max(xs, default=1.0))
    yt = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            LEFT + (x - x0) / ((x1 - x0) or 1) * pw,
            TOP + ph - (y - y0) / ((y1 - y0) or 1) * ph,
        )

    # Grid, ticks and their labels.
    for v in xt:
        x, _ = px(v, y0)
        draw.line([(x, TOP), (x, TOP + ph)], fill=GRID)
        draw.line([(x, TOP + ph), (x, TOP + ph + 5)], fill=AXIS)
        draw.text((x, TOP + ph + 8), _label(v), fill=TEXT, font=font, anchor="ma")
    for v in yt:
        _, y = px(x0, v)
        draw.line([(LEFT, y), (LEFT + pw, y)], fill=GRID)
        draw.line([(LEFT - 5, y), (LEFT, y)], fill=AXIS)
        draw.text((LEFT - 8, y), _label(v), fill=TEXT, font=font, anchor="rm")
    draw.rectangle([LEFT, TOP, LEFT + pw, TOP + ph], outline=AXIS)

    # Title and axis labels (the y label drawn sideways on its own image).
    draw.text((WIDTH / 2, TOP / 2), title, fill=TEXT, font=font, anchor="mm")
    draw.text((LEFT + pw / 2, HEIGHT - 12), xlabel, fill=TEXT, font=font, anchor="md")
    box = draw.textbbox((0, 0), ylabel, font=font)
    side = Image.new("RGB", (box[2] + 4, box[3] + 4), "white")
    ImageDraw.Draw(side).text((2, 2), ylabel, fill=TEXT, font=font)
    side = side.rotate(90, expand=True)
    im.paste(side, (8, TOP + (ph - side.height) // 2))

    # Dashed baselines, then the series, then the legend.
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    for name, value in baselines.items():
        if not math.isfinite(value) or not y0 <= value <= y1:
            continue
        _, y = px(x0, value)
        for xa in range(LEFT, LEFT + pw, 12):
            draw.line([(xa, y), (min(xa + 6, LEFT + pw), y)], fill=colours.get(name, AXIS))
    for name, pts in series.items():
        points = [px(x, y) for x, y in pts if math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=colours[name], width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[name])
    ly = TOP + 10
    for name in series:
        lx = LEFT + pw + 15
        draw.line([(lx, ly), (lx + 25, ly)], fill=colours[name], width=2)
        draw.text((lx + 32, ly), name, fill=TEXT, font=font, anchor="lm")
        ly += 22
    if baselines:
        draw.text((LEFT + pw + 15, ly), "- - bicubic", fill=TEXT, font=font, anchor="lm")
    return im
