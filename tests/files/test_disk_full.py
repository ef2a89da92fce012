"""A full disk (imitated by a file-size limit) is an error, never a short file
reported as written: every format, in `sruc up` and in `sruc batch`."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import smooth_rgb


def noisy(seed: int = 0) -> Image.Image:
    """64x64 of noise: no format compresses its x4 enlargement under LIMIT."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


LIMIT = 20_000  # bytes: the x4 outputs of a 64x64 image are larger in every format


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _sruc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sruc", *map(str, args)], preexec_fn=_limited,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("ext", ["jpg", "bmp", "png", "webp", "tif"])
def test_up_reports_the_failed_write_and_leaves_nothing(tmp_path: Path, ext: str) -> None:
    noisy().save(tmp_path / "little.png")
    out = tmp_path / f"out.{ext}"
    run = _sruc("up", tmp_path / "little.png", "-s", "4", "--model", "bicubic", "-o", out)
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip() == f"error: cannot write {out}: File too large"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["little.png"]  # no output, no .part


@pytest.mark.parametrize("ext", ["gif", "webp", "png"])
def test_animations_too(tmp_path: Path, ext: str) -> None:
    frames = [noisy(i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], loop=0)
    out = tmp_path / f"out.{ext}"
    run = _sruc("up", tmp_path / "anim.gif", "-s", "4", "--model", "bicubic", "-o", out)
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip() == f"error: cannot write {out}: File too large"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif"]


def test_16_bit_outputs_too(tmp_path: Path) -> None:
    from sruc.files.highdepth import write_png16

    write_png16(tmp_path / "deep.png", (smooth_rgb(64, 64).astype("uint16") * 257))
    run = _sruc("up", tmp_path / "deep.png", "-s", "4", "--model", "bicubic", "-o",
                tmp_path / "out.tif")  # fmt: skip
    assert run.returncode == 1 and "cannot write" in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.png"]


def test_batch_reports_the_image_as_failed(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for i in range(2):
        noisy(i).save(tmp_path / "in" / f"p{i}.png")
    run = _sruc("batch", tmp_path / "in", "-o", tmp_path / "out", "-s", "4", "--model",
                "bicubic", "--format", "jpg")  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "File too large" in run.stderr and "please report" not in run.stderr
    written = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert written == []  # neither a short file under its name nor a .part


def test_a_killed_runs_leftover_is_removed_on_the_next_run(tmp_path: Path) -> None:
    import os

    noisy().save(tmp_path / "in.png")
    stale = tmp_path / ".out.png.abcd1234.part"  # what a SIGKILLed run leaves
    fresh = tmp_path / ".out.png.efgh5678.part"  # another process writing right now
    other = tmp_path / ".other.png.abcd1234.part"
    for p in (stale, fresh, other):
        p.write_bytes(b"half")
    old = os.stat(stale).st_mtime - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    args = ["up", str(tmp_path / "in.png"), "--model", "bicubic", "-o", str(tmp_path / "out.png")]
    run = subprocess.run([sys.executable, "-m", "sruc", *args], capture_output=True)
    assert run.returncode == 0
    assert not stale.exists() and fresh.exists() and other.exists()
