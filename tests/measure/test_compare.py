"""``sruc.measure.compare``: the side-by-side sheet, its numbers, its crop and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import smooth_rgb
from sruc.core import protocol
from sruc.engine.pipeline import upscale_file
from sruc.errors import InputError, UsageError
from sruc.files import images
from sruc.measure import compare as cmp
from sruc.measure.compare import Crop, compare_models, detail_crop
from sruc.measure.quality import psnr, ssim


@pytest.fixture
def lr_png(tmp_path: Path) -> Path:
    path = tmp_path / "small.png"
    Image.fromarray(smooth_rgb(20, 28, seed=3)).save(path)
    return path


@pytest.fixture
def hr_png(tmp_path: Path) -> Path:
    path = tmp_path / "hr.png"
    Image.fromarray(smooth_rgb(40, 56, seed=4)).save(path)
    return path


def half_textured(h: int, w: int, textured: str) -> torch.Tensor:
    """A flat gray image with one half (``left``/``right``/``bottom``) of noise: (3, H, W)."""
    rng = np.random.default_rng(0)
    img = np.full((h, w, 3), 0.5)
    noise = rng.uniform(0, 1, size=(h, w, 3))
    if textured == "right":
        img[:, w // 2 :] = noise[:, w // 2 :]
    elif textured == "left":
        img[:, : w // 2] = noise[:, : w // 2]
    else:
        img[h // 2 :] = noise[h // 2 :]
    return torch.from_numpy(img).permute(2, 0, 1).float()


@pytest.mark.parametrize("textured", ["left", "right", "bottom"])
def test_detail_crop_picks_the_textured_half(textured: str) -> None:
    crop = detail_crop(half_textured(64, 96, textured), 24, 24)
    assert (crop.width, crop.height) == (24, 24)
    if textured == "right":
        assert crop.x >= 48
    elif textured == "left":
        assert crop.x + crop.width <= 48
    else:
        assert crop.y >= 32


def test_detail_crop_of_a_flat_image_is_the_centre() -> None:
    assert detail_crop(torch.full((1, 40, 60), 0.3), 20, 10) == Crop(20, 15, 20, 10)


def test_detail_crop_is_clamped_to_the_image() -> None:
    assert detail_crop(half_textured(16, 20, "left"), 64, 64) == Crop(0, 0, 20, 16)


def test_crop_parse_and_check() -> None:
    assert Crop.parse("1, 2,3,4") == Crop(1, 2, 3, 4)
    for text, needle in [
        ("1,2,3", "X,Y,W,H"),
        ("a,b,c,d", "X,Y,W,H"),
        ("1.5,2,3,4", "X,Y,W,H"),
        ("0,0,0,4", "zero size"),
        ("0,0,4,-1", "zero size"),
        ("-1,0,4,4", "outside"),
    ]:
        with pytest.raises(UsageError, match=needle):
            Crop.parse(text)
    with pytest.raises(UsageError, match="outside the 10x8 image"):
        Crop(5, 0, 6, 4).check(10, 8)
    Crop(4, 4, 6, 4).check(10, 8)  # touching the corner is inside


def test_parse_models() -> None:
    assert cmp.parse_models("bicubic, srcnn") == ["bicubic", "srcnn"]
    for text, needle in [
        ("vdsr", "at least two models, got 1"),
        ("bicubic,,vdsr", "empty model name"),
        ("vdsr,bicubic,vdsr", "vdsr is named twice"),
    ]:
        with pytest.raises(UsageError, match=needle):
            cmp.parse_models(text)


def test_panels_regions_and_numbers_match_sruc_up_and_psnr(
    tmp_path: Path, lr_png: Path, hr_png: Path, tiny_vdsr_ckpt: Path
) -> None:
    models = ["bicubic", str(tiny_vdsr_ckpt)]
    sheet = compare_models(lr_png, 2, models, hr=hr_png, crop=Crop(3, 4, 10, 6), device="cpu")
    # A checkpoint path is shown by its last two parts.
    assert [p.label for p in sheet.panels] == ["bicubic", f"{tmp_path.name}/tiny-vdsr.pt"]
    assert sheet.reference is not None and sheet.shave == 2
    assert sheet.region == Crop(6, 8, 20, 12)  # input pixels times the scale
    assert sheet.output_size == (56, 40)
    for model, panel in zip(models, sheet.panels, strict=True):
        out = upscale_file(
            lr_png, tmp_path / f"{panel.label[-6:]}.png", 2, model=model, device="cpu"
        )
        # The numbers are sruc psnr's of the file sruc up writes...
        assert panel.psnr == psnr(hr_png, out.output, shave=2)
        assert panel.ssim == ssim(hr_png, out.output, shave=2)
        # ...and the panel is that file's region.
        region = Image.open(out.output).convert("RGB").crop((6, 8, 26, 20))
        assert np.array_equal(np.asarray(panel.crop), np.asarray(region))
        assert panel.seconds is not None and panel.seconds >= 0
    ref = Image.open(hr_png).convert("RGB").crop((6, 8, 26, 20))
    assert np.array_equal(np.asarray(sheet.reference.crop), np.asarray(ref))


def test_from_hr_is_the_protocol_lr_upscaled(tmp_path: Path, hr_png: Path) -> None:
    hr = images.read_image(hr_png)
    # The protocol by hand: crop to a multiple of 3 (39x54), MATLAB bicubic down, 8 bits.
    color = protocol.modcrop(hr.color.double() * 255, 3)
    lr = protocol.degrade(color, 3)
    lr_path, hr_path = tmp_path / "lr.png", tmp_path / "hr_cropped.png"
    Image.fromarray(lr.permute(1, 2, 0).numpy().astype(np.uint8)).save(lr_path)
    Image.fromarray(color.permute(1, 2, 0).numpy().astype(np.uint8)).save(hr_path)

    sheet = compare_models(hr_png, 3, ["bicubic", "srcnn"], from_hr=True, crop=Crop(9, 6, 12, 9))
    assert sheet.output_size == (54, 39)
    assert sheet.region == Crop(9, 6, 12, 9)  # the crop is in the HR's pixels
    for panel in sheet.panels:
        out = upscale_file(lr_path, tmp_path / f"{panel.label}.png", 3, model=panel.label)
        assert panel.psnr == psnr(hr_path, out.output, shave=3)


def test_sheet_has_a_labelled_panel_per_model(lr_png: Path, hr_png: Path) -> None:
    sheet = compare_models(lr_png, 2, ["bicubic", "srcnn"], hr=hr_png, crop=Crop(0, 0, 8, 8))
    assert sheet.zoom() == cmp.MAX_ZOOM  # 16 px regions would need 24: capped
    im = sheet.image(zoom=5)
    assert im.mode == "RGB"
    pixels = np.asarray(im)
    # Three panels (two models and the reference), each 80x80, side by side.
    big = np.asarray(sheet.panels[1].crop.resize((80, 80), Image.Resampling.NEAREST))
    found = [
        (y, x)
        for y in range(pixels.shape[0] - 79)
        for x in range(pixels.shape[1] - 79)
        if np.array_equal(pixels[y : y + 80, x : x + 80], big)
    ][:1]
    assert found, "the srcnn panel is not in the sheet"
    y, x = found[0]
    label = pixels[y + 80 + 4 : y + 80 + 60, x : x + 80]
    assert (label < 128).any(), "no text under the panel"
    assert im.width >= 3 * 80 and im.height > 80 + 60


def test_sheet_width_grows_with_the_zoom(lr_png: Path) -> None:
    sheet = compare_models(lr_png, 2, ["bicubic", "srcnn"], crop=Crop(0, 0, 10, 10))
    assert sheet.reference is None and sheet.shave is None
    assert all(p.psnr is None for p in sheet.panels)
    small, large = sheet.image(zoom=2), sheet.image(zoom=10)
    assert large.width > small.width and large.height > small.height
    assert large.width >= 2 * 200  # two panels of 20 output pixels, 10x


def test_auto_crop_is_in_the_detailed_half(tmp_path: Path) -> None:
    path = tmp_path / "half.png"
    arr = (half_textured(24, 200, "right").permute(1, 2, 0).numpy() * 255).round()
    Image.fromarray(arr.astype(np.uint8)).save(path)
    sheet = compare_models(path, 4, ["bicubic", "srcnn"])
    assert sheet.auto
    assert (sheet.crop.width, sheet.crop.height) == (
        cmp.AUTO_CROP // 4,
        24,
    )  # clamped to the height
    assert sheet.crop.x >= 100


def test_sixteen_bit_gray_panels_are_its_8_bit_pixels(tmp_path: Path) -> None:
    path = tmp_path / "gray16.png"
    ramp = (np.arange(24 * 32).reshape(24, 32) * 80).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    sheet = compare_models(path, 2, ["bicubic", "srcnn"], crop=Crop(0, 0, 32, 24))
    expected = np.round(ramp / 65535 * 255).astype(np.uint8)
    shown = np.asarray(sheet.panels[0].crop)[::2, ::2, 0]  # bicubic at x2: every other pixel
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 8
    assert expected.max() == 239 and shown.max() < 255  # not clipped to white


def test_errors(lr_png: Path, hr_png: Path) -> None:
    with pytest.raises(UsageError, match="at least two models"):
        compare_models(lr_png, 2, ["bicubic"])
    with pytest.raises(UsageError, match="not both"):
        compare_models(lr_png, 2, ["bicubic", "srcnn"], hr=hr_png, from_hr=True)
    with pytest.raises(UsageError, match="outside the 28x20 image"):
        compare_models(lr_png, 2, ["bicubic", "srcnn"], crop=Crop(20, 0, 9, 4))
    with pytest.raises(InputError, match=r"is 56x40 but the output .* is 84x60"):
        compare_models(lr_png, 3, ["bicubic", "srcnn"], hr=hr_png)
    with pytest.raises(UsageError, match="whole-number scale"):
        compare_models(hr_png, 2.5, ["bicubic", "vdsr"], from_hr=True)


def test_sheet_output_must_be_a_png(tmp_path: Path, lr_png: Path) -> None:
    with pytest.raises(UsageError, match="PNG"):
        cmp.check_sheet_output(tmp_path / "c.jpg")
    with pytest.raises(UsageError, match="never overwrites an input"):
        cmp.check_sheet_output(lr_png, inputs=(lr_png,))
    sheet = compare_models(lr_png, 2, ["bicubic", "srcnn"], crop=Crop(0, 0, 4, 4))
    path = cmp.write_sheet(sheet, tmp_path / "c.png")
    assert Image.open(path).size == sheet.image().size
