"""Banded outputs are raster pictures: written row by row (PNG) or through Pillow,
with the same pixels and metadata as a whole-image output, atomically."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import smooth_rgb
from sruc.errors import OutputError
from sruc.files import atomic, highdepth, images
from sruc.files.images import Picture, from_raster

ICC = b"\0" * 128 + b"a tiny fake profile"


def exif_bytes() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "sruc tests"  # Make
    return exif.tobytes()


def float_picture(kind: str) -> Picture:
    rgb = torch.from_numpy(smooth_rgb(21, 13, seed=2).astype(np.float32) / 255).permute(2, 0, 1)
    bits = 16 if kind.endswith("16") else 8
    color = rgb[:1] if kind.startswith("gray") else rgb
    alpha = rgb[2:3].flip(-2) if "a" in kind.replace("gray", "") else None
    return Picture(color=color.contiguous(), alpha=alpha, bits=bits, icc_profile=ICC,
                   exif=exif_bytes())  # fmt: skip


@pytest.mark.parametrize("kind", ["rgb", "rgba", "gray", "rgb16", "rgba16", "gray16"])
def test_a_streamed_png_holds_the_same_pixels_and_metadata(tmp_path: Path, kind: str) -> None:
    pic = float_picture(kind)
    depth = images.output_bits(pic, "x.png")
    raster = from_raster(pic.to_array(depth), pic)
    images.write_image(pic, tmp_path / "whole.png")
    images.write_image(raster, tmp_path / "banded.png")
    a, b = images.read_image(tmp_path / "whole.png"), images.read_image(tmp_path / "banded.png")
    assert np.array_equal(a.to_array(depth), b.to_array(depth))
    assert b.bits == depth and b.icc_profile == ICC
    with Image.open(tmp_path / "banded.png") as im:
        assert im.getexif()[0x010F] == "sruc tests"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["banded.png", "whole.png"]


@pytest.mark.parametrize("ext", ["jpg", "webp", "tif", "bmp"])
def test_other_formats_of_a_raster_are_the_whole_paths_files(tmp_path: Path, ext: str) -> None:
    pic = float_picture("rgba")
    raster = from_raster(pic.to_array(images.output_bits(pic, f"x.{ext}")), pic)
    with pytest.warns(Warning) if ext == "jpg" else _nothing():
        images.write_image(pic, tmp_path / f"whole.{ext}")
    with pytest.warns(Warning) if ext == "jpg" else _nothing():
        images.write_image(raster, tmp_path / f"banded.{ext}")
    assert (tmp_path / f"whole.{ext}").read_bytes() == (tmp_path / f"banded.{ext}").read_bytes()


def _nothing() -> object:
    import contextlib

    return contextlib.nullcontext()


def test_a_full_disk_while_streaming_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pic = float_picture("rgb")
    raster = from_raster(pic.to_array(8), pic)
    real = os.write
    budget = [300]

    def write(fd: int, data: bytes | memoryview) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), budget[0])
        budget[0] -= n
        return real(fd, bytes(data[:n]))

    monkeypatch.setattr(atomic.os, "write", write)
    with pytest.raises(OutputError, match="No space left on device"):
        images.write_image(raster, tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_a_raster_gives_its_own_array_and_a_pillow_image() -> None:
    pic = float_picture("gray16")
    raster = from_raster(pic.to_array(16), pic)
    assert raster.to_array(16) is raster.raster
    assert (raster.width, raster.height, raster.is_gray) == (13, 21, True)
    im = raster.to_pil()
    assert im.mode.startswith("I;16") and np.array_equal(np.asarray(im), pic.to_array(16)[..., 0])
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 3), (np.uint16, 4), (np.uint8, 1)])
def test_a_tall_streamed_png_decodes_to_its_array(
    tmp_path: Path, dtype: type, channels: int
) -> None:
    # Taller than one block of filtered rows, so the filter crosses blocks.
    rng = np.random.default_rng(0)
    peak = np.iinfo(dtype).max
    array = rng.integers(0, peak + 1, (150, 9, channels), dtype=np.int64).astype(dtype)
    array[:70] //= 3  # smooth and rough parts
    with open(tmp_path / "t.png", "wb") as f:
        highdepth.stream_png(f, array)
    pic = images.read_image(tmp_path / "t.png")
    assert np.array_equal(pic.to_array(8 if dtype == np.uint8 else 16), array)
