"""Tests for :mod:`sruc.core.resize` against an independent MATLAB ``imresize`` reference.

The reference (``tests/core/reference_imresize.py``) is a plain loop-based float64
implementation of MATLAB's documented bicubic algorithm, written without looking at
``sruc.core.resize``.  ``tests/core/fixtures/imresize_ref.json`` stores its outputs for a
spread of cases; regenerate it with ``python tests/core/fixtures/make_imresize_fixtures.py``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reference_imresize import ref_cubic, ref_imresize, ref_output_length
from sruc.core.resize import cubic, imresize, output_size

FIXTURE_PATH = Path(__file__).resolve().parent / "fixtures" / "imresize_ref.json"


@functools.lru_cache(maxsize=1)
def load_fixtures() -> dict[str, Any]:
    """Load (once) and return the JSON fixture document."""
    return json.loads(FIXTURE_PATH.read_text(encoding="utf-8"))


def case_names() -> list[str]:
    """Names of all fixture cases, for parametrisation."""
    return [case["name"] for case in load_fixtures()["cases"]]


def get_case(name: str) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """Return ``(input, case record, expected output)`` for fixture case ``name``."""
    doc = load_fixtures()
    case = next(c for c in doc["cases"] if c["name"] == name)
    a = np.array(doc["inputs"][case["input"]], dtype=np.float64)
    expected = np.array(case["output"], dtype=np.float64)
    return a, case, expected


def sruc_resize(a: np.ndarray, case: dict[str, Any], dtype: torch.dtype) -> np.ndarray:
    """Run ``sruc.core.resize.imresize`` on a 2-D array with the case's scale or size."""
    x = torch.from_numpy(a).to(dtype)
    if case["size"] is not None:
        y = imresize(x, size=tuple(case["size"]))
    else:
        y = imresize(x, scale=case["scale"])
    assert y.dtype == dtype
    return y.double().numpy()


# --------------------------------------------------------------------------- fixtures


def test_fixture_file_is_small_and_complete() -> None:
    """The fixture file stays small and covers the intended spread of cases."""
    assert FIXTURE_PATH.stat().st_size < 100_000
    doc = load_fixtures()
    scales = {c["scale"] for c in doc["cases"] if c["scale"] is not None}
    for s in (2.0, 3.0, 4.0, 1 / 2, 1 / 3, 1 / 4, 1.5, 2.5, 0.7, 0.37, 3.3):
        assert s in scales
    assert any(c["size"] is not None for c in doc["cases"])


@pytest.mark.parametrize("name", case_names())
def test_matches_reference_float64(name: str) -> None:
    """float64 ``imresize`` matches every reference fixture to 1e-10."""
    a, case, expected = get_case(name)
    got = sruc_resize(a, case, torch.float64)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", case_names())
def test_matches_reference_float32(name: str) -> None:
    """float32 ``imresize`` matches every reference fixture to 1e-4 (values in 0..255)."""
    a, case, expected = get_case(name)
    got = sruc_resize(a, case, torch.float32)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "name",
    [
        "rand_7x5_x2",
        "rand_13x11_third",
        "rand_5x7_x1.5",
        "rand_13x11_x0.37",
        "rand_7x5_size_10x3",
        "rand_1x6_x2",
        "impulse_5x5_half",
    ],
)
def test_fixtures_agree_with_live_reference(name: str) -> None:
    """The stored fixtures are what the reference module computes now (no drift)."""
    a, case, expected = get_case(name)
    size = tuple(case["size"]) if case["size"] is not None else None
    live = ref_imresize(a, scale=case["scale"], size=size)
    np.testing.assert_array_equal(live, expected)


# ------------------------------------------------------------------ hand-derived values

# 1-D impulse [0 0 1 0 0] resized to 1x10 (column scale s = 2, row scale 1).
# u = i/2 + 0.25 for i = 1..10 gives 0.75, 1.25, ..., 5.25; the impulse sits at j = 3,
# and for an up-scale the cubic weights already sum to 1, so out(i) = cubic(u - 3):
#   i=1: |u-3| = 2.25 -> 0 (the mirrored tap -2 -> 3 has |u+2| = 2.75 -> 0 as well)
#   i=2: 1.75 -> -0.5*1.75^3 + 2.5*1.75^2 - 4*1.75 + 2 = -0.0234375
#   i=3: 1.25 -> -0.5*1.25^3 + 2.5*1.25^2 - 4*1.25 + 2 = -0.0703125
#   i=4: 0.75 ->  1.5*0.75^3 - 2.5*0.75^2 + 1           =  0.2265625
#   i=5: 0.25 ->  1.5*0.25^3 - 2.5*0.25^2 + 1           =  0.8671875
# and symmetrically for i = 6..10 (i=10: the mirrored tap 8 -> 3 has |u-8| = 2.75 -> 0).
# All values are exact binary fractions.
HAND_IMPULSE_X2 = [
    0.0,
    -0.0234375,
    -0.0703125,
    0.2265625,
    0.8671875,
    0.8671875,
    0.2265625,
    -0.0703125,
    -0.0234375,
    0.0,
]


def test_hand_derived_impulse_reference() -> None:
    """The reference reproduces the hand-derived 1-D impulse up-scale."""
    a = np.array([[0.0, 0.0, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(ref_imresize(a, size=(1, 10))[0], HAND_IMPULSE_X2, atol=1e-15)
    # scale=2 also doubles the single row; both rows are the same.
    out = ref_imresize(a, scale=2.0)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out, [HAND_IMPULSE_X2] * 2, atol=1e-15)


def test_hand_derived_impulse_sruc() -> None:
    """``sruc.core.resize.imresize`` reproduces the hand-derived 1-D impulse up-scale."""
    x = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    y = imresize(x, size=(1, 10))
    np.testing.assert_allclose(y[0].numpy(), HAND_IMPULSE_X2, rtol=0, atol=1e-15)
    # Transposed: a 5x1 column resized to 10x1.
    yt = imresize(x.T.contiguous(), size=(10, 1))
    np.testing.assert_allclose(yt[:, 0].numpy(), HAND_IMPULSE_X2, rtol=0, atol=1e-15)


def test_cubic_kernel_matches_reference() -> None:
    """``sruc.core.resize.cubic`` is the Keys kernel with a = -0.5."""
    xs = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 3.0, 10.0]
    xs = xs + [-x for x in xs]
    got = cubic(torch.tensor(xs, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, [ref_cubic(x) for x in xs], rtol=0, atol=1e-15)
    assert ref_cubic(0.0) == 1.0
    assert ref_cubic(1.0) == 0.0
    assert ref_cubic(2.0) == 0.0


# ------------------------------------------------------------------------ output sizes

OUTPUT_SIZE_CASES = [
    (255, 1 / 3, 85),  # 255 * (1/3) is 85.0 in IEEE arithmetic
    (256, 1 / 3, 86),  # ceil(85.33)
    (3, 1 / 3, 1),
    (101, 2.5, 253),  # ceil(252.5)
    (5, 1.5, 8),  # ceil(7.5)
    (7, 1.5, 11),  # ceil(10.5)
    (100, 2.0, 200),
    (7, 0.5, 4),  # ceil(3.5)
    (8, 0.25, 2),
    (13, 0.37, 5),  # ceil(4.81)
    (11, 0.37, 5),  # ceil(4.07)
    (11, 0.7, 8),  # 7.699999999999999 -> 8
    (9, 3.3, 30),  # ceil(29.7)
    (1, 2.0, 2),
    (1, 0.5, 1),
    (300, 0.1, 30),
    # 50 * 1.1 == 55.00000000000001 in IEEE arithmetic: the float-error guard gives 55.
    (50, 1.1, 55),
]


@pytest.mark.parametrize(("n", "scale", "expected"), OUTPUT_SIZE_CASES)
def test_output_size(n: int, scale: float, expected: int) -> None:
    """``output_size`` is the guarded ``ceil(n * scale)``, like the reference."""
    assert ref_output_length(n, scale) == expected
    assert output_size(n, scale) == expected


def test_output_shape_follows_output_size() -> None:
    """``imresize`` with a scale produces ``output_size`` along each dimension."""
    x = torch.zeros(2, 255, 101, dtype=torch.float32)
    assert imresize(x, scale=1 / 3).shape == (2, 85, 34)
    x = torch.zeros(5, 7, dtype=torch.float64)
    assert imresize(x, scale=1.5).shape == (8, 11)


# -------------------------------------------------------------------------- properties


@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0, 1.5, 3.3, 1 / 2, 1 / 3, 1 / 4, 0.7, 0.37])
def test_constant_image_stays_constant(scale: float) -> None:
    """Weights are normalised, so a constant image stays constant (to 1e-12)."""
    x = torch.full((13, 10), 173.25, dtype=torch.float64)
    y = imresize(x, scale=scale)
    assert y.shape == (output_size(13, scale), output_size(10, scale))
    np.testing.assert_allclose(y.numpy(), 173.25, rtol=0, atol=1e-12)


def test_constant_image_stays_constant_size() -> None:
    """Also with an explicit size mixing up- and down-scaling."""
    x = torch.full((9, 12), 42.0, dtype=torch.float64)
    y = imresize(x, size=(20, 5))
    np.testing.assert_allclose(y.numpy(), 42.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [2.0, 1 / 3, 0.7])
def test_batched_matches_per_channel(scale: float) -> None:
    """An (N, C, H, W) tensor is resized exactly like each channel on its own."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.rand((2, 3, 9, 7), generator=gen, dtype=torch.float64) * 255.0
    y = imresize(x, scale=scale)
    assert y.shape[:2] == (2, 3)
    for n in range(2):
        for c in range(3):
            single = imresize(x[n, c].clone(), scale=scale)
            torch.testing.assert_close(y[n, c], single, rtol=0, atol=1e-12)
    # and each channel agrees with the reference
    ref = ref_imresize(x[1, 2].numpy(), scale=scale)
    np.testing.assert_allclose(y[1, 2].numpy(), ref, rtol=0, atol=1e-10)


def test_downscale_half_against_reference() -> None:
    """Down-scaling a random image by 1/2 matches the live reference."""
    rng = np.random.default_rng(7)
    a = rng.uniform(0.0, 255.0, size=(16, 11))
    y = imresize(torch.from_numpy(a), scale=0.5)
    assert y.shape == (8, 6)
    np.testing.assert_allclose(y.numpy(), ref_imresize(a, scale=0.5), rtol=0, atol=1e-10)


def test_downscale_without_antialias_against_reference() -> None:
    """``antialias=False`` matches MATLAB's ``'Antialiasing', false`` (unstretched kernel)."""
    rng = np.random.default_rng(8)
    a = rng.uniform(0.0, 255.0, size=(12, 9))
    y = imresize(torch.from_numpy(a), scale=1 / 3, antialias=False)
    expected = ref_imresize(a, scale=1 / 3, antialias=False)
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-10)
    # and it really differs from the antialiased result
    assert np.abs(expected - ref_imresize(a, scale=1 / 3)).max() > 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    """CUDA and CPU give the same result (float64 to 1e-10, float32 to 1e-4)."""
    gen = torch.Generator().manual_seed(99)
    x = torch.rand((2, 3, 17, 12), generator=gen, dtype=torch.float64) * 255.0
    for scale in (2.0, 1 / 3, 0.7, 3.3):
        cpu = imresize(x, scale=scale)
        gpu = imresize(x.cuda(), scale=scale)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-10)
        gpu32 = imresize(x.float().cuda(), scale=scale)
        torch.testing.assert_close(gpu32.double().cpu(), cpu, rtol=0, atol=1e-4)


def test_torch_interpolate_bicubic_is_not_matlab() -> None:
    """``F.interpolate(mode='bicubic')`` differs from MATLAB for a x2 up-scale.

    PyTorch uses the cubic coefficient a = -0.75 and clamps at the borders instead of
    MATLAB's a = -0.5 with symmetric mirroring, which is why sruc has its own resize.
    """
    a, _, expected = get_case("rand_8x8_x2")
    x = torch.from_numpy(a)[None, None]
    torch_out = torch.nn.functional.interpolate(
        x, scale_factor=2, mode="bicubic", align_corners=False
    )[0, 0].numpy()
    assert torch_out.shape == expected.shape
    assert np.abs(torch_out - expected).max() > 1.0
