"""Which route runs VDSR fastest on this CPU, side by side, with its Set5 PSNR change.

Routes (VDSR 20 x 3x3 x 64, the release weights, one square tile, float32 in and out):

- naive fp32: the plain nn.Module, NCHW, whole tile (the reference, 1.00x);
- sruc --engine torch fp32: engine/fused.ConvChain (oneDNN direct, channels-last): exact tiles;
- sruc --engine winograd: ConvChain with the 18 middle layers through engine/winograd.py
  (route (b) of issue 25): F(6x6,3x3) compiled from engine/winograd.c, first and last layers
  included (engine/native.py; what `auto` runs in fp32) and, as a second route, F(4x4,3x3)
  with its transforms written as PyTorch additions (what runs where no C compiler works);
- sruc --engine nnpack: ConvChain with NNPACK's Winograd F(6x6,3x3) where it initialises;
- sruc bf16 winograd: what `auto` runs where the CPU has bf16 and the transforms are
  compiled: the Winograd layers' products in bf16, the rest in fp32;
- sruc --engine torch bf16: ConvChain in bf16, direct (where the CPU can run bf16 under
  the caps);
- onnxruntime fp32, openvino fp32: sruc's engines (engine/runtimes.py), the graph from
  zoo/export.py;
- openvino bf16 hint: OpenVINO with INFERENCE_PRECISION_HINT=bf16 (not an sruc route).

Each is timed best-of-N, interleaved (the routes share the machine's noise alike), and scored
on Set5 by sruc's protocol (core/protocol.evaluate_image: 8-bit LR by MATLAB bicubic, Y,
shave = scale) against naive fp32 ("PSNR change"). It also prints the bf16 peak: the best of
torch's (oneDNN) 3x3 64->64 bf16 convolutions on the same tile, and the direct VDSR bf16's
share of it (Winograd's "GFLOP/s" count the direct convolution's operations, so they can pass
the peak: it does fewer).

Run it natively and under the AVX2 cap (caps PyTorch's oneDNN and ATen kernels, MKL's GEMM,
OpenVINO's oneDNN and sruc's compiled kernels; ONNX Runtime's MLAS has no cap, NNPACK has no
AVX-512 kernels); `--both` does the two in one command (the cap in a second process, since the
caps are read when the libraries load):

    env OMP_NUM_THREADS=1 python benchmarks/engines.py --both
    env OMP_NUM_THREADS=1 ONEDNN_MAX_CPU_ISA=AVX2 \\
        ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/engines.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

Route = Callable[[torch.Tensor], torch.Tensor]
CAP_VARS = (
    "ONEDNN_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "OMP_NUM_THREADS",
)
#: The AVX2 cap, as `--both` sets it for its second run.
AVX2_CAP = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "eval" / "Set5"


# --- routes that are not sruc's ------------------------------------------------------------


def openvino_bf16(data: bytes, threads: int) -> Route:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(data)
    config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads}  # fmt: skip
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return lambda x: torch.from_numpy(request.infer({0: x.numpy()})[0].copy())


def onnxruntime_int8(data: bytes, threads: int, folder: str) -> Route:
    """ONNX Runtime on an int8 graph (QDQ, per-channel weights, uint8 activations),
    calibrated on sruc's synthetic probe images (engine/prepared.probe_image) at x3,
    never on the test set."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from sruc.core.protocol import PEAK, degrade, interpolate
    from sruc.engine.prepared import probe_image

    class Probes(CalibrationDataReader):
        def __init__(self) -> None:
            ups = [interpolate(degrade(probe_image(s, 96), 3), (96, 96)) for s in range(4)]
            self.items = iter([{"y": (up / PEAK).float()[None].numpy()} for up in ups])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    src, dst = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
    src.write_bytes(data)
    quantize_static(
        str(src), str(dst), Probes(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"y": x.numpy()})[0])


BF16_WINOGRAD = "sruc bf16 winograd (auto where bf16 runs)"
BF16_DIRECT = "sruc --engine torch bf16 (direct)"


def routes(threads: int, cache: str) -> tuple[dict[str, Route], list[str]]:
    from sruc.engine import runtimes
    from sruc.engine.fused import ConvChain
    from sruc.engine.precision import cpu_can_run_bf16
    from sruc.zoo.registry import load_model

    lm = load_model("vdsr")
    module = lm.module.eval()
    cpu = torch.device("cpu")
    out: dict[str, Route] = {"naive fp32 (nn.Module, NCHW)": module}
    notes: list[str] = []
    direct = ConvChain.of(module, torch.float32, cpu)
    out["sruc --engine torch fp32 (direct, oneDNN)"] = direct
    from sruc.engine import native

    if native.kernels() is not None:
        wino = ConvChain.of(module, torch.float32, cpu, conv3x3="winograd")
        out["sruc --engine winograd (F(6x6,3x3), compiled)"] = wino
    else:
        notes.append(f"compiled Winograd kernels: {native.status()}")
    # What runs where no C compiler works (as SRUC_NATIVE=0 makes it).
    saved = os.environ.get(native.ENV_NATIVE)
    os.environ[native.ENV_NATIVE] = "0"
    native.reset()
    try:
        plain = ConvChain.of(module, torch.float32, cpu, conv3x3="winograd")
    finally:
        if saved is None:
            del os.environ[native.ENV_NATIVE]
        else:
            os.environ[native.ENV_NATIVE] = saved
        native.reset()
        native.kernels()
    out["sruc --engine winograd (F(4x4,3x3), PyTorch transforms)"] = plain
    nnpack = ConvChain.of(module, torch.float32, cpu, conv3x3="nnpack")
    if any(c.nnpack for c in nnpack.convs):
        out["sruc --engine nnpack"] = nnpack
    else:
        notes.append("NNPACK does not initialise here: no --engine nnpack route")
    if cpu_can_run_bf16():
        if native.kernels() is not None:
            out[BF16_WINOGRAD] = ConvChain.of(module, torch.bfloat16, cpu, conv3x3="winograd")
        out[BF16_DIRECT] = ConvChain.of(module, torch.bfloat16, cpu)
    else:
        notes.append("bf16: not runnable under these caps (sruc refuses it)")
    for engine in ("onnxruntime", "openvino"):
        if runtimes.installed(engine):
            out[f"{engine} fp32"] = runtimes.engine_forward(lm, engine, cache)
        else:
            notes.append(f"{engine}: not installed")
    if runtimes.installed("openvino") and cpu_can_run_bf16():
        data, _ = runtimes.cached_graph(lm, "openvino", cache)
        out["openvino bf16 hint (not sruc)"] = openvino_bf16(data, threads)
    elif runtimes.installed("openvino"):
        # Measured: OpenVINO 2026.4 then returns an empty (0, 1, 0, 0) output.
        notes.append("openvino bf16 hint: left out under these caps (it returns no pixels)")
    if runtimes.installed("onnxruntime"):
        data, _ = runtimes.cached_graph(lm, "onnxruntime", cache)
        out["onnxruntime int8 (not sruc)"] = onnxruntime_int8(data, threads, cache)
    return out, notes


# --- measuring -------------------------------------------------------------------------------


def header(threads: int) -> None:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in lines.splitlines():
        if line.startswith(("Model name", "Flags")):
            print(line)
    from sruc.engine.fused import winograd_available
    from sruc.engine.precision import cpu_can_run_bf16, cpu_has_native_bf16

    print(
        f"torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    for name in ("onnxruntime", "openvino"):
        try:
            mod = __import__(name)
            print(f"{name} {mod.__version__}")
        except ImportError:
            print(f"{name}: not installed")
    caps = ", ".join(f"{v}={os.environ.get(v, '(unset)')}" for v in CAP_VARS)
    print(f"caps: {caps}")
    print(
        f"threads: {threads} (torch, onnxruntime intra-op, openvino); "
        f"bf16 native: {cpu_has_native_bf16()}, bf16 runnable: {cpu_can_run_bf16()}, "
        f"NNPACK Winograd: {winograd_available()}"
    )
    from sruc.engine import native

    native.kernels()
    print(f"Winograd transforms: {native.status()}")
    try:
        import openvino as ov

        ov_caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        print(f"openvino CPU capabilities (its reading of the caps): {', '.join(ov_caps)}")
    except ImportError:
        pass
    print("onnxruntime: MLAS picks its kernels from cpuid; no environment cap exists")
    print("NNPACK: AVX2+FMA kernels only (none for AVX-512), so it runs the same under the cap")


def psnr_changes(rs: dict[str, Route], folder: Path, scale: int) -> dict[str, float]:
    """Mean Set5 PSNR (Y, sruc's protocol) of each route at ``scale``."""
    from sruc.core.protocol import evaluate_image
    from sruc.measure.sets import find_images, read_ground_truth

    paths = find_images(folder)
    scores = {name: 0.0 for name in rs}
    with torch.inference_mode():
        for path in paths:
            hr = read_ground_truth(path)
            for name, fn in rs.items():
                sc = evaluate_image(hr, scale, fn, with_ssim=False)
                scores[name] += sc.psnr / len(paths)
    return scores


def time_routes(rs: dict[str, Route], edge: int, repeats: int) -> dict[str, float]:
    x = torch.rand(1, 1, edge, edge, generator=torch.Generator().manual_seed(0))
    best = {name: float("inf") for name in rs}
    with torch.inference_mode():
        for fn in rs.values():
            fn(x)  # warm-up: kernels chosen, buffers allocated
        for _ in range(repeats):
            for name, fn in rs.items():
                t0 = time.perf_counter()
                fn(x)
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bf16_peak(edge: int, repeats: int) -> float | None:
    """GFLOP/s of the best single 3x3 64->64 bf16 convolution on an ``edge`` tile (None:
    bf16 does not run under these caps)."""
    from sruc.engine.fused import conv_relu_op
    from sruc.engine.precision import cpu_can_run_bf16

    if not cpu_can_run_bf16():
        return None
    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last
    x = torch.rand(1, 64, edge, edge, generator=g).to(torch.bfloat16).contiguous(memory_format=cl)
    w = (
        (torch.randn(64, 64, 3, 3, generator=g) / 24)
        .to(torch.bfloat16)
        .contiguous(memory_format=cl)
    )
    b = torch.zeros(64, dtype=torch.bfloat16)
    op = conv_relu_op()
    cands: dict[str, Callable[[], torch.Tensor]] = {
        "F.conv2d": lambda: F.conv2d(x, w, b, padding=1),
        "F.conv2d NCHW": lambda: F.conv2d(x.contiguous(), w.contiguous(), b, padding=1),
    }
    if op is not None:
        cands["oneDNN conv+relu"] = lambda: op(
            x, w, b, [1, 1], [1, 1], [1, 1], 1, "relu", [None], None
        )
    best = float("inf")
    with torch.inference_mode():
        for fn in cands.values():
            fn()
            for _ in range(repeats + 2):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
    return 2 * 64 * 64 * 9 * edge * edge / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--edge", type=int, default=384, help="tile edge in pixels (default 384)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per route (best kept)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set5", type=Path, default=SET5, help="Set5 folder (HR images)")
    ap.add_argument("--scale", type=int, default=3, help="Set5 scale for the PSNR change")
    ap.add_argument("--no-psnr", action="store_true")
    ap.add_argument("--both", action="store_true", help="then again under the AVX2 cap")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    header(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        rs, notes = routes(args.threads, cache)
        for note in notes:
            print(f"note: {note}")
        scores = {} if args.no_psnr else psnr_changes(rs, args.set5.resolve(), args.scale)
        times = time_routes(rs, args.edge, args.repeats)
    peak = bf16_peak(args.edge, args.repeats)
    naive = next(iter(rs))
    ref_psnr = scores.get(naive)
    mpix = args.edge * args.edge / 1e6
    vdsr_flops = 2 * 9 * (1 * 64 + 18 * 64 * 64 + 64 * 1) * args.edge * args.edge
    tile = f"{args.edge}x{args.edge}"
    ref = f" ({ref_psnr:.4f} dB)" if ref_psnr is not None else ""
    print(
        f"\nVDSR forward, one {tile} tile, {args.threads} thread(s), best of {args.repeats}; "
        f"PSNR change: Set5 x{args.scale} Y (sruc protocol) minus naive fp32{ref}"
    )
    cols = ("ms", "MPix/s", "x naive", "GFLOP/s", "dPSNR dB")
    width = max(len(name) for name in rs)
    print(f"{'route':{width}s} " + " ".join(f"{c:>9s}" for c in cols))
    for name in rs:
        t = times[name]
        d = f"{scores[name] - ref_psnr:+.4f}" if ref_psnr is not None else "-"
        print(
            f"{name:{width}s} {t * 1e3:9.1f} {mpix / t:9.4f} {times[naive] / t:8.2f}x "
            f"{vdsr_flops / t / 1e9:9.1f} {d:>9s}"
        )
    if peak is None:
        print("\nbf16 peak: bf16 does not run under these caps")
    else:
        what = f"best single 3x3 64->64 bf16 convolution, {tile}"
        print(f"\nbf16 peak ({what}): {peak:.1f} GFLOP/s")
        for bf, what in ((BF16_DIRECT, "direct"), (BF16_WINOGRAD, "Winograd")):
            if bf in times:
                got = vdsr_flops / times[bf] / 1e9
                print(f"VDSR bf16 {what}: {got:.1f} GFLOP/s (direct-equivalent) = "
                      f"{100 * got / peak:.0f}% of the peak, "
                      f"{times[naive] / times[bf]:.2f}x naive fp32")  # fmt: skip
    if args.both:
        print("\nThe same under the AVX2 cap:\n", flush=True)
        again = [a for a in sys.argv[1:] if a != "--both"]
        env = {**os.environ, **AVX2_CAP}
        subprocess.run([sys.executable, str(Path(__file__).resolve()), *again], env=env, check=True)


if __name__ == "__main__":
    main()
