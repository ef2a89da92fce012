"""Upscaling animations: every frame through one prepared model, equal to the still
upscale of that frame; streamed; progress in frames; `sruc up` and `sruc batch`."""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from helpers import many_frame_gif, run_cli, smooth_rgb
from sruc.engine.pipeline import Upscaler, upscale_file
from sruc.files import animation
from sruc.files.animation import Frame

DURATIONS = [40, 50, 60, 70]


def rgba_frames(n: int = 4, h: int = 12, w: int = 16) -> list[np.ndarray]:
    out = []
    for i in range(n):
        a = np.dstack([smooth_rgb(h, w, seed=i), np.full((h, w), 255, np.uint8)])
        a[: n - i, : n - i, 3] = 0  # a transparent corner that shrinks
        out.append(a)
    return out


def make_apng(path: Path, n: int = 4) -> list[np.ndarray]:
    frames = rgba_frames(n)
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=DURATIONS[:n], loop=0,
                disposal=[0, 1, 0, 0][:n])  # fmt: skip
    return frames


def make_gif(path: Path, n: int = 4) -> None:
    ims = [Image.fromarray(f).convert("RGB").quantize(64) for f in rgba_frames(n)]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=DURATIONS[:n], loop=0,
                disposal=[1, 2, 1, 1][:n])  # fmt: skip


def decoded(path: Path) -> list[Image.Image]:
    return [f.convert("RGBA") for f in ImageSequence.Iterator(Image.open(path))]


@pytest.fixture(params=["bicubic", "vdsr"])
def upscaler(request: pytest.FixtureRequest, tiny_vdsr_ckpt: Path) -> Upscaler:
    model = "bicubic" if request.param == "bicubic" else tiny_vdsr_ckpt
    return Upscaler(model, device="cpu", precision="fp32")


@pytest.mark.parametrize("ext", [".png", ".webp"])
def test_apng_and_webp_frames_equal_the_still_upscale(
    tmp_path: Path, upscaler: Upscaler, ext: str
) -> None:
    src = tmp_path / "a.png"
    make_apng(src)
    anim = animation.probe(src)
    assert anim is not None
    out = animation.write_animation(
        upscaler.upscale_frames(animation.read_frames(anim), 2), tmp_path / f"o{ext}",
        loop=anim.loop, lossless=True,
    )  # fmt: skip
    stills = [np.asarray(upscaler.upscale(f, 2).convert("RGBA")) for f in decoded(src)]
    back = Image.open(out)
    assert back.n_frames == 4 and back.info["loop"] == 0
    for got, want in zip(decoded(out), stills, strict=True):
        g = np.asarray(got)
        visible = want[:, :, 3] > 0
        assert np.array_equal(g[:, :, 3], want[:, :, 3])
        assert np.array_equal(g[visible][:, :3], want[visible][:, :3])


def test_upscale_file_apng_keeps_timing_loop_and_disposal(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    make_apng(src)
    calls: list[tuple[int, int]] = []
    result = upscale_file(src, tmp_path / "o.png", 2, model="bicubic",
                          progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert result.frames == 4 and result.output_size == (32, 24)
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]  # progress counts frames
    back = Image.open(tmp_path / "o.png")
    info = [(f.info["duration"], f.info["disposal"], f.info["blend"])
            for f in ImageSequence.Iterator(back)]  # fmt: skip
    assert info == [(40, 0, 0), (50, 1, 0), (60, 0, 0), (70, 0, 0)]


def test_gif_to_gif_keeps_frames_timing_loop_disposal_and_transparency(tmp_path: Path) -> None:
    src = tmp_path / "a.gif"
    make_gif(src)
    # the GIF decoder composes the frames: index 0 of each frame is transparent
    src_frames = decoded(src)
    up = Upscaler("bicubic", device="cpu")
    upscale_file(src, tmp_path / "o.gif", 2, model="bicubic")
    back = Image.open(tmp_path / "o.gif")
    assert back.n_frames == 4 and back.info["loop"] == 0
    assert [f.info["duration"] for f in ImageSequence.Iterator(back)] == DURATIONS
    got = decoded(tmp_path / "o.gif")
    for g, s in zip(got, src_frames, strict=True):
        want = np.asarray(up.upscale(s, 2).convert("RGBA")).astype(int)
        g_arr = np.asarray(g).astype(int)
        assert np.array_equal(g_arr[:, :, 3] == 0, want[:, :, 3] < 128)
        opaque = want[:, :, 3] >= 128
        # re-quantised to 256 colours: close, not equal
        assert np.abs(g_arr[opaque][:, :3] - want[opaque][:, :3]).mean() < 4


def test_frames_are_streamed_not_held_as_float(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    make_apng(src)
    anim = animation.probe(src)
    assert anim is not None
    up = Upscaler("bicubic", device="cpu")
    alive: weakref.WeakSet[object] = weakref.WeakSet()
    peak = [0]

    def watched(frames: Iterator[Frame]) -> Iterator[Frame]:
        for f in frames:
            alive.add(f.picture.color)
            peak[0] = max(peak[0], len(alive))
            yield f

    frames = watched(up.upscale_frames(animation.read_frames(anim), 2))
    animation.write_animation(frames, tmp_path / "o.webp")
    assert peak[0] <= 2  # the frame being handed over, and at most the one before


def test_up_animated_gif_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "anim.gif"
    make_gif(src)
    run = run_cli(capsys, "up", src, "-m", "bicubic", "-o", tmp_path / "anim_x2.gif")
    assert run.code == 0, run.err
    assert "4 frames" in run.err
    assert Image.open(tmp_path / "anim_x2.gif").n_frames == 4
    # the default output name keeps .gif
    (tmp_path / "anim_x2.gif").unlink()
    run = run_cli(capsys, "up", src, "-m", "bicubic", "-q")
    assert run.code == 0 and Image.open(tmp_path / "anim_x2.gif").n_frames == 4


def test_up_animation_to_a_still_format_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "anim.gif"
    make_gif(src)
    run = run_cli(capsys, "up", src, "-m", "bicubic", "-o", tmp_path / "o.jpg")
    assert run.code == 2 and run.err.count("\n") == 1, run.err
    assert ".gif, .webp or .png" in run.err
    assert not (tmp_path / "o.jpg").exists()


def test_up_bad_animations_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.gif"
    empty.write_bytes(b"GIF89a\x04\x00\x04\x00\x80\x00\x00" + bytes(6) + b";")
    run = run_cli(capsys, "up", empty, "-m", "bicubic", "-o", tmp_path / "o1.gif")
    assert run.code == 1 and run.err.count("\n") == 1 and "no frames" in run.err, run.err
    big = tmp_path / "big.gif"
    make_gif(big)  # 4 frames of 16x12 = 768 pixels in all
    run = run_cli(capsys, "up", big, "-m", "bicubic", "-o", tmp_path / "o2.gif",
                  "--max-pixels", "500")  # fmt: skip
    assert run.code == 1 and run.err.count("\n") == 1, run.err
    assert "4 frames" in run.err and "--max-pixels" in run.err
    assert not (tmp_path / "o1.gif").exists() and not (tmp_path / "o2.gif").exists()
    many = tmp_path / "many.gif"
    many_frame_gif(many, 10_000)  # 10,000 frames of 4x4: each small, too many in all
    run = run_cli(capsys, "up", many, "-m", "bicubic", "-o", tmp_path / "o3.gif",
                  "--max-pixels", "100000")  # fmt: skip
    assert run.code == 1 and run.err.count("\n") == 1, run.err
    assert "10,000 frames of 4x4 = 160,000 pixels" in run.err
    assert not (tmp_path / "o3.gif").exists()


def test_library_upscale_of_an_animation_warns_first_frame(tmp_path: Path) -> None:
    src = tmp_path / "a.gif"
    make_gif(src)
    import sruc

    with pytest.warns(UserWarning, match="first frame"):
        im = sruc.upscale(src, 2, model="bicubic")
    assert im.size == (32, 24)


def test_batch_with_an_animated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(smooth_rgb(12, 16)).save(folder / "still.png")
    make_gif(folder / "anim.gif")
    make_apng(folder / "moving.png")
    out = tmp_path / "out"
    run = run_cli(capsys, "batch", folder, "-o", out, "-m", "bicubic", "--json", "-q")
    assert run.code == 0, run.err
    assert json.loads(run.out)["summary"]["done"] == 3
    assert Image.open(out / "anim_x2.gif").n_frames == 4
    assert Image.open(out / "moving_x2.png").n_frames == 4
    assert getattr(Image.open(out / "still_x2.png"), "n_frames", 1) == 1
    # to a still format, the animations fail with the line that says why; the still is done
    run = run_cli(capsys, "batch", folder, "-o", tmp_path / "jpg", "-m", "bicubic",
                  "--format", "jpg", "--json", "-q")  # fmt: skip
    assert run.code == 1
    files = {Path(f["input"]).name: f for f in json.loads(run.out)["files"]}
    assert files["still.png"]["status"] == "done"
    assert files["anim.gif"]["status"] == "failed"
    assert ".gif, .webp or .png" in files["anim.gif"]["error"]
    assert not (tmp_path / "jpg" / "anim_x2.jpg").exists()
