"""Animated GIF, WebP and APNG in sruc.files: probing, frames, writing, GIF's palette,
and the bad inputs (no frames, too many pixels in all)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from helpers import many_frame_gif, smooth_rgb
from sruc.errors import InputError, UsageError
from sruc.files import animation, gif, images
from sruc.files.animation import Frame
from sruc.files.images import Picture

DURATIONS = [40, 50, 60, 70]


def rgba_frames(n: int = 4, h: int = 12, w: int = 16) -> list[np.ndarray]:
    """Distinct frames, each with a transparent corner (a different one each)."""
    out = []
    for i in range(n):
        a = np.dstack([smooth_rgb(h, w, seed=i), np.full((h, w), 255, np.uint8)])
        r, c = divmod(i, 2)
        a[r * 6 : r * 6 + 4, c * 8 : c * 8 + 4, 3] = 0
        out.append(a)
    return out


def save_apng(path: Path, frames: list[np.ndarray], **kwargs: object) -> None:
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], **kwargs)


def save_gif(path: Path, n: int = 4, **kwargs: object) -> None:
    """A GIF of ``n`` 12x16 frames, palette index 0 transparent."""
    ims = []
    for i in range(n):
        p = Image.fromarray(smooth_rgb(12, 16, seed=i)).quantize(32)
        idx = np.asarray(p).copy()
        idx[idx == 0] = 1
        idx[: 3 + i, :3] = 0
        q = Image.fromarray(idx, "P")
        q.putpalette(p.getpalette())
        ims.append(q)
    ims[0].save(path, save_all=True, append_images=ims[1:], transparency=0, **kwargs)


def gif_local_color_tables(data: bytes) -> int:
    """How many image descriptors of a GIF carry their own colour table."""
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    count = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:  # 0x2C image descriptor
            flags = data[pos + 9]
            count += bool(flags & 0x80)
            pos += 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1  # + LZW size
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return count


def test_a_still_is_not_an_animation(rgb_png: Path, tmp_path: Path) -> None:
    assert animation.probe(rgb_png) is None
    one = tmp_path / "one.gif"
    Image.fromarray(smooth_rgb(8, 8)).save(one)
    assert animation.probe(one) is None
    assert animation.probe(tmp_path / "missing.gif") is None
    pages = [Image.fromarray(smooth_rgb(8, 8, seed=i)) for i in range(3)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    assert animation.probe(tmp_path / "pages.tif") is None  # pages, not an animation


def test_probe_and_frames_of_an_apng(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    save_apng(src, rgba_frames(), duration=DURATIONS, loop=3, disposal=[0, 1, 2, 0])
    anim = animation.probe(src)
    assert anim is not None
    assert (anim.format, anim.frames, anim.width, anim.height, anim.loop, anim.alpha) == (
        "PNG", 4, 16, 12, 3, True
    )  # fmt: skip
    frames = list(animation.read_frames(anim))
    assert [f.duration for f in frames] == DURATIONS
    assert [f.disposal for f in frames] == ["none", "background", "previous", "none"]
    assert all(f.picture.alpha is not None and f.picture.frames == 4 for f in frames)


def test_gif_disposal_names(tmp_path: Path) -> None:
    src = tmp_path / "a.gif"
    save_gif(src, duration=DURATIONS, loop=0, disposal=[1, 2, 3, 1])
    anim = animation.probe(src)
    assert anim is not None and anim.loop == 0 and anim.frames == 4
    frames = list(animation.read_frames(anim))
    assert [f.disposal for f in frames] == ["none", "background", "previous", "none"]
    assert [f.duration for f in frames] == DURATIONS


def _pictures(frames: list[np.ndarray]) -> list[Frame]:
    out = []
    for i, a in enumerate(frames):
        t = torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)
        out.append(Frame(Picture(color=t[:3], alpha=t[3:]), DURATIONS[i], "none"))
    return out


@pytest.mark.parametrize("ext", [".png", ".webp"])
def test_write_is_exact_for_apng_and_lossless_webp(tmp_path: Path, ext: str) -> None:
    frames = rgba_frames()
    out = animation.write_animation(_pictures(frames), tmp_path / f"o{ext}", loop=2, lossless=True)
    back = Image.open(out)
    assert back.n_frames == 4 and back.info["loop"] == 2
    got = [np.asarray(f.convert("RGBA")) for f in ImageSequence.Iterator(back)]
    for g, e in zip(got, frames, strict=True):
        visible = e[:, :, 3] > 0  # the colour under a transparent pixel is free
        assert np.array_equal(g[:, :, 3], e[:, :, 3])
        assert np.array_equal(g[visible][:, :3], e[visible][:, :3])


def shrinking_holes(n: int = 4) -> list[np.ndarray]:
    """Frames whose transparent corner only shrinks: no pixel turns transparent."""
    frames = rgba_frames(n)
    for i, f in enumerate(frames):
        f[:, :, 3] = 255
        f[: n - i, : n - i, 3] = 0
    return frames


def _read_gif(data: bytes) -> tuple[list[np.ndarray], list[int], list[int], Image.Image]:
    back = Image.open(io.BytesIO(data))
    got, durations, disposal = [], [], []
    for f in ImageSequence.Iterator(back):
        durations.append(f.info["duration"])
        disposal.append(f.disposal_method)
        got.append(np.asarray(f.convert("RGBA")))
    return got, durations, disposal, back


def test_gif_has_one_global_palette_and_keeps_disposal_and_transparency() -> None:
    frames = shrinking_holes()
    data = gif.encode([f.copy() for f in frames], DURATIONS, loop=0,
                      disposal=["none", "background", "none", "previous"])  # fmt: skip
    assert gif_local_color_tables(data) == 0
    got, durations, disposal, back = _read_gif(data)
    assert back.n_frames == 4 and back.info["loop"] == 0
    assert durations == DURATIONS and disposal == [1, 2, 1, 3]
    for g, e in zip(got, frames, strict=True):
        assert np.array_equal(g[:, :, 3] == 0, e[:, :, 3] < 128)


def test_gif_clears_every_frame_when_a_pixel_turns_transparent() -> None:
    frames = rgba_frames()  # the transparent corner moves
    data = gif.encode([f.copy() for f in frames], DURATIONS, loop=0, disposal=["none"] * 4)
    got, durations, disposal, _ = _read_gif(data)
    assert disposal == [2, 2, 2, 2] and durations == DURATIONS
    for g, e in zip(got, frames, strict=True):
        assert np.array_equal(g[:, :, 3] == 0, e[:, :, 3] < 128)


def test_gif_palette_is_exact_under_256_colours() -> None:
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (200, 3), dtype=np.uint8)
    frames = [colours[rng.integers(0, 200, (10, 12))] for _ in range(3)]
    back = Image.open(io.BytesIO(gif.encode([f.copy() for f in frames], [50] * 3, loop=None)))
    assert "loop" not in back.info  # no count stored: plays once, as it came
    for i, f in enumerate(ImageSequence.Iterator(back)):
        assert np.array_equal(np.asarray(f.convert("RGB")), frames[i]), i


def test_still_gif_output(tmp_path: Path) -> None:
    t = torch.rand(4, 6, 8)
    images.write_image(Picture(color=t[:3], alpha=(t[3:] > 0.5).float()), tmp_path / "s.gif")
    back = Image.open(tmp_path / "s.gif")
    assert back.size == (8, 6) and getattr(back, "n_frames", 1) == 1
    assert np.array_equal(np.asarray(back.convert("RGBA"))[:, :, 3] == 0, (t[3] <= 0.5).numpy())


def test_zero_frame_gif_is_one_clear_line(tmp_path: Path) -> None:
    src = tmp_path / "empty.gif"
    # header, a 4x4 screen with a 2-colour table, and the trailer: no image at all
    src.write_bytes(b"GIF89a\x04\x00\x04\x00\x80\x00\x00" + bytes(6) + b";")
    with pytest.raises(InputError, match="no frames"):
        animation.probe(src)
    with pytest.raises(InputError, match="no frames"):
        images.read_image(src)


def test_max_pixels_counts_every_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "many.gif"
    many_frame_gif(src, 10_000)

    def no_decoding(*a: object, **k: object) -> None:
        raise AssertionError("frames decoded before the limit was checked")

    monkeypatch.setattr(images, "from_pil", no_decoding)
    with pytest.raises(InputError, match=r"10,000 frames of 4x4 = 160,000 pixels"):
        animation.probe(src, max_pixels=100_000)
    anim = animation.probe(src, max_pixels=200_000)
    assert anim is not None and anim.frames == 10_000


def test_an_animation_refuses_a_still_format(tmp_path: Path) -> None:
    src = tmp_path / "a.gif"
    save_gif(src)
    anim = animation.probe(src)
    assert anim is not None
    for fmt in ("JPEG", "TIFF", "BMP", "AVIF"):
        with pytest.raises(UsageError, match=r"\.gif, \.webp or \.png"):
            animation.check_output_format(anim, fmt)
    for fmt in ("GIF", "WEBP", "PNG"):
        animation.check_output_format(anim, fmt)
