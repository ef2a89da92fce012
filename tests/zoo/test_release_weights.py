"""The release weights in the registry: each bundled file is the one its row pins,
loads offline from the package, and beats bicubic on a small crop of Set5.

Set5 is the evaluation set, never used to train or select the weights; here it only
checks that a file is not broken (bench numbers are in README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sruc
from helpers import EVAL, needs_set5, run_cli
from sruc.core.protocol import evaluate_image
from sruc.zoo import hub, registry

WEIGHTS = Path(sruc.__file__).parent / "zoo" / "weights"
MANIFEST = Path(__file__).resolve().parents[2] / "release" / "manifest.json"
ROWS = registry.PRETRAINED
PER_SCALE = [(w, s) for w in ROWS for s in w.scales]


def _crop(name: str, size: int) -> torch.Tensor:
    """A central ``size`` x ``size`` crop of a Set5 image as float64 (3, H, W) on 0..255."""
    with Image.open(EVAL / "Set5" / f"{name}.png") as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float64)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return torch.from_numpy(arr[top : top + size, left : left + size]).permute(2, 0, 1)


def test_the_default_model_is_registered_and_bundled() -> None:
    assert registry.find("vdsr"), "sruc up's default model must be in the registry"
    for w in registry.find("vdsr"):
        assert (WEIGHTS / w.file).is_file()


@pytest.mark.parametrize("w", ROWS, ids=lambda w: w.name)
def test_bundled_file_matches_its_row(w: registry.Weights) -> None:
    path = WEIGHTS / w.file
    assert path.stat().st_size == w.size
    assert hub.file_sha256(path) == w.sha256


def test_release_manifest_matches_the_registry_and_the_bundled_files() -> None:
    # release/manifest.json is kept by hand beside the registry and the run records;
    # a release that changes a file must change both, and this says where they differ.
    entries = json.loads(MANIFEST.read_text())["files"]
    assert sorted(e["name"] for e in entries) == sorted(w.name for w in ROWS)
    rows = {w.name: w for w in ROWS}
    for e in entries:
        w = rows[e["name"]]
        assert (e["file"], e["sha256"], e["size"]) == (w.file, w.sha256, w.size), w.name
        assert e["scales"] == list(w.scales), w.name
        assert e["test_psnr"] == {
            s: {f"{k:g}": v for k, v in d.items()} for s, d in w.psnr.items()
        }, w.name
        path = WEIGHTS / e["file"]
        assert path.stat().st_size == e["size"], w.name
        assert hub.file_sha256(path) == e["sha256"], w.name


@needs_set5
@pytest.mark.parametrize(("w", "scale"), PER_SCALE, ids=[f"{w.name}-x{s:g}" for w, s in PER_SCALE])
def test_release_weights_beat_bicubic_on_a_crop(
    w: registry.Weights, scale: float, tmp_path: Path
) -> None:
    # An empty cache and no network: the bundled file is what loads.
    lm = registry.load_model(w.group, scale=scale, cache_dir=tmp_path, offline=True)
    assert lm.arch == w.arch and lm.scales == list(w.scales)
    assert list(tmp_path.iterdir()) == []  # nothing copied or downloaded
    hr = _crop("butterfly", 96)
    with torch.inference_mode():
        ours = evaluate_image(hr, int(scale), lm.module, with_ssim=False).psnr
    bicubic = evaluate_image(hr, int(scale), with_ssim=False).psnr
    assert ours > bicubic + 1.0, f"{w.name} x{scale:g}: {ours:.2f} dB vs bicubic {bicubic:.2f}"


@needs_set5
def test_sruc_up_defaults_to_vdsr_offline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SRUC_OFFLINE", "1")
    monkeypatch.setenv("SRUC_CACHE_DIR", str(tmp_path / "cache"))
    crop = _crop("bird", 48).permute(1, 2, 0).numpy().astype(np.uint8)
    Image.fromarray(crop).save(tmp_path / "bird.png")
    for args in ([], ["--model", "vdsr"], ["--model", "bicubic"]):
        name = args[-1] if args else "default"
        r = run_cli(capsys, "up", tmp_path / "bird.png", "-s", "3", "-q",
                    "--precision", "fp32", "-o", tmp_path / f"{name}.png", *args)  # fmt: skip
        assert r.code == 0, r.err
    default, vdsr, bicubic = (
        (tmp_path / f"{n}.png").read_bytes() for n in ("default", "vdsr", "bicubic")
    )
    assert default == vdsr != bicubic


def test_sruc_models_shows_the_measured_scores(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(capsys, "models", "--offline")
    assert r.code == 0
    for w in ROWS:
        line = next(x for x in r.out.splitlines() if x.split()[1] == w.file)
        for s, v in w.psnr.get("Set5", {}).items():
            assert f"x{s:g} {v:.2f}" in line
