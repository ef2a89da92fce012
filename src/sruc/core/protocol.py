"""The super-resolution papers' evaluation protocol, as pure tensor functions.

``docs/PROTOCOL.md`` describes it; this module is the one place sruc
implements it, for ``sruc bench`` and for the validation and training data of
``sruc train`` alike (a network must learn the degradation it is measured on).

All images are float64 tensors on the 0..255 scale. For a high-resolution
image ``hr`` and an integer scale ``s``:

1. ``modcrop``: crop to a multiple of ``s``, keeping the top-left;
2. ``luma``: its BT.601 studio-swing Y channel (a gray image is its own Y), not
   rounded;
3. ``degrade``: the low-resolution Y, MATLAB ``imresize(Y, 1/s)`` stored at
   8-bit levels (rounded), as every LR image is;
4. ``interpolate``: the network input, MATLAB bicubic of the LR back to the HR
   size, in float;
5. the network's output (the input itself for bicubic) is rounded to 8-bit
   levels, as a saved file would be, and compared with the unrounded HR Y with
   ``s`` pixels shaved from every border.

With the identity as the model this gives the published bicubic baselines:
Set5 33.66 / 30.39 / 28.42 and Set14 30.23 / 27.54 / 26.00 dB (x2/x3/x4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sruc.core.color import rgb_to_y
from sruc.core.metrics import psnr, ssim
from sruc.core.resize import imresize

PEAK = 255.0


def modcrop(img: torch.Tensor, scale: float) -> torch.Tensor:
    """Crop ``(..., H, W)`` to multiples of ``scale`` (top-left kept)."""
    s = round(scale)
    if not math.isclose(scale, s):
        raise ValueError(f"the protocol needs an integer scale, got {scale}")
    h, w = img.shape[-2] // s * s, img.shape[-1] // s * s
    return img[..., :h, :w]


def luma(img: torch.Tensor) -> torch.Tensor:
    """Y of a ``(C, H, W)`` 0..255 image as ``(1, H, W)`` float64; gray is its own Y."""
    x = img.to(torch.float64)
    if x.ndim == 2:
        x = x[None]
    if x.shape[0] >= 3:
        return rgb_to_y(x[:3] / PEAK) * PEAK
    return x[:1]


def quantize(y: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as storing to an 8-bit file does."""
    return torch.round(y.clamp(0, PEAK))


def degrade(hr_y: torch.Tensor, scale: float) -> torch.Tensor:
    """The LR image: MATLAB bicubic by ``1/scale``, at 8-bit levels."""
    return quantize(imresize(hr_y, 1.0 / scale))


def interpolate(lr_y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The network input: MATLAB bicubic of the LR to ``size``, not rounded."""
    return imresize(lr_y, size=size)


@dataclass
class Score:
    """PSNR (dB) and SSIM of one image at one scale."""

    psnr: float
    ssim: float | None


#: Maps a network input (1, 1, H, W) in [0, 1] to an output of the same shape.
YModel = Callable[[torch.Tensor], torch.Tensor]


def evaluate_image(
    hr: torch.Tensor, scale: int, model: YModel | None = None, *, with_ssim: bool = True
) -> Score:
    """Score one HR image (``(C, H, W)`` on 0..255) by the protocol.

    ``model`` None is the bicubic baseline. The model runs in float32 on
    values in [0, 1]; it is called under the caller's grad/device context.
    SSIM is left out (None) when ``with_ssim`` is False.
    """
    hr_y = luma(modcrop(hr, scale))
    size = (int(hr_y.shape[-2]), int(hr_y.shape[-1]))
    up = interpolate(degrade(hr_y, scale), size)
    if model is not None:
        x = (up / PEAK).to(torch.float32)[None]
        up = model(x)[0].to(torch.float64) * PEAK
    out = quantize(up)
    return Score(
        psnr(hr_y, out, shave=scale, y_only=False),
        ssim(hr_y, out, shave=scale, y_only=False) if with_ssim else None,
    )
