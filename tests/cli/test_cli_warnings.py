"""Each warning prints exactly once per command, however many images or passes the
command makes (warnings filter "always": no help from Python's own de-duplication)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from helpers import run_cli, smooth_rgb

pytestmark = pytest.mark.filterwarnings("always")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name, seed in (("a.png", 0), ("b.png", 1)):
        Image.fromarray(smooth_rgb(16, 16, seed=seed)).save(tmp_path / name)
    (tmp_path / "set").mkdir()
    for i in range(2):
        Image.fromarray(smooth_rgb(40, 40, seed=2 + i)).save(tmp_path / "set" / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "scale"),
    [
        (["up", "a.png", "-s", "5", "-o", "o.png"], "x5"),
        (["up", "a.png", "--width", "100", "-o", "o.png"], "x6.25"),
        (["up", "a.png", "--fit", "90x90", "-o", "o.png", "--tta"], "x5.625"),
        (["batch", "a.png", "b.png", "-o", "outs", "-s", "5"], "x5"),
        (["bench", "set", "-s", "5", "--no-ssim"], "x5"),
    ],
    ids=["up", "up-width", "up-fit-tta", "batch-two-images", "bench"],
)
def test_out_of_range_scale_is_warned_once(
    capsys: pytest.CaptureFixture[str],
    work: Path,
    tiny_vdsr_ckpt: Path,
    args: list[str],
    scale: str,
) -> None:
    run = run_cli(capsys, *args, "--model" if args[0] != "bench" else "-m", tiny_vdsr_ckpt, "-q")
    assert run.code == 0, run.err
    warned = [line for line in run.err.splitlines() if "outside that range" in line]
    assert len(warned) == 1, run.err
    assert warned[0].startswith("warning: ") and f"{scale} is outside" in warned[0]


def test_srcnn_at_its_nearest_scale_warns_nothing(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    """SRCNN runs a target size at its nearest trained scale, then resizes: no warning."""
    run = run_cli(capsys, "up", "a.png", "--width", "40", "--model", "srcnn", "-o", "o.png", "-q")
    assert (run.code, run.err) == (0, "")
