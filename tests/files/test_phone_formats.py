"""Phone photos and modern formats: HEIC/HEIF (the heif extra) and AVIF in and out,
with EXIF orientation, ICC and EXIF kept as for JPEG; the errors without the extra."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from helpers import run_cli, smooth_rgb
from sruc.files import discovery, heif, images

needs_avif = pytest.mark.skipif(not heif.avif_available(), reason="this Pillow has no AVIF")
#: A HEIC file's first bytes (its ftyp box), then nothing an image decoder could use.
HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


@functools.cache
def _srgb() -> bytes:
    """One sRGB profile for the whole file: a profile made anew carries the time it was
    made, so two made a second apart differ in their header."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "sruc test camera"
    return exif.tobytes()


def _photo(path: Path, fmt: str, orientation: int = 6, **kwargs: object) -> np.ndarray:
    """A 16x24 (w x h) photo saved with an EXIF orientation and an sRGB profile."""
    arr = smooth_rgb(24, 16)
    Image.fromarray(arr).save(
        path, format=fmt, exif=_exif(orientation), icc_profile=_srgb(), **kwargs
    )
    return arr


def test_ftyp_brands_tell_heic_from_avif() -> None:
    assert heif.kind(HEIC_HEAD) == "HEIF"
    avif = b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1miafMA1B"
    assert heif.kind(avif) == "AVIF"  # lists mif1 too: AVIF wins
    assert heif.kind(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42") is None
    assert heif.kind(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16) is None


def test_discovery_claims_phone_formats() -> None:
    for ext in (".heic", ".HEIF", ".avif"):
        assert discovery.claims_image(Path("IMG_0001" + ext))


def test_heic_without_the_extra_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heif, "available", lambda: False)
    src = tmp_path / "IMG_0001.HEIC"
    src.write_bytes(HEIC_HEAD)
    run = run_cli(capsys, "up", src, "-m", "bicubic", "-o", tmp_path / "out.png")
    assert run.code == 1
    assert run.err.count("\n") == 1 and run.err.startswith("error: ")
    assert "sruc[heif]" in run.err and "cannot identify" not in run.err
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(Exception, match=r"sruc\[heif\]"):
        images.read_image(src)


def test_heic_output_without_the_extra_names_it(
    rgb_png: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heif, "available", lambda: False)
    out = rgb_png.with_name("out.heic")
    run = run_cli(capsys, "up", rgb_png, "-m", "bicubic", "-o", out)
    assert run.code == 1 and "sruc[heif]" in run.err and run.err.count("\n") == 1
    assert not out.exists()


@needs_avif
def test_avif_in_and_out_keeps_orientation_icc_and_exif(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "photo.avif"
    _photo(src, "AVIF", orientation=6, quality=100)
    pic = images.read_image(src)
    assert (pic.width, pic.height) == (24, 16)  # orientation 6: turned upright
    assert pic.icc_profile == _srgb()
    out = tmp_path / "photo_x2.avif"
    run = run_cli(capsys, "up", src, "-m", "bicubic", "-s", "2", "-o", out, "-q")
    assert run.code == 0, run.err
    back = Image.open(out)
    assert back.format == "AVIF" and back.size == (48, 32)
    assert back.info.get("icc_profile") == _srgb()
    exif = back.getexif()
    assert exif.get(0x0112, 1) == 1 and exif.get(0x010F) == "sruc test camera"


@needs_avif
def test_avif_output_from_png_keeps_alpha(tmp_path: Path) -> None:
    rgba = np.dstack([smooth_rgb(12, 10), np.full((12, 10), 255, np.uint8)])
    rgba[:4, :4, 3] = 0
    src = tmp_path / "a.png"
    Image.fromarray(rgba).save(src)
    out = tmp_path / "a.avif"
    import sruc

    sruc.upscale_file(src, out, 2, model="bicubic")
    back = Image.open(out)
    assert back.mode == "RGBA" and back.size == (20, 24)
    assert np.asarray(back)[0, 0, 3] < 128 and np.asarray(back)[-1, -1, 3] > 200


@needs_avif
def test_truncated_avif_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.BytesIO()
    Image.fromarray(smooth_rgb(32, 32)).save(buf, format="AVIF")
    src = tmp_path / "cut.avif"
    src.write_bytes(buf.getvalue()[:40])
    run = run_cli(capsys, "up", src, "-m", "bicubic", "-o", tmp_path / "o.png")
    assert run.code == 1 and run.err.count("\n") == 1, run.err
    assert "damaged or truncated" in run.err and "please report" not in run.err
    assert not (tmp_path / "o.png").exists()


def test_batch_takes_phone_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(smooth_rgb(12, 16)).save(folder / "a.png")
    if heif.avif_available():
        Image.fromarray(smooth_rgb(12, 16, seed=1)).save(folder / "b.avif")
    run = run_cli(capsys, "batch", folder, "-o", tmp_path / "out", "-m", "bicubic", "-q")
    assert run.code == 0, run.err
    made = {p.name for p in (tmp_path / "out").iterdir()}
    assert "a_x2.png" in made
    if heif.avif_available():
        assert "b_x2.avif" in made and Image.open(tmp_path / "out" / "b_x2.avif").size == (32, 24)


# --------------------------------------------------------------------------- with pillow-heif


@pytest.fixture
def heic(tmp_path: Path) -> Path:
    pytest.importorskip("pillow_heif")
    assert heif.available()
    path = tmp_path / "IMG_0042.heic"
    _photo(path, "HEIF", orientation=6, quality=-1)  # -1: lossless
    return path


def test_heic_is_read_upright_with_icc_and_exif(heic: Path) -> None:
    pic = images.read_image(heic)
    assert (pic.width, pic.height) == (24, 16)  # pillow-heif applies the rotation
    assert pic.icc_profile == _srgb()
    assert pic.exif is not None
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif.get(0x0112, 1) == 1 and exif.get(0x010F) == "sruc test camera"


def test_up_heic_to_png_and_heic(heic: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = heic.with_name("up.png")
    run = run_cli(capsys, "up", heic, "-m", "bicubic", "-s", "2", "-o", out, "-q")
    assert run.code == 0, run.err
    back = Image.open(out)
    assert back.size == (48, 32) and back.info.get("icc_profile") == _srgb()
    out2 = heic.with_name("up.heic")
    run = run_cli(capsys, "up", heic, "-m", "bicubic", "-s", "2", "-o", out2, "-q")
    assert run.code == 0, run.err
    back2 = Image.open(out2)
    assert back2.format == "HEIF" and back2.size == (48, 32)
    assert back2.info.get("icc_profile") == _srgb()


def test_truncated_heic_is_one_line(heic: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = heic.read_bytes()
    for n, name in ((40, "head.heic"), (len(data) * 2 // 3, "tail.heic")):
        src = heic.with_name(name)
        src.write_bytes(data[:n])
        out = heic.with_name(name + ".png")
        run = run_cli(capsys, "up", src, "-m", "bicubic", "-o", out)
        assert run.code == 1 and run.err.count("\n") == 1, run.err
        assert "damaged or truncated" in run.err and "please report" not in run.err
        assert not out.exists()
