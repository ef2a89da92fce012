"""Very large outputs: the banded path's peak memory and its speed against the whole image.

``speed``: one synthetic photo upscaled by the whole-image path and by the
banded one, interleaved, ``--repeat`` times each; prints the median seconds
and checks the two outputs are identical (the policy in
``sruc.engine.memory.choose_banded`` is chosen by these numbers).

``peak``: one ``sruc.upscale_file`` of a synthetic ``--size`` x ``--size`` photo
(or ``--width`` x ``--height``) to a PNG, by ``--path auto|banded|whole``; run
it under ``/usr/bin/time -v`` and read "Maximum resident set size". It prints
the estimate of ``sruc.engine.memory`` for both paths beside it.

    python benchmarks/big_output.py speed --size 1000 --scale 2 --repeat 3
    /usr/bin/time -v python benchmarks/big_output.py peak --size 3334 --scale 3
    /usr/bin/time -v python benchmarks/big_output.py peak --width 2000000 --height 1 --scale 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import sruc
from sruc.engine import memory
from sruc.files import images


def cpu_line() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    keep = [f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")]
    model = fields.get("Model name", "?").strip()
    return f"{model}, {torch.get_num_threads()} threads; {' '.join(keep)}"


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like 8-bit RGB image, made row band by row band (any size, little memory)."""
    rng = np.random.default_rng(seed)
    out = np.empty((height, width, 3), np.uint8)
    xx = np.arange(width, dtype=np.float32)[None, :]
    for y0 in range(0, height, 512):
        yy = np.arange(y0, min(y0 + 512, height), dtype=np.float32)[:, None]
        planes = [128 + 100 * np.sin(xx / 7) * np.cos(yy / 11), 128 + 90 * np.cos((xx + yy) / 9),
                  128 + 80 * np.sin(yy / 5 - xx / 13)]  # fmt: skip
        band = np.stack(planes, -1) + rng.normal(0, 12, (yy.shape[0], width, 3))
        out[y0 : y0 + yy.shape[0]] = np.clip(np.round(band), 0, 255)
    return out


def speed(args: argparse.Namespace) -> None:
    pic = images.from_pil(Image.fromarray(photo(args.size, args.size)))
    runs = {
        name: sruc.Upscaler(args.model, device="cpu", precision=args.precision, banded=flag)
        for name, flag in (("whole", False), ("banded", True))
    }
    warm = images.from_pil(Image.fromarray(photo(16, 16)))
    for up in runs.values():  # load and prepare the model outside the timing
        up.upscale_picture(warm, args.scale)
    times: dict[str, list[float]] = {name: [] for name in runs}
    outs = {}
    for _ in range(args.repeat):
        for name, up in runs.items():
            t0 = time.perf_counter()
            outs[name] = up.upscale_picture(pic, args.scale, depth=8).to_array(8)
            times[name].append(time.perf_counter() - t0)
    same = np.array_equal(outs["whole"], outs["banded"])
    print(f"{args.model} {args.size}x{args.size} x{args.scale:g}, {args.precision}; {cpu_line()}")
    for name, t in times.items():
        each = ", ".join(f"{x:.2f}" for x in t)
        print(f"  {name:6s} median {statistics.median(t):7.2f} s  ({each})")
    print(f"  identical outputs: {same}")


def peak(args: argparse.Namespace) -> None:
    width, height = args.width or args.size, args.height or args.size
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.png"
        Image.fromarray(photo(width, height)).save(src, compress_level=1)
        banded = {"auto": None, "banded": True, "whole": False}[args.path]
        up = sruc.Upscaler(args.model, device="cpu", precision=args.precision, banded=banded)
        t0 = time.perf_counter()
        dst = Path(tmp) / f"out.{args.ext}"
        result = up.upscale_file(src, dst, args.scale, max_pixels=None)
        seconds = time.perf_counter() - t0
        size = dst.stat().st_size
    w, h = result.output_size
    job = memory.Job(w, h, 3, args.scale, width * height * 3, 1, min(h, 256 + 2 * 20 + 8))
    print(f"{args.model} {width}x{height} x{args.scale:g} -> {w}x{h} ({w * h / 1e6:.1f} MP), "
          f"{args.path}, {result.precision}, {seconds:.0f} s, "
          f"{args.ext} {size / 1e6:.0f} MB")  # fmt: skip
    print(f"  estimate: whole {memory.upscale_bytes(w, h, 3) / 1e9:.2f} GB, "
          f"banded {memory.banded_bytes(job) / 1e9:.2f} GB; {cpu_line()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["speed", "peak"])
    parser.add_argument("--model", default="vdsr")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--path", choices=["auto", "banded", "whole"], default="auto")
    parser.add_argument("--ext", choices=["png", "jpg", "tif"], default="png")
    args = parser.parse_args()
    speed(args) if args.what == "speed" else peak(args)


if __name__ == "__main__":
    main()
