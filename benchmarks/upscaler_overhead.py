"""Per-call overhead of the library API: 100 calls on a 64x64 image.

``before``: what ``sruc.upscale()`` did before the Upscaler existed: every call
loaded the checkpoint, re-hashed it against the registry, placed it on the
device and ran the precision probe (reproduced here by a fresh
``sruc.Upscaler`` per call). ``after``: one ``sruc.Upscaler`` for all calls,
which is also what ``sruc.upscale()`` now reuses. ``model`` is the pure model
time of the same call (``run_model`` on the prepared network), so
``after - model`` is what the API itself costs per image.

    python benchmarks/upscaler_overhead.py [--model vdsr] [--calls 100] [--precision auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import numpy as np
import torch
from PIL import Image

import sruc
from sruc.core.color import rgb_to_ycbcr
from sruc.core.resize import imresize
from sruc.engine.pipeline import run_model


def cpu_line() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = fields.get("Flags", "").split()
    keep = [f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")]
    return f"{model}, {torch.get_num_threads()} threads; {' '.join(keep)}"


def interleaved(fns: dict[str, object], calls: int) -> dict[str, float]:
    """Median seconds per call of each function, the calls interleaved so that a busy
    machine slows them all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # type: ignore[operator]  # warm-up
    for _ in range(calls):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()  # type: ignore[operator]
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vdsr")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    kw = {"device": "cpu", "precision": args.precision}

    up = sruc.Upscaler(args.model, **kw)
    pm = up.prepared(args.scale)
    rgb = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].double() / 255
    y = rgb_to_ycbcr(imresize(rgb, args.scale).float())[:, :1].contiguous()

    def model() -> None:
        with torch.inference_mode():
            run_model(pm, y)

    t = interleaved(
        {
            "before": lambda: sruc.Upscaler(args.model, **kw).upscale(image, args.scale),
            "after": lambda: up.upscale(image, args.scale),
            "model": model,
        },
        args.calls,
    )
    before, after, model_s = t["before"], t["after"], t["model"]
    print(f"# {cpu_line()}")
    print(f"# {args.model} x{args.scale:g}, 64x64 input, {args.calls} calls, {pm.precision}")
    print("| | ms per call | overhead over the model (ms) |")
    print("|---|---:|---:|")
    for name, t_ in (("before (load + prepare per call)", before), ("after (one Upscaler)", after)):
        print(f"| {name} | {t_ * 1e3:.1f} | {(t_ - model_s) * 1e3:.1f} |")
    print(f"| model alone (run_model) | {model_s * 1e3:.1f} | - |")
    print(f"# median of {args.calls} interleaved calls each; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
