"""Measure VDSR throughput on the CPU for several tile sizes.

The default CPU tile (``sruc.tiling.CPU_TILE``) comes from this measurement:
tiles overlap by the receptive radius (20 px for VDSR), so small tiles waste
work on margins, while very large ones only cost memory.

    python benchmarks/tile_size.py [--size 768] [--tiles 128,256,384,512,768,0]
"""

from __future__ import annotations

import argparse
import time

import torch

from sruc.models import VDSR
from sruc.tiling import run_tiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=768, help="square image edge in pixels")
    parser.add_argument("--tiles", default="128,256,384,512,768,0", help="tile edges; 0 = none")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = VDSR().eval()
    x = torch.rand(1, 1, args.size, args.size)
    print(f"VDSR fp32 on CPU, {args.size}x{args.size}, {torch.get_num_threads()} threads")
    with torch.inference_mode():
        run_tiled(model, x[:, :, :128, :128], radius=20, tile=0)  # warm-up
        for tile in (int(t) for t in args.tiles.split(",")):
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                run_tiled(model, x, radius=20, tile=tile)
                best = min(best, time.perf_counter() - t0)
            mpx = args.size * args.size / 1e6 / best
            print(f"tile {tile or 'none':>5}: {best:6.2f} s  {mpx:6.3f} MP/s")


if __name__ == "__main__":
    main()
