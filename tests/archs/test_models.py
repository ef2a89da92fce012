from __future__ import annotations

import pytest
import torch

from sruc import archs as models
from sruc.archs.bicubic import Bicubic
from sruc.archs.srcnn import SRCNN
from sruc.archs.vdsr import VDSR
from sruc.errors import ModelError


@pytest.mark.parametrize("arch", models.names())
def test_every_architecture_keeps_size_and_backpropagates(arch: str) -> None:
    small = {"srcnn": {"n1": 4, "n2": 2}, "vdsr": {"depth": 4, "width": 4}, "bicubic": {}}[arch]
    model = models.build(arch, small)
    x = torch.rand(2, 1, 13, 10, requires_grad=True)
    y = model(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None


def test_paper_sizes_and_radius() -> None:
    srcnn = SRCNN()
    assert srcnn.receptive_radius == 8
    assert srcnn.extract.weight.shape == (64, 1, 9, 9)
    assert srcnn.map.weight.shape == (32, 64, 5, 5)
    assert srcnn.reconstruct.weight.shape == (1, 32, 5, 5)
    assert SRCNN(f2=1).receptive_radius == 6
    vdsr = VDSR()
    convs = [m for m in vdsr.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [64] * 19 + [1]
    assert vdsr.receptive_radius == 20
    assert Bicubic().receptive_radius == 0


def test_receptive_radius_is_true_radius() -> None:
    # A pixel change influences outputs exactly `radius` pixels away, no further.
    torch.manual_seed(0)
    for model in (VDSR(depth=5, width=4), SRCNN(n1=4, n2=4, f2=5)):
        r = model.receptive_radius
        x = torch.rand(1, 1, 41, 41)
        x2 = x.clone()
        x2[0, 0, 20, 20] += 1.0
        with torch.no_grad():
            d = (model(x2) - model(x)).abs()[0, 0, 20]
        changed = (d > 0).nonzero().flatten()
        assert int(changed.min()) == 20 - r and int(changed.max()) == 20 + r


def test_vdsr_is_residual() -> None:
    model = VDSR(depth=3, width=4)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(1, 1, 7, 7)
    assert torch.equal(model(x), x)


def test_unknown_architecture_lists_known() -> None:
    with pytest.raises(ModelError, match="known: bicubic, srcnn, vdsr"):
        models.build("edsr")
    with pytest.raises(ModelError, match="bad configuration"):
        models.build("vdsr", {"depht": 3})
