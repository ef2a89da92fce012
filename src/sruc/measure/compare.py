"""``sruc compare``: one crop upscaled by several models, side by side, with numbers.

:func:`compare_models` upscales a whole image with each model (through
:class:`sruc.engine.pipeline.Upscaler`, exactly as ``sruc up`` does), times
each run and, given a high-resolution reference, scores each output as
``sruc psnr --shave S --ssim`` would score the written file (Y channel,
``shave`` = the scale rounded up, :mod:`sruc.measure.quality`). It returns a
:class:`SideBySide`, whose :meth:`SideBySide.image` draws the same region of
every output enlarged by nearest neighbour (so pixels stay visible), one
labelled panel per model, with Pillow.

The reference is either a file of the output's size (``hr``), or the input
itself (``from_hr``): the input is then taken as the ground truth, cropped to a
multiple of the scale and shrunk by the papers' protocol
(:mod:`sruc.core.protocol`: MATLAB bicubic, 8-bit levels), and the models
enlarge that back to the input's size.

Coordinates: a :class:`Crop` is given in pixels of the image the caller passed
(after its EXIF orientation): the low-resolution input normally, the
high-resolution input with ``from_hr``. The panels show the matching region
of the outputs. Without a crop, :func:`detail_crop` picks the window with the
most detail (the largest sum of gradient magnitudes of Y).

Example:
    >>> from sruc.measure.compare import compare_models
    >>> sheet = compare_models("photo.jpg", 3, ["bicubic", "vdsr"])  # doctest: +SKIP
    >>> sheet.image().save("compare.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from sruc.core import protocol
from sruc.core.resize import output_size
from sruc.core.tiling import ProgressFn
from sruc.engine.pipeline import ModelSpec, Upscaler
from sruc.errors import InputError, UsageError
from sruc.files import images
from sruc.files.images import Picture
from sruc.measure import quality
from sruc.scales import check_scale

#: Side of the automatic crop, in output pixels (before the zoom).
AUTO_CROP = 128
#: The zoom makes each panel's longer side at least this many pixels...
PANEL_EDGE = 384
#: ...with at most this many screen pixels per output pixel.
MAX_ZOOM = 16
#: Panels per row of the sheet.
COLUMNS = 4
#: Space between panels and around the sheet, in pixels.
GAP = 16
#: Font size bounds, in pixels: the size follows the panel width.
FONT_MIN, FONT_MAX = 14, 32
BACKGROUND, TEXT, DIM, BEST = (255, 255, 255), (20, 20, 20), (90, 90, 90), (0, 110, 40)
#: Label of the reference panel.
REFERENCE = "HR reference"

#: Called with (model label, tiles done, tiles total) while a model runs.
CompareProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Crop:
    """A rectangle ``x, y, width, height`` in pixels, ``x, y`` its top-left corner."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Crop:
        """``"X,Y,W,H"`` (whole numbers) to a Crop.

        Raises:
            UsageError: not four whole numbers, a negative corner or an empty size.
        """
        parts = [p.strip() for p in text.split(",")]
        try:
            x, y, w, h = (int(p) for p in parts)
        except ValueError:
            raise UsageError(
                f"crop {text!r} is not X,Y,W,H (four whole numbers, e.g. 120,80,64,64)"
            ) from None
        crop = cls(x, y, w, h)
        crop.check()
        return crop

    def check(self, width: int | None = None, height: int | None = None) -> None:
        """Refuse an empty crop, and one that leaves a ``width`` x ``height`` image."""
        if self.width <= 0 or self.height <= 0:
            raise UsageError(f"crop {self} has zero size; give a width and height of 1 or more")
        if self.x < 0 or self.y < 0:
            raise UsageError(f"crop {self} starts outside the image; X and Y must be 0 or more")
        if width is None or height is None:
            return
        if self.x + self.width > width or self.y + self.height > height:
            raise UsageError(
                f"crop {self} reaches outside the {width}x{height} image; "
                f"X+W must be at most {width} and Y+H at most {height}"
            )

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.width},{self.height}"


@dataclass
class Panel:
    """One model's output over the compared region.

    Attributes:
        label: the model as the user named it (a checkpoint path shortened).
        crop: the region of the output, 8-bit RGB or gray, not enlarged.
        seconds: time to upscale the whole image (model loading excluded);
            None for the reference.
        psnr, ssim: Y-PSNR (dB) and SSIM of the whole output against the
            reference, or None without one.
    """

    label: str
    crop: Image.Image
    seconds: float | None = None
    psnr: float | None = None
    ssim: float | None = None

    def lines(self) -> list[str]:
        """The label's text lines under the panel."""
        out = [self.label]
        if self.seconds is not None:
            out.append(_duration(self.seconds))
        if self.psnr is not None:
            db = "inf" if math.isinf(self.psnr) else f"{self.psnr:.2f}"
            ssim = "" if self.ssim is None else f"  SSIM {self.ssim:.4f}"
            out.append(f"PSNR {db} dB{ssim}")
        return out


@dataclass
class SideBySide:
    """What :func:`compare_models` measured, and the sheet it draws.

    Attributes:
        source: the input's name, for the title.
        scale: the upscaling factor.
        crop: the compared region in pixels of the input as given.
        region: the same region in output pixels ``(x, y, width, height)``.
        panels: one per model, in the order given.
        reference: the reference's panel, or None.
        shave: border pixels left out of PSNR/SSIM (None without a reference).
        output_size: ``(width, height)`` of every output.
        auto: whether the crop was picked automatically.
    """

    source: str
    scale: float
    crop: Crop
    region: Crop
    panels: list[Panel]
    reference: Panel | None
    shave: int | None
    output_size: tuple[int, int]
    auto: bool = False

    def zoom(self) -> int:
        """The enlargement: each panel's longer side at least :data:`PANEL_EDGE` pixels."""
        edge = max(self.region.width, self.region.height)
        return max(1, min(MAX_ZOOM, math.ceil(PANEL_EDGE / edge)))

    def image(self, zoom: int | None = None) -> Image.Image:
        """The comparison sheet: a title, then the panels in rows of :data:`COLUMNS`.

        Args:
            zoom: screen pixels per output pixel (nearest neighbour); None
                picks :meth:`zoom`.
        """
        return _draw(self, zoom or self.zoom())

    def to_json(self) -> dict[str, object]:
        def num(v: float | None, digits: int) -> float | str | None:
            return None if v is None else ("inf" if math.isinf(v) else round(v, digits))

        return {
            "input": self.source,
            "scale": self.scale,
            "crop": [self.crop.x, self.crop.y, self.crop.width, self.crop.height],
            "crop_auto": self.auto,
            "region": [self.region.x, self.region.y, self.region.width, self.region.height],
            "output_size": list(self.output_size),
            "shave": self.shave,
            "models": [
                {
                    "model": p.label,
                    "seconds": num(p.seconds, 4),
                    "psnr": num(p.psnr, 4),
                    "ssim": num(p.ssim, 6),
                }
                for p in self.panels
            ],
        }


# --------------------------------------------------------------------------- measuring


def parse_models(text: str) -> list[str]:
    """``"bicubic,srcnn,vdsr"`` to a list of at least two distinct model names.

    Raises:
        UsageError: fewer than two models, an empty entry or a model named twice.
    """
    names = [n.strip() for n in text.split(",")]
    check_models(names)
    return names


def check_models(names: Sequence[str]) -> None:
    """Refuse fewer than two models, empty names and repeats (see :func:`parse_models`)."""
    if any(not n for n in names):
        raise UsageError(f"empty model name in {','.join(names)!r}; separate names by one comma")
    if len(names) < 2:
        raise UsageError(
            f"compare needs at least two models, got {len(names)}; e.g. --models bicubic,srcnn,vdsr"
        )
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise UsageError(f"model {n} is named twice in --models")
        seen.add(n)


def check_reference(hr: object, from_hr: bool) -> None:
    """Refuse a reference file together with ``from_hr`` (the input is the reference)."""
    if hr is not None and from_hr:
        raise UsageError("give --hr or --from-hr, not both: --from-hr takes the input as the HR")


def detail_crop(color: torch.Tensor, width: int, height: int) -> Crop:
    """The ``width`` x ``height`` window of ``color`` with the most detail.

    Detail is the sum over the window of the gradient magnitude of Y (BT.601)
    at each pixel; the first window in reading order wins a tie, and a flat
    image gives the centre.

    Args:
        color: ``(C, H, W)`` float in [0, 1] (C = 1 or 3).
        width, height: the window, at most the image's size.
    """
    h, w = int(color.shape[-2]), int(color.shape[-1])
    width, height = min(width, w), min(height, h)
    y = protocol.luma(color * 255.0)[0]  # (H, W) float64
    g = torch.zeros_like(y)
    gx = y[:, 1:] - y[:, :-1]
    gy = y[1:, :] - y[:-1, :]
    g[:, :-1] += gx**2
    g[:-1, :] += gy**2
    g = g.sqrt_()
    # Window sums from an integral image: one pass whatever the window size.
    ii = torch.zeros(h + 1, w + 1, dtype=torch.float64)
    ii[1:, 1:] = g.cumsum(0).cumsum(1)
    sums = ii[height:, width:] - ii[:-height, width:] - ii[height:, :-width] + ii[:-height, :-width]
    if float(sums.max()) <= 0.0:
        return Crop((w - width) // 2, (h - height) // 2, width, height)
    index = int(torch.argmax(sums.flatten()))
    top, left = divmod(index, sums.shape[1])
    return Crop(left, top, width, height)


def compare_models(
    image: str | os.PathLike[str] | Picture,
    scale: float,
    models: Sequence[ModelSpec],
    *,
    labels: Sequence[str] | None = None,
    hr: str | os.PathLike[str] | Picture | None = None,
    from_hr: bool = False,
    crop: Crop | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tile: int | None = None,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    progress: CompareProgress | None = None,
) -> SideBySide:
    """Upscale ``image`` by ``scale`` with each model and gather a :class:`SideBySide`.

    Everything that can be checked is checked before the first model runs:
    the models (each loaded and prepared), the crop, the reference's size.

    Args:
        image: the input file or a decoded picture; with ``from_hr``, the
            high-resolution ground truth.
        scale: the upscaling factor (a whole number with ``from_hr``).
        models: two or more registry names, checkpoint paths or loaded models.
        labels: the panels' names, one per model; default: the model's name
            (a checkpoint path cut to its last two parts).
        hr: the high-resolution reference, of the output's size.
        from_hr: the input is the reference; shrink it by the protocol first.
        crop: the region in pixels of ``image``; None picks :func:`detail_crop`.
        device, precision, tile: as for :class:`~sruc.engine.pipeline.Upscaler`.
        max_pixels: the largest input and reference accepted.
        progress: called with (label, tiles done, tiles total).

    Raises:
        UsageError: fewer than two models, ``hr`` with ``from_hr``, a crop
            outside the image or of zero size, a fractional scale with ``from_hr``.
        InputError: an unreadable input or reference, a reference whose size
            is not the output's.
        ModelError: a model that cannot be loaded or run at ``scale``.
    """
    scale = check_scale(scale)
    check_reference(hr, from_hr)
    names = list(labels) if labels is not None else _labels(models)
    if len(names) != len(models):
        raise UsageError(f"{len(names)} labels for {len(models)} models")
    check_models(names)
    if crop is not None:
        crop.check()
    source = _name(image)

    pic = _read(image, max_pixels)
    shown = pic  # the image the crop's coordinates refer to
    reference: Picture | None = None
    if from_hr:
        pic, reference = _from_hr(pic, scale)
        shown = reference
    out_w, out_h = output_size(pic.width, scale), output_size(pic.height, scale)
    if hr is not None:
        reference = _read(hr, max_pixels)
        if (reference.width, reference.height) != (out_w, out_h):
            raise InputError(
                f"the HR reference {_name(hr)} is {reference.width}x{reference.height} but "
                f"the output of {source} x{scale:g} is {out_w}x{out_h}; give the HR image the "
                "input was made from, or pass the HR as the input with --from-hr"
            )

    auto = crop is None
    fx, fy = out_w / shown.width, out_h / shown.height
    if crop is None:
        side_w = max(1, round(AUTO_CROP / fx))
        side_h = max(1, round(AUTO_CROP / fy))
        crop = detail_crop(shown.color, side_w, side_h)
    crop.check(shown.width, shown.height)
    x0, y0 = math.floor(crop.x * fx), math.floor(crop.y * fy)
    x1 = min(out_w, math.ceil((crop.x + crop.width) * fx))
    y1 = min(out_h, math.ceil((crop.y + crop.height) * fy))
    region = Crop(x0, y0, max(1, x1 - x0), max(1, y1 - y0))

    # Every model loaded and prepared before any runs: a bad one fails in seconds.
    upscalers = [Upscaler(m, device=device, precision=precision, tile=tile) for m in models]
    for up in upscalers:
        up.prepared(scale)

    shave = math.ceil(scale) if reference is not None else None
    ref = None if reference is None else _as_255(reference)
    panels = []
    for label, up in zip(names, upscalers, strict=True):
        report = None if progress is None else _tagged(progress, label)
        started = time.perf_counter()
        out = up.upscale_picture(pic, scale, progress=report)
        seconds = time.perf_counter() - started
        p = s = None
        if ref is not None:
            assert shave is not None
            c = quality.compare(ref, _as_255(out), shave=shave, with_ssim=True)
            p, s = c.psnr, c.ssim
        panels.append(Panel(label, _cut(out, region), seconds, p, s))
    ref_panel = None if reference is None else Panel(REFERENCE, _cut(reference, region))
    return SideBySide(source, scale, crop, region, panels, ref_panel, shave, (out_w, out_h), auto)


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _name(image: object) -> str:
    return Path(image).name if isinstance(image, str | os.PathLike) else "image"


def _labels(models: Sequence[ModelSpec]) -> list[str]:
    """The models' names, checkpoint paths cut to their last two parts where that
    keeps them apart."""
    full = []
    for m in models:
        name = m if isinstance(m, str | os.PathLike) else getattr(m, "name", None)
        if name is None:
            name = getattr(getattr(m, "loaded", None), "name", None) or type(m).__name__
        full.append(os.fspath(name))
    short = []
    for name in full:
        parts = [p for p in Path(name).parts if p != Path(name).anchor]
        short.append("/".join(parts[-2:]) if len(parts) > 2 else name)
    return short if len(set(short)) == len(set(full)) else full


def _read(image: str | os.PathLike[str] | Picture, max_pixels: int | None) -> Picture:
    return image if isinstance(image, Picture) else images.read_image(image, max_pixels)


def _from_hr(hr: Picture, scale: float) -> tuple[Picture, Picture]:
    """The protocol's input and reference from a ground truth: ``(lr, hr cropped)``."""
    if not math.isclose(scale, round(scale)):
        raise UsageError(
            f"--from-hr needs a whole-number scale (the protocol crops the HR to a multiple "
            f"of it), got {scale:g}"
        )
    s = round(scale)
    color = protocol.modcrop(hr.color, s)
    if color.shape[-1] < s or color.shape[-2] < s:
        raise InputError(f"the image is {hr.width}x{hr.height}: too small to shrink by {s}")
    lr = protocol.degrade(color.to(torch.float64) * 255.0, s) / 255.0  # MATLAB bicubic, 8 bits
    reference = hr.with_pixels(color, None)
    # The LR is 8-bit, as the protocol stores it (and as `sruc up` of its file would run).
    return replace(hr.with_pixels(lr.to(torch.float32), None), bits=8), reference


def _as_255(pic: Picture) -> torch.Tensor:
    """The picture as ``sruc psnr`` reads back its file: quantised to its bits,
    decoded as :func:`sruc.files.images.read_image` does, on 0..255 in float64."""
    arr = pic.with_pixels(pic.color, None).to_array()  # (H, W, C) uint8 or uint16
    peak = 255.0 if pic.bits == 8 else 65535.0
    color = torch.from_numpy(arr.astype(np.float32) / peak).permute(2, 0, 1)
    return color.to(torch.float64) * 255.0


def _cut(pic: Picture, region: Crop) -> Image.Image:
    """The region of ``pic``, 8-bit, without alpha (the panels compare colour)."""
    c = pic.color[:, region.y : region.y + region.height, region.x : region.x + region.width]
    # At 8 bits: a 16-bit gray image would otherwise become Pillow's I;16, which
    # converts to RGB by clipping at 255.
    return replace(pic.with_pixels(c, None), bits=8).to_pil().convert("RGB")


def _tagged(progress: CompareProgress, label: str) -> ProgressFn:
    def report(done: int, total: int) -> None:
        progress(label, done, total)

    return report


# --------------------------------------------------------------------------- writing


def check_sheet_output(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Check, before any work, that the sheet can be written to ``path`` (a PNG).

    Raises:
        UsageError: not a ``.png`` name (a lossy format would blur the very pixels
            being compared), or one of the inputs.
        OutputError: see :func:`sruc.files.images.check_output`.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(
            f"the comparison is written as PNG (lossless, so the panels keep each model's "
            f"pixels); give an output ending in .png, not {path.name}"
        )
    return images.check_output(path, overwrite=overwrite, inputs=inputs)


def write_sheet(
    sheet: SideBySide,
    path: str | os.PathLike[str],
    *,
    zoom: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Draw ``sheet`` and write it to ``path`` atomically (a PNG, see
    :func:`check_sheet_output`)."""
    path = check_sheet_output(path, overwrite=overwrite)
    return images.write_image(images.from_pil(sheet.image(zoom)), path, overwrite=overwrite)


# --------------------------------------------------------------------------- drawing


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font at ``size`` pixels (the training plot's too)."""
    return ImageFont.load_default(size)


def _draw(sheet: SideBySide, zoom: int) -> Image.Image:
    panels = [*sheet.panels, *([sheet.reference] if sheet.reference else [])]
    pw, ph = sheet.region.width * zoom, sheet.region.height * zoom
    size = max(FONT_MIN, min(FONT_MAX, pw // 16))
    f = font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = round(size * 1.3)
    rows_of_text = max(len(p.lines()) for p in panels)
    label_h = rows_of_text * line_h + GAP // 2
    text_w = max(probe.textlength(t, font=f) for p in panels for t in p.lines())
    cell_w = max(pw, math.ceil(text_w))
    cell_h = ph + GAP // 2 + label_h
    best = _best(sheet.panels)

    title = _title(sheet)
    title_h = line_h * len(title) + GAP
    columns = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    width = GAP + columns * (cell_w + GAP)
    width = max(width, GAP * 2 + math.ceil(max(probe.textlength(t, font=f) for t in title)))
    height = GAP + title_h + rows * (cell_h + GAP)
    im = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(title):
        draw.text((GAP, GAP + i * line_h), line, fill=TEXT if i == 0 else DIM, font=f)

    for k, panel in enumerate(panels):
        r, c = divmod(k, columns)
        left = GAP + c * (cell_w + GAP)
        top = GAP + title_h + r * (cell_h + GAP)
        big = panel.crop.resize((pw, ph), Image.Resampling.NEAREST)
        im.paste(big, (left + (cell_w - pw) // 2, top))
        ty = top + ph + GAP // 2
        for j, line in enumerate(panel.lines()):
            colour = TEXT if j == 0 else DIM
            if j > 0 and panel is best and line.startswith("PSNR"):
                colour = BEST
            draw.text((left, ty + j * line_h), line, fill=colour, font=f)
    return im


def _title(sheet: SideBySide) -> list[str]:
    c, r = sheet.crop, sheet.region
    how = "most detailed region" if sheet.auto else "crop"
    lines = [
        f"{sheet.source} x{sheet.scale:g}: {how} {c.width}x{c.height} at {c.x},{c.y} "
        f"of the input (output {r.width}x{r.height} at {r.x},{r.y})"
    ]
    if sheet.shave is not None:
        lines.append(f"Y-PSNR / SSIM of the whole image against the HR, {sheet.shave} px shaved")
    lines.append("time: the whole image, model loading excluded")
    return lines


def _best(panels: Sequence[Panel]) -> Panel | None:
    scored = [p for p in panels if p.psnr is not None]
    if not scored:
        return None
    return max(scored, key=lambda p: p.psnr if p.psnr is not None else -math.inf)


__all__ = [
    "AUTO_CROP",
    "CompareProgress",
    "Crop",
    "Panel",
    "SideBySide",
    "check_models",
    "check_reference",
    "check_sheet_output",
    "compare_models",
    "detail_crop",
    "font",
    "parse_models",
    "write_sheet",
]
