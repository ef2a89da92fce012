"""The banded path (:mod:`sruc.engine.banded`) equals the whole-image path, bit for bit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import sruc
from helpers import smooth_rgb
from sruc.engine import banded, memory, pipeline
from sruc.errors import DeviceError, UsageError
from sruc.files.images import Picture
from sruc.scales import TargetSize


def picture(kind: str, h: int = 19, w: int = 23) -> Picture:
    """A small test picture: rgb, gray, rgba or rgb16."""
    rgb = torch.from_numpy(smooth_rgb(h, w, seed=5).astype(np.float32) / 255).permute(2, 0, 1)
    if kind == "gray":
        return Picture(color=rgb[:1].contiguous())
    if kind == "rgba":
        return Picture(color=rgb.contiguous(), alpha=rgb[1:2].flip(-1).contiguous())
    if kind == "rgb16":
        fine = torch.round(rgb * 65535 + torch.rand(rgb.shape) * 200).clamp(0, 65535) / 65535
        return Picture(color=fine.contiguous(), bits=16)
    return Picture(color=rgb.contiguous())


def both(
    model: object,
    pic: Picture,
    scale: float | TargetSize,
    *,
    tile: int | None,
    band: int | None,
    depth: int | None,
    precision: str = "fp32",
    tta: bool = False,
) -> tuple[Picture, Picture]:
    """The whole-image result and the banded one, of the same prepared model."""
    up = sruc.Upscaler(model, device="cpu", precision=precision, tile=tile, banded=False, tta=tta)
    whole = up.upscale_picture(pic, scale, depth=depth)
    pm, factor, size = up._plan(pic, scale)
    out_size = (whole.height, whole.width)
    plan = pipeline._band_plan(pm, pic, factor, out_size, size, tile, tta)
    return whole, banded.upscale_banded(pm, pic, plan, depth=depth, band=band)


def assert_same(whole: Picture, band: Picture, depth: int | None) -> None:
    if depth is None:
        assert torch.equal(whole.color, band.color)
        assert (whole.alpha is None) == (band.alpha is None)
        if whole.alpha is not None:
            assert band.alpha is not None and torch.equal(whole.alpha, band.alpha)
    else:
        assert band.raster is not None
        assert np.array_equal(whole.to_array(depth), band.to_array(depth))


@pytest.fixture(params=["bicubic", "vdsr", "srcnn"])
def model(request: pytest.FixtureRequest, tiny_vdsr_ckpt: Path, tiny_srcnn_ckpt: Path) -> object:
    return {"bicubic": "bicubic", "vdsr": tiny_vdsr_ckpt, "srcnn": tiny_srcnn_ckpt}[request.param]


@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "rgb16"])
@pytest.mark.parametrize("band", [None, 1, 7])
def test_banded_equals_whole_for_every_model_and_kind(
    model: object, kind: str, band: int | None
) -> None:
    pic = picture(kind)
    depth = 16 if kind == "rgb16" else 8
    whole, out = both(model, pic, 3, tile=16, band=band, depth=depth)
    assert_same(whole, out, depth)


@pytest.mark.parametrize("scale", [2, 2.5, TargetSize(width=50), TargetSize(width=61, height=40)])
@pytest.mark.parametrize("band", [None, 1, 5])
def test_banded_equals_whole_at_any_scale_and_size(
    tiny_vdsr_ckpt: Path, scale: float | TargetSize, band: int | None
) -> None:
    whole, out = both(tiny_vdsr_ckpt, picture("rgba"), scale, tile=12, band=band, depth=8)
    assert_same(whole, out, 8)


@pytest.mark.parametrize("size", [TargetSize(width=50), TargetSize(width=61, height=40)])
def test_a_per_scale_model_at_a_size_is_banded_exactly(
    tiny_srcnn_ckpt: Path, size: TargetSize
) -> None:
    # SRCNN runs at x3 and is then resized to the size: two resizes, one network.
    for band in (None, 1, 6):
        whole, out = both(tiny_srcnn_ckpt, picture("rgb"), size, tile=16, band=band, depth=8)
        assert_same(whole, out, 8)


@pytest.mark.parametrize("depth", [None, 8])
@pytest.mark.parametrize("tile", [None, 12, 40])
def test_float_and_integer_bands_with_any_tile(
    tiny_vdsr_ckpt: Path, depth: int | None, tile: int | None
) -> None:
    whole, out = both(tiny_vdsr_ckpt, picture("rgb", 31, 17), 2, tile=tile, band=3, depth=depth)
    assert_same(whole, out, depth)


def test_reduced_precision_is_banded_exactly(tiny_vdsr_ckpt: Path) -> None:
    whole, out = both(
        tiny_vdsr_ckpt, picture("rgb"), 3, tile=16, band=None, depth=8, precision="auto"
    )
    assert_same(whole, out, 8)


def test_default_bands_follow_the_rows_of_tiles(tiny_vdsr_ckpt: Path) -> None:
    up = sruc.Upscaler(tiny_vdsr_ckpt, device="cpu", precision="fp32", tile=16)
    pic = picture("rgb")
    pm, factor, _ = up._plan(pic, 3)
    plan = pipeline._band_plan(pm, pic, factor, (57, 69), None, 16)
    assert banded.band_rows(plan) == 16 + 2 * 6 + 8
    assert banded.bands(plan) == [(0, 16), (16, 32), (32, 48), (48, 57)]
    assert banded.bands(plan, 25) == [(0, 25), (25, 50), (50, 57)]


def test_no_tiling_cannot_be_forced_into_bands(tiny_vdsr_ckpt: Path) -> None:
    up = sruc.Upscaler(tiny_vdsr_ckpt, device="cpu", banded=True, tile=0)
    with pytest.raises(UsageError, match="cannot run in bands"):
        up.upscale_picture(picture("rgb"), 2)


@pytest.mark.parametrize("scale", [2, 3, 2.5, TargetSize(width=61, height=40)])
@pytest.mark.parametrize("band", [None, 1, 6])
def test_tta_is_banded_exactly(
    tiny_vdsr_ckpt: Path, tiny_srcnn_ckpt: Path, scale: float | TargetSize, band: int | None
) -> None:
    # Odd sizes: the 8 transformed images' tiles start from every corner.
    pic = picture("rgba", 19, 23)
    whole, out = both(tiny_vdsr_ckpt, pic, scale, tile=12, band=band, depth=8, tta=True)
    assert_same(whole, out, 8)
    if scale == 3:
        whole, out = both(tiny_srcnn_ckpt, pic, 3, tile=16, band=band, depth=None, tta=True)
        assert_same(whole, out, None)


def test_the_policy_bands_when_the_whole_image_does_not_fit(
    tiny_vdsr_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pic = picture("rgb", 40, 60)
    want = sruc.Upscaler(tiny_vdsr_ckpt, device="cpu", tile=16, banded=False).upscale(pic, 4)
    job = memory.Job(240, 160, 3, 4.0, 40 * 60 * 3, 1, 16 + 12 + 8)
    # Room for the banded path only: the whole one would not be comfortable.
    room = (memory.banded_bytes(job) + memory.upscale_bytes(240, 160, 3)) // 2
    monkeypatch.setattr(memory, "available_bytes", lambda: room)
    monkeypatch.setattr(pipeline, "_compute", lambda *a: pytest.fail("not banded"))
    got = sruc.Upscaler(tiny_vdsr_ckpt, device="cpu", tile=16).upscale(pic, 4)
    assert np.array_equal(np.asarray(got), np.asarray(want))


def test_the_policy_bands_on_cpus_and_keeps_whole_images_for_gpus() -> None:
    cpu = memory.Job(2000, 1000, 3, 2.0, 1000 * 500 * 3, 1, 300)
    gpu = replace(cpu, whole_faster=True)
    plenty, tight = 8 * 10**9, memory.upscale_bytes(2000, 1000, 3)
    assert memory.choose_banded(cpu, available=plenty)  # as fast, less memory
    assert not memory.choose_banded(gpu, available=plenty)  # batched tiles are faster
    assert memory.choose_banded(gpu, available=tight)
    assert not memory.choose_banded(replace(cpu, band_rows=0), available=plenty)  # --tta


def test_a_job_that_fits_in_no_way_is_refused_with_its_numbers() -> None:
    job = memory.Job(72000, 72000, 3, 8.0, 9000 * 9000 * 3, 1, 300)
    with pytest.raises(DeviceError) as e:
        memory.choose_banded(job, available=16 * 10**9)
    text = str(e.value)
    assert "the x8 output would be 72000x72000 (5.2 GP, ~" in text and "16 GB is available" in text
    assert memory.banded_bytes(job) < memory.upscale_bytes(72000, 72000, 3) / 5


def test_a_long_thin_image_is_estimated_honestly() -> None:
    # A 1x2,000,000 line at x2: 4,000,000 x 2 outputs; the resize tables, not the
    # pixels, dominate, and they do not shrink in bands.
    job = memory.Job(4_000_000, 2, 3, 2.0, 2_000_000 * 3, 1, 2)
    assert memory.banded_bytes(job) > 4_000_000 * memory.BYTES_PER_EDGE_PIXEL
