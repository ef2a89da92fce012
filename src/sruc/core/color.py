"""BT.601 studio-swing colour conversion, exactly as MATLAB ``rgb2ycbcr``/``ycbcr2rgb``.

All functions take and return float tensors of shape ``(..., 3, H, W)`` with
values in [0, 1] (RGB) or the studio-swing range (Y in [16, 235]/255, Cb/Cr in
[16, 240]/255). Pillow's ``"YCbCr"`` mode and OpenCV's ``COLOR_RGB2YCrCb`` are
full-range JPEG conversions and must not be used where the protocol asks for
these (see ``docs/PROTOCOL.md``).
"""

from __future__ import annotations

import torch

# MATLAB rgb2ycbcr for double input in [0, 1]: offset + (M @ rgb) / 255.
_M = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_OFFSET = (16.0, 128.0, 128.0)


def _matrix(inverse: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    m = torch.tensor(_M, dtype=torch.float64) / 255.0
    if inverse:
        # MATLAB's ycbcr2rgb inverts the same matrix rather than using rounded
        # published coefficients, so the round trip is exact up to float error.
        m = torch.linalg.inv(m)
    return m.to(dtype=dtype, device=device)


def _offset(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return (torch.tensor(_OFFSET, dtype=torch.float64) / 255.0).to(dtype=dtype, device=device)


def _check(x: torch.Tensor) -> None:
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected a tensor of shape (..., 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] to studio-swing YCbCr in [0, 1] units, as MATLAB ``rgb2ycbcr``."""
    _check(rgb)
    m = _matrix(False, rgb.dtype, rgb.device)
    out = torch.einsum("ij,...jhw->...ihw", m, rgb)
    return out + _offset(rgb.dtype, rgb.device)[:, None, None]


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Studio-swing YCbCr to RGB in [0, 1] (not clamped), as MATLAB ``ycbcr2rgb``."""
    _check(ycbcr)
    m = _matrix(True, ycbcr.dtype, ycbcr.device)
    centred = ycbcr - _offset(ycbcr.dtype, ycbcr.device)[:, None, None]
    return torch.einsum("ij,...jhw->...ihw", m, centred)


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """The Y channel alone, shape ``(..., 1, H, W)``.

    Y = 16/255 + (65.481 R + 128.553 G + 24.966 B)/255 for R, G, B in [0, 1].
    """
    _check(rgb)
    w = torch.tensor(_M[0], dtype=torch.float64, device=rgb.device) / 255.0
    w = w.to(rgb.dtype)
    y = (rgb * w[:, None, None]).sum(dim=-3, keepdim=True)
    return y + _OFFSET[0] / 255.0
