"""PSNR/SSIM between two images given as files, Pillow images or tensors.

A thin layer over :mod:`sruc.core.metrics` that decodes like the upscaler does
(EXIF orientation applied, alpha ignored), puts 8- and 16-bit images on the
same 0..255 scale, and explains size mismatches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from PIL import Image

from sruc.core import metrics
from sruc.errors import InputError, UsageError
from sruc.files import images

ImageLike = str | os.PathLike[str] | Image.Image | torch.Tensor


def _load(img: ImageLike, max_pixels: int | None) -> torch.Tensor:
    """To a float64 ``(C, H, W)`` tensor on 0..255 (tensors are taken as given)."""
    if isinstance(img, torch.Tensor):
        return img.to(torch.float64)
    if isinstance(img, Image.Image):
        pic = images.from_pil(img)
    else:
        pic = images.read_image(img, max_pixels=max_pixels)
    return pic.color.to(torch.float64) * 255.0


def _pair(
    a: ImageLike, b: ImageLike, y_only: bool, max_pixels: int | None = images.DEFAULT_MAX_PIXELS
) -> tuple[torch.Tensor, torch.Tensor]:
    name_a = str(a) if isinstance(a, str | os.PathLike) else "first image"
    name_b = str(b) if isinstance(b, str | os.PathLike) else "second image"
    x, y = _load(a, max_pixels), _load(b, max_pixels)
    if x.shape[-2:] != y.shape[-2:]:
        raise InputError(
            f"sizes differ: {name_a} is {x.shape[-1]}x{x.shape[-2]}, "
            f"{name_b} is {y.shape[-1]}x{y.shape[-2]}; compare images of the same size"
        )
    cx, cy = (t.shape[0] if t.ndim == 3 else 1 for t in (x, y))
    if cx != cy:
        if not y_only:
            raise InputError(
                f"cannot compare RGB with gray channel by channel: {name_a} vs {name_b}"
            )
        # A gray image is its own Y; reduce the colour one to its Y.
        x, y = (metrics.prepare(t, 0, True) for t in (x, y))
    return x, y


def psnr(a: ImageLike, b: ImageLike, *, shave: int = 0, y_only: bool = True) -> float:
    """PSNR in dB by the papers' protocol: Y channel (BT.601) unless ``y_only`` is False,
    ``shave`` border pixels cropped, peak 255; ``inf`` for identical images.

    Example:
        >>> sruc.psnr("hr.png", "sr.png", shave=3)  # doctest: +SKIP
        33.66...
    """
    x, y = _pair(a, b, y_only)
    return _guard(lambda: metrics.psnr(x, y, shave=shave, y_only=y_only))


def ssim(a: ImageLike, b: ImageLike, *, shave: int = 0, y_only: bool = True) -> float:
    """SSIM (Wang et al., 11x11 Gaussian window, sigma 1.5) on the same terms as :func:`psnr`."""
    x, y = _pair(a, b, y_only)
    return _guard(lambda: metrics.ssim(x, y, shave=shave, y_only=y_only))


@dataclass
class Comparison:
    """The result of :func:`compare`, as ``sruc psnr`` prints it."""

    psnr: float
    ssim: float | None
    shave: int
    channel: str
    width: int
    height: int

    def to_json(self) -> dict[str, object]:
        def num(v: float | None) -> float | str | None:
            return None if v is None else ("inf" if v == float("inf") else round(v, 6))

        return {
            "psnr": num(self.psnr),
            "ssim": num(self.ssim),
            "shave": self.shave,
            "channel": self.channel,
            "width": self.width,
            "height": self.height,
        }


def compare(
    a: ImageLike,
    b: ImageLike,
    *,
    shave: int = 0,
    y_only: bool = True,
    with_ssim: bool = False,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
) -> Comparison:
    """PSNR (and optionally SSIM) of two images, decoding each once."""
    if shave < 0:
        raise UsageError(f"shave must be 0 or more, got {shave}")
    x, y = _pair(a, b, y_only, max_pixels)
    p = _guard(lambda: metrics.psnr(x, y, shave=shave, y_only=y_only))
    s = _guard(lambda: metrics.ssim(x, y, shave=shave, y_only=y_only)) if with_ssim else None
    return Comparison(p, s, shave, "y" if y_only else "rgb", int(x.shape[-1]), int(x.shape[-2]))


def _guard(fn: object) -> float:
    assert callable(fn)
    try:
        return float(fn())
    except ValueError as e:
        raise InputError(str(e)) from None
