"""Throughput by thread count on a machine where another process keeps a core busy.

Two workloads, each run in a fresh process per setting so that no OpenMP pool
is shared, in interleaved rounds (so a change in the machine's load hits every
setting alike), median of the rounds:

``up``
    ``sruc.Upscaler("vdsr")`` (what ``sruc up`` runs) on a 96x96 RGB image x2:
    output megapixels per second over ``--images`` images after one warm-up.
``train``
    ``sruc.train`` of a 10x32 VDSR (batch 64, 41x41 patches, the defaults of
    ``sruc train`` otherwise) on synthetic images: patches per second over the
    steps after the first ``--warmup``.

Settings: ``default`` (no count given: :func:`sruc.engine.threads.default_threads`)
and each count of ``--threads``. With ``--busy N``, N busy-looping Python
processes run during the measurement (pinned to CPU 0 where the OS allows):
for a quiet machine; the development machine is busy already.

Examples::

    python benchmarks/threads_busy.py                     # default vs 1 vs 2
    python benchmarks/threads_busy.py --busy 1 --rounds 5 # bring your own busy core
    flock /work/cpu-heavy.lock python benchmarks/threads_busy.py

Prints a Markdown table with the conditions (CPUs, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _up(threads: int | None, images: int) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    import sruc

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    up = sruc.Upscaler("vdsr", device="cpu", threads=threads)
    up.upscale(img, 2)  # warm-up: load, prepare, probe
    started = time.perf_counter()
    for _ in range(images):
        up.upscale(img, 2)
    seconds = time.perf_counter() - started
    return {"rate": images * 192 * 192 / 1e6 / seconds, "unit": "MP/s"}


def _train(threads: int | None, steps: int, warmup: int) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    from sruc.train import TrainConfig, train

    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "images"
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(8):
            pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / f"{i}.png")
        cfg = TrainConfig(
            data=str(data), out=str(Path(tmp) / "run"), model="vdsr",
            model_config={"depth": 10, "width": 32}, steps=steps, batch_size=64,
            val_every=steps, val_crop=32, device="cpu", threads=threads,
        )  # fmt: skip

        def progress(event: Any) -> None:
            if event.kind == "step":
                times.append(time.perf_counter())

        train(cfg, progress=progress)
    measured = times[warmup:]
    rate = 64 * (len(measured) - 1) / (measured[-1] - measured[0])
    return {"rate": rate, "unit": "patches/s"}


def _child(args: argparse.Namespace) -> None:
    import torch

    threads = None if args.setting == "default" else int(args.setting)
    if args.work == "up":
        result = _up(threads, args.images)
    else:
        result = _train(threads, args.steps, args.warmup)
    result["torch_threads"] = torch.get_num_threads()
    print(json.dumps(result))


def _busy_loops(count: int) -> list[subprocess.Popen[bytes]]:
    code = (
        "import os\n"
        "try: os.sched_setaffinity(0, {0})\n"
        "except (AttributeError, OSError): pass\n"
        "while True: pass\n"
    )
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def _run_child(work: str, setting: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--work", work, "--setting", setting,
           "--images", str(args.images), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("OMP_NUM_THREADS", None)  # the policy decides; --threads N overrides it
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _conditions() -> str:
    from sruc.engine.threads import available_cpus, cgroup_cpus, default_threads

    load = os.getloadavg()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return (
        f"{os.cpu_count()} CPUs, {available_cpus()} available to this process "
        f"(cgroup quota: {cgroup_cpus() or 'none'}), default threads "
        f"{default_threads(env)}; load average {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f} (1/5/15 min) at the end"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", choices=["up", "train", "both"], default="both")
    p.add_argument("--threads", default="1,2", help="explicit counts to compare with default")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=6, help="images per up measurement")
    p.add_argument("--steps", type=int, default=40, help="training steps per measurement")
    p.add_argument("--warmup", type=int, default=8, help="training steps not timed")
    p.add_argument("--busy", type=int, default=0, help="busy-looping processes to start")
    p.add_argument(
        "--settle", type=float, default=None,
        help="seconds between starting the busy loops and measuring, so the one-minute "
        "load average (which the default thread count reads) sees them [default: 90 "
        "with --busy, else 0]",
    )  # fmt: skip
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--setting", default="default", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    sys.path.insert(0, str(ROOT / "src"))
    settings = ["default", *[s.strip() for s in args.threads.split(",") if s.strip()]]
    works = ["up", "train"] if args.work == "both" else [args.work]
    busy = _busy_loops(args.busy)
    settle = args.settle if args.settle is not None else (90.0 if args.busy else 0.0)
    if busy and settle > 0:
        print(f"letting the load average see the busy loop(s): {settle:.0f} s", file=sys.stderr)
        time.sleep(settle)
    rates: dict[tuple[str, str], list[float]] = {}
    used: dict[tuple[str, str], int] = {}
    try:
        for r in range(args.rounds):
            for work in works:
                for setting in settings:
                    res = _run_child(work, setting, args)
                    rates.setdefault((work, setting), []).append(res["rate"])
                    used[(work, setting)] = res["torch_threads"]
                    print(f"round {r + 1} {work} {setting}: {res['rate']:.3f} {res['unit']}",
                          file=sys.stderr)  # fmt: skip
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    print(f"\n{_conditions()}; {args.busy} busy loop(s) started by this script\n")
    print("| workload | threads | torch threads | median | rounds |")
    print("|---|---|---|---|---|")
    for work in works:
        unit = "MP/s" if work == "up" else "patches/s"
        for setting in settings:
            values = rates[(work, setting)]
            cells = " / ".join(f"{v:.3g}" for v in values)
            print(f"| {work} | {setting} | {used[(work, setting)]} | "
                  f"{statistics.median(values):.3g} {unit} | {cells} |")  # fmt: skip


if __name__ == "__main__":
    main()
