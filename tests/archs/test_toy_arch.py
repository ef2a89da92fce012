"""Adding an architecture is one file under ``sruc/archs/`` plus its test.

A toy third network is defined here exactly as ``archs/vdsr.py`` defines VDSR
(an ``nn.Module`` with ``config`` and ``receptive_radius``, and an
``ArchSpec``), registered the way the archs package registers its own
modules, and then trained, saved, loaded, upscaled with and benchmarked
through the public commands: no other module of sruc names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from helpers import smooth_rgb
from sruc import archs
from sruc.cli import main
from sruc.zoo import checkpoint


class Toy(nn.Module):
    """Two 3x3 convolutions with a residual: the smallest VDSR-like network."""

    def __init__(self, channels: int = 1, width: int = 4) -> None:
        super().__init__()
        self.config = {"channels": channels, "width": width}
        self.a = nn.Conv2d(channels, width, 3, padding=1)
        self.b = nn.Conv2d(width, channels, 3, padding=1)

    @property
    def receptive_radius(self) -> int:
        return 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(torch.relu(self.a(x)))


SPEC = archs.ArchSpec(
    name="toy", module=Toy, multiscale=True, patch_size=16, batch_size=4, summary="a test network"
)


@pytest.fixture
def toy() -> Iterator[archs.ArchSpec]:
    unregister = archs.register(SPEC)
    yield SPEC
    unregister()


def test_a_toy_architecture_needs_no_other_module(
    toy: archs.ArchSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "toy" in archs.names(trainable=True)
    data = tmp_path / "images"
    data.mkdir()
    for i in range(4):
        Image.fromarray(smooth_rgb(40, 44, seed=i)).save(data / f"im{i}.png")
    run = tmp_path / "run"
    code = main(["train", str(data), "--model", "toy", "--out", str(run), "--steps", "3",
                 "--val-every", "3", "--val-crop", "32", "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    best = run / "best.pt"
    ckpt = checkpoint.load(best)
    assert (ckpt.arch, ckpt.config) == ("toy", {"channels": 1, "width": 4})
    assert isinstance(ckpt.build(), Toy)
    # Save and load round trip.
    again = checkpoint.save(checkpoint.from_model(ckpt.build(), ckpt.scales), tmp_path / "t.pt")
    assert checkpoint.load(again).state_dict.keys() == ckpt.state_dict.keys()

    out = tmp_path / "up.png"
    code = main(["up", str(data / "im0.png"), "-s", "2.5", "--model", str(best),
                 "-o", str(out), "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (110, 100)
    capsys.readouterr()
    code = main(["bench", str(data), "--model", str(best), "--scale", "2", "--json", "-q"])
    assert code == 0 and '"arch": "toy"' in capsys.readouterr().out


def test_a_name_is_registered_once(toy: archs.ArchSpec) -> None:
    with pytest.raises(ValueError, match="already registered"):
        archs.register(archs.ArchSpec(name="toy", module=Toy, multiscale=True))
    archs.register(SPEC)  # the same spec again is harmless


def test_unknown_architectures_are_named_errors() -> None:
    with pytest.raises(Exception, match=r"unknown architecture 'nope'; known: bicubic, srcnn"):
        archs.build("nope")
