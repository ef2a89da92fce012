"""``sruc compare`` through the command line: the sheet, the table, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import assert_error, run_cli, smooth_rgb


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """``small.png`` (28x20) and ``hr.png`` (56x40), its x2 reference size."""
    Image.fromarray(smooth_rgb(20, 28, seed=3)).save(tmp_path / "small.png")
    Image.fromarray(smooth_rgb(40, 56, seed=4)).save(tmp_path / "hr.png")
    return tmp_path


def test_compare_writes_the_sheet_and_prints_the_table(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    out = work / "c.png"
    run = run_cli(
        capsys, "compare", work / "small.png", "-s", "2", "--models", "bicubic,srcnn",
        "--hr", work / "hr.png", "--crop", "2,2,12,8", "-o", out,
    )  # fmt: skip
    assert run.code == 0, run.err
    header, *rows = run.out.splitlines()
    assert header.split()[:2] == ["model", "seconds"] and "Y-PSNR" in header
    # SRCNN has one file per scale: the label names the one that ran.
    assert [r.split()[0] for r in rows] == ["bicubic", "srcnn-x2"]
    assert run.err.startswith(f"wrote {out} (2 models x2, crop 12x8 at 2,2 of the input)")
    im = Image.open(out)
    assert im.format == "PNG" and im.mode == "RGB"
    # Two models and the reference, 24x16 output pixels each, enlarged to 384 px wide.
    assert im.width >= 3 * 384


def test_scores_equal_sruc_psnr_of_sruc_up(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    run = run_cli(
        capsys, "compare", work / "small.png", "--models", "bicubic,srcnn",
        "--hr", work / "hr.png", "-o", work / "c.png", "--json", "-q",
    )  # fmt: skip
    assert run.code == 0 and run.err == "", run.err
    doc = json.loads(run.out)
    assert doc["output"] == str(work / "c.png") and doc["shave"] == 2 and doc["crop_auto"]
    for entry in doc["models"]:
        up = work / f"{entry['model']}.png"
        assert (
            run_cli(capsys, "up", work / "small.png", "-m", entry["model"], "-o", up, "-q").code
            == 0
        )
        psnr = run_cli(capsys, "psnr", work / "hr.png", up, "--shave", "2", "--ssim", "--json")
        scored = json.loads(psnr.out)
        assert entry["psnr"] == round(scored["psnr"], 4)
        assert entry["ssim"] == scored["ssim"]


def test_from_hr_scores_against_the_input(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    out = work / "c.png"
    run = run_cli(
        capsys, "compare", work / "hr.png", "-s", "2", "-m", "bicubic,srcnn", "--from-hr",
        "--crop", "0,0,56,40", "-o", out, "--zoom", "2",
    )  # fmt: skip
    assert run.code == 0, run.err
    rows = run.out.splitlines()[1:]
    psnrs = [float(r.split()[2]) for r in rows]
    assert all(20 < p < 60 for p in psnrs)
    # Three panels of 112x80 (56x40 enlarged twice), the reference included.
    assert Image.open(out).width >= 3 * 112


def test_default_output_name(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    run = run_cli(capsys, "compare", work / "small.png", "-m", "bicubic,srcnn", "-q")
    assert run.code == 0, run.err
    assert (work / "small_compare.png").is_file()


BAD = [
    (["--models", "vdsr"], 2, "at least two models, got 1"),
    (["--models", "bicubic,nosuchmodel"], 1, "unknown model 'nosuchmodel'"),
    (["--models", "bicubic,,srcnn"], 2, "empty model name"),
    (["--models", "srcnn,srcnn"], 2, "srcnn is named twice"),
    (["--crop", "20,0,9,4"], 2, "reaches outside the 28x20 image"),
    (["--crop", "0,30,4,4"], 2, "reaches outside the 28x20 image"),
    (["--crop", "1,1,0,5"], 2, "zero size"),
    (["--crop", "1,2,3"], 2, "X,Y,W,H"),
    (["-s", "3", "--hr", "{work}/hr.png"], 1, "is 56x40 but the output of small.png x3 is 84x60"),
    (["--hr", "{work}/hr.png", "--from-hr"], 2, "--hr or --from-hr, not both"),
    (["-s", "2.5", "--models", "bicubic,vdsr", "--from-hr"], 2, "whole-number scale"),
    (["-s", "9"], 2, "at most 8"),
    (["--zoom", "0"], 2, "--zoom"),
    (["-o", "{work}/nofolder/c.png"], 1, "does not exist"),
    (["-o", "{work}/c.jpg"], 2, "ending in .png"),
    (["-o", "{work}/c.webp"], 2, "ending in .png"),
    (["-o", "{work}/small.png"], 2, "never overwrites an input"),
    (["--hr", "{work}/missing.png"], 1, "missing.png: no such file"),
]


@pytest.mark.parametrize(("args", "code", "needle"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], work: Path, args: list[str], code: int, needle: str
) -> None:
    before = sorted(p.name for p in work.rglob("*"))
    args = [a.format(work=work) for a in args]
    if "-o" not in args:
        args += ["-o", str(work / "c.png")]
    if "--models" not in args and "-m" not in args:
        args += ["--models", "bicubic,srcnn"]
    run = run_cli(capsys, "compare", work / "small.png", *args)
    assert_error(run, code, needle)
    assert sorted(p.name for p in work.rglob("*")) == before


def test_existing_output_needs_overwrite(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    out = work / "c.png"
    out.write_bytes(b"old")
    args = ["compare", work / "small.png", "-m", "bicubic,srcnn", "-o", out, "-q"]
    assert_error(run_cli(capsys, *args), 1, "already exists")
    assert out.read_bytes() == b"old"
    assert run_cli(capsys, *args, "--overwrite").code == 0
    assert np.asarray(Image.open(out)).ndim == 3
