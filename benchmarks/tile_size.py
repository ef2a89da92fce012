"""Measure VDSR throughput on one device for several tile sizes.

The default CPU tile (``sruc.core.tiling.CPU_TILE``) comes from this measurement.
Tiles overlap by the receptive radius (20 px for VDSR), so small tiles waste
work on margins; large ones fall out of the CPU caches (a 64-channel bf16
feature map of a 512 px tile is 32 MB, of a 192 px tile 4.7 MB). The model
runs as ``sruc`` runs it (:func:`sruc.engine.pipeline.prepare_model`: precision,
channels-last, fused ReLU), on the Y-sized input of one image.

The CPU is often shared, so tile sizes are measured in interleaved rounds and
the best round of each is kept; the load average is printed with the result.
``--single`` times one interior tile (its input window with the margins, the
kept centre as output) instead of a whole image: short runs, so many rounds
fit and the best of them finds the machine's quiet moments.

    python benchmarks/tile_size.py [--size 1024] [--precision auto] [--rounds 5]
        [--tiles 128,192,256,320,384,512,768,0] [--device cpu] [--single]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from sruc.archs.vdsr import VDSR
from sruc.core.tiling import run_tiled
from sruc.engine.pipeline import prepare_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", default="1024", help="image edge, or WxH, in output pixels")
    parser.add_argument("--tiles", default="128,192,256,320,384,512,768,0", help="0 = none")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; best is kept")
    parser.add_argument("--batch", type=int, default=1, help="tiles per forward pass")
    parser.add_argument("--single", action="store_true", help="time one interior tile per run")
    args = parser.parse_args()
    if args.single:
        single(args)
        return

    w, _, h = args.size.partition("x")
    width, height = int(w), int(h or w)
    torch.manual_seed(0)
    pm = prepare_model(VDSR().eval(), device=args.device, precision=args.precision)
    x = torch.rand(1, 1, height, width)
    tiles = [int(t) for t in args.tiles.split(",")]
    print(
        f"VDSR-20 ({pm.precision}) on {pm.device}, {width}x{height}, "
        f"{torch.get_num_threads()} threads, best of {args.rounds} interleaved rounds"
    )
    best = dict.fromkeys(tiles, float("inf"))
    with torch.inference_mode():
        run_tiled(pm.forward, x[:, :, :128, :128], radius=20, tile=0, device=pm.device)  # warm-up
        for _ in range(args.rounds):
            for tile in tiles:
                t0 = time.perf_counter()
                run_tiled(pm.forward, x, radius=20, tile=tile, device=pm.device, batch=args.batch)
                _sync(pm.device)
                best[tile] = min(best[tile], time.perf_counter() - t0)
    top = min(best.values())
    for tile in tiles:
        mpx = width * height / 1e6 / best[tile]
        rel = top / best[tile]
        print(f"tile {tile or 'none':>5}: {best[tile]:7.3f} s  {mpx:6.3f} MP/s  {rel:6.1%} of best")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def single(args: argparse.Namespace) -> None:
    """Output pixels per second of one interior tile of each size (margins of 20 px)."""
    torch.manual_seed(0)
    pm = prepare_model(VDSR().eval(), device=args.device, precision=args.precision)
    tiles = [int(t) for t in args.tiles.split(",") if int(t) > 0]
    inputs = {t: torch.rand(1, 1, t + 40, t + 40, device=pm.device) for t in tiles}
    best = dict.fromkeys(tiles, float("inf"))
    print(
        f"VDSR-20 ({pm.precision}) on {pm.device}, one interior tile per run, "
        f"{torch.get_num_threads()} threads, best of {args.rounds} interleaved rounds"
    )
    with torch.inference_mode():
        for t in tiles:
            pm.forward(inputs[t])  # warm-up: kernel selection per shape
        for _ in range(args.rounds):
            for t in tiles:
                _sync(pm.device)
                t0 = time.perf_counter()
                pm.forward(inputs[t])
                _sync(pm.device)
                best[t] = min(best[t], time.perf_counter() - t0)
    top = max(t * t / best[t] for t in tiles)
    for t in tiles:
        rate = t * t / best[t]
        share = rate / top
        print(f"tile {t:>5}: {best[t] * 1e3:8.1f} ms  {rate / 1e6:6.3f} MP/s  {share:6.1%} of best")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
