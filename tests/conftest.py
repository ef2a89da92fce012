"""Shared fixtures: tiny synthetic images and models, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import smooth_rgb


@pytest.fixture
def rgb_png(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(smooth_rgb(24, 32)).save(path)
    return path


@pytest.fixture
def tiny_vdsr_ckpt(tmp_path: Path) -> Path:
    """A small random VDSR (6 layers, 8 wide) saved in sruc's checkpoint format."""
    from sruc.archs.vdsr import VDSR
    from sruc.zoo import checkpoint

    torch.manual_seed(0)
    # He-initialised random weights: a residual of about 0.1, visible in tests.
    model = VDSR(depth=6, width=8)
    path = tmp_path / "tiny-vdsr.pt"
    checkpoint.save(checkpoint.from_model(model, [2, 3, 4], {"note": "test"}), path)
    return path


@pytest.fixture
def tiny_srcnn_ckpt(tmp_path: Path) -> Path:
    from sruc.archs.srcnn import SRCNN
    from sruc.zoo import checkpoint

    torch.manual_seed(1)
    model = SRCNN(n1=8, n2=4)
    path = tmp_path / "tiny-srcnn-x3.pt"
    checkpoint.save(checkpoint.from_model(model, [3]), path)
    return path


@pytest.fixture
def keep_threads() -> object:
    """Restore torch's thread count and sruc's record of it after a test that sets them."""
    from sruc.engine import threads

    before, chosen = torch.get_num_threads(), threads._chosen
    yield
    torch.set_num_threads(before)
    threads._chosen = chosen
    threads._warned.clear()
