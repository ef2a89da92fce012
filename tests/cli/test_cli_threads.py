"""``--threads`` on up, batch, bench and train: bad values are one usage line (exit 2)
before any work; a count above the CPUs is lowered with one warning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import run_cli, smooth_rgb
from sruc.engine import threads

pytestmark = pytest.mark.usefixtures("keep_threads")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(smooth_rgb(24, 24)).save(tmp_path / "a.png")
    (tmp_path / "set").mkdir()
    Image.fromarray(smooth_rgb(24, 24, seed=1)).save(tmp_path / "set" / "b.png")
    return tmp_path


def command(name: str) -> list[str]:
    return {
        "up": ["up", "a.png", "-o", "out.png", "--model", "bicubic", "-q"],
        "batch": ["batch", "a.png", "-o", "outs", "--model", "bicubic", "-q"],
        "bench": ["bench", "set", "-s", "2", "-q"],
        "train": ["train", "set", "--out", "run", "--steps", "1", "-q"],
    }[name]


COMMANDS = ["up", "batch", "bench", "train"]


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "threads must be at least 1, got 0"),
        ("-2", "threads must be at least 1, got -2"),
        ("1.5", "whole number"),
        ("two", "whole number"),
    ],
)
def test_bad_threads_is_one_usage_line(
    capsys: pytest.CaptureFixture[str], work: Path, name: str, value: str, says: str
) -> None:
    before = sorted(p.name for p in work.iterdir())
    run = run_cli(capsys, *command(name), "--threads", value)
    assert run.code == 2 and run.out == ""
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--threads" in lines[0]
    assert says in lines[0] and "unexpected" not in lines[0]
    assert sorted(p.name for p in work.iterdir()) == before  # nothing done


@pytest.mark.parametrize("name", ["up", "batch", "bench"])
def test_threads_is_set_for_the_run(
    capsys: pytest.CaptureFixture[str], work: Path, name: str
) -> None:
    torch.set_num_threads(2)
    run = run_cli(capsys, *command(name), "--threads", "1")
    assert (run.code, run.err) == (0, ""), run.err
    assert torch.get_num_threads() == 1


def test_more_threads_than_cpus_is_lowered_with_one_warning(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)
    run = run_cli(capsys, *command("up"), "--threads", "64")
    assert run.code == 0
    assert run.err.splitlines() == [
        "warning: 64 threads asked for, but this process may use 1 CPU(s) "
        "(affinity and cgroup quota); using 1"
    ]
    assert torch.get_num_threads() == 1 and (work / "out.png").is_file()


def test_threads_is_in_every_commands_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in COMMANDS:
        run = run_cli(capsys, name, "--help")
        assert run.code == 0 and "--threads N" in run.out, name
