"""Measurements behind ``sruc train``'s defaults, re-runnable on any machine.

Three parts, each printing a Markdown table:

``loader``
    Patches per second of the patch cache alone (``PatchCache.batch``) versus
    one training step of the model: shows whether data loading can starve the
    model.
``speed``
    Training steps per second of a VDSR (full size by default) on 41x41 patches
    for several batch sizes: float32 vs bf16 autocast, with and without
    channels_last, and with convolution + ReLU fused as ``sruc train`` runs
    them on CPUs. Decides ``--precision auto`` and ``--channels-last``.
``recipes``
    Each recipe trained for the same wall-clock budget on a reduced data set,
    then its validation PSNR: decides ``DEFAULT_RECIPE``. The number of steps
    is set from a calibration of the step time, so that every schedule runs to
    its end within the budget.

Examples::

    python benchmarks/train_recipes.py loader --data ../shared/datasets/train/T91
    python benchmarks/train_recipes.py speed --batch 16,32,64 --repeat 5
    python benchmarks/train_recipes.py recipes --data ../shared/datasets/train/T91 --minutes 3

Timings on a shared machine are noisy: each cell is the median of ``--repeat``
runs, and the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sruc import archs as models
from sruc.engine.device import tune_cpu_allocator
from sruc.engine.fused import training_forward
from sruc.train import RECIPES, TrainConfig, train
from sruc.train.data import PatchCache, load_images

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "train"


def _conditions() -> str:
    load = os.getloadavg()
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)"
    )


def _step_fn(
    net: torch.nn.Module,
    batch: int,
    patch: int,
    bf16: bool,
    channels_last: bool,
    fused: bool = False,
) -> Any:
    """One Adam training step on random patches, as in sruc.train.loop (loss in float32);
    ``fused``: the forward of :func:`sruc.engine.fused.training_forward`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, patch, patch).to(memory_format=fmt)
    y = torch.rand(batch, 1, patch, patch).to(memory_format=fmt)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    forward = training_forward(net, torch.bfloat16 if bf16 else None) if fused else None
    if fused and forward is None:
        raise SystemExit("no fused convolution in this PyTorch build")

    def step() -> None:
        if forward is not None:
            out = forward(x)
        else:
            with autocast:
                out = net(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _median_seconds(fn: Any, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_loader(args: argparse.Namespace) -> None:
    images = load_images(args.data, min_size=41 + 3)
    t0 = time.perf_counter()
    cache = PatchCache(images.images, [2, 3, 4], [1.0, 0.7, 0.5], 41, seed=0)
    build = time.perf_counter() - t0
    print(
        f"{len(images)} images from {args.data}: {len(cache)} pairs, "
        f"{cache.nbytes / 2**20:.0f} MiB, built in {build:.1f} s; {_conditions()}\n"
    )
    print("| batch | loader patches/s | model | precision | model patches/s | loader share |")
    print("|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batch.split(",")):
        counter = iter(range(10**9))
        t_load = _median_seconds(
            lambda b=batch, c=counter: cache.batch(next(c), b), args.repeat * 10
        )
        for name, cfg in (("VDSR 20x64", {}), ("VDSR 10x32", {"depth": 10, "width": 32})):
            torch.manual_seed(0)
            fn = _step_fn(models.build("vdsr", cfg), batch, 41, bf16=True, channels_last=True)
            t_step = _median_seconds(fn, args.repeat)
            print(
                f"| {batch} | {batch / t_load:,.0f} | {name} | bf16 | {batch / t_step:,.1f} "
                f"| {t_load / (t_load + t_step):.2%} |"
            )


def bench_speed(args: argparse.Namespace) -> None:
    cfg = {"depth": args.depth, "width": args.width}
    print(f"VDSR {cfg}, 41x41 patches, Adam step; {_conditions()}\n")
    print("| batch | precision | channels_last | conv + ReLU fused | steps/s | patches/s |")
    print("|---|---|---|---|---|---|")
    variants = [(False, False, False), (False, True, False), (False, True, True)]
    variants += [(True, False, False), (True, True, False), (True, True, True)]
    for batch in (int(b) for b in args.batch.split(",")):
        for bf16, cl, fused in variants:
            if args.only_fast and not (bf16 and cl):
                continue
            torch.manual_seed(0)
            fn = _step_fn(models.build("vdsr", cfg), batch, 41, bf16, cl, fused)
            t = _median_seconds(fn, args.repeat)
            print(
                f"| {batch} | {'bf16' if bf16 else 'fp32'} | {'yes' if cl else 'no'} "
                f"| {'yes' if fused else 'no'} | {1 / t:.3f} | {batch / t:.1f} |",
                flush=True,
            )


#: A variant measured beside the shipped recipes: Adam with the paper's VDSR init.
RECIPES.setdefault(
    "adam-paper-init", replace(RECIPES["adam"], name="adam-paper-init", identity_start=False)
)
VDSR_SMALL = {"depth": 10, "width": 32}
#: (label, model, model_config, scales, recipe, lr override)
RUNS: list[tuple[str, str, dict[str, Any], tuple[int, ...], str, float | None]] = [
    ("VDSR 10x32", "vdsr", VDSR_SMALL, (2, 3, 4), "adam", None),
    ("VDSR 10x32", "vdsr", VDSR_SMALL, (2, 3, 4), "adam-paper-init", 1e-3),
    ("VDSR 10x32", "vdsr", VDSR_SMALL, (2, 3, 4), "adam-paper-init", 1e-4),
    ("VDSR 10x32", "vdsr", VDSR_SMALL, (2, 3, 4), "vdsr-paper", None),
    ("SRCNN 9-5-5", "srcnn", {}, (3,), "adam", 1e-3),
    ("SRCNN 9-5-5", "srcnn", {}, (3,), "adam", 1e-4),
    ("SRCNN 9-5-5", "srcnn", {}, (3,), "srcnn-paper", None),
]


def bench_recipes(args: argparse.Namespace) -> None:
    root = Path(args.out)
    budget = args.minutes * 60
    print(f"{args.minutes:g} min per run on {args.data}; {_conditions()}\n", flush=True)
    rows = []
    pace: dict[str, float] = {}
    for label, model, cfg, scales, recipe, lr in RUNS:
        if args.only and recipe not in args.only.split(","):
            continue
        if model not in args.models.split(","):
            continue
        common = dict(
            data=str(args.data), model=model, model_config=cfg, scales=scales, recipe=recipe,
            lr=lr, val_split=0.1, seed=0, save_every_minutes=1e9, log_every=10**9,
        )  # fmt: skip
        if label not in pace:  # seconds per step, training only, from a short calibration run
            out = root / "calibrate"
            shutil.rmtree(out, ignore_errors=True)
            train(TrainConfig(out=str(out), steps=10**6, val_every=10**6, stop_after=30, **common))
            rec = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            batch = 64 if model == "vdsr" else 128
            pace[label] = batch / next(r for r in rec if r["kind"] == "train")["patches_per_s"]
        # Validations cost time too: five of them, budgeted at about 10%.
        steps = max(10, int(0.9 * budget / pace[label]))
        out = root / f"{model}-{recipe}-{lr or 'default'}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.monotonic()
        result = train(
            TrainConfig(out=str(out), steps=steps, val_every=max(1, steps // 5), **common)
        )
        final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        gain = {s: final["psnr"][str(s)] - result.bicubic_psnr[s] for s in scales}
        rows.append(
            f"| {label} | {recipe} | {lr or RECIPES[recipe].lr:g} | {steps} "
            f"| {time.monotonic() - t0:.0f} | {final['psnr_mean']:.2f} "
            f"| {' / '.join(f'{g:+.2f}' for g in gain.values())} |"
        )
        print(rows[-1], flush=True)
    print("\n| model | recipe | lr | steps | seconds | final val PSNR | gain over bicubic |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("loader", help="patch cache vs model step")
    p.add_argument("--data", type=Path, default=SHARED / "T91")
    p.add_argument("--batch", default="16,64")
    p.add_argument("--repeat", type=int, default=3)
    p = sub.add_parser("speed", help="fp32 vs bf16, channels_last")
    p.add_argument("--batch", default="16,32,64")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only-fast", action="store_true", help="only bf16 + channels_last rows")
    p = sub.add_parser("recipes", help="recipes for a fixed wall-clock budget")
    p.add_argument("--data", type=Path, default=SHARED / "T91")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--only", default="", help="comma-separated recipe names")
    p.add_argument("--models", default="vdsr,srcnn", help="comma-separated architectures")
    p.add_argument("--out", default="runs/bench-recipes")
    args = parser.parse_args()
    tune_cpu_allocator()  # as sruc train does
    {"loader": bench_loader, "speed": bench_speed, "recipes": bench_recipes}[args.what](args)


if __name__ == "__main__":
    main()
