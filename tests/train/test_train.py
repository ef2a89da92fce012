"""``sruc train``: outputs, resume determinism, refusals, bad input, data parallelism.

Every run is tiny (a 3-layer, 8-wide VDSR or a small SRCNN, a few steps of
16x16 patches from 48x56 synthetic images), so the whole file takes well under
a minute on two CPU cores, the two-process Gloo run included.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import needs_cpu_bf16, smooth_rgb
from sruc.cli import main
from sruc.engine.fused import conv_relu_op
from sruc.errors import OutputError, SrucWarning
from sruc.train import RECIPES, TrainConfig, train
from sruc.train.config import TrainEvent
from sruc.train.data import PatchCache
from sruc.train.plot import nice_ticks
from sruc.zoo import checkpoint

TINY = ["--model-config", '{"depth": 3, "width": 8}', "--batch-size", "4", "--patch-size", "16"]
FAST = ["--val-crop", "32", "--log-every", "2", "-q"]
#: Only a guard against a hung child process, never a claim about speed.
HANG_GUARD_S = 600


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Five small photo-like images, one in a subfolder."""
    root = tmp_path / "images"
    (root / "more").mkdir(parents=True)
    for i in range(5):
        folder = root / "more" if i == 4 else root
        Image.fromarray(smooth_rgb(48, 56, seed=i)).save(folder / f"im{i}.png")
    return root


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def tiny_config(images: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        data=str(images), out=str(out), model_config={"depth": 3, "width": 8}, batch_size=4,
        patch_size=16, val_crop=32, steps=6, val_every=3, seed=1,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- outputs


def test_train_writes_usable_outputs(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (images / "README.txt").write_text("not an image")
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", images, "--out", out, "--steps", "4",
                            "--val-every", "2", *TINY, *FAST[:-1])  # fmt: skip
    assert code == 0, err
    assert stdout.strip() == str(out / "best.pt")
    assert "warning: skipped" in err and "README.txt: is not an image" in err
    # Not a terminal: plain progress lines on stderr, and a summary.
    assert "step 2/4  loss" in err and "step 4/4  validation x2" in err
    assert "finished at step 4/4" in err and "bicubic x2" in err

    for name in ("best.pt", "last.pt"):
        ckpt = checkpoint.load(out / name)
        assert ckpt.arch == "vdsr" and ckpt.config["depth"] == 3
        assert ckpt.scales == [2.0, 3.0, 4.0]
        meta = ckpt.meta
        assert meta["recipe"] == "adam" and meta["steps"] == 4 and meta["seed"] == 0
        assert set(meta["val_psnr"]) == {"2", "3", "4"} and len(meta["data_manifest"]) == 64
        assert meta["images"] == 4 and meta["val_images"] == 1  # 5% of 5, at least one
        assert {"sruc_version", "wall_seconds", "device", "val_psnr_bicubic"} <= set(meta)
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 4 and state["sampler"] == {"seed": 0, "step": 4}

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4]
    vals = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [2, 4]
    assert set(vals[0]["psnr"]) == {"2", "3", "4"} and "bicubic" in vals[0]

    with Image.open(out / "val_psnr.png") as im:
        im.verify()
    with Image.open(out / "val_psnr.png") as im:
        assert im.format == "PNG" and im.size == (800, 500)

    photo = tmp_path / "photo.png"
    Image.fromarray(smooth_rgb(20, 24, seed=9)).save(photo)
    code, _, err = run(capsys, "up", photo, "-s", "3", "--model", out / "best.pt", "-q")
    assert code == 0, err
    with Image.open(tmp_path / "photo_x3.png") as im:
        assert im.size == (72, 60)


def test_srcnn_trains_one_scale(images: Path, tmp_path: Path) -> None:
    cfg = tiny_config(images, tmp_path / "srcnn", model="srcnn", scales=(3,),
                      model_config={"n1": 8, "n2": 4}, steps=2, recipe="paper")  # fmt: skip
    result = train(cfg)
    assert result.completed and result.best is not None
    ckpt = checkpoint.load(result.best)
    assert ckpt.arch == "srcnn" and ckpt.scales == [3.0] and ckpt.meta["recipe"] == "srcnn-paper"


@pytest.mark.usefixtures("keep_threads")
def test_threads_apply_to_the_run_and_do_not_block_a_resume(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.set_num_threads(2)
    assert train(tiny_config(images, tmp_path / "t", steps=2, threads=1)).completed
    assert torch.get_num_threads() == 1
    # Threads change the rounding, not the run: continuing with another count is allowed.
    again = ["--steps", "2", "--threads", "2", "--seed", "1", "--val-every", "3"]
    code, _, err = run(capsys, "train", images, "--out", tmp_path / "t", *again, *TINY, *FAST)
    assert code == 0 and "different configuration" not in err, err


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("arch", ["srcnn", "vdsr"])
def test_adam_recipe_starts_at_bicubic(arch: str) -> None:
    """Before the first step the network returns its (bicubic) input unchanged."""
    from sruc import archs

    torch.manual_seed(0)
    net = archs.build(arch, {})
    start = archs.get(arch).identity_start
    assert start is not None
    start(net)
    x = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        assert torch.equal(net(x), x)
    if arch == "srcnn":  # the published 9-5-5 shape is kept; the other filters are live
        assert net.config == {"channels": 1, "n1": 64, "n2": 32, "f1": 9, "f2": 5, "f3": 5}
        assert net.extract.weight[1:].std() > 0.05 and net.map.weight[1:].std() > 0.02


def test_init_starts_from_given_weights(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = train(tiny_config(images, tmp_path / "a", steps=2, val_every=2))
    start = checkpoint.load(first.last).state_dict
    # --init takes the architecture from the checkpoint; stop before any step.
    cfg = tiny_config(images, tmp_path / "b", init=str(first.last), model_config={},
                      steps=4, stop_after=1, lr=1e-9)  # fmt: skip
    second = train(cfg)
    tuned = checkpoint.load(second.last)
    assert tuned.config["depth"] == 3 and tuned.config["width"] == 8
    assert tuned.meta["init"] == str(first.last) and len(tuned.meta["init_weights"]) == 64
    for key, value in start.items():  # one step at lr 1e-9: still the starting weights
        assert torch.allclose(tuned.state_dict[key], value, atol=1e-6), key
    # Resuming the same run needs the same starting weights.
    other = train(tiny_config(images, tmp_path / "c", steps=2, val_every=2, seed=5))
    code, _, err = run(capsys, "train", images, "--out", tmp_path / "b", "--init", other.last,
                       "--steps", "4", "--lr", "1e-9", *TINY[2:], *FAST)  # fmt: skip
    assert code == 1 and "different configuration (init" in err
    # The wrong architecture is a usage error naming the fix.
    code, _, err = run(capsys, "train", images, "--out", tmp_path / "d", "--model", "srcnn",
                       "--scale", "3", "--init", first.last, *FAST)  # fmt: skip
    assert code == 2 and "holds VDSR weights" in err and "--model vdsr" in err
    code, _, err = run(capsys, "train", images, "--out", tmp_path / "d", "--init",
                       first.last, "--model-config", '{"depth": 4, "width": 8}', *FAST)  # fmt: skip
    assert code == 2 and "leave --model-config out" in err
    code, _, err = run(capsys, "train", images, "--out", tmp_path / "d", "--init",
                       tmp_path / "missing.pt", *FAST)  # fmt: skip
    assert code == 2 and "--init" in err and err.count("\n") == 1


def test_resume_follows_the_same_trajectory(images: Path, tmp_path: Path) -> None:
    straight = train(tiny_config(images, tmp_path / "straight"))
    first = train(tiny_config(images, tmp_path / "resumed", stop_after=3))
    assert (first.step, first.completed) == (3, False)
    second = train(tiny_config(images, tmp_path / "resumed", resume=True))
    assert (second.resumed_from, second.step, second.completed) == (3, 6, True)

    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert straight.best_psnr == second.best_psnr

    # The resumed run validated at the same steps, each once.
    def logged(run: str) -> list[int]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [r["step"] for r in map(json.loads, lines) if r["kind"] == "val"]

    assert logged("resumed") == logged("straight")


def test_vdsr_trains_through_winograd_where_auto_picks_it_and_resumes_exactly(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VDSR 16 wide on a CPU without AMX: fp32 through the compiled Winograd kernels
    (the start line says so), and a resumed run ends with the same weights."""
    from sruc.engine import native, precision

    if native.kernels() is None:
        pytest.skip(f"compiled Winograd kernels: {native.status()}")
    monkeypatch.setattr(precision, "cpu_has_amx", lambda env=None: False)
    starts: list[str] = []

    def progress(e: TrainEvent) -> None:
        if e.kind == "start":
            starts.append(e.message)

    wide = {"depth": 4, "width": 16}
    straight = train(tiny_config(images, tmp_path / "straight", model_config=wide), progress)
    assert "(fp32 Winograd, 1 process(es))" in starts[0]
    train(tiny_config(images, tmp_path / "resumed", model_config=wide, stop_after=3))
    second = train(tiny_config(images, tmp_path / "resumed", model_config=wide, resume=True))
    assert (second.resumed_from, second.step, second.completed) == (3, 6, True)
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert straight.best_psnr == second.best_psnr
    # --precision bf16 keeps autocast where the CPU runs bf16
    if precision.cpu_can_run_bf16():
        train(tiny_config(images, tmp_path / "bf16", model_config=wide, precision="bf16",
                          steps=1), progress)  # fmt: skip
        assert "(bf16, 1 process(es))" in starts[-1]


def test_ema_averages_the_weights_and_resumes_exactly(images: Path, tmp_path: Path) -> None:
    """--ema: validation, best.pt and last.pt use the moving average, which
    starts as the weights after step 1 and then moves (1 - decay) towards them
    each step; state.pt keeps both, so a resumed run ends where a straight one
    does. Switched on when resuming, the average starts at that step, and the
    trained weights follow the same trajectory as without it."""
    straight = train(tiny_config(images, tmp_path / "straight", ema=0.9))
    out = tmp_path / "resumed"
    states = []
    for stop in (1, 2, None):
        resumed = train(tiny_config(images, out, ema=0.9, stop_after=stop))
        states.append(torch.load(out / "state.pt", weights_only=True))
    one, two, end = states
    assert (one["step"], two["step"], end["step"]) == (1, 2, 6)
    for name, w in one["model"].items():
        assert torch.equal(one["ema"][f"module.{name}"], w), name
        expected = 0.9 * one["ema"][f"module.{name}"] + 0.1 * two["model"][name]
        assert torch.allclose(two["ema"][f"module.{name}"], expected, atol=1e-7), name

    ref = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    last = checkpoint.load(out / "last.pt")
    assert last.meta["ema"] == 0.9 and resumed.best_psnr == straight.best_psnr
    for name, w in end["model"].items():
        averaged = end["ema"][f"module.{name}"]
        assert torch.equal(averaged, ref["ema"][f"module.{name}"]), name
        assert torch.equal(last.state_dict[name], averaged), name
        assert not torch.equal(averaged, w), name

    late = tmp_path / "late"
    train(tiny_config(images, late, stop_after=2))
    train(tiny_config(images, late, ema=0.9, stop_after=3))
    three = torch.load(late / "state.pt", weights_only=True)
    train(tiny_config(images, late, ema=0.9))
    final = torch.load(late / "state.pt", weights_only=True)
    for name, w in three["model"].items():
        assert torch.equal(three["ema"][f"module.{name}"], w), name
        assert torch.equal(final["model"][name], ref["model"][name]), name


def test_downscales_choose_the_augmentation(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--downscales: the HR factors the pairs are made at, part of the run."""
    counts = {}
    for factors in ("1", "1,0.9,0.7"):
        out = tmp_path / factors
        code, _, err = run(capsys, "train", images, "--out", out, "--steps", "1",
                           "--downscales", factors, *TINY, *FAST[:-1])  # fmt: skip
        assert code == 0, err
        state = torch.load(out / "state.pt", weights_only=True)
        assert state["run"]["downscales"] == [float(f) for f in factors.split(",")]
        counts[factors] = int(err.split(" pairs,")[0].rsplit(" ", 1)[-1])
    assert 0 < counts["1"] < counts["1,0.9,0.7"]


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_cpu_bf16)])
def test_fused_cpu_forward_trains_like_autocast(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    """The CPU loop runs each convolution + ReLU fused (sruc.engine.fused); the
    weights it ends with are those of the plain autocast forward."""
    import sruc.train.loop as train_mod

    used: list[bool] = []
    real = train_mod.training_forward

    def spy(net: torch.nn.Module, dtype: torch.dtype | None) -> object:
        f = real(net, dtype)
        used.append(f is not None)
        return f

    monkeypatch.setattr(train_mod, "training_forward", spy)
    train(tiny_config(images, tmp_path / "fused", precision=precision))
    assert used == [conv_relu_op() is not None]
    monkeypatch.setattr(train_mod, "training_forward", lambda net, dtype: None)
    train(tiny_config(images, tmp_path / "plain", precision=precision))
    a = torch.load(tmp_path / "fused" / "state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "plain" / "state.pt", weights_only=True)["model"]
    for name in a:
        # Six Adam steps from the same start: equal up to float32 summation order.
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_different_config_is_refused_and_nothing_changes(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train(tiny_config(images, out, steps=2))
    before = files(out)
    for extra in (["--lr", "0.01"], ["--resume", "--lr", "0.01"], ["--seed", "5"]):
        args = ["--steps", "2", "--val-every", "3", "--seed", "1", *TINY, *FAST, *extra]
        code, stdout, err = run(capsys, "train", images, "--out", out, *args)
        assert code == 1 and stdout == ""
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert "different configuration" in err
    assert files(out) == before


def test_ctrl_c_stops_after_the_step_with_a_saved_state(images: Path, tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "sruc", "train", str(images), "--out", str(out),
            "--steps", "100000", "--save-every-minutes", "60", *TINY, *FAST[:-1]]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait for the first logged step however long a busy machine takes; only a run
    # that ended (it must not: 100000 steps) fails here. No clock in the test.
    while (
        not (out / "metrics.jsonl").exists() or '"train"' not in (out / "metrics.jsonl").read_text()
    ):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted at step ") and "run the same command" in last
    assert "Traceback" not in stderr and stdout.strip() in (
        str(out / "best.pt"),
        str(out / "last.pt"),
    )
    state = torch.load(out / "state.pt", weights_only=True)
    assert 2 <= state["step"] < 100000 and f"at step {state['step']}/100000" in last


def test_resume_needs_a_state(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "train", images, "--out", tmp_path / "new", "--resume", *TINY)
    assert code == 1 and "nothing to resume" in err


def test_full_disk_keeps_the_previous_state(
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    train(tiny_config(images, out, stop_after=2))
    before = files(out)

    def full_disk(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 partial")  # type: ignore[union-attr]
        else:
            Path(str(f)).write_bytes(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    code, _, err = run(capsys, "train", images, "--out", out, "--steps", "6", "--val-every", "3",
                       "--seed", "1", *TINY, "--val-crop", "32", "-q")  # fmt: skip
    monkeypatch.undo()
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "No space left on device" in err and "resume" in err
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 2
    for name in ("state.pt", "last.pt"):
        assert files(out)[name] == before[name]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


# --------------------------------------------------------------------------- bad input


def _empty(root: Path) -> None:
    root.mkdir()


def _non_images(root: Path) -> None:
    root.mkdir()
    for i in range(3):
        (root / f"f{i}.png").write_bytes(b"not really a png")


def _too_small(root: Path) -> None:
    root.mkdir()
    for i in range(3):
        Image.fromarray(smooth_rgb(12, 40, seed=i)).save(root / f"s{i}.png")


@pytest.mark.parametrize(
    ("make", "args", "code", "words"),
    [
        (_empty, [], 1, "holds no files"),
        (_non_images, [], 1, "no usable image"),
        (_too_small, [], 1, "smaller than 19x19"),
        (None, [], 1, "no such folder"),
        (_empty, ["--model", "srcnn", "--scale", "2.5"], 2, "whole-number scales"),
        (_empty, ["--scale", "10"], 2, "too large"),
        (_empty, ["--model", "srcnn", "--scale", "2,3"], 2, "one scale per model"),
        (_empty, ["--scale", "two"], 2, "comma-separated"),
        (_empty, ["--recipe", "sgd"], 2, "unknown recipe"),
        (_empty, ["--model-config", "{depth"], 2, "not valid JSON"),
        (_empty, ["--model-config", '{"layers": 3}'], 2, "layers"),
        (_empty, ["--val-split", "0.9"], 2, "--val-split"),
        (_empty, ["--ema", "1"], 2, "--ema must be in [0, 1)"),
        (_empty, ["--downscales", "1,0"], 2, "--downscales must be in (0, 1], e.g. 1,0.7,0.5"),
        (_empty, ["--downscales", "1;0.5"], 2, "not a comma-separated list"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, args, code, words
) -> None:  # fmt: skip
    data = tmp_path / "data"
    if make is not None:
        make(data)
    got, stdout, err = run(capsys, "train", data, "--out", tmp_path / "out",
                           "--patch-size", "16", *args)  # fmt: skip
    assert got == code and stdout == ""
    lines = err.strip().splitlines()
    # One error line, last; skipped files were reported before it as warnings.
    assert lines[-1].startswith("error: ") and words in lines[-1], err
    assert all(line.startswith("warning: ") for line in lines[:-1]), err
    assert not (tmp_path / "out").exists()


def test_running_out_of_memory_is_one_line_and_keeps_the_saved_state(
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sruc.train.loop as loop

    out = tmp_path / "out"
    code, _, _ = run(capsys, "train", images, "--out", out, "--steps", "4", "--stop-after", "2",
                     *TINY, *FAST)  # fmt: skip
    assert code == 0
    before = files(out)
    real = loop._step

    def fails(s, cache, t, step, win, forward):  # type: ignore[no-untyped-def]
        if step == 3:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:119] DefaultCPUAllocator: can't allocate "
                "memory: you tried to allocate 3221225472 bytes. Error code 12"
            )
        real(s, cache, t, step, win, forward)

    monkeypatch.setattr(loop, "_step", fails)
    code, stdout, err = run(capsys, "train", images, "--out", out, "--steps", "4", "--resume",
                            *TINY, *FAST)  # fmt: skip
    assert code == 1 and stdout == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: out of memory training on cpu with 4 patches of 16x16")
    assert "--batch-size" in lines[-1] and str(out / "state.pt") in lines[-1]
    assert "Traceback" not in err
    assert files(out)["state.pt"] == before["state.pt"]  # the state saved before is intact


def test_running_out_of_memory_building_the_patch_cache_is_one_line_and_touches_nothing(
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sruc.train.loop as loop

    def fails(*args: object, **kwargs: object) -> None:
        raise MemoryError()

    monkeypatch.setattr(loop, "PatchCache", fails)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "train", images, "--out", out, "--steps", "4", *TINY, *FAST)
    assert code == 1 and stdout == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: out of memory building the patch cache from ")
    assert "--downscales" in line and "Traceback" not in err
    assert not out.exists()


def test_out_must_not_be_the_image_folder(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", images, "--out", images, *TINY)
    assert code == 2 and "is an image folder" in err
    assert sorted(p.name for p in images.rglob("*")) == sorted(
        ["im0.png", "im1.png", "im2.png", "im3.png", "more", "im4.png"]
    )


def test_small_images_are_skipped_with_a_warning(images: Path, tmp_path: Path) -> None:
    Image.fromarray(smooth_rgb(10, 10)).save(images / "tiny.png")
    with pytest.warns(SrucWarning, match=r"tiny.png: 10x10 is smaller than 19x19"):
        result = train(tiny_config(images, tmp_path / "run", steps=1))
    assert result.skipped == 1 and result.images == 4


# --------------------------------------------------------------------------- pieces


def test_sampler_is_stateless_and_ranks_are_disjoint() -> None:
    imgs = [torch.from_numpy(smooth_rgb(40, 44, seed=i)).permute(2, 0, 1) for i in range(2)]
    cache = PatchCache(imgs, [2, 3], [1.0], 16, seed=3)
    x, y = cache.batch(7, 8)
    assert x.shape == y.shape == (8, 1, 16, 16) and x.dtype == torch.float32
    assert torch.equal(cache.batch(7, 8)[0], x)  # a function of (seed, step) only
    assert not torch.equal(cache.batch(8, 8)[0], x)
    halves = [cache.batch(7, 8, rank=r, world_size=2) for r in (0, 1)]
    assert torch.equal(torch.cat([h[0] for h in halves]), x)
    assert torch.equal(torch.cat([h[1] for h in halves]), y)


def test_recipe_schedules_scale_to_the_run() -> None:
    vdsr = RECIPES["vdsr-paper"]  # x0.1 every 10 of 50 epochs, as the port trains it
    assert [vdsr.factor(s, 50) for s in (0, 9, 10, 20, 49)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.0001]
    )
    assert RECIPES["adam"].factor(0, 10) == 1 and RECIPES["adam"].factor(10, 10) == 0


def test_ticks_cover_the_range() -> None:
    ticks = nice_ticks(6.3, 32.2)
    assert ticks[0] <= 6.3 and ticks[-1] >= 32.2 and ticks == sorted(ticks)


# --------------------------------------------------------------------------- data parallel


def test_two_gloo_processes_end_with_identical_weights(images: Path, tmp_path: Path) -> None:
    """The ranks compare their weights at the end; rank 0 records the common hash,
    which is the hash of the weights it saved."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "sruc", "train", str(images), "--out", str(tmp_path / "ddp"), "--steps", "3",
        "--val-every", "2", "--device", "cpu", *TINY, *FAST,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    # torchrun's summary comes last; a rank's own complaint (seen twice: a SIGABRT at
    # exit, rare; end_distributed now frees the group before shutdown) comes first.
    assert proc.returncode == 0, proc.stderr[:3000] + "\n...\n" + proc.stderr[-1500:]
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    replicas = [r for r in map(json.loads, lines) if r.get("kind") == "replicas"]
    assert [(r["step"], r["world_size"]) for r in replicas] == [(3, 2)]
    saved = torch.load(tmp_path / "ddp" / "state.pt", weights_only=True)["model"]
    h = hashlib.sha256()
    for name, t in saved.items():
        h.update(name.encode())
        h.update(t.contiguous().numpy().tobytes())
    assert replicas[0]["sha256"] == h.hexdigest()
    assert proc.stdout.strip() == str(tmp_path / "ddp" / "best.pt")  # rank 0 alone prints
    assert checkpoint.load(tmp_path / "ddp" / "best.pt").meta["world_size"] == 2


# --------------------------------------------------------------------------- the paper recipe

PAPER = ["--recipe", "vdsr-paper", "--batch-size", "4", "--patch-size", "16"]


def test_paper_recipe_clips_the_gradient_norm_to_exactly_theta(
    images: Path, tmp_path: Path
) -> None:
    """vdsr-paper clips the global gradient norm to a constant theta (0.4, or
    --clip) at every step, whatever the lr, with the sum-of-squares loss: the
    first SGD step from known weights moves them by exactly lr * theta."""
    first = train(tiny_config(images, tmp_path / "a", recipe="vdsr-paper", steps=1, val_every=1))
    start = checkpoint.load(first.last)
    assert start.config["bias"] is False and not any("bias" in k for k in start.state_dict)
    for theta in (0.4, 0.05):
        out = tmp_path / f"clip{theta}"
        cfg = tiny_config(images, out, recipe="vdsr-paper", init=str(first.last), model_config={},
                          steps=1, val_every=1, log_every=1, lr=0.1,
                          clip=None if theta == 0.4 else theta)  # fmt: skip
        train(cfg)
        moved = checkpoint.load(out / "last.pt").state_dict
        # SGD's first step: w1 = w0 - lr * (clipped gradient + wd * w0).
        grads = [(start.state_dict[k] - moved[k]) / 0.1 - 1e-4 * start.state_dict[k]
                 for k in moved]  # fmt: skip
        norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
        assert float(norm) == pytest.approx(theta, rel=1e-3)
        logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        raw = next(r["grad_norm"] for r in logged if r["kind"] == "train")
        assert raw > theta  # the sum loss makes the raw norm large: it was clipped
        state = torch.load(out / "state.pt", weights_only=True)
        assert state["run"]["clip"] == theta and state["run"]["loss"] == "sum"
        assert state["run"]["sampling"] == "grid"


def test_paper_recipe_defaults(images: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(data=str(images), out=str(tmp_path / "x"), recipe="vdsr-paper")
    run_ = cfg.resolved()
    assert run_["batch_size"] == 128 and run_["model_config"] == {"bias": False}
    assert (run_["clip"], run_["loss"], run_["sampling"]) == (0.4, "sum", "grid")
    assert run_["lr"] == 0.1 and run_["downscales"] == [1.0, 0.7, 0.5]
    # Biases back on, if asked for; adam keeps its own choices.
    cfg.model_config = {"bias": True}
    assert cfg.resolved()["model_config"] == {"bias": True}
    adam = TrainConfig(data=str(images), out=str(tmp_path / "x")).resolved()
    assert (adam["clip"], adam["loss"], adam["sampling"], adam["batch_size"]) == (
        None, "mse", "random", 64,
    )  # fmt: skip


def test_bias_free_vdsr_round_trips(tmp_path: Path) -> None:
    from sruc import archs as models

    net = models.build("vdsr", {"depth": 3, "width": 8, "bias": False})
    assert not any("bias" in k for k in net.state_dict())
    path = checkpoint.save(checkpoint.from_model(net, [2.0, 3.0]), tmp_path / "nobias.pt")
    back = checkpoint.load(path)
    assert back.config == {"channels": 1, "depth": 3, "width": 8, "kernel": 3, "bias": False}
    x = torch.rand(1, 1, 20, 24)
    with torch.no_grad():
        assert torch.equal(back.build()(x), net.eval()(x))
    # A VDSR with biases records nothing new, so files from before the option load as before.
    assert "bias" not in models.build("vdsr", {"depth": 3, "width": 8}).config
    with pytest.raises(Exception, match="bias must be true or false"):
        models.build("vdsr", {"bias": "no"})


def test_bias_free_checkpoint_upscales(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sruc import archs as models

    torch.manual_seed(0)
    net = models.build("vdsr", {"depth": 3, "width": 8, "bias": False})
    path = checkpoint.save(checkpoint.from_model(net, [2.0]), tmp_path / "nobias.pt")
    Image.fromarray(smooth_rgb(20, 24)).save(tmp_path / "in.png")
    code, _, err = run(capsys, "up", tmp_path / "in.png", "-s", "2", "--model", path,
                       "-o", tmp_path / "out.png", "-q")  # fmt: skip
    assert code == 0, err
    assert Image.open(tmp_path / "out.png").size == (48, 40)


def test_grid_epochs_cover_every_patch_once() -> None:
    imgs = [torch.from_numpy(smooth_rgb(40, 44, seed=i)).permute(2, 0, 1) for i in range(2)]
    cache = PatchCache(imgs, [2, 3], [1.0], 16, seed=3, sampling="grid")
    size = cache.available
    assert size == 8 * cache.patches_per_epoch > 0
    seen = []
    for step in range(size // 4):  # one epoch in batches of 4
        seen += cache._grid_picks(step, 4)
    assert len(set(seen)) == len(seen) == size
    assert all(top % 16 == 0 and left % 16 == 0 for _, top, left, _ in seen)
    # Stateless, and the next epoch is another order of the same patches.
    x, _ = cache.batch(5, 4)
    assert torch.equal(cache.batch(5, 4)[0], x)
    nxt = [p for s in range(size // 4, 2 * (size // 4)) for p in cache._grid_picks(s, 4)]
    assert set(nxt) == set(seen) and nxt != seen
    halves = [cache.batch(5, 4, rank=r, world_size=2)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), x)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--clip", "0"], 2, "--clip must be a positive gradient norm"),
        (["--clip", "-1"], 2, "--clip must be a positive gradient norm"),
        (["--batch-size", "100000"], 2, "--batch-size 100000 is larger than the"),
        (["--model", "srcnn", "--scale", "3"], 2, "--recipe vdsr-paper trains VDSR"),
    ],
)
def test_paper_recipe_bad_input(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args, code, words
) -> None:  # fmt: skip
    out = tmp_path / "out"
    got, stdout, err = run(capsys, "train", images, "--out", out, *PAPER[:2],
                           "--patch-size", "16", "--steps", "1", *FAST, *args)  # fmt: skip
    assert got == code and stdout == "" and err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_resume_with_another_recipe_or_bias_is_refused(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    tiny = ["--model-config", '{"depth": 3, "width": 8}']
    code, _, err = run(capsys, "train", images, "--out", out, *PAPER, *tiny, "--steps", "2",
                       *FAST)  # fmt: skip
    assert code == 0, err
    before = files(out)
    for extra in (
        ["--recipe", "adam", *tiny],
        [*PAPER[2:], "--model-config", '{"depth": 3, "width": 8, "bias": true}'],
        [*PAPER, *tiny, "--clip", "0.1"],
        [*PAPER, *tiny, "--sampling", "random"],
    ):
        args = ["--steps", "2", "--batch-size", "4", "--patch-size", "16", *FAST, *extra]
        code, stdout, err = run(capsys, "train", images, "--out", out, *args)
        assert code == 1 and stdout == "" and err.count("\n") == 1, err
        assert "different configuration" in err
    assert files(out) == before


def test_runs_of_older_versions_still_resume(images: Path, tmp_path: Path) -> None:
    """A state written before clip/loss/sampling were recorded continues."""
    out = tmp_path / "old"
    train(tiny_config(images, out, stop_after=2))
    state = torch.load(out / "state.pt", weights_only=True)
    for key in ("clip", "loss", "sampling", "revive"):
        del state["run"][key]
    torch.save(state, out / "state.pt")
    assert train(tiny_config(images, out)).resumed_from == 2


# --------------------------------------------------------------------------- --revive


def _dormant_vdsr() -> torch.nn.Module:
    """A small VDSR with a few hidden channels that never fire (bias far below zero)."""
    from sruc.archs.vdsr import VDSR

    torch.manual_seed(0)
    net = VDSR(depth=4, width=8).eval()
    with torch.no_grad():
        net.body[0].bias[[1, 5]] = -100.0  # layer 1: channels 1 and 5 dead
        net.body[2].bias[3] = -100.0  # layer 2: channel 3 dead
    return net


def test_revive_keeps_the_function_and_wakes_the_dormant_channels() -> None:
    from sruc.train.revive import activity, revive

    net = _dormant_vdsr()
    x = [torch.rand(2, 1, 24, 24) for _ in range(3)]
    before = [net(t) for t in x]
    shares = activity(net, x)
    assert [int((s == 0).sum()) for s in shares] == [2, 1, 0]
    done = revive(net, x, 1e-9, torch.Generator().manual_seed(0))  # the dead ones only
    assert done.per_layer == (2, 1, 0) and done.count == 3 and done.units == 24
    for t, want in zip(x, before, strict=True):  # the revived channels feed nothing yet
        assert torch.equal(net(t), want)
    assert all(int((s == 0).sum()) == 0 for s in activity(net, x))  # and they fire again
    assert float(net.body[0].bias[1].detach()) == 0.0
    assert not net.body[2].weight[:, [1, 5]].detach().any()


def test_revive_is_reproducible_and_checks_its_threshold() -> None:
    from sruc.train.revive import revive

    x = [torch.rand(2, 1, 24, 24)]
    a, b = _dormant_vdsr(), _dormant_vdsr()
    revive(a, x, 0.01, torch.Generator().manual_seed(3))
    revive(b, x, 0.01, torch.Generator().manual_seed(3))
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)
    with pytest.raises(ValueError, match="threshold"):
        revive(a, x, 0.0)


def test_train_revive_starts_from_the_same_function(images: Path, tmp_path: Path) -> None:
    first = train(tiny_config(images, tmp_path / "a", steps=2, val_every=2))
    cfg = tiny_config(images, tmp_path / "b", init=str(first.last), model_config={},
                      steps=2, stop_after=1, lr=1e-12, revive=0.5)  # fmt: skip
    events: list[str] = []
    train(cfg, progress=lambda e: events.append(e.message) if e.kind == "start" else None)
    assert any("revived" in m for m in events)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    revived = [x for x in lines if x["kind"] == "revive"]
    assert len(revived) == 1 and revived[0]["units"] == 16
    # Resuming repeats the option; another value is another run.
    assert train(dataclasses.replace(cfg, stop_after=None)).resumed_from == 1
    with pytest.raises(OutputError, match="revive"):
        train(dataclasses.replace(cfg, revive=0.25))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--revive", "0.01"], "--revive re-initialises the dormant channels of --init"),
        (["--revive", "-0.1", "--init", "vdsr"], "--revive must be a share of pixels"),
        (["--revive", "1", "--init", "vdsr"], "--revive must be a share of pixels"),
    ],
)
def test_revive_bad_input(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args, words
) -> None:  # fmt: skip
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "train", images, "--out", out, *TINY, "--steps", "1",
                            *FAST, *args)  # fmt: skip
    assert code == 2 and stdout == "" and err.count("\n") == 1 and words in err, err
    assert not out.exists()
