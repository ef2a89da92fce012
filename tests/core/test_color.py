from __future__ import annotations

import torch

from sruc.core.color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb


def test_known_values_match_matlab_rgb2ycbcr() -> None:
    # MATLAB: rgb2ycbcr([0 0 0]) = [16 128 128]/255, white -> [235 128 128]/255,
    # pure red -> [81.481 90.203 240]/255 (16 + 65.481, 128 - 37.797, 128 + 112).
    rgb = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    ycc = rgb_to_ycbcr(rgb[:, None, :]) * 255
    expected = torch.tensor(
        [[16, 235, 81.481], [128, 128, 90.203], [128, 128, 240.0]], dtype=torch.float64
    )
    torch.testing.assert_close(ycc[:, 0, :], expected, atol=1e-9, rtol=0)


def test_y_formula_uses_65_481_not_64_738() -> None:
    rgb = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)[:, None, None]
    assert abs(float(rgb_to_y(rgb)) * 255 - (16 + 65.481)) < 1e-9


def test_round_trip_is_exact_to_float_precision() -> None:
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 17, 9, generator=g, dtype=torch.float64)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert float((back - rgb).abs().max()) < 1e-12
    rgb32 = rgb.float()
    assert float((ycbcr_to_rgb(rgb_to_ycbcr(rgb32)) - rgb32).abs().max()) < 1e-5


def test_8bit_round_trip_is_lossless() -> None:
    values = torch.arange(256, dtype=torch.float64) / 255
    rgb = torch.stack(torch.meshgrid(values, values[::3], values[::5], indexing="ij")).reshape(
        3, -1, 1
    )
    back = torch.round(ycbcr_to_rgb(rgb_to_ycbcr(rgb.float())) * 255)
    assert torch.equal(back, torch.round(rgb.float() * 255))


def test_rgb_to_y_equals_first_channel() -> None:
    rgb = torch.rand(3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(rgb_to_y(rgb), rgb_to_ycbcr(rgb)[:1], atol=1e-12, rtol=0)
