"""Golden results: what sruc computes must not change when its code is moved.

Recorded before the redesign into rooms (issue 24) and checked after every
step of it: the pixels `sruc up` writes for each model and scale (fp32), the
numbers `sruc psnr` and `sruc bench` print, and the weights after 20 seeded
training steps. Outputs are compared as decoded pixels (mode, size and a
SHA-256 of the samples), not as file bytes, so a newer zlib or a different
PNG writer does not count as a change of behaviour while one changed sample
does.

fp32 convolutions sum in an order that depends on the CPU's instruction set
(oneDNN picks AVX2 or AVX-512 kernels), so the exact hashes are those of the
machine class that recorded them (``MACHINE``: torch version and ATen CPU
capability). On another class every value is still checked, within the
rounding such kernels can differ by: outputs to one 8-bit level in at most
0.5% of samples on average, numbers to 1e-3 dB, weights to 1e-4 relative.

Regenerate (only when a change of behaviour is intended, and say so in the
commit): ``python tests/test_golden.py --write``.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from helpers import smooth_rgb

GOLDEN = Path(__file__).parent / "golden.json"
UP_CASES = [
    ("rgb.png", "bicubic", s) for s in ("2", "3", "4", "2.5")
] + [("rgb.png", "srcnn", s) for s in ("2", "3", "4")] + [
    ("rgb.png", "vdsr", s) for s in ("2", "3", "4", "2.5")
] + [(name, "vdsr", "3") for name in ("gray.png", "rgba.png", "rgb16.png")]  # fmt: skip


def machine() -> str:
    return f"torch {torch.__version__.split('+')[0]}, {torch.backends.cpu.get_cpu_capability()}"


# --------------------------------------------------------------------------- inputs


def _png16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG, written here (filter 0) so the input does not depend on sruc."""
    h, w, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(data + chunk(b"IEND", b""))


def make_inputs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rgb = smooth_rgb(24, 32, seed=0)
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(smooth_rgb(20, 28, seed=1)[..., 0]).save(root / "gray.png")
    alpha = np.linspace(0, 255, 24 * 32).reshape(24, 32).round().astype(np.uint8)
    Image.fromarray(np.dstack([smooth_rgb(24, 32, seed=2), alpha])).save(root / "rgba.png")
    wide = smooth_rgb(18, 22, seed=3).astype(np.uint16) * 257
    wide += np.random.default_rng(3).integers(0, 257, size=wide.shape, dtype=np.uint16)
    _png16(root / "rgb16.png", wide)
    bench = root / "bench"
    bench.mkdir(exist_ok=True)
    for i in range(2):
        Image.fromarray(smooth_rgb(48, 48, seed=10 + i)).save(bench / f"b{i}.png")
    return root


# --------------------------------------------------------------------------- results


def _samples(path: Path) -> np.ndarray:
    """Decoded samples of an output file, 16-bit PNG at full depth."""
    from sruc.files.images import read_image

    with Image.open(path) as im:
        if im.mode in ("L", "RGB", "RGBA", "LA"):
            return np.asarray(im)
    pic = read_image(path)  # 16-bit colour: sruc's reader (checked in test_highdepth)
    planes = [pic.color, *([pic.alpha] if pic.alpha is not None else [])]
    return np.round(torch.cat(planes).permute(1, 2, 0).numpy() * 65535).astype(np.uint16)


def _digest(a: np.ndarray) -> dict[str, Any]:
    return {
        "shape": list(a.shape),
        "dtype": str(a.dtype),
        "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
        "sum": int(a.astype(np.int64).sum()),
    }


def _cli(*args: str) -> str:
    from click.testing import CliRunner

    from sruc.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _weights_after_20_steps(images: Path, out: Path, model: str) -> dict[str, Any]:
    from sruc.engine.threads import available_cpus
    from sruc.train import TrainConfig, train

    config = {"depth": 3, "width": 8} if model == "vdsr" else {"n1": 8, "n2": 4}
    cfg = TrainConfig(
        data=str(images), out=str(out), model=model, model_config=config,
        scales=(2, 3) if model == "vdsr" else (3,), steps=20, batch_size=4, patch_size=16,
        val_crop=32, val_every=10, seed=7, precision="fp32", device="cpu",
        # the recorded count where the CPUs allow, whatever the machine's load
        threads=min(2, available_cpus()),
    )  # fmt: skip
    train(cfg)
    state = torch.load(out / "state.pt", weights_only=True)["model"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().numpy().tobytes())
    norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in state.values())))
    return {"sha256": h.hexdigest(), "norm": norm}


def compute(root: Path) -> dict[str, Any]:
    inputs = make_inputs(root / "in")
    results: dict[str, Any] = {"machine": machine(), "up": {}, "psnr": {}}
    for name, model, scale in UP_CASES:
        out = root / "out" / f"{model}_{scale}_{name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        # --engine torch: the exact reference arithmetic (fp32's default on CPUs,
        # Winograd, is checked against it in tests/engine/test_winograd.py)
        _cli("up", str(inputs / name), "-s", scale, "--model", model, "--precision", "fp32",
             "--engine", "torch", "--device", "cpu", "-o", str(out), "-q")  # fmt: skip
        results["up"][f"{name} {model} x{scale}"] = _digest(_samples(out))
    hr, sr = inputs / "rgb.png", root / "out" / "bicubic_2_rgb.png"
    small = root / "out" / "small.png"
    with Image.open(sr) as im:
        im.resize((32, 24), Image.Resampling.BOX).save(small)
    for args in ([], ["--shave", "3"], ["--rgb"], ["--ssim", "--json"]):
        text = _cli("psnr", str(hr), str(small), *args)
        results["psnr"][" ".join(args) or "plain"] = (
            _strip_times(json.loads(text)) if "--json" in args else text
        )
    bench = _cli("bench", str(inputs / "bench"), "-m", "srcnn", "-m", "vdsr", "-s", "2,3,4",
                 "--engine", "torch", "--device", "cpu", "--json", "-q")  # fmt: skip
    results["bench"] = json.loads(bench)
    results["train"] = {
        m: _weights_after_20_steps(inputs / "bench", root / f"train-{m}", m)
        for m in ("vdsr", "srcnn")
    }
    # The CPU threads training ran on: they split each convolution's sums, so
    # the float rounding (and the weights' SHA-256) depends on their number.
    results["train_threads"] = torch.get_num_threads()
    return results


# --------------------------------------------------------------------------- the test


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for k in sorted(obj) for x in _numbers(obj[k])]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    if isinstance(obj, str):
        try:
            return [float(t) for t in obj.split()]
        except ValueError:
            return []
    return []


#: Fields that name this run's temporary folder, the clock or the version, not results.
_NOT_RESULTS = {"a", "b", "path", "sruc_version", "time", "seconds"}


def _strip_times(obj: Any) -> Any:
    """A JSON document without the fields that are not results."""
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if k not in _NOT_RESULTS}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compute(tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


def test_up_outputs_are_unchanged(results: dict[str, Any], golden: dict[str, Any]) -> None:
    assert results["up"].keys() == golden["up"].keys()
    for case, want in golden["up"].items():
        got = results["up"][case]
        assert (got["shape"], got["dtype"]) == (want["shape"], want["dtype"]), case
        if results["machine"] == golden["machine"]:
            assert got["sha256"] == want["sha256"], case
        else:
            samples = int(np.prod(want["shape"]))
            level = 257 if want["dtype"] == "uint16" else 1
            assert abs(got["sum"] - want["sum"]) <= 0.005 * samples * level, case


def test_psnr_and_bench_numbers_are_unchanged(
    results: dict[str, Any], golden: dict[str, Any]
) -> None:
    exact = results["machine"] == golden["machine"]
    for key in ("psnr", "bench"):
        got, want = _strip_times(results[key]), _strip_times(golden[key])
        if exact:
            assert got == want, key
        else:
            assert _numbers(got) == pytest.approx(_numbers(want), abs=1e-3), key


def test_weights_after_20_seeded_steps_are_unchanged(
    results: dict[str, Any], golden: dict[str, Any]
) -> None:
    exact = (results["machine"], results["train_threads"]) == (
        golden["machine"],
        golden["train_threads"],
    )
    for model, want in golden["train"].items():
        got = results["train"][model]
        if exact:  # the same CPU kind, torch and thread count: the same bits
            assert got["sha256"] == want["sha256"], model
        else:
            assert got["norm"] == pytest.approx(want["norm"], rel=1e-4), model


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_golden.py --write")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = compute(Path(tmp))
    data["bench"] = _strip_times(data["bench"])
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({data['machine']})")
