from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from sruc.archs.srcnn import SRCNN
from sruc.archs.vdsr import VDSR
from sruc.errors import ModelError
from sruc.zoo import checkpoint
from sruc.zoo.registry import load_model


def test_round_trip_keeps_architecture_and_weights(tmp_path: Path) -> None:
    model = SRCNN(n1=8, n2=4, f2=1)  # a 9-1-5 variant: loading must not guess 9-5-5
    path = checkpoint.save(checkpoint.from_model(model, [3], {"steps": 10}), tmp_path / "m.pt")
    ck = checkpoint.load(path)
    assert (ck.arch, ck.scales, ck.meta) == ("srcnn", [3.0], {"steps": 10})
    assert ck.config["f2"] == 1
    rebuilt = ck.build()
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), rebuilt.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)


def test_file_is_loadable_with_weights_only(tmp_path: Path) -> None:
    path = checkpoint.save(
        checkpoint.from_model(VDSR(depth=3, width=4), [2, 3, 4]), tmp_path / "v.pt"
    )
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "arch", "config", "scales", "state_dict", "meta"}
    assert raw["format"] == checkpoint.FORMAT


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.pt"
    checkpoint.save(checkpoint.from_model(VDSR(depth=3, width=4), [2]), path)
    before = path.read_bytes()

    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save(checkpoint.from_model(VDSR(depth=3, width=4), [2]), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


class _Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (print, ("pwned",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "corrupt or not a PyTorch file"),
        (b"not a checkpoint at all", "corrupt or not a PyTorch file"),
    ],
)
def test_corrupt_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        checkpoint.load(path)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = checkpoint.save(checkpoint.from_model(VDSR(depth=3, width=4), [2]), tmp_path / "v.pt")
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ModelError, match="corrupt"):
        checkpoint.load(path)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "x": _Evil()}, path)
    with pytest.raises(ModelError, match="pickled Python objects"):
        checkpoint.load(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelError):
        checkpoint.load(plain)


def test_foreign_checkpoints(tmp_path: Path) -> None:
    sd = tmp_path / "state_dict.pt"
    torch.save(VDSR(depth=3, width=4).state_dict(), sd)
    with pytest.raises(ModelError, match="bare state_dict"):
        checkpoint.load(sd)
    other = tmp_path / "other.pt"
    torch.save({"model": 1}, other)
    with pytest.raises(ModelError, match="not a sruc checkpoint"):
        checkpoint.load(other)


def test_mismatched_weights(tmp_path: Path) -> None:
    ck = checkpoint.from_model(VDSR(depth=3, width=4), [2])
    ck.config["width"] = 8
    path = checkpoint.save(ck, tmp_path / "m.pt")
    with pytest.raises(ModelError, match="do not fit"):
        checkpoint.load(path).build()


def test_scales_are_enforced(tiny_srcnn_ckpt: Path, tiny_vdsr_ckpt: Path) -> None:
    srcnn = load_model(tiny_srcnn_ckpt)
    srcnn.check_scale(3)
    with pytest.raises(ModelError, match=r"x3 only, not x2"):
        srcnn.check_scale(2)
    vdsr = load_model(tiny_vdsr_ckpt)
    vdsr.check_scale(2.5)  # any scale in range for a multi-scale model
    assert vdsr.radius == 6


# --------------------------------------------------------------------------- damaged files


def _tiny() -> checkpoint.Checkpoint:
    from sruc import archs

    torch.manual_seed(0)
    return checkpoint.from_model(archs.build("vdsr", {"depth": 3, "width": 8}), [2.0])


@pytest.mark.parametrize(("config", "words"), [
    ({"depth": 3, "width": 100000}, "width must be a whole number from 1 to 1024, got 100000"),
    ({"depth": 1000000, "width": 8}, "depth must be a whole number from 1 to 200"),
    ({"depth": 3, "width": 16}, "body.0.weight is 8x1x3x3 in the file but 16x1x3x3"),
    ({"depth": 4, "width": 8}, "the file lacks body.6.weight"),
])  # fmt: skip
def test_a_config_that_does_not_fit_is_refused_before_allocating(
    tmp_path: Path, config: dict[str, int], words: str
) -> None:
    """Limits first, then shapes on the meta device: building the real module would
    try to allocate 360 GB for width 100000; here nothing but shapes is made."""
    ck = _tiny()
    bad = checkpoint.Checkpoint("vdsr", config, [2.0], ck.state_dict)
    path = checkpoint.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match=re.escape(words)):
        checkpoint.load(path).build()


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    ck = _tiny()
    ck.state_dict["body.2.bias"][0] = float("nan")
    path = checkpoint.save(ck, tmp_path / "nan.pt")
    with pytest.raises(ModelError, match=r"damaged: body\.2\.bias holds NaN or infinite"):
        checkpoint.load(path).build()


def test_non_finite_outputs_are_an_error(tmp_path: Path) -> None:
    from PIL import Image

    import sruc
    from helpers import smooth_rgb

    class Broken(torch.nn.Module):
        receptive_radius = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float("inf")

    Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / "in.png")
    with pytest.raises(ModelError, match="produced NaN or infinite values"):
        sruc.upscale(tmp_path / "in.png", 2, model=Broken(), precision="fp32")
