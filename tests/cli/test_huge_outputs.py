"""What users get for huge outputs: --max-pixels on the output, the banded path
where memory is short, one line where nothing fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_cli, smooth_rgb
from sruc.engine import memory, pipeline


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(smooth_rgb(30, 40)).save(path)
    return path


def test_up_refuses_an_output_over_max_pixels_before_the_work(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_compute", lambda *a: pytest.fail("started the work"))
    r = run_cli(capsys, "up", src, "-s", "4", "--model", "bicubic", "--max-pixels", "10000",
                "-o", tmp_path / "out.png")  # fmt: skip
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert "x4 output of this 40x30 image would be 160x120 = 19,200 pixels" in r.err
    assert "over --max-pixels 10,000" in r.err
    assert not (tmp_path / "out.png").exists()


def test_batch_fails_that_image_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(smooth_rgb(30, 40)).save(tmp_path / "in" / "big.png")
    Image.fromarray(smooth_rgb(10, 10)).save(tmp_path / "in" / "small.png")
    r = run_cli(capsys, "batch", tmp_path / "in", "-o", tmp_path / "out", "-s", "2",
                "--model", "bicubic", "--max-pixels", "1200")  # fmt: skip
    assert r.code == 1
    assert "80x60 = 4,800 pixels, over --max-pixels 1,200" in r.err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["small_x2.png"]


def test_the_default_limits_inputs_not_outputs(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1,200 input pixels at x8: 76,800 output pixels, well over an input limit of 2,000.
    r = run_cli(capsys, "up", src, "-s", "8", "--model", "bicubic", "-o", tmp_path / "o.png")
    assert r.code == 0, r.err
    r = run_cli(capsys, "up", src, "-s", "8", "--model", "bicubic", "--max-pixels", "1000",
                "-o", tmp_path / "p.png")  # fmt: skip
    assert r.code == 1 and "30 = 1,200 pixels, over the limit of 1,000" in r.err


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_up_bands_when_memory_is_short_and_writes_the_same_pixels(
    src: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tiny_vdsr_ckpt: Path,
    ext: str,
) -> None:
    args = ("up", src, "-s", "3", "--model", tiny_vdsr_ckpt, "--tile", "16", "-q")
    assert run_cli(capsys, *args, "-o", tmp_path / f"whole.{ext}").code == 0
    # Too little memory for the whole image comfortably, enough in bands.
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.TILE_BYTES + 2 * 10**6)
    monkeypatch.setattr(pipeline, "_compute", lambda *a: pytest.fail("not banded"))
    assert run_cli(capsys, *args, "-o", tmp_path / f"banded.{ext}").code == 0
    a = np.asarray(Image.open(tmp_path / f"whole.{ext}"))
    b = np.asarray(Image.open(tmp_path / f"banded.{ext}"))
    assert np.array_equal(a, b)


def test_up_refuses_what_fits_in_no_way_with_the_numbers(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 20 * 10**6)
    r = run_cli(capsys, "up", src, "-s", "8", "--model", "bicubic", "-o", tmp_path / "o.png")
    assert r.code == 1 and r.err.count("\n") == 1
    assert "the x8 output would be 320x240 (0.1 MP, ~" in r.err and "20 MB is available" in r.err
