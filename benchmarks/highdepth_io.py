"""Read and write speed of sruc's 16-bit PNG/TIFF codecs, old and new.

Three configurations, each in its own process:

* ``old``: the hand-written codec that sruc had before it used libraries, taken
  from git (``--old-rev``; skipped where that revision is not in the clone);
* ``pure``: today's ``sruc.files.highdepth`` with imagecodecs hidden, i.e. pypng
  for colour PNG and tifffile's pure-Python codecs for TIFF (a plain
  ``pip install sruc``);
* ``codecs``: the same with imagecodecs (``pip install 'sruc[codecs]'``).

Each writes a synthetic 16-bit RGB and RGBA image (smooth waves plus
sensor-like noise, or pure noise with ``--content noise``) as PNG and TIFF,
best of ``--repeat`` runs, and checks that its files and those of the
configurations before it read back exactly. Read times are those of the first
configuration's files (``old`` by default, whose PNG rows are filtered as
libpng filters them), so every row reads the same bytes: pypng writes no row
filters, and reading its own files would hide its cost of undoing them.

    python benchmarks/highdepth_io.py                 # 2048x2048, 3 repeats
    python benchmarks/highdepth_io.py --size 1024 --repeat 5 --only pure codecs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("old", "pure", "codecs")
#: The last commit whose src/sruc/files/highdepth.py is the hand-written codec.
OLD_REV = "e39e509"


def photo(height: int, width: int, channels: int, content: str, seed: int = 0) -> np.ndarray:
    """A deterministic 16-bit test image: smooth waves plus noise (sigma 300), or noise."""
    rng = np.random.default_rng(seed)
    if content == "noise":
        return rng.integers(0, 65536, size=(height, width, channels), dtype=np.uint16)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = []
    for k in range(channels):
        wave = 20000 * np.sin(x / (97 + 13 * k)) * np.cos(y / (61 + 7 * k))
        wave += 5000 * np.sin((x + y) / 23)
        planes.append(32768 + wave + rng.normal(0, 300, (height, width)))
    return np.clip(np.stack(planes, axis=-1), 0, 65535).astype(np.uint16)


def _load_old(rev: str) -> ModuleType:
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:src/sruc/files/highdepth.py"],
        check=True,
        capture_output=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_highdepth.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("old_highdepth", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def worker(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one configuration; runs in a child process (see ``main``)."""
    if config == "pure":
        sys.modules["imagecodecs"] = None  # type: ignore[assignment]  # import fails
    from PIL import Image

    codec = _load_old(args.old_rev) if config == "old" else None
    if codec is None:
        from sruc.files import highdepth as codec
    if config == "codecs":
        assert codec._codecs() is not None, "imagecodecs is not installed"
    out = Path(args.dir)
    rows: dict[str, Any] = {}
    for channels in (3, 4):
        image = photo(args.height, args.width, channels, args.content)
        for fmt, writer in (("png", codec.write_png16), ("tif", codec.write_tiff16)):
            path = out / f"{config}-{channels}.{fmt}"
            t_write, _ = _best(lambda w=writer, p=path, a=image: w(p, a), args.repeat)
            first = out / f"{args.ref}-{channels}.{fmt}"
            t_read, _ = _best(
                lambda p=first: codec.read_high_depth(lambda: Image.open(p)), args.repeat
            )
            for theirs in [path, *(out / f"{c}-{channels}.{fmt}" for c in args.only)]:
                if theirs.exists():
                    got = codec.read_high_depth(lambda p=theirs: Image.open(p))
                    assert got is not None and np.array_equal(got.array, image), (config, theirs)
            rows[f"{channels}-{fmt}"] = (t_write, t_read, path.stat().st_size)
    return rows


def _cpu() -> list[str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return [f"CPU: {platform.processor() or 'unknown'} (no lscpu)"]
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    cpus = fields.get("CPU(s)", "?").strip()
    return [f"CPU: {model}, {cpus} CPUs", f"Flags: {fields.get('Flags', '?').strip()}"]


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("numpy", "pillow", "pypng", "tifffile", "imagecodecs"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2048", help="N or WxH pixels (default 2048)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell, best kept")
    parser.add_argument("--content", choices=("photo", "noise"), default="photo")
    parser.add_argument("--old-rev", default=OLD_REV, help="git revision of the old codec")
    parser.add_argument(
        "--only", nargs="+", choices=CONFIGS, default=list(CONFIGS), help="in this order"
    )
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--ref", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, _, height = args.size.partition("x")
    args.width, args.height = int(width), int(height or width)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    results: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.only:
            ref = next(iter(results), config)  # the files every row's read time is of
            command = [sys.executable, __file__, *sys.argv[1:], "--worker", config]
            command += ["--dir", tmp, "--ref", ref]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["failed"])[-1]
                notes.append(f"{config}: not measured ({last})")
                continue
            results[config] = json.loads(done.stdout.strip().splitlines()[-1])

    print(f"16-bit I/O, {args.width}x{args.height} {args.content}, best of {args.repeat}; ", end="")
    print(f"read: the {next(iter(results), '-')} files")
    print(*_cpu(), sep="\n")
    print(f"Python {platform.python_version()}, {_versions()}; load {os.getloadavg()[0]:.1f}")
    print()
    print("| codec | image | PNG write s | PNG read s | PNG MB", end=" ")
    print("| TIFF write s | TIFF read s | TIFF MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for config, rows in results.items():
        for channels, name in ((3, "RGB"), (4, "RGBA")):
            cells = []
            for fmt in ("png", "tif"):
                t_write, t_read, size = rows[f"{channels}-{fmt}"]
                cells += [f"{t_write:.3f}", f"{t_read:.3f}", f"{size / 1e6:.1f}"]
            print(f"| {config} | {name} | " + " | ".join(cells) + " |")
    for note in notes:
        print(f"\n{note}")
    print("\nEvery file read back exactly, in its own and every later configuration.")


if __name__ == "__main__":
    main()
