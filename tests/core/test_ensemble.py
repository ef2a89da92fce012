"""Self-ensemble (``--tta``): the 8 transforms, their inverses and the average."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sruc
from helpers import run_cli, smooth_rgb
from sruc.core.ensemble import TRANSFORMS, self_ensemble, transform, untransform
from sruc.files import images


def test_the_eight_transforms_are_distinct_and_undone() -> None:
    x = torch.arange(3 * 5, dtype=torch.float32).reshape(1, 1, 3, 5)  # not square
    seen = set()
    for k in range(TRANSFORMS):
        y = transform(x, k)
        seen.add((tuple(y.shape), tuple(y.flatten().tolist())))
        assert torch.equal(untransform(y, k), x)
    assert len(seen) == 8
    assert torch.equal(transform(x, 0), x)


def test_an_equivariant_network_is_unchanged_and_an_odd_one_is_averaged() -> None:
    x = torch.rand(1, 1, 6, 9, generator=torch.Generator().manual_seed(0))
    # A pointwise function commutes with every transform: the ensemble is itself.
    assert torch.allclose(self_ensemble(lambda t, p: t * 2 + 1, x), x * 2 + 1)

    # A column ramp added by the "network" is not: averaged over the 8 it cancels out.
    def ramp(t: torch.Tensor, p: object) -> torch.Tensor:
        return t + torch.arange(t.shape[-1], dtype=t.dtype) - (t.shape[-1] - 1) / 2

    assert torch.allclose(self_ensemble(ramp, x), x, atol=1e-6)


def test_progress_counts_all_eight_passes() -> None:
    calls: list[tuple[int, int]] = []

    def run(t: torch.Tensor, progress: object) -> torch.Tensor:
        assert callable(progress)
        for i in (1, 2, 3):
            progress(i, 3)
        return t

    self_ensemble(run, torch.zeros(1, 1, 4, 4), lambda d, n: calls.append((d, n)))
    assert calls[-1] == (24, 24) and len(calls) == 24
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_tiled_ensemble_equals_untiled(tmp_path: Path, tiny_vdsr_ckpt: Path) -> None:
    # As without the ensemble: the same 8-bit image; in float, the same up to the
    # convolution's own rounding (its blocking depends on the tile's shape).
    src = tmp_path / "in.png"
    Image.fromarray(smooth_rgb(37, 30, seed=3)).save(src)
    pic = images.read_image(src)
    model = sruc.load_model(tiny_vdsr_ckpt)
    kw = {"model": model, "device": "cpu", "precision": "fp32", "tta": True}
    whole = sruc.upscale_picture(pic, 2, tile=0, **kw)
    tiled = sruc.upscale_picture(pic, 2, tile=29, **kw)
    assert np.array_equal(whole.to_array(), tiled.to_array())
    assert float((whole.color - tiled.color).abs().max()) < 1e-6
    plain = sruc.upscale_picture(pic, 2, tile=0, model=model, device="cpu", precision="fp32")
    assert not torch.equal(whole.color, plain.color)  # it did something


def test_ensemble_runs_the_network_eight_times(tmp_path: Path, tiny_vdsr_ckpt: Path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(smooth_rgb(12, 20)).save(src)
    model = sruc.load_model(tiny_vdsr_ckpt)
    shapes: list[tuple[int, ...]] = []
    model.module.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    up = sruc.Upscaler(model, device="cpu", precision="fp32", tile=0, tta=True)
    up.upscale_picture(images.read_image(src), 2)
    assert len(shapes) == 8
    assert sorted({s[-2:] for s in shapes}) == [(24, 40), (40, 24)]


def test_cli_up_and_batch_take_tta(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_vdsr_ckpt: Path
) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(smooth_rgb(16, 18)).save(src)
    plain, tta = tmp_path / "plain.png", tmp_path / "tta.png"
    ck = str(tiny_vdsr_ckpt)
    assert run_cli(capsys, "up", src, "-s", "2", "--model", ck, "-o", plain, "-q").code == 0
    assert run_cli(capsys, "up", src, "-s", "2", "--model", ck, "-o", tta, "-q", "--tta").code == 0
    a, b = np.asarray(Image.open(plain)), np.asarray(Image.open(tta))
    assert a.shape == b.shape and not np.array_equal(a, b)
    out = tmp_path / "batch"
    r = run_cli(capsys, "batch", src, "-o", out, "-s", "2", "--model", ck, "--tta", "-q")
    assert r.code == 0
    assert np.array_equal(np.asarray(Image.open(out / "in_x2.png")), b)


def test_tta_with_bicubic_says_so_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(smooth_rgb(8, 8, seed=i)).save(folder / f"{i}.png")
    r = run_cli(capsys, "batch", folder, "-o", tmp_path / "out", "-m", "bicubic", "--tta", "-q")
    assert r.code == 0
    assert r.err.count("--tta does nothing with bicubic") == 1
    r = run_cli(capsys, "up", folder / "0.png", "-o", tmp_path / "o.png", "-m", "bicubic",
                "--tta", "-q")  # fmt: skip
    assert r.code == 0 and r.err.count("--tta does nothing") == 1


def test_bench_records_tta(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                           tiny_vdsr_ckpt: Path) -> None:  # fmt: skip
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(smooth_rgb(24, 24)).save(folder / "a.png")
    base = ["bench", folder, "-m", str(tiny_vdsr_ckpt), "-s", "2", "--no-ssim", "-q", "--json"]
    plain = json.loads(run_cli(capsys, *base).out)
    tta = json.loads(run_cli(capsys, *base, "--tta").out)
    assert plain["tta"] is False and tta["tta"] is True
    p0, p1 = (r["results"][0] for r in (plain, tta))
    assert p0["bicubic"]["psnr"] == p1["bicubic"]["psnr"]
    assert p0["models"][0]["psnr"] != p1["models"][0]["psnr"]


@pytest.mark.parametrize("k", range(8))
def test_source_rect_is_the_part_of_the_image_a_transformed_rect_shows(k: int) -> None:
    from sruc.core.ensemble import source_rect

    x = torch.arange(5 * 7).reshape(1, 1, 5, 7)
    t = transform(x, k)
    h, w = t.shape[-2:]
    for y0, y1, x0, x1 in [(0, h, 0, w), (1, 3, 2, 5), (h - 1, h, 0, 1), (0, 2, w - 3, w)]:
        a, b, c, d = source_rect(k, 5, 7, (y0, y1, x0, x1))
        assert torch.equal(transform(x[..., a:b, c:d], k), t[..., y0:y1, x0:x1])
