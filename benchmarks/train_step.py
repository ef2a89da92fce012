"""How fast one VDSR training step runs on this CPU, by route: speed and gradient error.

A step of `sruc train --model vdsr` (20 x 3x3 x 64, 64 patches of 41 x 41 by default: the
recipes' batch): forward, an MSE loss, backward, the parameters' gradients. Routes:

- bf16 direct: oneDNN's convolutions with the ReLU fused, autocast's casts by hand
  (engine/fused.training_forward with bf16: what `auto` ran before on CPUs with bf16, and
  still runs on AMX CPUs);
- fp32 direct: the same in float32 (what `auto` runs where no compiler works);
- fp32 Winograd: engine/wino_train.ChainTrainer, F(6x6, 3x3) compiled from engine/winograd.c
  for the forward and both gradients (what `auto` runs on CPUs without AMX);
- naive fp32: the plain nn.Module under autograd (the reference).

Each is timed best-of-N over interleaved rounds (the routes share the machine's noise
alike); "grad err" is the largest difference of any parameter's gradient from the naive
route's, relative to that gradient's largest magnitude. Run it on a quiet machine (pause
a training run with SIGSTOP), natively and under the AVX2 cap (`--both` runs the cap in a
second process, as benchmarks/engines.py does):

    env OMP_NUM_THREADS=2 python benchmarks/train_step.py --threads 2 --both
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from big_output import cpu_line
from engines import AVX2_CAP

from sruc import archs
from sruc.engine import native
from sruc.engine.fused import training_forward
from sruc.engine.precision import cpu_can_run_bf16
from sruc.engine.wino_train import winograd_training

Forward = Callable[[torch.Tensor], torch.Tensor]


def routes(net: torch.nn.Module) -> dict[str, Forward]:
    out: dict[str, Forward] = {"naive fp32": net}
    if cpu_can_run_bf16():
        bf16 = training_forward(net, torch.bfloat16)
        if bf16 is not None:
            out["bf16 direct"] = bf16
    direct = _direct_fp32(net)
    if direct is not None:
        out["fp32 direct"] = direct
    trainer = winograd_training(net)
    if trainer is not None:
        out["fp32 Winograd"] = trainer
    return out


def _direct_fp32(net: torch.nn.Module) -> Forward | None:
    """engine/fused's float32 route, as where no compiler works (SRUC_NATIVE=0)."""
    saved = native.kernels
    native.kernels = lambda: None  # type: ignore[assignment]
    try:
        return training_forward(net, None)
    finally:
        native.kernels = saved  # type: ignore[assignment]


def step(net: torch.nn.Module, forward: Forward, x: torch.Tensor, y: torch.Tensor) -> list:
    net.zero_grad(set_to_none=True)
    F.mse_loss(forward(x).float(), y).backward()
    return [p.grad for p in net.parameters()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--patch", type=int, default=41)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--both", action="store_true", help="then again under the AVX2 cap")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_line())
    print(f"torch {torch.__version__}; compiled kernels: {native.status()}")
    torch.manual_seed(0)
    net = archs.build("vdsr", {}).to(memory_format=torch.channels_last)
    shape = (args.batch, 1, args.patch, args.patch)
    x = torch.rand(shape).contiguous(memory_format=torch.channels_last)
    y = torch.rand(shape).contiguous(memory_format=torch.channels_last)
    found = routes(net)
    want = step(net, net, x, y)
    best = {name: float("inf") for name in found}
    err = {}
    for name, forward in found.items():  # warm up; the gradients' agreement
        got = step(net, forward, x, y)
        err[name] = max(
            float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want, strict=True)
        )
    for _ in range(args.rounds):
        for name, forward in found.items():
            t0 = time.perf_counter()
            step(net, forward, x, y)
            best[name] = min(best[name], time.perf_counter() - t0)
    naive = best["naive fp32"]
    print(f"{args.batch} patches of {args.patch} x {args.patch}, {args.threads} thread(s)")
    print(f"{'route':16s} {'ms/step':>8s} {'patches/s':>10s} {'x naive':>8s} {'grad err':>9s}")
    for name, t in best.items():
        print(
            f"{name:16s} {t * 1000:8.0f} {args.batch / t:10.1f} {naive / t:8.2f} {err[name]:9.1e}"
        )
    if args.both:
        sys.stdout.flush()
        env = {**os.environ, **AVX2_CAP}
        argv = [a for a in sys.argv[1:] if a != "--both"]
        print("\nunder the AVX2 cap:", " ".join(f"{k}={v}" for k, v in AVX2_CAP.items()))
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, *argv], env=env, check=True)


if __name__ == "__main__":
    main()
