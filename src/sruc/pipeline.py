"""The upscaling pipeline.

decode -> EXIF orientation -> MATLAB bicubic upscale of the whole image ->
model on the Y channel (tiled, seam-free) -> Cb/Cr from the bicubic image ->
merge -> clamp and round -> encode. Gray images are their own Y (one channel,
no colour work); alpha is upscaled bicubically on its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from sruc import images
from sruc.color import rgb_to_ycbcr, ycbcr_to_rgb
from sruc.device import resolve_device
from sruc.images import Picture
from sruc.registry import LoadedModel, check_scale, load_model
from sruc.resize import imresize, output_size
from sruc.tiling import ProgressFn, run_tiled

ImageInput = str | os.PathLike[str] | Image.Image | Picture
ModelSpec = str | os.PathLike[str] | nn.Module | LoadedModel


@dataclass
class UpscaleResult:
    """What :func:`upscale_file` did, for the CLI's summary."""

    output: Path
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    model: str
    scale: float
    device: str
    seconds: float


def _as_picture(image: ImageInput, max_pixels: int | None) -> Picture:
    if isinstance(image, Picture):
        return image
    if isinstance(image, Image.Image):
        return images.from_pil(image, max_pixels)
    return images.read_image(image, max_pixels)


def _as_model(model: ModelSpec) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model)


def upscale_picture(
    pic: Picture,
    scale: float,
    *,
    model: ModelSpec = "bicubic",
    device: str | torch.device = "auto",
    tile: int | None = None,
    progress: ProgressFn | None = None,
) -> Picture:
    """Upscale a decoded picture; the core of :func:`upscale`.

    Args:
        pic: the decoded image.
        scale: upscaling factor in (1, 8]; fractional scales work with
            multi-scale models (VDSR, bicubic).
        model: registry name, checkpoint path, nn.Module or loaded model.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        tile: tile edge in pixels; 0 disables tiling; None picks one.
        progress: called with (tiles done, tiles total).
    """
    check_scale(scale)
    lm = _as_model(model)
    lm.check_scale(scale)
    dev = resolve_device(device)
    out_h, out_w = output_size(pic.height, scale), output_size(pic.width, scale)
    with torch.inference_mode():
        up = imresize(pic.color[None], scale)  # (1, C, H', W'), C = 1 or 3
        assert up.shape[-2:] == (out_h, out_w)
        alpha = imresize(pic.alpha[None], scale)[0].clamp_(0, 1) if pic.alpha is not None else None
        if lm.arch == "bicubic":
            color = up[0]
        else:
            net = lm.module.to(dev).eval()
            if pic.is_gray:
                color = run_tiled(
                    net, up, radius=lm.radius, tile=tile, device=dev, progress=progress
                )[0]
            else:
                ycc = rgb_to_ycbcr(up)
                y = run_tiled(
                    net,
                    ycc[:, :1].contiguous(),
                    radius=lm.radius,
                    tile=tile,
                    device=dev,
                    progress=progress,
                )
                color = ycbcr_to_rgb(torch.cat([y, ycc[:, 1:]], dim=1))[0]
        color = color.clamp_(0, 1)
    if progress is not None and lm.arch == "bicubic":
        progress(1, 1)
    return pic.with_pixels(color, alpha)


def upscale(
    image: ImageInput,
    scale: float,
    *,
    model: ModelSpec = "bicubic",
    device: str | torch.device = "auto",
    tile: int | None = None,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    progress: ProgressFn | None = None,
) -> Image.Image:
    """Upscale an image file or Pillow image and return a Pillow image.

    The ICC profile and EXIF (orientation reset) are in the result's ``info``.
    Pillow cannot hold 16-bit colour, so 16-bit RGB comes back as 8-bit here;
    :func:`upscale_file` keeps 16 bits when writing PNG or TIFF.

    Example:
        >>> import sruc
        >>> sruc.upscale("photo.jpg", 3).save("photo_x3.png")  # doctest: +SKIP
    """
    pic = _as_picture(image, max_pixels)
    return upscale_picture(
        pic, scale, model=model, device=device, tile=tile, progress=progress
    ).to_pil()


def upscale_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    scale: float,
    *,
    model: ModelSpec = "bicubic",
    device: str | torch.device = "auto",
    tile: int | None = None,
    quality: int | None = None,
    overwrite: bool = False,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    progress: ProgressFn | None = None,
    on_start: Callable[[Picture], None] | None = None,
) -> UpscaleResult:
    """Upscale ``src`` into ``dst``, checking everything cheap before the work.

    The output is written atomically; the input is never overwritten.
    """
    started = time.perf_counter()
    check_scale(scale)
    dst = images.check_output(dst, overwrite=overwrite, inputs=(src,))
    lm = _as_model(model)
    lm.check_scale(scale)
    dev = resolve_device(device)
    pic = images.read_image(src, max_pixels)
    if on_start is not None:
        on_start(pic)
    out = upscale_picture(pic, scale, model=lm, device=dev, tile=tile, progress=progress)
    images.write_image(out, dst, quality=quality, overwrite=overwrite)
    return UpscaleResult(
        output=dst,
        input_size=(pic.width, pic.height),
        output_size=(out.width, out.height),
        model=lm.name,
        scale=scale,
        device=str(dev),
        seconds=time.perf_counter() - started,
    )
