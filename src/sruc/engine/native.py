"""Compiled kernels: the Winograd convolutions of ``winograd.c``, built on first use.

PyTorch has no fused operation for Winograd's input and output transforms; as
whole-tensor additions (``winograd.py``) they take 22 passes over memory and
half of each layer's time, and ``torch.bmm`` runs the 64 small products of
F(6x6, 3x3) at about 80% of a core's fp32 peak. ``winograd.c`` runs a whole
F(6x6, 3x3) layer in one call (transforms and products per group of blocks, in
the core's cache) and VDSR's first and last layers straight into and out of
its buffers. It is compiled here, once per machine, with the C compiler found
(``$CC``, else ``cc``, ``gcc`` or ``clang``) and OpenMP where the compiler has
it, for the vector instructions the CPU may use (AVX-512 or AVX2 on x86,
honouring the ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` caps as the rest
of sruc does), and loaded with ctypes. No compiler, a failed build, or kernels
that do not match the PyTorch transforms on a small check: sruc runs the
PyTorch transforms (the same results to fp32 rounding, slower) and
:func:`status` says why.

The library is kept in the weights cache (``native/``), named by the SHA-256 of
its source, compiler, flags and machine, with a ``.sha256`` sidecar: a damaged
or tampered file is rebuilt, never loaded. ``SRUC_NATIVE=0`` turns all of this
off. On Linux the library's OpenMP is PyTorch's own ``libgomp`` (the same
soname, already loaded), so the two share one pool of threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sruc.errors import SrucError

if TYPE_CHECKING:
    import torch

#: Set to ``0`` to never build or load compiled kernels.
ENV_NATIVE = "SRUC_NATIVE"
#: The C source, shipped in the package.
SOURCE = Path(__file__).with_name("winograd.c")
#: Where the compiled library is kept, under the weights cache.
CACHE_SUBDIR = "native"
#: Channels are processed 16 at a time: layers whose width is not a multiple of
#: this run the PyTorch transforms.
LANES = 16
#: How long a build may take before it is given up.
BUILD_TIMEOUT_S = 120

#: The compiler options besides the ISA and OpenMP flags. -ffp-contract=fast: a * b + c
#: as one fused multiply-add, as GNU C does by default and ISO C mode does not (the
#: matrix products run at half speed without it).
_OPTIONS = ("-O3", "-std=c99", "-ffp-contract=fast", "-shared", "-fPIC")
#: What ``sruc_wino_version()`` of the current winograd.c returns.
_VERSION = 5
_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p
_status = "not tried yet"


@dataclass(frozen=True)
class Kernels:
    """The loaded library and how it was built."""

    lib: ctypes.CDLL
    path: Path | None  # where it is cached (None: not cached)
    compiler: str
    flags: tuple[str, ...]

    @property
    def openmp(self) -> bool:
        return "-fopenmp" in self.flags

    def describe(self) -> str:
        isa = " ".join(f for f in self.flags if f.startswith("-m")) or "default ISA"
        threads = "OpenMP" if self.openmp else "one thread"
        return f"compiled ({Path(self.compiler).name}, {isa}, {threads})"


def status() -> str:
    """What :func:`kernels` found, in words: how the kernels were built, or why not."""
    return _status


def _compiler(env: Mapping[str, str]) -> str | None:
    cc = env.get("CC", "").strip()
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def isa_flags(env: Mapping[str, str] | None = None) -> list[str]:
    """The compiler's vector-ISA flags for this CPU, within sruc's ISA caps."""
    from sruc.engine.precision import cpu_vector_isa

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return []  # aarch64: NEON is the baseline
    isa = cpu_vector_isa(env)
    if isa == "avx512":
        return ["-mavx512f", "-mavx512vl", "-mavx2", "-mfma"]
    if isa == "avx2":
        return ["-mavx2", "-mfma"]
    return []


def _version(cc: str) -> str:
    try:
        done = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.splitlines()[0] if done.stdout else ""


def _key(source: bytes, cc: str, version: str, flags: list[str]) -> str:
    h = hashlib.sha256(source)
    parts = (cc, version, " ".join((*_OPTIONS, *flags)), platform.machine(), platform.system())
    for part in parts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()


def _build(cc: str, flags: list[str], out: Path) -> str | None:
    """Compile :data:`SOURCE` into ``out``; None, or the compiler's complaint."""
    cmd = [cc, *_OPTIONS, *flags, str(SOURCE), "-o", str(out)]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    if done.returncode != 0 or not out.is_file():
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        return lines[0] if lines else f"exit status {done.returncode}"
    return None


def _declare(lib: ctypes.CDLL) -> None:
    lib.sruc_wino_version.restype = ctypes.c_int
    i32 = ctypes.c_int
    lib.sruc_wino_in.argtypes = [_PTR, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _PTR, _I64]
    lib.sruc_wino_in.argtypes += [i32, i32]
    lib.sruc_wino_in.restype = None
    lib.sruc_wino_out.argtypes = [_PTR, _I64, i32, _PTR, i32, _I64, _I64, _I64, _I64]
    lib.sruc_wino_out.argtypes += [_I64, _I64, _PTR, _I64, _I64, _I64, i32]
    lib.sruc_wino_out.restype = None
    lib.sruc_wino6_layer.argtypes = [_PTR, _I64, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR]
    lib.sruc_wino6_layer.argtypes += [i32, _I64, _I64, _PTR, _PTR, _I64, _I64, _I64, i32]
    lib.sruc_wino6_layer.restype = None
    lib.sruc_conv_head.argtypes = [_PTR, _I64, _I64, _I64, _I64, _PTR, _PTR, i32, _PTR, _PTR]
    lib.sruc_conv_head.argtypes += [_I64, _I64, _I64, i32]
    lib.sruc_conv_head.restype = None
    lib.sruc_conv_tail.argtypes = [_PTR, _I64, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR, i32]
    lib.sruc_conv_tail.argtypes += [_PTR, _I64, i32]
    lib.sruc_conv_tail.restype = None
    lib.sruc_wino6_backward.argtypes = [_PTR, _PTR] + [_I64] * 8 + [_PTR] * 6
    lib.sruc_wino6_backward.argtypes += [_I64] * 5 + [i32]
    lib.sruc_wino6_backward.restype = None
    lib.sruc_conv_head_wgrad.argtypes = [_PTR] + [_I64] * 4 + [_PTR, _I64, _I64, _I64]
    lib.sruc_conv_head_wgrad.argtypes += [_PTR, _PTR, i32]
    lib.sruc_conv_head_wgrad.restype = None
    lib.sruc_conv_tail_wgrad.argtypes = [_PTR] + [_I64] * 6 + [_PTR, _I64, _PTR, _PTR, i32]
    lib.sruc_conv_tail_wgrad.restype = None


def _load(path: Path) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(path))
        _declare(lib)
        return lib if lib.sruc_wino_version() == _VERSION else None
    except (OSError, AttributeError):
        return None


def _self_check(k: Kernels) -> bool:
    """Whether the kernels give the PyTorch transforms' result on a small stack."""
    import torch

    from sruc.engine.winograd import Plan, transform_weights

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, LANES, 9, 7, generator=g)
    w = torch.randn(LANES, LANES, 3, 3, generator=g) * 0.2
    b = torch.randn(LANES, generator=g)
    out = []
    # F(4x4, 3x3) in PyTorch, then compiled: F(6x6, 3x3) in fp32, F(4x4, 3x3) with bf16
    # products (to bf16's rounding); the padding must come out zero too.
    for kernels, products in ((None, torch.float32), (k, torch.float32), (k, torch.bfloat16)):
        plan = Plan(2, 9, 7, LANES, 1, kernels=kernels, products=products)
        u = transform_weights(w, plan.block).to(products)
        plan.load(x)
        plan.conv(u, b, True)
        plan.conv(u, None, False)
        out.append(plan.bufs[plan.current][:, :11, :9].clone())  # the image and its border
    top = out[0].abs().max().item()
    if not (
        (out[1] - out[0]).abs().max().item() <= 1e-4 * top
        and (out[2] - out[0]).abs().max().item() <= 0.1 * top
    ):
        return False
    # A whole chain, first and last layers included (3 -> 16 -> 16 -> 2 channels),
    # against the direct convolutions in float64.
    from sruc.engine.winograd import WinogradStack

    wh, bh = torch.randn(LANES, 3, 3, 3, generator=g) * 0.3, torch.randn(LANES, generator=g)
    wt, bt = torch.randn(2, LANES, 3, 3, generator=g) * 0.2, torch.randn(2, generator=g)
    x3 = torch.randn(2, 3, 9, 7, generator=g)
    got = WinogradStack([(w, b, True)], k, head=(wh, bh, True), tail=(wt, bt, False))(x3)
    conv = torch.nn.functional.conv2d
    h = torch.relu(conv(x3.double(), wh.double(), bh.double(), padding=1))
    h = torch.relu(conv(h, w.double(), b.double(), padding=1))
    want = conv(h, wt.double(), bt.double(), padding=1)
    if not (got.double() - want).abs().max().item() <= 1e-4 * want.abs().max().item():
        return False
    return _training_check(k, g)


def _training_check(k: Kernels, g: torch.Generator) -> bool:
    """Whether training through the kernels (:mod:`sruc.engine.wino_train`) gives the
    gradients of the direct convolutions in float64, on a 3 -> 16 -> 16 -> 2 chain."""
    import torch
    from torch import nn

    from sruc.engine.wino_train import ChainTrainer

    with torch.random.fork_rng(devices=[]):  # (their default init would draw from it)
        convs = [nn.Conv2d(a, b, 3, padding=1) for a, b in ((3, LANES), (LANES, LANES), (LANES, 2))]
    for conv in convs:
        for p in conv.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3
    x = torch.randn(2, 3, 9, 7, generator=g)
    y = torch.randn(2, 2, 9, 7, generator=g)
    got = ChainTrainer(convs, False, k)(x)
    (got * y).sum().backward()
    grads = [p.grad for conv in convs for p in conv.parameters()]
    h = x.double()
    for i, conv in enumerate(convs):
        conv.double().zero_grad()
        h = torch.nn.functional.conv2d(h, conv.weight, conv.bias, padding=1)
        h = torch.relu(h) if i < len(convs) - 1 else h
    (h * y.double()).sum().backward()
    for have, conv in zip([grads[0:2], grads[2:4], grads[4:6]], convs, strict=True):
        for a, b in zip(have, conv.parameters(), strict=True):
            assert a is not None and b.grad is not None
            if not (a.double() - b.grad).abs().max().item() <= 1e-4 * b.grad.abs().max().item():
                return False
    return bool((got.double() - h).abs().max().item() <= 1e-4 * h.abs().max().item())


def _find(env: Mapping[str, str], cache_dir: Path) -> tuple[Kernels | None, str]:
    if env.get(ENV_NATIVE, "").strip() == "0":
        return None, f"off ({ENV_NATIVE}=0)"
    cc = _compiler(env)
    if cc is None:
        return None, "no C compiler found (set CC to one)"
    try:
        source = SOURCE.read_bytes()
    except OSError as e:
        return None, f"cannot read {SOURCE.name}: {e.strerror or e}"
    from sruc.zoo import cache

    version, isa = _version(cc), isa_flags(env)
    complaint = ""
    for flags in ([*isa, "-fopenmp"], isa):
        name = f"winograd-{_key(source, cc, version, flags)[:24]}.so"
        path = cache_dir / CACHE_SUBDIR / name
        lib = _load(path) if cache.read_verified(path) is not None else None
        where: Path | None = path
        if lib is None:
            with tempfile.TemporaryDirectory(prefix="sruc-native-") as tmp:
                built = Path(tmp) / name
                failed = _build(cc, flags, built)
                if failed is not None:
                    complaint = f"the C compiler failed ({Path(cc).name}: {failed})"
                    continue
                try:
                    cache.write_verified(path, built.read_bytes())
                except (OSError, SrucError):  # a cache is optional: load from the build
                    where = None
                lib = _load(path if where is not None else built)
        if lib is None:
            complaint = f"the built library {name} does not load"
            continue
        k = Kernels(lib, where, cc, tuple(flags))
        if not _self_check(k):
            if where is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
            return None, "the compiled kernels did not match the PyTorch transforms"
        return k, k.describe()
    return None, complaint


@functools.lru_cache(maxsize=1)
def kernels() -> Kernels | None:
    """The compiled Winograd kernels, built or loaded once per process; None where
    they cannot be (then :func:`status` says why and the PyTorch transforms run)."""
    global _status
    from sruc.zoo.cache import cache_dir

    try:
        found, _status = _find(os.environ, cache_dir())
    except Exception as e:  # a faster path that is not there is never an error
        found, _status = None, f"not built: {type(e).__name__}: {e}"
    return found


def reset() -> None:
    """Forget the kernels found (tests; a changed ``$CC`` or cache folder)."""
    global _status
    kernels.cache_clear()
    _status = "not tried yet"


__all__ = ["ENV_NATIVE", "LANES", "Kernels", "isa_flags", "kernels", "reset", "status"]
