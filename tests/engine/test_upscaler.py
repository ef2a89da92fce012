"""sruc.Upscaler: a model loaded, verified and prepared once for many images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sruc
from helpers import smooth_rgb
from sruc.engine import pipeline
from sruc.errors import ModelError
from sruc.zoo import checkpoint


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often a checkpoint is read and a model prepared."""
    counts = {"load": 0, "prepare": 0}
    real_load, real_prepare = checkpoint.load, pipeline.prepare_model

    def load(*a: object, **k: object) -> object:
        counts["load"] += 1
        return real_load(*a, **k)  # type: ignore[arg-type]

    def prepare(*a: object, **k: object) -> object:
        counts["prepare"] += 1
        return real_prepare(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint, "load", load)
    monkeypatch.setattr(pipeline, "prepare_model", prepare)
    pipeline._SHARED.clear()
    return counts


def test_one_upscaler_prepares_once(
    counted: dict[str, int], tiny_vdsr_ckpt: Path, rgb_png: Path
) -> None:
    up = sruc.Upscaler(str(tiny_vdsr_ckpt), device="cpu", precision="fp32")
    assert counted == {"load": 0, "prepare": 0}  # nothing before the first image
    outs = [np.asarray(up.upscale(rgb_png, s)) for s in (2, 3, 2.5, 2)]
    assert counted == {"load": 1, "prepare": 1}
    assert outs[0].shape == (48, 64, 3) and outs[1].shape == (72, 96, 3)
    assert np.array_equal(outs[0], outs[3])
    same = sruc.upscale(rgb_png, 2, model=str(tiny_vdsr_ckpt), device="cpu", precision="fp32")
    assert np.array_equal(np.asarray(same), outs[0])


def test_module_functions_reuse_one_until_the_file_changes(
    counted: dict[str, int], tiny_vdsr_ckpt: Path, rgb_png: Path, tmp_path: Path
) -> None:
    for _ in range(3):
        sruc.upscale(rgb_png, 2, model=str(tiny_vdsr_ckpt), device="cpu", precision="fp32")
    sruc.upscale_file(rgb_png, tmp_path / "o.png", 2, model=str(tiny_vdsr_ckpt), device="cpu",
                      precision="fp32")  # fmt: skip
    assert counted == {"load": 1, "prepare": 1}
    # A retrained checkpoint under the same name is read again.
    stat = tiny_vdsr_ckpt.stat()
    os.utime(tiny_vdsr_ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    sruc.upscale(rgb_png, 2, model=str(tiny_vdsr_ckpt), device="cpu", precision="fp32")
    assert counted == {"load": 2, "prepare": 2}


def test_per_scale_groups_keep_one_model_per_scale(counted: dict[str, int], rgb_png: Path) -> None:
    up = sruc.Upscaler("srcnn", device="cpu", precision="fp32")
    for s in (2, 3, 2, 3):
        up.upscale(rgb_png, s)
    assert counted["prepare"] == 2
    assert sorted(pm.loaded.name for pm in up._prepared.values()) == ["srcnn-x2", "srcnn-x3"]
    with pytest.raises(ModelError, match=r"weights for x2/3/4 only, not x2\.5"):
        up.upscale(rgb_png, 2.5)


def test_errors_come_with_the_first_image(rgb_png: Path) -> None:
    up = sruc.Upscaler("no-such-model")
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        up.upscale(rgb_png, 2)
    with pytest.raises(sruc.UsageError, match="greater than 1"):
        sruc.Upscaler("bicubic").upscale(rgb_png, 1)
    gray = Image.fromarray(smooth_rgb(10, 12)[..., 0])
    assert sruc.Upscaler("bicubic").upscale(gray, 2).size == (24, 20)
