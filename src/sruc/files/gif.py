"""GIF output: 8-bit frames re-quantised to one shared (global) palette.

An upscaled GIF has far more colours than the 256 of its source (every edge
gains in-between shades), and frames quantised one by one would each get their
own palette, so colours would shimmer from frame to frame and every frame would
carry a local colour table. Here one palette is chosen for the whole animation
from a sample of all its frames (Pillow's median cut), every frame is mapped to
it without dithering (dither noise differs from frame to frame and would
flicker, and would defeat GIF's delta frames), and it is written once, as the
global colour table.

GIF transparency is one palette entry: pixels whose alpha is under
:data:`ALPHA_THRESHOLD` become that entry, the rest are opaque.

Frames come whole (each the full picture at its moment) and Pillow writes each
as the rectangle that changed, drawn over what the previous frame's disposal
left. That is exact while no pixel turns from opaque to transparent; a GIF
cannot draw transparency over an opaque pixel, so when one does (a sprite that
moves, or the edge of an upscaled alpha), every frame is written with disposal
"background" (cleared after it is shown), the one choice that shows each frame
exactly; otherwise the source's disposal is kept.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

#: Pixels sampled, evenly from all frames together, to choose the palette. Median cut
#: plus :data:`KMEANS` refinement passes on 32k pixels take about 0.3-0.6 s (more
#: samples gain little: on 1 MP of a noisy test image the mean error was 7.86 from 16k
#: samples and 7.75 from 256k, which took 17 s).
PALETTE_SAMPLE = 1 << 15
#: Pillow's k-means passes after median cut: mean error 9.3 -> 7.8 on that image.
KMEANS = 2
#: Alpha (0..255) under which a pixel is transparent in the GIF.
ALPHA_THRESHOLD = 128
#: GIF disposal codes by name (1: leave the frame, 2: clear to background,
#: 3: restore what was there before).
DISPOSAL = {"none": 1, "background": 2, "previous": 3}


def _split(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB ``(H, W, 3)`` and a transparency mask (or None) of an ``(H, W, C)`` uint8 frame."""
    c = frame.shape[2]
    rgb = frame[:, :, :1].repeat(3, axis=2) if c in (1, 2) else frame[:, :, :3]
    clear = frame[:, :, -1] < ALPHA_THRESHOLD if c in (2, 4) else None
    if clear is not None and not clear.any():
        clear = None
    return np.ascontiguousarray(rgb), clear


def palette_for(frames: Sequence[np.ndarray], colors: int = 256) -> list[tuple[int, int, int]]:
    """At most ``colors`` colours for all ``frames`` together (median cut on a sample of
    their opaque pixels, at most :data:`PALETTE_SAMPLE` of them)."""
    total = sum(int(f.shape[0]) * int(f.shape[1]) for f in frames)
    step = max(1, math.ceil(total / PALETTE_SAMPLE))
    parts = []
    for frame in frames:
        rgb, clear = _split(frame)
        flat = rgb.reshape(-1, 3)
        if clear is not None:
            flat = flat[~clear.reshape(-1)]
        parts.append(flat[::step])
    sample = np.concatenate(parts) if parts else np.zeros((0, 3), np.uint8)
    if len(sample) == 0:
        return [(0, 0, 0)]
    unique = np.unique(sample, axis=0)
    if step == 1 and len(unique) <= colors:  # every pixel seen: no colour is lost
        return [tuple(int(v) for v in c) for c in unique]  # type: ignore[misc]
    im = Image.fromarray(sample[None, :, :])
    q = im.quantize(
        colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE, kmeans=KMEANS
    )
    used = sorted({int(i) for i in np.unique(np.asarray(q))})
    pal = q.getpalette() or []
    return [(pal[3 * i], pal[3 * i + 1], pal[3 * i + 2]) for i in used]


def _uncovers(frames: Sequence[np.ndarray]) -> bool:
    """Whether some pixel is opaque in one frame and transparent in the next."""
    previous = None
    for f in frames:
        clear = (
            f[:, :, -1] < ALPHA_THRESHOLD if f.shape[2] in (2, 4) else np.zeros(f.shape[:2], bool)
        )
        if previous is not None and bool((clear & ~previous).any()):
            return True
        previous = clear
    return False


def _unused_color(colors: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    """A colour not in ``colors``: the transparent entry must not equal a real one, or
    Pillow's palette matching could merge them."""
    taken = set(colors)
    return next((i, 0, 255) for i in range(256) if (i, 0, 255) not in taken)


def encode(
    frames: list[np.ndarray],
    durations: Sequence[int],
    *,
    loop: int | None,
    disposal: Sequence[str] = (),
) -> bytes:
    """A GIF of ``frames`` (``(H, W, C)`` uint8, C = 1..4, all one size), in memory.

    ``frames`` is emptied as the frames are encoded, so memory falls as it goes.

    Args:
        durations: milliseconds per frame (GIF keeps hundredths of a second).
        loop: the loop count to store (0: forever); None stores none (plays once).
        disposal: per frame ``none``, ``background`` or ``previous`` (default none).
    """
    n = len(frames)
    transparent = any(f.shape[2] in (2, 4) and bool((f[:, :, -1] < ALPHA_THRESHOLD).any())
                      for f in frames)  # fmt: skip
    if transparent and _uncovers(frames):
        disposal = ["background"] * n
    colors = palette_for(frames, 255 if transparent else 256)
    # Quantising maps to the nearest of these entries only (the palette's size
    # is honoured), so no opaque pixel can land on the transparent entry.
    target = Image.new("P", (1, 1))
    target.putpalette([v for c in colors for v in c])
    clear_index = len(colors) if transparent else None
    table = list(colors) + ([_unused_color(colors)] if transparent else [])
    flat = bytes(v for c in table for v in c)

    def indexed() -> Iterator[Image.Image]:
        while frames:
            rgb, clear = _split(frames.pop(0))
            q = Image.fromarray(rgb).quantize(palette=target, dither=Image.Dither.NONE)
            if clear is not None:
                idx = np.asarray(q).copy()
                idx[clear] = clear_index
                q = Image.fromarray(idx, "P")
            q.putpalette(flat)
            if clear_index is not None:
                q.info["transparency"] = clear_index
            yield q

    gen = indexed()
    first = next(gen)
    kwargs: dict[str, object] = {
        "palette": flat,  # the one global colour table: no frame carries its own
        "optimize": False,
        "duration": [int(d) for d in durations][:n] if durations else 100,
        "disposal": [DISPOSAL.get(d, 1) for d in disposal][:n] if disposal else 1,
    }
    if clear_index is not None:
        kwargs["transparency"] = clear_index
    if loop is not None:
        kwargs["loop"] = int(loop)
    buffer = io.BytesIO()
    if n == 1:
        kwargs.pop("duration")
        kwargs.pop("disposal")
        first.save(buffer, format="GIF", **kwargs)
    else:
        first.save(buffer, format="GIF", save_all=True, append_images=gen, **kwargs)
    return buffer.getvalue()


__all__ = ["ALPHA_THRESHOLD", "DISPOSAL", "KMEANS", "PALETTE_SAMPLE", "encode", "palette_for"]
