"""``sruc batch`` and :func:`sruc.batch.run.run_batch`: whole folders, bad files, resumes, shards.

Small synthetic folders in ``tmp_path``; the tiny VDSR of ``conftest.py`` stands
in for a real model. Most cases run in-process through :func:`sruc.cli.main`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import sruc
from helpers import Run, needs_cpu_bf16, run_cli, smooth_rgb
from sruc.batch import (
    BatchInterrupted,
    BatchProgress,
    effective_shard,
    in_shard,
    parse_shard,
    plan_batch,
    run_batch,
)
from sruc.batch import plan as plan_mod
from sruc.batch import pool as pool_mod
from sruc.batch import run as batch_mod
from sruc.cli import main
from sruc.engine import fused, pipeline, precision
from sruc.engine import prepared as prepared_mod
from sruc.engine.precision import PrecisionError
from sruc.errors import UsageError
from sruc.files import images

# --------------------------------------------------------------------------- helpers


def run_batch_cli(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> Run:
    """``sruc batch ARGS`` in-process."""
    return run_cli(capsys, "batch", *args)


def png(path: Path, h: int = 12, w: int = 16, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_rgb(h, w, seed)).save(path)
    return path


def files(root: Path) -> set[str]:
    """Every file under ``root``, relative, hidden ones included."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def no_partials(root: Path) -> bool:
    return not any(p.name.endswith(".part") for p in root.rglob("*"))


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder ``in/`` of three images, a sub-folder, and things that are not images."""
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        png(tmp_path / "in" / f"p{i}.png", seed=i)
    png(tmp_path / "in" / "sub" / "deep.png", seed=7)
    (tmp_path / "in" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "in" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (tmp_path / "in" / "notes.txt").write_text("not a picture\n")
    (tmp_path / "in" / "README").write_text("no extension, not an image\n")
    return tmp_path


# --------------------------------------------------------------------------- inputs


def test_folder_outputs_and_json_report(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    run = run_batch_cli(capsys, "in", "-o", "out", "-s", "2", "--json")
    assert run.code == 0, run
    assert files(work / "out") == {"p0_x2.png", "p1_x2.png", "p2_x2.png"}
    assert Image.open(work / "out" / "p0_x2.png").size == (32, 24)
    report = json.loads(run.out)
    assert report["summary"]["done"] == 3 and report["summary"]["failed"] == 0
    assert report["exit_code"] == 0
    by_name = {Path(f["input"]).name: f for f in report["files"]}
    assert by_name["p1.png"]["status"] == "done"
    assert by_name["p1.png"]["input_size"] == [16, 12]
    assert by_name["p1.png"]["output_size"] == [32, 24]
    assert by_name["p1.png"]["seconds"] >= 0
    # README has no extension: tried by content, not an image, passed over silently.
    assert by_name["README"]["status"] == "ignored"
    # .DS_Store, .mp4 and .txt are never even opened.
    assert not {".DS_Store", "clip.mp4", "notes.txt"} & set(by_name)
    assert "error" not in run.err
    assert "done 3" in run.err  # the summary, on stderr


def test_recursive_mirrors_the_tree(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    assert run_batch_cli(capsys, "in", "-o", "out", "--recursive", "-q").code == 0
    assert files(work / "out") == {"p0_x2.png", "p1_x2.png", "p2_x2.png", "sub/deep_x2.png"}


def test_globs_are_expanded_even_when_quoted(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    png(work / "more" / "a.png")
    png(work / "more" / "b.png")
    Image.fromarray(smooth_rgb(8, 8)).save(work / "more" / "c.jpg")
    run = run_batch_cli(capsys, "more/*.png", "in/p0.png", "-o", "out", "-q")
    assert run.code == 0, run
    assert files(work / "out") == {"a_x2.png", "b_x2.png", "p0_x2.png"}
    run = run_batch_cli(capsys, "nothing/*.png", "-o", "out", "-q")
    assert run.code == 1 and "no file matches" in run.err


def test_broken_and_empty_images_are_reported_and_the_rest_go_on(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    (work / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (work / "in" / "empty.jpg").touch()
    (work / "in" / "text.jpg").write_text("a text file named like a photo\n")
    run = run_batch_cli(capsys, "in", "-o", "out", "--json", "-q")
    assert run.code == 1
    errors = [line for line in run.err.splitlines() if line.startswith("error: ")]
    # One line per bad file, naming it, then the closing line.
    assert len(errors) == 4, run.err
    for name in ("broken.png", "empty.jpg", "text.jpg"):
        assert sum(name in line for line in errors) == 1, (name, run.err)
    assert "3 of" in errors[-1] and "failed" in errors[-1]
    assert "Traceback" not in run.err
    assert files(work / "out") == {"p0_x2.png", "p1_x2.png", "p2_x2.png"}
    statuses = {Path(f["input"]).name: f["status"] for f in json.loads(run.out)["files"]}
    assert statuses["empty.jpg"] == statuses["broken.png"] == "failed"
    assert json.loads(run.out)["summary"]["failed"] == 3


def test_unreadable_files_and_folders(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    (work / "in" / "gone.png").symlink_to(work / "nowhere.png")  # a dangling link
    run = run_batch_cli(capsys, "in", "-o", "out", "-q")
    assert run.code == 1
    assert "gone.png" in run.err and "no such file" in run.err
    assert len(files(work / "out")) == 3
    if os.name == "posix" and os.geteuid() != 0:  # root reads anything
        locked = png(work / "in" / "locked.png")
        locked.chmod(0)
        run = run_batch_cli(capsys, "in", "-o", "out2", "-q")
        assert run.code == 1 and "locked.png" in run.err


def test_non_ascii_names(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    png(work / "été" / "façade ü 写真.png")
    run = run_batch_cli(capsys, "été", "-o", "sortie", "--json")
    assert run.code == 0, run
    assert files(work / "sortie") == {"façade ü 写真_x2.png"}
    assert json.loads(run.out)["files"][0]["input"].endswith("façade ü 写真.png")


def test_same_file_twice_is_done_once(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    run = run_batch_cli(capsys, "in", "in/p0.png", "./in/p0.png", "-o", "out", "--json")
    assert run.code == 0
    inputs = [Path(f["input"]).name for f in json.loads(run.out)["files"]]
    assert inputs.count("p0.png") == 1


def test_two_inputs_for_one_output_are_reported(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    png(work / "more" / "p0.png", seed=9)  # same name as in/p0.png, different picture
    before = (work / "in" / "p0.png").read_bytes()
    run = run_batch_cli(capsys, "in", "more", "-o", "out", "--json", "-q")
    assert run.code == 1
    line = next(x for x in run.err.splitlines() if "more/p0.png" in x)
    assert "also the output of" in line and "in/p0.png" in line
    report = json.loads(run.out)["files"]
    assert [f["status"] for f in report if f["input"] == "more/p0.png"] == ["failed"]
    # The first one wins; the second never overwrote it.
    first = sruc.upscale(work / "in" / "p0.png", 2)
    assert np.array_equal(np.asarray(Image.open(work / "out" / "p0_x2.png")), np.asarray(first))
    assert (work / "in" / "p0.png").read_bytes() == before


@pytest.mark.parametrize("out", ["in/up", "in"])
def test_own_outputs_are_never_inputs(
    capsys: pytest.CaptureFixture[str], work: Path, out: str
) -> None:
    for _ in range(2):  # the second run sees the first run's outputs in the input folder
        run = run_batch_cli(capsys, "in", "-o", out, "-r", "--json", "-q")
        assert run.code == 0, run
    names = files(work / "in")
    assert not any("_x2_x2" in n for n in names), names
    assert json.loads(run.out)["summary"]["done"] == 0  # all skipped the second time


# --------------------------------------------------------------------------- outputs


def test_suffix_and_format(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    Image.fromarray(smooth_rgb(8, 8)).save(work / "in" / "anim.gif")
    Image.fromarray(smooth_rgb(8, 8)).save(work / "in" / "pnm.ppm")
    assert run_batch_cli(capsys, "in", "-o", "a", "-s", "2.5", "-q").code == 0
    # same: the input's format when sruc writes it (gif too), else png (ppm)
    assert files(work / "a") == {
        "p0_x2.5.png", "p1_x2.5.png", "p2_x2.5.png", "anim_x2.5.gif", "pnm_x2.5.png"
    }  # fmt: skip
    run = run_batch_cli(
        capsys, "in", "-o", "b", "--format", "jpg", "--suffix", "", "--quality", "80"
    )
    assert run.code == 0, run
    assert files(work / "b") == {"p0.jpg", "p1.jpg", "p2.jpg", "anim.jpg", "pnm.jpg"}
    assert Image.open(work / "b" / "p0.jpg").format == "JPEG"


def test_existing_outputs_are_skipped_and_overwrite_redoes_them(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    (work / "out").mkdir()
    (work / "out" / "p1_x2.png").write_bytes(b"from an earlier, interrupted run")
    run = run_batch_cli(capsys, "in", "-o", "out", "--json", "-q")
    assert run.code == 0
    status = {Path(f["input"]).name: f["status"] for f in json.loads(run.out)["files"]}
    assert status["p1.png"] == "skipped" and status["p0.png"] == "done"
    assert (work / "out" / "p1_x2.png").read_bytes() == b"from an earlier, interrupted run"
    run = run_batch_cli(capsys, "in", "-o", "out", "--overwrite", "--json", "-q")
    assert json.loads(run.out)["summary"]["done"] == 3
    assert Image.open(work / "out" / "p1_x2.png").size == (32, 24)


def test_usage_errors(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    for args, needle in [
        (["in", "-o", "out", "--shard", "5/4"], "--shard"),
        (["in", "-o", "out", "--shard", "x"], "k/n"),
        (["in", "-o", "out", "-s", "20"], "scale"),
        (["in", "-o", "out", "--format", "heic"], "--format"),
        (["in", "-o", "out", "--precision", "fp16", "--device", "cpu"], "fp16"),
        (["in"], "--output"),
    ]:
        run = run_batch_cli(capsys, *args)
        assert run.code == 2, (args, run)
        assert run.err.startswith("error: ") and needle in run.err.lower(), (args, run.err)
        assert not (work / "out").exists()


# --------------------------------------------------------------------------- bad situations


def test_full_disk_stops_the_batch_cleanly(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sruc.files import atomic

    writes: list[int] = []
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        writes.append(real_write(fd, bytes(data[:10])))  # a full disk leaves some bytes first
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", write)
    run = run_batch_cli(capsys, "in", "-o", "out", "--json")
    assert run.code == 1
    assert not (work / "out").exists() or files(work / "out") == set()
    assert no_partials(work)
    last = run.err.splitlines()[-1]
    assert last.startswith("error: stopped early") and "no space left" in last.lower()
    assert "done 0" in run.err  # the summary was printed
    report = json.loads(run.out)
    # Stopped rather than failing every later image: at most the writes already queued ran.
    assert report["summary"]["pending"] >= 1
    assert len(writes) <= pool_mod.MAX_PENDING_WRITES + 1
    assert report["stopped"].startswith("disk full")


# --------------------------------------------------------------------------- I/O threads


def test_io_plan_leaves_the_cores_to_a_cpu_model_and_uses_them_otherwise(
    tiny_vdsr_ckpt: Path,
) -> None:
    cpu = pipeline.prepare_model(tiny_vdsr_ckpt, device="cpu", precision="fp32")
    bicubic = pipeline.prepare_model("bicubic", device="cpu")
    # The network on the CPU: two threads whatever the core count.
    assert pool_mod.io_plan(cpu, cores=2) == (2, 2)
    assert pool_mod.io_plan(cpu, cores=64) == (2, 2)
    # Bicubic, or a GPU (the device is all io_plan reads): one per core but one.
    assert pool_mod.io_plan(bicubic, cores=2) == (2, 2)
    assert pool_mod.io_plan(bicubic, cores=6) == (5, 5)
    gpu = dataclasses.replace(cpu, device=torch.device("cuda", 0))
    assert pool_mod.io_plan(gpu, cores=16) == (pool_mod.MAX_IO_THREADS,) * 2
    assert pool_mod.io_plan(gpu, cores=1) == (2, 2)


def _count_concurrent_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make each encode take 0.15 s; the returned list gets the number of
    encodes running at each start."""
    running, seen = [0], []
    lock = threading.Lock()
    real = batch_mod._Run.encode

    def encode(self: Any, item: Any, out: Any) -> float:
        with lock:
            running[0] += 1
            seen.append(running[0])
        try:
            threading.Event().wait(0.15)
            return real(self, item, out)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(batch_mod._Run, "encode", encode)
    monkeypatch.setattr(pool_mod, "available_cpus", lambda: 16)
    return seen


def test_encodes_run_in_parallel_where_the_cores_are_free(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3, 8):
        png(work / "in" / f"p{i}.png", seed=i)
    seen = _count_concurrent_writes(monkeypatch)
    report = run_batch(["in"], "out", 2, model="bicubic")
    assert report.exit_code == 0 and report.count("done") == 8
    assert max(seen) > pool_mod.IO_THREADS  # bicubic is cheap: the writes overlap


def test_waiting_results_are_bounded_in_megapixels(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _count_concurrent_writes(monkeypatch)
    monkeypatch.setattr(batch_mod, "PENDING_WRITE_MEGAPIXELS", 1e-4)  # less than one output
    report = run_batch(["in"], "out", 2, model="bicubic")
    assert report.exit_code == 0 and report.count("done") == 3
    assert max(seen) == 1  # each result waits for the one before it to be written


def test_ctrl_c_in_the_model_stops_after_the_current_image(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch_mod.Upscaler.upscale_picture
    calls = []

    def upscale(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_mod.Upscaler, "upscale_picture", upscale)
    run = run_batch_cli(capsys, "in", "-o", "out", "--json")
    assert run.code == 130
    assert files(work / "out") == {"p0_x2.png"}  # the image before was written
    assert no_partials(work)
    assert "done 1" in run.err and "interrupted" in run.err.splitlines()[-1]
    report = json.loads(run.out)
    assert report["stopped"] == "interrupted" and report["summary"]["pending"] == 2


def test_sigterm_is_handled_as_ctrl_c(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `timeout`, schedulers and container stops send: the image being written is
    abandoned (its temporary file removed), the report says what was done, exit 130."""
    import signal

    real = batch_mod.images.write_image
    calls = []

    def write(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-write, as a real one would
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_mod.images, "write_image", write)
    run = run_batch_cli(capsys, "in", "-o", "out", "--json")
    assert run.code == 130, run.err
    # The signal is handled when the main thread next runs Python (after the model call
    # it is in); images already upscaled are still written, atomically. Either way the
    # report says exactly what is on disk.
    written = files(work / "out")
    assert "p0_x2.png" in written and written <= {"p0_x2.png", "p1_x2.png", "p2_x2.png"}
    assert no_partials(work)
    assert "interrupted" in run.err.splitlines()[-1] and "please report" not in run.err
    report = json.loads(run.out)
    assert report["stopped"] == "interrupted" and report["summary"]["done"] == len(written)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored for the caller


def test_ctrl_c_in_the_progress_callback(work: Path, tiny_vdsr_ckpt: Path) -> None:
    seen: list[BatchProgress] = []

    def progress(p: BatchProgress) -> None:
        seen.append(p)
        if p.item is not None and p.item.status == "done":
            raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted) as info:
        run_batch(["in"], "out", 2, model=tiny_vdsr_ckpt, progress=progress, tile=12)
    report = info.value.report
    assert report.exit_code == 130 and report.interrupted
    assert [i.status for i in report.items].count("done") >= 1
    assert no_partials(work)
    done = {i.output.name for i in report.items if i.status == "done"}
    assert files(work / "out") == done


def test_large_image_with_small_tiles(work: Path, tiny_vdsr_ckpt: Path) -> None:
    png(work / "big" / "big.png", h=150, w=210, seed=3)
    model = sruc.load_model(tiny_vdsr_ckpt)
    tiled = run_batch(["big"], "t", 2, model=model, tile=48, precision="fp32")
    whole = run_batch(["big"], "w", 2, model=model, tile=0, precision="fp32")
    assert tiled.exit_code == whole.exit_code == 0
    a = np.asarray(Image.open(work / "t" / "big_x2.png")).astype(int)
    b = np.asarray(Image.open(work / "w" / "big_x2.png")).astype(int)
    assert a.shape == (300, 420, 3)
    # Seam-free: equal up to float rounding (another convolution algorithm per
    # tile size), which can move a value sitting on a .5 by one level, rarely.
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-4


# --------------------------------------------------------------------------- the run itself


def test_background_io_gives_the_sequential_result(work: Path, tiny_vdsr_ckpt: Path) -> None:
    for i in range(3, 8):
        png(work / "in" / f"p{i}.png", h=10 + i, w=20 - i, seed=i)
    Image.fromarray(smooth_rgb(9, 11)[:, :, 0]).save(work / "in" / "gray.png")
    model = sruc.load_model(tiny_vdsr_ckpt)
    threads: dict[str, set[str]] = {"read": set(), "write": set(), "model": set()}
    real_read, real_write = images.read_image, images.write_image
    real_up = batch_mod.Upscaler.upscale_picture

    def spy(kind: str, fn: Any) -> Any:
        def wrapped(*a: Any, **k: Any) -> Any:
            threads[kind].add(threading.current_thread().name)
            return fn(*a, **k)

        return wrapped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "read_image", spy("read", real_read))
        mp.setattr(images, "write_image", spy("write", real_write))
        mp.setattr(batch_mod.Upscaler, "upscale_picture", spy("model", real_up))
        report = run_batch(["in"], "out", 3, model=model, precision="fp32")
    assert report.exit_code == 0 and report.count("done") == 9
    main_thread = threading.main_thread().name
    assert threads["model"] == {main_thread}
    assert all(t.startswith("sruc-io") for t in threads["read"] | threads["write"])
    for item in report.items:
        if item.status != "done":
            continue
        want = sruc.upscale(item.source, 3, model=model, precision="fp32")
        assert np.array_equal(np.asarray(Image.open(item.output)), np.asarray(want)), item
    # The report keeps the input order, whatever order the writes finished in.
    assert [i.source.name for i in report.items] == sorted(i.source.name for i in report.items)


def test_progress_counts_tiles_and_files(work: Path, tiny_vdsr_ckpt: Path) -> None:
    seen: list[BatchProgress] = []
    report = run_batch(["in"], "out", 2, model=tiny_vdsr_ckpt, tile=12, progress=seen.append)
    assert report.exit_code == 0
    positions = [p.position for p in seen]
    assert positions == sorted(positions)  # never goes back
    assert any(p.position % 1 > 0 for p in seen)  # tiles move it within an image
    assert seen[-1].finished == seen[-1].total == 4  # 3 images and the README
    assert seen[-1].megapixels == pytest.approx(3 * 32 * 24 / 1e6)
    assert sum(p.item is not None for p in seen) == 4


def test_model_is_loaded_once(
    capsys: pytest.CaptureFixture[str], work: Path, tiny_vdsr_ckpt: Path, monkeypatch: Any
) -> None:
    from sruc.zoo import checkpoint

    loads: list[object] = []
    real_load = checkpoint.load
    monkeypatch.setattr(checkpoint, "load", lambda p: loads.append(p) or real_load(p))
    prepared: list[object] = []
    real_chain = fused.ConvChain.of
    monkeypatch.setattr(
        fused.ConvChain, "of", lambda *a, **k: prepared.append(a) or real_chain(*a, **k)
    )
    run = run_batch_cli(capsys, "in", "-o", "out", "--model", tiny_vdsr_ckpt, "-q", "-r")
    assert run.code == 0, run
    assert len(loads) == 1
    assert len(prepared) <= 2  # fp32 and, at most, the reduced-precision copy


def test_quiet_and_not_a_terminal(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    run = run_batch_cli(capsys, "in", "-o", "out", "-q")
    assert (run.code, run.out, run.err) == (0, "", "")
    run = run_batch_cli(capsys, "in", "-o", "out2")
    assert run.out == "" and len(run.err.splitlines()) == 1  # the summary; no bar in a pipe
    assert "\r" not in run.err and "\x1b" not in run.err


# --------------------------------------------------------------------------- shards


def test_shards_are_disjoint_and_cover_everything(work: Path) -> None:
    for i in range(40):
        png(work / "many" / f"img{i:02d}.png", h=4, w=4, seed=i)
    everything = {i.source for i in plan_batch(["many"], "out", 2)}
    assert len(everything) == 40
    for n in (1, 2, 3, 7):
        shares = [
            {i.source for i in plan_batch(["many"], "out", 2, shard=(k, n))} for k in range(n)
        ]
        assert set().union(*shares) == everything
        assert sum(len(s) for s in shares) == len(everything)  # pairwise disjoint
        assert all(shares) or n > 20


def test_shard_is_stable_and_cli_shards_match(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    keys = [f"dir/img{i}.png" for i in range(100)]
    assert [in_shard(k, (1, 3)) for k in keys] == [in_shard(k, (1, 3)) for k in keys]
    out = set()
    for k in (1, 2):
        run = run_batch_cli(capsys, "in", "-o", "out", "--shard", f"{k}/2", "--json", "-q")
        got = {f["input"] for f in json.loads(run.out)["files"]}
        assert not got & out
        out |= got
    assert out == {"in/p0.png", "in/p1.png", "in/p2.png", "in/README"}


def test_shard_parsing_and_torchrun() -> None:
    assert parse_shard("1/4") == (0, 4) and parse_shard("4/4") == (3, 4)
    for bad in ("0/4", "5/4", "1/0", "a/b", "1", "1/2/3"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    assert effective_shard(None, {}) is None
    assert effective_shard((1, 3), {}) == (1, 3)
    env = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "2"}
    assert effective_shard(None, env) == (2, 4)
    assert effective_shard((1, 3), env) == (1 * 4 + 2, 12)
    # Every (machine shard, rank) pair gets its own share of the 12.
    shares = {effective_shard((k, 3), {**env, "RANK": str(r)}) for k in range(3) for r in range(4)}
    assert shares == {(i, 12) for i in range(12)}
    assert plan_mod.batch_device("cpu", env) == "cpu"
    if not torch.cuda.is_available():
        assert plan_mod.batch_device("auto", env) == "cpu"
    assert plan_mod.batch_device("cuda", env) == "cuda:2"
    assert plan_mod.batch_device("auto", {}) == "auto"


# --------------------------------------------------------------------------- precision, tiles


@needs_cpu_bf16
def test_bf16_on_cpu_is_close_to_fp32(work: Path, tiny_vdsr_ckpt: Path) -> None:
    model = sruc.load_model(tiny_vdsr_ckpt)
    pic = images.read_image(work / "in" / "p0.png")
    a = sruc.upscale_picture(pic, 2, model=model, device="cpu", precision="fp32").color
    b = sruc.upscale_picture(pic, 2, model=model, device="cpu", precision="bf16").color
    assert float((a - b).abs().max()) < 4 / 255
    assert float((a - b).abs().mean()) < 0.5 / 255
    fp32 = pipeline.prepare_model(model, device="cpu", precision="fp32")
    assert fp32.precision == "fp32"
    with pytest.raises(PrecisionError, match="fp16 needs a GPU"):
        pipeline.prepare_model(model, device="cpu", precision="fp16")
    auto = pipeline.prepare_model(model, device="cpu", precision="auto")
    assert auto.precision in ("fp32", "bf16")
    if not precision.cpu_has_native_bf16():
        assert auto.precision == "fp32"
    # 16-bit images keep fp32 under auto.
    assert auto.runner(16)[1] == "fp32"


@needs_cpu_bf16
def test_auto_keeps_fp32_when_the_probe_fails(
    tiny_vdsr_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepared_mod, "resolve_precision", lambda p, d: "bf16")
    monkeypatch.setattr(prepared_mod, "MAX_PSNR_DROP_DB", -1.0)
    assert pipeline.prepare_model(tiny_vdsr_ckpt, device="cpu").precision == "fp32"
    monkeypatch.setattr(prepared_mod, "MAX_PSNR_DROP_DB", 1e9)
    assert pipeline.prepare_model(tiny_vdsr_ckpt, device="cpu").precision == "bf16"


def test_fast_chain_equals_the_module(tiny_vdsr_ckpt: Path, tiny_srcnn_ckpt: Path) -> None:
    x = torch.rand(1, 1, 23, 31, generator=torch.Generator().manual_seed(0))
    for ckpt in (tiny_vdsr_ckpt, tiny_srcnn_ckpt):
        lm = sruc.load_model(ckpt)
        pm = pipeline.prepare_model(lm, device="cpu", precision="fp32")
        assert isinstance(pm.forward, fused.ConvChain)
        with torch.inference_mode():
            assert float((pm.forward(x) - lm.module(x)).abs().max()) <= 1e-5


def test_batched_tiles_equal_single_tiles() -> None:
    from sruc.archs.vdsr import VDSR
    from sruc.core.tiling import plan_tiles, run_tiled

    for h, w, t, r in [(53, 37, 16, 5), (61, 47, 23, 8), (20, 90, 32, 8)]:
        cover = np.zeros((h, w), dtype=int)
        windows = set()
        for tile in plan_tiles(h, w, t, r, uniform=True):
            cover[tile.y0 : tile.y1, tile.x0 : tile.x1] += 1
            windows.add((tile.in_y1 - tile.in_y0, tile.in_x1 - tile.in_x0))
            # At least the radius of context wherever the image goes on.
            assert tile.in_y0 == 0 or tile.y0 - tile.in_y0 >= r
            assert tile.in_x1 == w or tile.in_x1 - tile.x1 >= r
        assert (cover == 1).all() and len(windows) == 1
    torch.manual_seed(0)
    net = VDSR(depth=6, width=8).eval()
    x = torch.rand(1, 1, 61, 47)
    with torch.inference_mode():
        whole = run_tiled(net, x, radius=6, tile=0)
        for batch in (2, 3, 16):
            got = run_tiled(net, x, radius=6, tile=20, batch=batch)
            assert float((got - whole).abs().max()) <= 1e-5


def test_cli_choices_match_the_library() -> None:
    from sruc.cli import batch as cli_batch

    assert cli_batch.FORMAT_CHOICES == plan_mod.OUTPUT_FORMATS


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_handles_4k(tiny_vdsr_ckpt: Path) -> None:
    from sruc.archs.vdsr import VDSR

    lm = sruc.load_model(tiny_vdsr_ckpt)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 200, 300, generator=g)
    cpu = pipeline.prepare_model(lm, device="cpu", precision="fp32")
    gpu = pipeline.prepare_model(lm, device="cuda", precision="fp32")
    with torch.inference_mode():
        a = pipeline.run_model(cpu, x, tile=64)
        b = pipeline.run_model(gpu, x, tile=64)  # several tiles per forward on CUDA
        c = pipeline.run_model(gpu, x, tile=0)
    assert float((a - b).abs().max()) <= 1e-4 and float((b - c).abs().max()) <= 1e-4
    # The 3840x2160 path: a full-size VDSR, reduced precision, default tile and batch.
    torch.manual_seed(0)
    full = sruc.load_model(VDSR().eval())
    pm = pipeline.prepare_model(full, device="cuda", precision="auto")
    x4k = torch.rand(1, 1, 2160, 3840, generator=g)
    with torch.inference_mode():
        y = pipeline.run_model(pm, x4k)
        ref = pipeline.run_model(pipeline.prepare_model(full, device="cuda", precision="fp32"), x4k)
    assert y.shape == x4k.shape and y.device.type == "cpu" and bool(torch.isfinite(y).all())
    if pm.precision == "fp32":
        assert float((y - ref).abs().max()) <= 1e-4
    else:
        assert float((y.clamp(0, 1) - ref.clamp(0, 1)).abs().mean()) < 1 / 255


@needs_cpu_bf16
def test_up_takes_precision(
    capsys: pytest.CaptureFixture[str], work: Path, tiny_vdsr_ckpt: Path
) -> None:
    capsys.readouterr()
    assert main(["up", "in/p0.png", "-o", "a.png", "--precision", "fp16", "--device", "cpu"]) == 2
    assert "fp16" in capsys.readouterr().err
    args = ["up", "in/p0.png", "-o", "b.png", "--precision", "bf16", "--model", tiny_vdsr_ckpt]
    assert main([str(a) for a in args]) == 0
    assert "bf16" in capsys.readouterr().err  # the summary says what ran


def test_a_non_image_never_takes_an_images_output_name(work: Path) -> None:
    """A text file "notes" and "notes.png" both map to notes_x2.png: the image gets
    it, the text file is not tried; an output that is a folder fails the image."""
    png(work / "names" / "notes.png")
    (work / "names" / "notes").write_text("a shopping list")
    report = run_batch(["names"], "out", 2, model="bicubic")
    by_name = {i.source.name: i for i in report.items}
    assert by_name["notes.png"].status == "done" and by_name["notes"].status == "ignored"
    assert report.exit_code == 0 and files(work / "out") == {"notes_x2.png"}
    (work / "out2" / "notes_x2.png").mkdir(parents=True)
    report = run_batch(["names"], "out2", 2, model="bicubic")
    item = next(i for i in report.items if i.source.name == "notes.png")
    assert item.status == "failed" and "is a folder" in item.error and report.exit_code == 1
