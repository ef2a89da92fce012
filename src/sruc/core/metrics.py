"""PSNR and SSIM by the super-resolution papers' protocol (``shared/PROTOCOL.md``).

Both work on tensors ``(C, H, W)`` or ``(H, W)`` with values on the 0..255
scale, compute in float64, crop ``shave`` pixels from every border first, and
(for RGB input, by default) measure the BT.601 studio-swing Y channel only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sruc.core.color import rgb_to_y

PEAK = 255.0
# SSIM constants of Wang et al.'s reference implementation.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def prepare(img: torch.Tensor, shave: int, y_only: bool) -> torch.Tensor:
    """To float64 ``(C, H, W)`` on 0..255, Y-only if asked, border shaved: what
    :func:`psnr` and :func:`ssim` measure."""
    x = img.to(torch.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected (C, H, W) or (H, W), got shape {tuple(img.shape)}")
    if y_only and x.shape[0] >= 3:
        x = rgb_to_y(x[:3] / PEAK) * PEAK
    elif x.shape[0] in (2, 4):
        x = x[:-1]  # drop alpha: quality is measured on colour
    if shave > 0:
        if x.shape[-1] <= 2 * shave or x.shape[-2] <= 2 * shave:
            raise ValueError(f"cannot shave {shave} px from a {x.shape[-1]}x{x.shape[-2]} image")
        x = x[:, shave:-shave, shave:-shave]
    return x


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, *, shave: int = 0, y_only: bool = True) -> float:
    """Peak signal-to-noise ratio in dB, peak 255; ``inf`` for identical images."""
    _check_pair(a, b)
    x, y = prepare(a, shave, y_only), prepare(b, shave, y_only)
    mse = float(torch.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK**2 / mse)


def _gaussian_1d(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    ax = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(ax**2) / (2 * SSIM_SIGMA**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(a: torch.Tensor, b: torch.Tensor, *, shave: int = 0, y_only: bool = True) -> float:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5,
    valid region, mean of the SSIM map, averaged over channels."""
    _check_pair(a, b)
    x, y = prepare(a, shave, y_only), prepare(b, shave, y_only)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after shaving")
    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2
    g = _gaussian_1d(x.dtype, x.device)
    gv, gh = g.reshape(1, 1, -1, 1), g.reshape(1, 1, 1, -1)
    x, y = x[:, None], y[:, None]  # (C, 1, H, W): channels as a batch

    def blur(t: torch.Tensor) -> torch.Tensor:
        # The 2-D Gaussian is separable: two 11-tap passes instead of 121 taps.
        return F.conv2d(F.conv2d(t, gv), gh)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return float((num / den).mean())
