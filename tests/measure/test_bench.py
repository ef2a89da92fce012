"""``sruc bench``: the papers' evaluation on folders, through the CLI and the library.

The published bicubic baselines are reproduced on ``../shared/datasets/eval``
when it is present; everything else runs on tiny synthetic folders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import EVAL, assert_error, run_cli, smooth_rgb
from sruc.core.protocol import evaluate_image
from sruc.errors import InputError, UsageError
from sruc.measure import bench as bench_mod
from sruc.measure import sets as sets_mod

#: PROTOCOL.md's published bicubic Y-PSNR (dB), x2 / x3 / x4.
PUBLISHED = {"Set5": (33.66, 30.39, 28.42), "Set14": (30.24, 27.55, 26.00)}
TOLERANCE_DB = 0.01
#: What sruc measured, x2 / x3 / x4 (sruc.core.protocol's docstring; Set14 x3 is 27.53999).
MEASURED = {"Set5": (33.6649, 30.3961, 28.4243), "Set14": (30.2301, 27.5400, 25.9997)}


def bench_json(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> Any:
    run = run_cli(capsys, "bench", *args, "--json", "-q")
    assert run.code == 0, run.err
    return json.loads(run.out)


def result(doc: Any, set_name: str, scale: int) -> Any:
    (r,) = [r for r in doc["results"] if r["set"] == set_name and r["scale"] == scale]
    return r


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two RGB images, one gray image and a non-image, in a set called ``tiny``."""
    d = tmp_path / "tiny"
    d.mkdir()
    Image.fromarray(smooth_rgb(40, 48, seed=1)).save(d / "b.png")
    Image.fromarray(smooth_rgb(45, 38, seed=2)).save(d / "a.PNG")  # odd size, upper case
    Image.fromarray(smooth_rgb(36, 42, seed=3)[:, :, 1]).save(d / "c_gray.bmp")
    (d / "notes.txt").write_text("not an image")
    return d


# --------------------------------------------------------------------------- published baselines


needs_eval = pytest.mark.skipif(not EVAL.is_dir(), reason=f"evaluation sets not found at {EVAL}")


def within_published(got: float, want: float) -> bool:
    """``got`` within ``TOLERANCE_DB`` of a published value, at the published precision.

    Published tables give two decimals, so the measured value is compared as the
    paper would print it: Set14 x3 measures 27.53999 dB, printed 27.54, and the
    VDSR paper prints 27.55. The 1e-9 absorbs float error in 27.55 - 27.54.
    """
    return abs(round(got, 2) - want) <= TOLERANCE_DB + 1e-9


@needs_eval
def test_reproduces_published_bicubic_baselines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # --no-ssim: SSIM plays no part in PSNR; the next test measures real SSIM.
    doc = bench_json(capsys, EVAL / "Set5", EVAL / "Set14", "--scale", "2,3,4", "--no-ssim")
    measured = {
        name: tuple(result(doc, name, s)["bicubic"]["psnr"] for s in (2, 3, 4))
        for name in PUBLISHED
    }
    for name, published in PUBLISHED.items():
        for s, got, want in zip((2, 3, 4), measured[name], published, strict=True):
            assert within_published(got, want), (
                f"{name} x{s}: bicubic {got:.4f} dB, published {want:.2f} +- {TOLERANCE_DB}; "
                f"all measured: {measured}"
            )
            # Tighter: what this implementation measured when the test was written
            # (sruc.core.protocol's docstring), so that a drift of a few 0.001 dB shows.
            pinned = MEASURED[name][(2, 3, 4).index(s)]
            assert abs(got - pinned) < 5e-4, f"{name} x{s}: {got:.4f} dB, was {pinned}"
    assert [len(s["images"]) for s in doc["sets"]] == [5, 14]


@needs_eval
def test_bicubic_ssim_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    doc = bench_json(capsys, EVAL / "Set5", "--scale", "4")
    r = result(doc, "Set5", 4)["bicubic"]
    assert within_published(r["psnr"], PUBLISHED["Set5"][2]), r["psnr"]
    assert 0.5 < r["ssim"] < 1, r["ssim"]  # no published target; 0.8107 when written
    assert len(r["images"]) == 5 and all(0 < i["ssim"] < 1 for i in r["images"])


# --------------------------------------------------------------------------- output


def test_json_document(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    from sruc import __version__

    doc = bench_json(capsys, folder, "--scale", "2,3")
    assert doc["sruc_version"] == __version__
    assert {"ground_truth", "channel", "low_resolution", "psnr", "ssim"} <= set(doc["protocol"])
    assert doc["scales"] == [2, 3]
    assert [m["name"] for m in doc["models"]] == ["bicubic"]
    # Non-recursive, by extension in any case, sorted by name, non-images skipped.
    assert doc["sets"] == [
        {"name": "tiny", "path": str(folder), "images": ["a.PNG", "b.png", "c_gray.bmp"]}
    ]
    assert [(r["set"], r["scale"]) for r in doc["results"]] == [("tiny", 2), ("tiny", 3)]
    for r in doc["results"]:
        b = r["bicubic"]
        assert r["models"] == []
        assert [i["image"] for i in b["images"]] == ["a.PNG", "b.png", "c_gray.bmp"]
        # The set value is the mean in dB of the per-image values.
        assert b["psnr"] == pytest.approx(np.mean([i["psnr"] for i in b["images"]]), abs=1e-5)
        assert b["ssim"] == pytest.approx(np.mean([i["ssim"] for i in b["images"]]), abs=1e-5)
        assert b["skipped"] is None


def test_values_are_the_protocols(folder: Path) -> None:
    report = bench_mod.bench([folder], [], [3], device="cpu")
    scores = report.result("tiny", 3).bicubic.images
    for score in scores:
        hr = sets_mod.read_ground_truth(folder / score.image)
        want = evaluate_image(hr, 3)
        assert (score.psnr, score.ssim) == (want.psnr, want.ssim)


def test_table_on_stderr_json_on_stdout(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    run = run_cli(capsys, "bench", folder, "--scale", "2")
    assert run.code == 0 and run.out == ""
    assert "tiny" in run.err and "bicubic" in run.err and "x2" in run.err
    assert "b.png" not in run.err
    run = run_cli(capsys, "bench", folder, "--scale", "2", "--per-image", "--json")
    assert run.code == 0
    assert "b.png" in run.err and "c_gray.bmp" in run.err
    json.loads(run.out)  # one document, nothing else on stdout
    assert "━" not in run.out


def test_no_ssim_leaves_it_out(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    doc = bench_json(capsys, folder, "--scale", "2", "--no-ssim")
    r = result(doc, "tiny", 2)["bicubic"]
    assert doc["ssim"] is False and r["ssim"] is None
    assert all(i["ssim"] is None for i in r["images"]) and r["psnr"] > 20


# --------------------------------------------------------------------------- models


def test_model_beside_bicubic(
    capsys: pytest.CaptureFixture[str], folder: Path, tiny_vdsr_ckpt: Path
) -> None:
    doc = bench_json(capsys, folder, "--scale", "2,4", "--model", tiny_vdsr_ckpt)
    alone = bench_json(capsys, folder, "--scale", "2,4", "--model", "bicubic")
    assert [m["name"] for m in doc["models"]] == ["bicubic", str(tiny_vdsr_ckpt)]
    assert doc["models"][1]["arch"] == "vdsr"
    for s in (2, 4):
        r = result(doc, "tiny", s)
        (m,) = r["models"]
        assert m["model"] == str(tiny_vdsr_ckpt) and m["skipped"] is None
        assert len(m["images"]) == 3 and 0 < m["ssim"] < 1
        assert m["gain_db"] == pytest.approx(m["psnr"] - r["bicubic"]["psnr"], abs=1e-5)
        # A random model is not bicubic, and the baseline does not depend on it.
        assert m["psnr"] != r["bicubic"]["psnr"]
        baseline = result(alone, "tiny", s)["bicubic"]
        assert {**r["bicubic"], "seconds": 0} == {**baseline, "seconds": 0}


def test_several_models_side_by_side(
    capsys: pytest.CaptureFixture[str], folder: Path, tiny_vdsr_ckpt: Path, tiny_srcnn_ckpt: Path
) -> None:
    run = run_cli(
        capsys, "bench", folder, "-s", "3", "-m", tiny_vdsr_ckpt, "-m", tiny_srcnn_ckpt, "--json"
    )
    assert run.code == 0, run.err
    (r,) = json.loads(run.out)["results"]
    assert [m["model"] for m in r["models"]] == [str(tiny_vdsr_ckpt), str(tiny_srcnn_ckpt)]
    assert all(m["psnr"] is not None for m in r["models"])
    assert "tiny-vdsr.pt" in run.err and "tiny-srcnn-x3.pt" in run.err  # table columns


def test_srcnn_x3_skips_other_scales_with_a_warning(
    capsys: pytest.CaptureFixture[str], folder: Path, tiny_srcnn_ckpt: Path
) -> None:
    run = run_cli(capsys, "bench", folder, "-s", "2,3", "-m", tiny_srcnn_ckpt, "--json", "-q")
    assert run.code == 0, run.err
    assert run.err.splitlines() == [
        f"warning: {tiny_srcnn_ckpt} (SRCNN) has weights for x3 only: skipped at x2"
    ]
    doc = json.loads(run.out)
    (x2,) = result(doc, "tiny", 2)["models"]
    (x3,) = result(doc, "tiny", 3)["models"]
    assert "x3 only" in x2["skipped"] and x2["psnr"] is None and x2["images"] == []
    assert x3["skipped"] is None and len(x3["images"]) == 3
    # Bicubic is still measured at the skipped scale.
    assert result(doc, "tiny", 2)["bicubic"]["psnr"] > 20


def test_model_fitting_no_scale_is_an_error_before_any_work(
    capsys: pytest.CaptureFixture[str],
    folder: Path,
    tiny_srcnn_ckpt: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("evaluated an image before checking the model")

    monkeypatch.setattr(bench_mod, "evaluate_image", no_work)
    run = run_cli(capsys, "bench", folder, "-s", "2,4", "-m", tiny_srcnn_ckpt)
    assert_error(run, 1, "x3 only", "x2/x4")


def test_tiling_does_not_change_scores(
    capsys: pytest.CaptureFixture[str], folder: Path, tiny_vdsr_ckpt: Path
) -> None:
    whole = bench_json(capsys, folder, "-s", "2,3", "-m", tiny_vdsr_ckpt, "--tile", "0")
    tiled = bench_json(capsys, folder, "-s", "2,3", "-m", tiny_vdsr_ckpt, "--tile", "16")
    assert whole["tile"] == 0 and tiled["tile"] == 16
    for a, b in zip(whole["results"], tiled["results"], strict=True):
        for ia, ib in zip(a["models"][0]["images"], b["models"][0]["images"], strict=True):
            # Seams would cost decibels; a tolerance only absorbs a rare float
            # rounding difference of another convolution algorithm.
            assert ia["psnr"] == pytest.approx(ib["psnr"], abs=1e-4), ia["image"]
            assert ia["ssim"] == pytest.approx(ib["ssim"], abs=1e-6), ia["image"]


def test_every_torch_engine_gives_the_same_scores(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    """The shipped VDSR (64 wide: its middle layers run Winograd) through the direct
    path, sruc's Winograd (auto in fp32 on CPUs) and NNPACK's: the same PSNR to a
    thousandth of a dB."""
    from sruc.engine.fused import winograd_available

    engines = ["torch", "winograd", "auto"] + (["nnpack"] if winograd_available() else [])
    got = {
        e: bench_json(capsys, folder, "-s", "3", "-m", "vdsr", "--engine", e, "--no-ssim")
        for e in engines
    }
    ref = got["torch"]["results"][0]["models"][0]["psnr"]
    for e in engines:
        assert got[e]["results"][0]["models"][0]["psnr"] == pytest.approx(ref, abs=1e-3), e


# --------------------------------------------------------------------------- gray images


def test_gray_image_is_its_own_y(folder: Path, tiny_vdsr_ckpt: Path) -> None:
    hr = sets_mod.read_ground_truth(folder / "c_gray.bmp")
    assert hr.shape[0] == 1 and hr.dtype == torch.float64
    report = bench_mod.bench([folder], [tiny_vdsr_ckpt], [2], device="cpu")
    r = report.result("tiny", 2)
    gray = next(s for s in r.bicubic.images if s.image == "c_gray.bmp")
    assert gray.psnr == evaluate_image(hr, 2).psnr
    # Stacking gray to RGB would measure 16 + 219/255 * v instead of v: different numbers.
    assert gray.psnr != pytest.approx(evaluate_image(hr.expand(3, -1, -1), 2).psnr, abs=1e-3)
    assert next(s for s in r.models[0].images if s.image == "c_gray.bmp").psnr > 0


def test_alpha_and_palette_are_read_as_colour(tmp_path: Path) -> None:
    rgb = smooth_rgb(30, 30)
    Image.fromarray(np.dstack([rgb, np.full((30, 30), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    rgba = sets_mod.read_ground_truth(tmp_path / "rgba.png")
    assert torch.equal(rgba, torch.from_numpy(rgb).permute(2, 0, 1).double())
    assert sets_mod.read_ground_truth(tmp_path / "pal.png").shape == (3, 30, 30)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("scale", "needle"),
    [
        ("2.5", "whole number"),
        ("1", "out of range"),
        ("9", "out of range"),
        ("0", "out of range"),
        ("2,,3", "comma-separated"),
        ("", "comma-separated"),
        ("x2", "whole number"),
    ],
)
def test_bad_scale_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], folder: Path, scale: str, needle: str
) -> None:
    assert_error(run_cli(capsys, "bench", folder, "--scale", scale), 2, needle)


def test_library_refuses_fractional_scales(folder: Path) -> None:
    with pytest.raises(UsageError, match="whole number"):
        bench_mod.bench([folder], [], [2.5])


def test_missing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_error(run_cli(capsys, "bench", tmp_path / "nope"), 1, "no such folder", "nope")


def test_file_instead_of_folder(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    assert_error(run_cli(capsys, "bench", folder / "b.png"), 1, "not a folder")


def test_empty_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_error(run_cli(capsys, "bench", tmp_path / "empty"), 1, "empty")


def test_folder_without_images(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "readme.txt").write_text("hi")
    Image.fromarray(smooth_rgb(40, 40)).save(d / "sub" / "deep.png")  # not recursive
    assert_error(run_cli(capsys, "bench", d), 1, "has no images", "png")


def test_no_folder_and_twice_the_same_folder(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    assert_error(run_cli(capsys, "bench"), 2, "missing argument")
    assert_error(run_cli(capsys, "bench", folder, folder), 2, "given twice")


def test_damaged_image(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    (folder / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert_error(run_cli(capsys, "bench", folder, "-s", "2"), 1, "zz.png")


def test_truncated_image(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    data = (folder / "b.png").read_bytes()
    (folder / "b.png").write_bytes(data[: len(data) // 2])
    assert_error(run_cli(capsys, "bench", folder, "-s", "2"), 1, "b.png", "damaged")


def test_image_too_small_for_the_scale(
    capsys: pytest.CaptureFixture[str], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x4 needs 2 * 4 + 11 = 19 px after modcrop; 18 px crops to 16 (x2 alone would pass).
    Image.fromarray(smooth_rgb(18, 60)).save(folder / "thin.png")
    assert sets_mod.min_side(4) == 19
    monkeypatch.setattr(bench_mod, "evaluate_image", lambda *a, **k: pytest.fail("no work"))
    run = run_cli(capsys, "bench", folder, "-s", "2,4")
    assert_error(run, 1, "thin.png", "60x18", "x4", "19 px")


def test_sixteen_bit_ground_truth_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "deep"
    d.mkdir()
    Image.fromarray(smooth_rgb(40, 40)[:, :, 0].astype(np.uint16) * 257).save(d / "g16.png")
    with pytest.raises(InputError, match="8 bits"):
        bench_mod.bench([d], [], [2])


def test_unknown_model(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    assert_error(run_cli(capsys, "bench", folder, "-m", "nosuchmodel"), 1, "unknown model")


def test_progress_callback_counts_every_evaluation(folder: Path, tiny_srcnn_ckpt: Path) -> None:
    seen: list[tuple[int, int]] = []
    with pytest.warns(UserWarning, match="skipped at x2"):
        bench_mod.bench(
            [folder],
            [tiny_srcnn_ckpt],
            [2, 3],
            device="cpu",
            progress=lambda done, total, label: seen.append((done, total)),
        )
    # 3 images: bicubic at x2 and x3, SRCNN at x3 only.
    assert seen == [(i, 9) for i in range(1, 10)]


def test_per_scale_registry_group_loads_each_scales_file(
    capsys: pytest.CaptureFixture[str],
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sruc.archs.srcnn import SRCNN
    from sruc.zoo import checkpoint, registry

    files = {}
    for s in (2, 3):
        torch.manual_seed(s)
        files[s] = tmp_path / f"srcnn-x{s}.pt"
        checkpoint.save(checkpoint.from_model(SRCNN(n1=8, n2=4), [s]), files[s])
    rows = [SimpleNamespace(arch="srcnn", scales=(float(s),)) for s in files]
    loads: list[float | None] = []

    def fake_load(spec: str, *, scale: float | None = None) -> registry.LoadedModel:
        loads.append(scale)
        assert spec == "srcnn" and scale is not None
        lm = registry.load_model(files[int(scale)])
        lm.name = f"srcnn-x{scale:g}"
        return lm

    monkeypatch.setattr(registry, "find", lambda name: rows if name == "srcnn" else [])
    monkeypatch.setattr(bench_mod, "load_model", fake_load)
    run = run_cli(capsys, "bench", folder, "-s", "2,3,4", "-m", "srcnn", "--json", "-q")
    assert run.code == 0, run.err
    assert run.err == "warning: srcnn (SRCNN) has weights for x2/x3 only: skipped at x4\n"
    assert loads == [2.0, 3.0]  # one file per scale, x4 never looked for
    doc = json.loads(run.out)
    assert [result(doc, "tiny", s)["models"][0]["weights"] for s in (2, 3, 4)] == [
        "srcnn-x2",
        "srcnn-x3",
        None,
    ]
    assert (
        result(doc, "tiny", 2)["models"][0]["psnr"] != result(doc, "tiny", 3)["models"][0]["psnr"]
    )
    assert doc["models"][1] == {"name": "srcnn", "arch": "srcnn", "trained_scales": [2.0, 3.0]}
