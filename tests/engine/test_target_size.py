"""``--width``/``--height``/``--fit``: say the size, sruc picks the scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sruc
from helpers import run_cli, smooth_rgb
from sruc.core.resize import imresize
from sruc.files import images
from sruc.scales import TargetSize


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(smooth_rgb(37, 30, seed=3)).save(path)  # 30 wide, 37 high
    return path


def test_bicubic_to_a_size_is_matlab_imresize_to_that_size(src: Path) -> None:
    pic = images.read_image(src)
    out = sruc.upscale_picture(pic, TargetSize(width=100), model="bicubic")
    want = imresize(pic.color[None], size=(124, 100))[0].clamp(0, 1)
    assert out.color.shape == (3, 124, 100)
    assert torch.equal(out.color, want)


def test_vdsr_runs_at_the_exact_scale(src: Path, tiny_vdsr_ckpt: Path) -> None:
    model = sruc.load_model(tiny_vdsr_ckpt)
    shapes: list[tuple[int, ...]] = []
    model.module.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    up = sruc.Upscaler(model, device="cpu", precision="fp32", tile=0)
    out = up.upscale_picture(images.read_image(src), TargetSize(100, 100))
    assert (out.width, out.height) == (82, 100)
    assert shapes == [(1, 1, 100, 82)]  # the network on the output-sized Y, no resize after


def test_srcnn_runs_at_its_trained_scale_then_resizes_exactly(
    src: Path, tiny_srcnn_ckpt: Path
) -> None:
    model = sruc.load_model(tiny_srcnn_ckpt)  # trained for x3 only
    shapes: list[tuple[int, ...]] = []
    model.module.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    up = sruc.Upscaler(model, device="cpu", precision="fp32", tile=0)
    pic = images.read_image(src)
    out = up.upscale_picture(pic, TargetSize(width=75))  # x2.5
    assert (out.width, out.height) == (75, 93)
    assert shapes == [(1, 1, 111, 90)]  # x3 of 30x37
    assert up.network_scale(2.5) == 3
    # A plain -s that the weights do not have is still refused.
    with pytest.raises(sruc.ModelError, match="x3 only"):
        up.upscale_picture(pic, 2.5)


def test_the_registry_srcnn_group_picks_the_nearest_file(src: Path) -> None:
    up = sruc.Upscaler("srcnn", device="cpu")
    assert up.network_scale(2.4) == 2 and up.network_scale(3.6) == 4
    img = up.upscale(src, TargetSize(height=100))  # x2.70: the x3 file, then shrunk
    assert img.size == (82, 100)


def test_cli_sizes_and_default_names(capsys: pytest.CaptureFixture[str], src: Path) -> None:
    r = run_cli(capsys, "up", src, "--width", "100", "-m", "bicubic")
    assert r.code == 0, r.err
    assert Image.open(src.with_name("in_100w.png")).size == (100, 124)
    assert "30x37 -> 100x124" in r.err
    assert run_cli(capsys, "up", src, "--fit", "90x90", "-m", "bicubic", "-q").code == 0
    assert Image.open(src.with_name("in_90x90.png")).size == (73, 90)
    assert run_cli(capsys, "up", src, "--height", "74", "-m", "bicubic", "-q").code == 0
    assert Image.open(src.with_name("in_74h.png")).size == (60, 74)


@pytest.mark.parametrize(
    "args, words, code",
    [
        (["-s", "3", "--width", "100"], "give -s or --width, not both", 2),
        (["--fit", "90x90", "--height", "50"], "not both", 2),
        (["--width", "0"], "0 is not in the range", 2),
        (["--width", "100000"], "at most x8", 2),
        (["--width", "30"], "only enlarges", 2),
        (["--fit", "big"], "WIDTHxHEIGHT", 2),
    ],
)
def test_cli_refuses_contradictory_or_impossible_sizes(
    capsys: pytest.CaptureFixture[str], src: Path, args: list[str], words: str, code: int
) -> None:
    out = src.with_name("out.png")
    r = run_cli(capsys, "up", src, "-o", out, "-m", "bicubic", *args)
    assert r.code == code
    assert words in r.err and len(r.err.strip().splitlines()) == 1
    assert not out.exists()
    assert sorted(p.name for p in src.parent.iterdir()) == ["in.png"]


def test_same_pixels_as_the_plain_scale_when_the_size_is_exact(
    src: Path, tiny_vdsr_ckpt: Path
) -> None:
    # x2 of 30x37 is 60x74: --width 60 is exactly -s 2.
    model = sruc.load_model(tiny_vdsr_ckpt)
    pic = images.read_image(src)
    a = sruc.upscale_picture(pic, 2, model=model, device="cpu", precision="fp32")
    b = sruc.upscale_picture(pic, TargetSize(width=60), model=model, device="cpu",
                             precision="fp32")  # fmt: skip
    assert np.array_equal(a.to_array(), b.to_array())
