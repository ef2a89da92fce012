"""Throughput of sruc against a naive reference, on one device.

The reference is written the way research code runs a model: float32, the
whole image at once, contiguous NCHW, no tiling, ``model(x)`` under
``torch.no_grad()``. sruc runs as ``sruc up``/``sruc batch`` run it
(:func:`sruc.engine.pipeline.prepare_model` + :func:`sruc.engine.pipeline.run_model`:
precision ``auto``, channels-last, fused ReLU on CPUs, tiles, several tiles
per forward on GPUs). Reported:

1. megapixels of output per second for each, on the same input, measured in
   interleaved rounds in one process (best round of each: the CPU is shared),
   their ratio, and the PSNR of each against the ground truth;
2. the device's own convolution peak: the best time per pixel of one 3x3
   64->64 convolution in the reduced dtype (bf16 on CPUs) at several sizes,
   turned into VDSR megapixels per second as
   1 / (18 x t(64->64) + t(1->64) + t(64->1)); and sruc's share of it;
3. peak resident memory of each, each measured in a fresh subprocess;
4. the Set5 PSNR change of sruc's precision against float32, by the papers'
   protocol, if ``../shared/datasets/eval/Set5`` is there;
5. a batch of small images through :func:`sruc.batch.run.run_batch` (decode and
   encode on background threads): wall time against the pure model time (the
   same pictures, decoded beforehand, through the model alone), and a plain
   sequential read/model/write loop for comparison.

    python benchmarks/throughput.py [--device cpu|cuda] [--size 1024x1024]
        [--model vdsr|random|PATH] [--precision auto] [--rounds 3] [--batch-images 20]
        [--batch-size 128x128] [--json results.json]

The load average is printed with the numbers: rerun on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sruc.archs.vdsr import VDSR
from sruc.batch import run_batch
from sruc.core.protocol import PEAK, degrade, evaluate_image, interpolate, luma, quantize
from sruc.engine import pipeline
from sruc.engine import precision as policy
from sruc.files import images
from sruc.files.images import read_image, write_image
from sruc.zoo.registry import LoadedModel, load_model

SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "eval" / "Set5"
#: VDSR: 18 hidden 64->64 layers between the 1->64 input and the 64->1 output layer.
HIDDEN_LAYERS = 18
#: Targets of the issue, for the verdict lines.
TARGET_SPEEDUP = 3.0
TARGET_PEAK_SHARE = 0.70
TARGET_PSNR_DB = 0.02
TARGET_BATCH_OVERHEAD = 0.10


def parse_size(text: str) -> tuple[int, int]:
    """``"1024"`` or ``"3840x2160"`` -> (width, height)."""
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like 8-bit RGB image: smooth gradients, texture and some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack(
        [
            128 + 100 * np.sin(xx / 37.0 + seed) * np.cos(yy / 53.0),
            128 + 90 * np.cos((xx + yy) / 29.0) * np.sin(xx / 7.0),
            128 + 80 * np.sin(yy / 11.0 - xx / 61.0),
        ],
        axis=-1,
    )
    base += rng.normal(0, 6, size=base.shape)
    return np.clip(np.round(base), 0, 255).astype(np.uint8)


def load(spec: str) -> LoadedModel:
    """``random``: a full-size VDSR (20 x 64) with seeded random weights; else what
    ``sruc up --model`` takes (``vdsr``: the bundled release weights).

    The weights do not change the speed of the convolutions, but they do change
    what the outputs look like, and with it the PNG encoding time in the batch
    part: random weights saturate, and a flat output encodes several times faster.
    """
    if spec == "random":
        torch.manual_seed(0)
        return load_model(VDSR().eval())
    return load_model(spec)


def test_input(width: int, height: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR Y on 0..255 (1, H, W), network input (1, 1, H, W) in [0, 1]), by the protocol."""
    rgb = torch.from_numpy(synthetic_rgb(width, height)).permute(2, 0, 1)
    hr = luma(rgb)[:, : height // scale * scale, : width // scale * scale]
    up = interpolate(degrade(hr, scale), (int(hr.shape[-2]), int(hr.shape[-1])))
    return hr, (up / PEAK).to(torch.float32)[None]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(
    fns: dict[str, Callable[[], Any]], rounds: int, device: torch.device
) -> dict[str, float]:
    """Best wall time of each function, in interleaved rounds (fair under a changing load)."""
    best = dict.fromkeys(fns, math.inf)
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def conv_peak(
    device: torch.device, dtype: torch.dtype, sizes: list[int], rounds: int
) -> dict[str, Any]:
    """Best seconds per pixel of one 3x3 conv (64->64, 1->64, 64->1) in ``dtype``, channels-last."""
    cl = torch.channels_last
    g = torch.Generator().manual_seed(0)
    # The input layer also as 4->64 with three zero channels, the way sruc runs
    # it on CPUs (oneDNN's one-channel path is slow): the peak takes the faster.
    layers = {
        "64->64": torch.randn(64, 64, 3, 3, generator=g),
        "1->64": torch.randn(64, 1, 3, 3, generator=g),
        "4->64": torch.randn(64, 4, 3, 3, generator=g),
        "64->1": torch.randn(1, 64, 3, 3, generator=g),
    }
    per_px: dict[str, float] = {}
    by_size: dict[str, dict[int, float]] = {k: {} for k in layers}
    with torch.inference_mode():
        for s in sizes:
            fns = {}
            for name, w in layers.items():
                cin = w.shape[1]
                x = torch.rand(1, cin, s, s, generator=g).to(device, dtype)
                x = x.contiguous(memory_format=cl)
                wd = w.to(device, dtype).contiguous(memory_format=cl)
                b = torch.zeros(w.shape[0], device=device, dtype=dtype)
                F.conv2d(x, wd, b, padding=1)  # warm-up: kernel selection
                fns[name] = lambda x=x, wd=wd, b=b: F.conv2d(x, wd, b, padding=1)
            for name, t in best_of(fns, rounds, device).items():
                by_size[name][s] = t / (s * s)
    for name in layers:
        per_px[name] = min(by_size[name].values())
    thin_in = min(per_px["1->64"], per_px["4->64"])
    vdsr_per_px = HIDDEN_LAYERS * per_px["64->64"] + thin_in + per_px["64->1"]
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "conv64_mpx_s": {s: 1e-6 / t for s, t in by_size["64->64"].items()},
        "conv64_best_mpx_s": 1e-6 / per_px["64->64"],
        "thin_in_mpx_s": 1e-6 / per_px["1->64"],
        "thin_in_padded_mpx_s": 1e-6 / per_px["4->64"],
        "thin_out_mpx_s": 1e-6 / per_px["64->1"],
        "vdsr_peak_mpx_s": 1e-6 / vdsr_per_px,
    }


def rss_worker(args: argparse.Namespace) -> None:
    """One pass of one method in this (fresh) process; prints its peak memory as JSON."""
    if args.png_level is not None:
        images.PNG_COMPRESS_LEVEL = args.png_level
    device = torch.device(args.device)
    lm = load(args.model)
    w, h = parse_size(args.size)
    _, x = test_input(w, h, args.scale)
    base = peak_rss_mb()
    if args.rss == "naive":
        net = lm.module.to(device).eval()
        with torch.no_grad():
            net(x.to(device)).cpu()
    else:
        pm = pipeline.prepare_model(lm, device=device, precision=args.precision, engine=args.engine)
        with torch.inference_mode():
            pipeline.run_model(pm, x.to(device) if device.type == "cpu" else x)
    sync(device)
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "before_mb": base, "gpu_peak_mb": gpu}))


def measure_rss(args: argparse.Namespace, method: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--rss", method, "--device", args.device, "--size", args.size]
    cmd += ["--model", args.model, "--precision", args.precision, "--scale", str(args.scale)]
    cmd += ["--engine", args.engine]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def set5_delta(lm: LoadedModel, pm: pipeline.PreparedModel) -> dict[int, dict[str, float]]:
    """Mean Set5 PSNR, float32 reference vs sruc's prepared model, per scale."""
    files = sorted(SET5.glob("*.png"))
    hrs = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]
    ref = lm.module.to(pm.device).eval()
    out: dict[int, dict[str, float]] = {}

    def on(net: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: net(x.to(pm.device)).cpu()

    with torch.inference_mode():
        for s in (2, 3, 4):
            a = [evaluate_image(hr.double(), s, on(ref)).psnr for hr in hrs]
            b = [evaluate_image(hr.double(), s, on(pm.forward)).psnr for hr in hrs]
            out[s] = {"fp32": float(np.mean(a)), "sruc": float(np.mean(b))}
            out[s]["delta"] = out[s]["sruc"] - out[s]["fp32"]
            worst = max(abs(p - q) for p, q in zip(a, b, strict=True))
            out[s]["max_abs_delta_per_image"] = float(worst)
    return out


def batch_run(args: argparse.Namespace, pm: pipeline.PreparedModel) -> dict[str, Any]:
    """N small PNGs three ways, in interleaved rounds (order alternating), best of each.

    ``batch``: :func:`sruc.batch.run.run_batch`, decode and encode on background
    threads; ``sequential``: read, upscale, write one after another;
    ``model``: the pure model time, :func:`sruc.engine.pipeline.upscale_picture` on
    pictures decoded beforehand, no I/O at all. The target compares the first
    with the last.
    """
    w, h = parse_size(args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(args.batch_images):
            Image.fromarray(synthetic_rgb(w, h, seed=i)).save(src / f"img{i:03d}.png")
        sources = sorted(src.glob("*.png"))
        pictures = [read_image(f) for f in sources]
        runs = 0

        def fresh() -> Path:
            nonlocal runs
            runs += 1
            out = Path(tmp) / f"out{runs}"
            out.mkdir()
            return out

        def batch() -> None:
            report = run_batch([src], fresh(), args.scale, model=pm)
            assert report.exit_code == 0, report.to_json()

        def sequential() -> None:
            out = fresh()
            for f in sources:
                pic = pipeline.upscale_picture(read_image(f), args.scale, model=pm)
                write_image(pic, out / f"{f.stem}_x{args.scale}.png")

        def model() -> None:
            for pic in pictures:
                pipeline.upscale_picture(pic, args.scale, model=pm)

        fns = {"batch": batch, "sequential": sequential, "model": model}
        batch()  # warm-up: kernels for every tile shape
        best = dict.fromkeys(fns, math.inf)
        for r in range(args.rounds):
            for name in list(fns) if r % 2 == 0 else list(reversed(fns)):
                t0 = time.perf_counter()
                fns[name]()
                best[name] = min(best[name], time.perf_counter() - t0)
    return {
        "images": args.batch_images,
        "size": f"{w}x{h} -> x{args.scale}",
        "batch_s": best["batch"],
        "sequential_s": best["sequential"],
        "model_s": best["model"],
        "overhead": best["batch"] / best["model"] - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--size", default="1024x1024", help="output size WxH of the test image")
    parser.add_argument(
        "--model", default="vdsr", help="vdsr (bundled), random (full-size VDSR) or a checkpoint"
    )
    parser.add_argument("--precision", default="auto", choices=policy.PRECISIONS)
    parser.add_argument("--engine", default="auto", help="auto, torch, winograd, ... (--engine)")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best is kept")
    parser.add_argument(
        "--conv-sizes", default="192,256,296,384,512,1024", help="edges for the conv peak"
    )
    parser.add_argument("--peak-rounds", type=int, default=20, help="rounds for the conv peak")
    parser.add_argument("--batch-images", type=int, default=20, help="0 skips the batch part")
    parser.add_argument("--batch-size", default="128x128", help="input size of the batch images")
    parser.add_argument("--no-rss", action="store_true", help="skip the subprocess memory runs")
    parser.add_argument("--batch-only", action="store_true", help="only the batch of small images")
    parser.add_argument(
        "--png-level", type=int, default=None, help="PNG zlib level (default: sruc's)"
    )
    parser.add_argument("--no-set5", action="store_true", help="skip the Set5 PSNR check")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--rss", choices=["naive", "sruc"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss:
        rss_worker(args)
        return

    if args.png_level is not None:
        images.PNG_COMPRESS_LEVEL = args.png_level
    device = torch.device(args.device)
    lm = load(args.model)
    pm = pipeline.prepare_model(lm, device=device, precision=args.precision, engine=args.engine)
    naive = load(args.model).module.to(device).eval()
    w, h = parse_size(args.size)
    hr, x = test_input(w, h, args.scale)
    xd = x.to(device)
    mpx = x.shape[-1] * x.shape[-2] / 1e6
    load_avg = os.getloadavg()
    print(
        f"sruc throughput: {args.model} on {device} ({pm.precision}, engine {pm.engine}), "
        f"{x.shape[-1]}x{x.shape[-2]} "
        f"output, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}"
    )
    results: dict[str, Any] = {
        "device": str(device), "precision": pm.precision, "engine": pm.engine
    }  # fmt: skip
    results["model"] = args.model

    if args.batch_only:
        b = batch_run(args, pm)
        print(
            f"  batch of {b['images']} ({b['size']}, PNG level {images.PNG_COMPRESS_LEVEL}): "
            f"run_batch {b['batch_s']:.2f} s, pure model {b['model_s']:.2f} s: overhead "
            f"{b['overhead']:+.1%} (target <= {TARGET_BATCH_OVERHEAD:.0%}); sequential "
            f"{b['sequential_s']:.2f} s"
        )
        return

    def run_naive() -> torch.Tensor:
        with torch.no_grad():
            return naive(xd).cpu()

    def run_sruc() -> torch.Tensor:
        with torch.inference_mode():
            return pipeline.run_model(pm, xd)

    outs = {"naive": run_naive(), "sruc": run_sruc()}  # warm-up, and the outputs compared
    times = best_of({"naive": run_naive, "sruc": run_sruc}, args.rounds, device)
    speed = {k: mpx / t for k, t in times.items()}
    psnr_vs_hr = {}
    from sruc.core.metrics import psnr

    for k, y in outs.items():
        psnr_vs_hr[k] = psnr(hr, quantize(y[0].double() * PEAK), shave=args.scale, y_only=False)
    between = psnr(
        quantize(outs["naive"][0].double() * PEAK),
        quantize(outs["sruc"][0].double() * PEAK),
        y_only=False,
    )
    results["throughput"] = {
        "mpx_s": speed,
        "ratio": speed["sruc"] / speed["naive"],
        "psnr_vs_hr_db": psnr_vs_hr,
        "psnr_delta_db": psnr_vs_hr["sruc"] - psnr_vs_hr["naive"],
        "psnr_between_db": between,
    }
    print(f"  naive reference : {speed['naive']:7.3f} MP/s  ({times['naive']:.2f} s)")
    print(f"  sruc            : {speed['sruc']:7.3f} MP/s  ({times['sruc']:.2f} s)")
    ratio = speed["sruc"] / speed["naive"]
    print(f"  ratio           : {ratio:7.2f}x  (target >= {TARGET_SPEEDUP:g}x)")
    print(
        f"  PSNR vs ground truth: naive {psnr_vs_hr['naive']:.4f} dB, sruc "
        f"{psnr_vs_hr['sruc']:.4f} dB (delta {psnr_vs_hr['sruc'] - psnr_vs_hr['naive']:+.4f}); "
        f"sruc vs naive {between:.2f} dB"
    )

    dtype = torch.float32 if pm.precision == "fp32" else policy.dtype_of(pm.precision)
    if device.type == "cpu" and pm.precision == "fp32" and policy.cpu_has_native_bf16():
        dtype = torch.bfloat16
    sizes = [int(s) for s in args.conv_sizes.split(",")]
    peak = conv_peak(device, dtype, sizes, args.peak_rounds)
    share = speed["sruc"] / peak["vdsr_peak_mpx_s"]
    results["peak"] = {**peak, "sruc_share": share}
    per_size = ", ".join(f"{s}px {v:.2f}" for s, v in peak["conv64_mpx_s"].items())
    print(
        f"  conv peak ({peak['dtype']}): one 64->64 3x3 conv {per_size} MP/s; "
        f"1->64 {peak['thin_in_mpx_s']:.1f} (as 4->64: {peak['thin_in_padded_mpx_s']:.1f}), "
        f"64->1 {peak['thin_out_mpx_s']:.1f} MP/s"
    )
    print(
        f"  VDSR at conv peak: {peak['vdsr_peak_mpx_s']:.3f} MP/s; sruc reaches {share:.0%} "
        f"(target >= {TARGET_PEAK_SHARE:.0%})"
    )

    if not args.no_rss:
        rss = {m: measure_rss(args, m) for m in ("naive", "sruc")}
        results["rss"] = rss
        for m, r in rss.items():
            gpu = f", GPU peak {r['gpu_peak_mb']:.0f} MB" if r["gpu_peak_mb"] is not None else ""
            print(
                f"  peak RSS {m:5s}: {r['peak_rss_mb']:7.0f} MB "
                f"(after loading: {r['before_mb']:.0f} MB){gpu}"
            )

    if not args.no_set5 and SET5.is_dir() and lm.arch != "bicubic":
        d = set5_delta(lm, pm)
        results["set5"] = d
        cells = ", ".join(f"x{s} {v['fp32']:.3f} dB {v['delta']:+.4f}" for s, v in d.items())
        worst = max(abs(v["delta"]) for v in d.values())
        print(f"  Set5 PSNR, fp32 and sruc's change: {cells} (target |delta| <= {TARGET_PSNR_DB})")
        print(f"    worst |delta| {worst:.4f} dB")

    if args.batch_images:
        b = batch_run(args, pm)
        results["batch"] = b
        print(
            f"  batch of {b['images']} ({b['size']}): run_batch {b['batch_s']:.2f} s, pure model "
            f"{b['model_s']:.2f} s: overhead {b['overhead']:+.1%} (target <= "
            f"{TARGET_BATCH_OVERHEAD:.0%}); sequential read/model/write {b['sequential_s']:.2f} s"
        )
    load_avg = os.getloadavg()
    results["load_average_end"] = load_avg
    print(f"  load average at the end {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
