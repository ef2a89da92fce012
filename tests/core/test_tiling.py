from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import smooth_rgb
from sruc.archs.srcnn import SRCNN
from sruc.archs.vdsr import VDSR
from sruc.core.tiling import plan_tiles, run_tiled


def _image(h: int, w: int) -> torch.Tensor:
    from sruc.core.color import rgb_to_y

    rgb = torch.from_numpy(smooth_rgb(h, w, seed=3)).permute(2, 0, 1).float() / 255
    return rgb_to_y(rgb)[None]


@pytest.fixture(scope="module")
def vdsr() -> VDSR:
    torch.manual_seed(0)
    return VDSR(depth=8, width=16).eval()


def test_tiles_cover_the_image_exactly_once() -> None:
    h, w = 53, 37
    cover = np.zeros((h, w), dtype=int)
    for t in plan_tiles(h, w, 16, 5):
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
        assert t.in_y0 == max(0, t.y0 - 5) and t.in_x1 == min(w, t.x1 + 5)
    assert (cover == 1).all()


@pytest.mark.parametrize("tile", [16, 23, 40])
def test_tiled_equals_untiled_vdsr(vdsr: VDSR, tile: int) -> None:
    # 61x47 with tiles of 16/23/40 leaves odd-sized tiles at the right and bottom edges.
    x = _image(61, 47)
    with torch.inference_mode():
        whole = run_tiled(vdsr, x, radius=vdsr.receptive_radius, tile=0)
        tiled = run_tiled(vdsr, x, radius=vdsr.receptive_radius, tile=tile)
    assert float((whole - tiled).abs().max()) <= 1e-5
    to8 = lambda t: torch.round(t.clamp(0, 1) * 255)  # noqa: E731
    assert torch.equal(to8(whole), to8(tiled))


def test_tiled_equals_untiled_srcnn() -> None:
    torch.manual_seed(2)
    model = SRCNN(n1=16, n2=8).eval()
    x = _image(45, 50)
    with torch.inference_mode():
        whole = run_tiled(model, x, radius=model.receptive_radius, tile=0)
        tiled = run_tiled(model, x, radius=model.receptive_radius, tile=17)
    assert float((whole - tiled).abs().max()) <= 1e-5


def test_too_little_overlap_shows_seams(vdsr: VDSR) -> None:
    # The control: half the radius is not enough, so the test above is meaningful.
    x = _image(61, 47)
    with torch.inference_mode():
        whole = run_tiled(vdsr, x, radius=vdsr.receptive_radius, tile=0)
        bad = run_tiled(vdsr, x, radius=vdsr.receptive_radius // 2, tile=16)
    assert float((whole - bad).abs().max()) > 1e-3


def test_progress_reports_every_tile(vdsr: VDSR) -> None:
    seen: list[tuple[int, int]] = []
    with torch.inference_mode():
        run_tiled(
            vdsr, _image(40, 40), radius=8, tile=16, progress=lambda d, t: seen.append((d, t))
        )
    assert seen == [(i, 9) for i in range(1, 10)]


def test_oom_halves_the_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a GPU that fails on tiles over 40 px: the run goes on with smaller tiles.
    from sruc.core import tiling

    calls: list[int] = []
    real = tiling._run

    def flaky(model, x, tile, radius, device, progress):  # type: ignore[no-untyped-def]
        calls.append(tile)
        if tile > 40:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, x, tile, radius, torch.device("cpu"), progress)

    monkeypatch.setattr(tiling, "_run", flaky)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    model = VDSR(depth=3, width=4).eval()
    x = _image(50, 50)
    with torch.inference_mode():
        out = tiling.run_tiled(model, x, radius=3, tile=64, device="cuda")
        ref = tiling.run_tiled(model, x, radius=3, tile=0)
    assert calls == [64, 32, 0]  # the failed 64, the good 32, then the reference
    assert float((out - ref).abs().max()) <= 1e-5
