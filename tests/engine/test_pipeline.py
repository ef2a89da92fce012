"""End-to-end behaviour of the upscaler: what goes in comes out, with nothing lost."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

import sruc
from helpers import EVAL, needs_set5, smooth_rgb
from sruc.cli import main
from sruc.core.resize import imresize
from sruc.files import images
from sruc.files.highdepth import read_high_depth


def _up(src: Path, dst: Path, *args: str) -> None:
    """``sruc up``, with bicubic unless ``args`` name a model (VDSR is the CLI default)."""
    model = [] if "--model" in args or "-m" in args else ["--model", "bicubic"]
    assert main(["up", str(src), "-o", str(dst), "-q", *model, *args]) == 0


def test_bicubic_output_is_matlab_bicubic_of_the_rgb(rgb_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    _up(rgb_png, out, "-s", "3")
    got = np.asarray(Image.open(out))
    src = torch.from_numpy(np.array(Image.open(rgb_png))).permute(2, 0, 1).double() / 255
    want = torch.round(imresize(src, 3.0).clamp(0, 1) * 255).permute(1, 2, 0).numpy()
    assert got.shape == (72, 96, 3)
    assert np.array_equal(got, want.astype(np.uint8))


def test_fractional_scale_size(rgb_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    _up(rgb_png, out, "-s", "2.5")
    assert Image.open(out).size == (80, 60)  # ceil(32*2.5) x ceil(24*2.5)


def test_model_changes_only_luma(rgb_png: Path, tmp_path: Path, tiny_vdsr_ckpt: Path) -> None:
    bic, sr = tmp_path / "bic.png", tmp_path / "sr.png"
    _up(rgb_png, bic, "-s", "2")
    _up(rgb_png, sr, "-s", "2", "--model", str(tiny_vdsr_ckpt))
    a = torch.from_numpy(np.array(Image.open(bic))).permute(2, 0, 1).double() / 255
    b = torch.from_numpy(np.array(Image.open(sr))).permute(2, 0, 1).double() / 255
    from sruc.core.color import rgb_to_ycbcr

    ya, yb = rgb_to_ycbcr(a), rgb_to_ycbcr(b)
    assert float((ya[0] - yb[0]).abs().mean()) > 0.01  # the model did something to Y
    # Chroma is the bicubic chroma, up to 8-bit rounding of RGB (and clipping).
    assert float((ya[1:] - yb[1:]).abs().median()) < 2 / 255


def test_tiled_equals_untiled_on_8bit_output(tmp_path: Path, tiny_vdsr_ckpt: Path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(smooth_rgb(45, 38, seed=5)).save(src)
    whole, tiled = tmp_path / "whole.png", tmp_path / "tiled.png"
    _up(src, whole, "-s", "2", "--model", str(tiny_vdsr_ckpt), "--tile", "0")
    _up(src, tiled, "-s", "2", "--model", str(tiny_vdsr_ckpt), "--tile", "27")
    assert np.array_equal(np.asarray(Image.open(whole)), np.asarray(Image.open(tiled)))


def test_gray_stays_gray_and_runs_one_channel(tmp_path: Path, tiny_vdsr_ckpt: Path) -> None:
    src = tmp_path / "gray.png"
    Image.fromarray(smooth_rgb(20, 24)[:, :, 0]).save(src)
    model = sruc.load_model(tiny_vdsr_ckpt)
    seen: list[tuple[int, ...]] = []
    model.module.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))
    pic = sruc.upscale_picture(images.read_image(src), 2, model=model, device="cpu", tile=0)
    assert seen == [(1, 1, 40, 48)]
    assert pic.color.shape == (1, 40, 48)
    out = tmp_path / "out.png"
    _up(src, out, "-s", "2", "--model", str(tiny_vdsr_ckpt))
    assert Image.open(out).mode == "L"


def test_alpha_is_kept_and_upscaled_separately(tmp_path: Path, tiny_vdsr_ckpt: Path) -> None:
    rgb = smooth_rgb(16, 20)
    alpha = np.zeros((16, 20), np.uint8)
    alpha[4:12, 5:15] = 255
    src = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(src)
    out = tmp_path / "out.png"
    _up(src, out, "-s", "2", "--model", str(tiny_vdsr_ckpt))
    im = Image.open(out)
    assert im.mode == "RGBA" and im.size == (40, 32)
    want = torch.round(
        imresize(torch.from_numpy(alpha).double()[None] / 255, 2.0).clamp(0, 1) * 255
    )
    assert np.array_equal(np.asarray(im)[:, :, 3], want[0].numpy().astype(np.uint8))


def test_gray_with_alpha(tmp_path: Path) -> None:
    src = tmp_path / "la.png"
    Image.fromarray(
        np.dstack([smooth_rgb(10, 12)[:, :, 1], np.full((10, 12), 128, np.uint8)]), "LA"
    ).save(src)
    out = tmp_path / "out.png"
    _up(src, out, "-s", "2")
    im = Image.open(out)
    assert im.mode == "LA" and im.size == (24, 20)
    assert (np.asarray(im)[:, :, 1] == 128).all()


def test_exif_orientation_applied_and_reset(tmp_path: Path) -> None:
    arr = smooth_rgb(10, 16)  # 16 wide, 10 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    exif[0x010F] = "SrucCam"  # Make
    src = tmp_path / "phone.jpg"
    Image.fromarray(arr).save(src, exif=exif.tobytes(), quality=95)
    out = tmp_path / "out.jpg"
    _up(src, out, "-s", "2")
    im = Image.open(out)
    assert im.size == (20, 32)  # displayed upright: 10 wide, 16 high, doubled
    out_exif = im.getexif()
    assert out_exif.get(0x0112) == 1
    assert out_exif.get(0x010F) == "SrucCam"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation: int) -> None:
    from PIL import ImageOps

    im = Image.fromarray(smooth_rgb(5, 7, seed=orientation))
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="PNG", exif=exif.tobytes())
    buf.seek(0)
    want = np.asarray(ImageOps.exif_transpose(Image.open(buf)))
    t = torch.from_numpy(np.array(im)).permute(2, 0, 1)
    got = images.apply_orientation(t, orientation).permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)


def test_icc_profile_is_carried(tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    src = tmp_path / "icc.png"
    Image.fromarray(smooth_rgb(8, 8)).save(src, icc_profile=icc)
    for ext in ("png", "jpg", "webp", "tif"):
        out = tmp_path / f"out.{ext}"
        _up(src, out, "-s", "2")
        assert Image.open(out).info.get("icc_profile") == icc, ext


def test_sixteen_bit_rgb_png_stays_sixteen_bit(tmp_path: Path) -> None:
    from sruc.files.highdepth import write_png16

    rng = np.random.default_rng(0)
    arr = (rng.integers(0, 65536, (12, 10, 3))).astype(np.uint16)
    src = tmp_path / "deep.png"
    write_png16(src, arr)
    for ext in ("png", "tif"):
        out = tmp_path / f"out.{ext}"
        _up(src, out, "-s", "2")
        deep = read_high_depth(lambda out=out: Image.open(out))
        assert deep is not None and deep.array.shape == (24, 20, 3), ext
        want = imresize(torch.from_numpy(arr.astype(np.float64)).permute(2, 0, 1) / 65535, 2.0)
        want = torch.round(want.clamp(0, 1) * 65535).permute(1, 2, 0).numpy()
        # float32 pipeline: within one 16-bit step of the float64 result, and not 8-bit.
        assert np.abs(deep.array.astype(np.int64) - want).max() <= 1, ext
        assert np.unique(deep.array % 256).size > 100, ext


def test_sixteen_bit_gray_stays_sixteen_bit(tmp_path: Path) -> None:
    arr = (np.arange(10 * 12).reshape(10, 12) * 517 % 65536).astype(np.uint16)
    src = tmp_path / "gray16.png"
    Image.fromarray(arr).save(src)
    out = tmp_path / "out.png"
    _up(src, out, "-s", "2")
    pic = images.read_image(out)
    assert pic.bits == 16 and pic.is_gray and pic.color.shape == (1, 20, 24)


@pytest.mark.parametrize("mode", ["P", "PA-transparency", "CMYK", "1", "LA"])
def test_other_modes_convert_sensibly(tmp_path: Path, mode: str) -> None:
    rgb = Image.fromarray(smooth_rgb(8, 10))
    if mode == "P":
        im, ext, want = rgb.convert("P"), "png", "RGB"
    elif mode == "PA-transparency":
        im = rgb.convert("P")
        im.info["transparency"] = 0
        ext, want = "png", "RGBA"
    elif mode == "CMYK":
        im, ext, want = rgb.convert("CMYK"), "jpg", "RGB"
    elif mode == "1":
        im, ext, want = rgb.convert("1"), "png", "L"
    else:
        im, ext, want = rgb.convert("LA"), "png", "LA"
    src = tmp_path / f"in.{ext}"
    im.save(src, transparency=0) if mode == "PA-transparency" else im.save(src)
    out = tmp_path / "out.png"
    _up(src, out, "-s", "2")
    got = Image.open(out)
    assert got.mode == want and got.size == (20, 16)


def test_jpeg_quality_controls_size(rgb_png: Path, tmp_path: Path) -> None:
    lo, hi = tmp_path / "lo.jpg", tmp_path / "hi.jpg"
    _up(rgb_png, lo, "-s", "2", "--quality", "20")
    _up(rgb_png, hi, "-s", "2", "--quality", "98")
    assert lo.stat().st_size < hi.stat().st_size


def test_library_api_returns_pil(rgb_png: Path) -> None:
    im = sruc.upscale(rgb_png, 2)
    assert isinstance(im, Image.Image) and im.size == (64, 48)
    im2 = sruc.upscale(Image.open(rgb_png), 2)
    assert np.array_equal(np.asarray(im), np.asarray(im2))


def test_default_output_name(rgb_png: Path) -> None:
    assert main(["up", str(rgb_png), "-s", "3", "-q"]) == 0
    assert (rgb_png.parent / "photo_x3.png").exists()


@needs_set5
def test_psnr_reproduces_bicubic_baseline_through_8bit_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PROTOCOL.md: Set5 bicubic through 8-bit RGB files is 33.68 / 30.41 / 28.43."""
    expected = {2: 33.68, 3: 30.41, 4: 28.43}
    for s, want in expected.items():
        values = []
        for hr_path in sorted((EVAL / "Set5").glob("*.png")):
            hr = np.array(Image.open(hr_path).convert("RGB"))
            hr = hr[: hr.shape[0] // s * s, : hr.shape[1] // s * s]
            hr_file, lr_file, up_file = (tmp_path / f"{hr_path.stem}_{k}{s}.png" for k in "hlu")
            Image.fromarray(hr).save(hr_file)
            lr = imresize(torch.from_numpy(hr).permute(2, 0, 1).double() / 255, 1 / s)
            lr8 = torch.round(lr.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
            Image.fromarray(lr8).save(lr_file)
            _up(lr_file, up_file, "-s", str(s))
            capsys.readouterr()
            assert main(["psnr", str(hr_file), str(up_file), "--shave", str(s)]) == 0
            values.append(float(capsys.readouterr().out))
        assert abs(np.mean(values) - want) <= 0.01, (s, np.mean(values))


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_sigterm_during_up_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ext: str
) -> None:
    import os
    import signal

    from sruc.files import atomic

    Image.fromarray(smooth_rgb(20, 24)).save(tmp_path / "in.png")
    real = atomic.os.write

    def write(fd: int, data: bytes) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # while writing the temporary file
        return real(fd, data)

    # PNG outputs stream their rows into the temporary file; JPEG is encoded first.
    monkeypatch.setattr(atomic.os, "write", write)
    code = main(["up", str(tmp_path / "in.png"), "-s", "2", "--model", "bicubic",
                 "-o", str(tmp_path / f"out.{ext}"), "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 130 and err.strip() == "interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]  # no output, no .part
