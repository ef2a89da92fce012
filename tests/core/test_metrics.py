from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sruc.core.metrics import psnr, ssim


def test_psnr_known_value() -> None:
    a = torch.zeros(1, 10, 10, dtype=torch.float64)
    b = a + 1.0  # MSE = 1 -> 10*log10(255^2) = 48.1308 dB
    assert psnr(a, b, y_only=False) == pytest.approx(20 * math.log10(255), abs=1e-12)


def test_psnr_identical_is_inf() -> None:
    a = torch.rand(3, 8, 8) * 255
    assert psnr(a, a.clone()) == math.inf


def test_shave_crops_borders() -> None:
    a = torch.zeros(1, 12, 12, dtype=torch.float64)
    b = a.clone()
    b[:, :2, :] = 200  # differences only in the top 2 rows
    assert psnr(a, b, shave=2, y_only=False) == math.inf
    assert psnr(a, b, shave=1, y_only=False) < 30


def test_y_only_uses_bt601_luma() -> None:
    a = torch.zeros(3, 4, 4, dtype=torch.float64)
    b = a.clone()
    b[0] = 255.0  # pure red: Y moves by 65.481
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 65.481**2), abs=1e-9)


def _naive_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s formula evaluated window by window, for a cross-check."""
    ax = np.arange(11) - 5
    g = np.exp(-(ax**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * (px - mx) ** 2).sum()
            vy = (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append(
                ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    return float(np.mean(vals))


def test_ssim_matches_naive_window_formula() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(20, 17))
    y = np.clip(x + rng.normal(0, 20, size=x.shape), 0, 255)
    got = ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None], y_only=False)
    assert got == pytest.approx(_naive_ssim(x, y), abs=1e-10)
    assert ssim(torch.from_numpy(x)[None], torch.from_numpy(x)[None]) == pytest.approx(1.0)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
