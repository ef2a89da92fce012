"""Helpers for the tests: synthetic images and paths to the shared data."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
EVAL = SHARED / "datasets" / "eval"
#: For tests that read Set5 images: skipped where the shared datasets are not beside the checkout.
needs_set5 = pytest.mark.skipif(not (EVAL / "Set5").is_dir(), reason=f"needs {EVAL / 'Set5'}")


def _cpu_bf16() -> bool:
    from sruc.engine.precision import cpu_can_run_bf16

    return cpu_can_run_bf16()


#: For tests that force bf16 on the CPU: skipped where it cannot run (AVX2-only CPUs,
#: or under ``ONEDNN_MAX_CPU_ISA=AVX2``), where sruc refuses it (tested elsewhere).
needs_cpu_bf16 = pytest.mark.skipif(not _cpu_bf16(), reason="this CPU cannot run bf16")


def smooth_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like 8-bit RGB image: smooth gradients plus texture and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack(
        [
            128 + 100 * np.sin(xx / 7.0 + seed) * np.cos(yy / 11.0),
            128 + 90 * np.cos((xx + yy) / 9.0),
            128 + 80 * np.sin(yy / 5.0 - xx / 13.0),
        ],
        axis=-1,
    )
    base += rng.normal(0, 12, size=base.shape)
    return np.clip(np.round(base), 0, 255).astype(np.uint8)


def many_frame_gif(path: Path, n: int) -> None:
    """A GIF of ``n`` 4x4 frames, made by repeating one encoded frame (fast)."""
    from PIL import Image

    ims = [Image.new("P", (4, 4), i) for i in range(2)]
    for im in ims:
        im.putpalette([0, 0, 0, 255, 255, 255])
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=20, loop=0)
    data = buf.getvalue()
    second = data.rindex(b"\x21\xf9")  # the second frame's control extension
    frame = data[second:-1]
    path.write_bytes(data[:-1] + frame * (n - 2) + b";")


@dataclass
class Run:
    """What one ``sruc`` command did: exit code, stdout and stderr."""

    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> Run:
    """Run ``sruc ARGS`` in-process, through the console entry point."""
    from sruc.cli import main

    capsys.readouterr()  # drop anything printed before
    code = main([os.fspath(a) for a in args])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def assert_error(run: Run, code: int, *needles: str) -> None:
    """Exit ``code``, nothing on stdout, one ``error: `` line naming ``needles``."""
    assert "Traceback" not in run.err, run.err
    assert run.out == "", run.out
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert "unexpected" not in lines[0], lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    assert run.code == code, f"exit {run.code}, expected {code}: {lines[0]}"


def kernels_without_openmp(tmp_path: Path):  # -> sruc.engine.native.Kernels
    """This machine's compiled kernels built again without OpenMP, as Apple's clang
    builds them (their groups then run on Python threads)."""
    from sruc.engine import native

    k = native.kernels()
    assert k is not None
    flags = [f for f in k.flags if f != "-fopenmp"]
    lib_path = tmp_path / "plain.so"
    assert native._build(k.compiler, flags, lib_path) is None
    lib = native._load(lib_path)
    assert lib is not None
    plain = native.Kernels(lib, None, k.compiler, tuple(flags))
    assert not plain.openmp
    return plain


def train_briefly(forward, params, x, y, steps: int, opt) -> list[float]:  # type: ignore[no-untyped-def]
    """``steps`` steps of ``opt`` on ``params`` (an MSE of ``forward(x)`` against ``y``);
    the losses."""
    import torch.nn.functional as F

    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(forward(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
