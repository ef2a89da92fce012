"""sruc.engine.runtimes: --engine, the cached exported graph, and the fallback to torch.

The policy and the bad-input cases run everywhere (the engines' presence is
faked); the engines themselves are tested where the fast extra is installed,
and skip cleanly where it is not.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run_cli, smooth_rgb
from sruc.archs.vdsr import VDSR
from sruc.core.tiling import run_tiled
from sruc.engine import fused, runtimes
from sruc.engine.prepared import prepare_model
from sruc.engine.runtimes import EngineError, Fallback, choose_engine
from sruc.errors import SrucWarning, UsageError
from sruc.zoo.registry import load_model

CPU = torch.device("cpu")


def _tiny(seed: int = 0, width: int = 8) -> VDSR:
    torch.manual_seed(seed)
    return VDSR(depth=5, width=width).eval()


def _needs(engine: str) -> None:
    for module in runtimes._NEEDS[engine]:
        pytest.importorskip(module)


# --- the policy ----------------------------------------------------------------------------


def test_unknown_engine_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown engine 'tensorrt'; use auto, torch"):
        choose_engine("tensorrt", CPU, "fp32")


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "installed", lambda e: e == "torch")
    with pytest.raises(EngineError) as e:
        choose_engine("onnxruntime", CPU, "fp32")
    assert str(e.value) == "--engine onnxruntime needs the fast extra: pip install 'sruc[fast]'"
    assert e.value.exit_code == 2


def test_engines_run_fp32_on_the_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "installed", lambda e: True)
    with pytest.raises(EngineError, match="runs fp32"):
        choose_engine("openvino", CPU, "bf16")
    with pytest.raises(EngineError, match="runs on the CPU"):
        choose_engine("onnxruntime", torch.device("cuda"), "fp32")


def test_auto_is_torch_where_torch_is_fastest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "installed", lambda e: True)
    assert choose_engine("auto", torch.device("cuda"), "fp16") == "torch"
    assert choose_engine("auto", torch.device("cuda"), "fp32") == "torch"
    # bf16 on a CPU: Winograd with bf16 products needs the compiled transforms
    monkeypatch.setattr(runtimes, "_compiled_winograd", lambda: False)
    assert choose_engine("auto", CPU, "bf16") == "torch"
    monkeypatch.setattr(runtimes, "_compiled_winograd", lambda: True)
    monkeypatch.setattr(runtimes, "_amx", lambda: False)
    assert choose_engine("auto", CPU, "bf16") == "winograd"
    assert choose_engine("auto", CPU, "fp16") == "torch"
    # with AMX, oneDNN's direct bf16 runs on the matrix units; fp32 stays Winograd
    monkeypatch.setattr(runtimes, "_amx", lambda: True)
    assert choose_engine("auto", CPU, "bf16") == "torch"
    assert choose_engine("auto", CPU, "fp32") == "winograd"
    assert choose_engine("winograd", CPU, "bf16") == "winograd"  # asked for by name


def test_auto_is_winograd_on_fp32_cpus_whatever_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sruc's own Winograd, the fastest fp32 route measured (README "Speed"), needs
    nothing installed; NNPACK, ONNX Runtime and OpenVINO are asked for by name."""
    for extras in (True, False):
        monkeypatch.setattr(runtimes, "installed", lambda e, x=extras: x or e == "winograd")
        for wino in (True, False):
            monkeypatch.setattr(fused, "winograd_available", lambda w=wino: w)
            assert choose_engine("auto", CPU, "fp32") == "winograd"


def test_nnpack_is_asked_for_and_refused_where_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fused, "winograd_available", lambda: True)
    assert choose_engine("nnpack", CPU, "fp32") == "nnpack"
    with pytest.raises(EngineError, match="runs fp32"):
        choose_engine("nnpack", CPU, "bf16")
    monkeypatch.setattr(fused, "winograd_available", lambda: False)
    with pytest.raises(EngineError, match="does not run on this CPU"):
        choose_engine("nnpack", CPU, "fp32")


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(20, 24)).save(path)
    return path


def test_cli_unknown_engine_is_usage(capsys: pytest.CaptureFixture[str], png: Path) -> None:
    r = run_cli(capsys, "up", png, "-s", "2", "--engine", "tensorrt", "-o", png.with_name("o.png"))
    assert r.code == 2
    assert "Invalid value for '--engine'" in r.err
    assert not png.with_name("o.png").exists()


@pytest.mark.parametrize("command", ["up", "batch", "bench"])
def test_cli_missing_extra_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    png: Path,
    tiny_vdsr_ckpt: Path,
    command: str,
) -> None:
    monkeypatch.setattr(runtimes, "installed", lambda e: e == "torch")
    model = ("--model", tiny_vdsr_ckpt)
    args = {
        "up": ("up", png, "-s", "2", "-o", png.with_name("o.png"), *model),
        "batch": ("batch", png, "-o", png.parent / "out", "-s", "2", *model),
        "bench": ("bench", png.parent, "-s", "2", *model),
    }[command]
    r = run_cli(capsys, *args, "--engine", "onnxruntime", "--device", "cpu")
    assert r.code == 2
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert lines == ["error: --engine onnxruntime needs the fast extra: pip install 'sruc[fast]'"]
    assert not png.with_name("o.png").exists()


# --- the fallback --------------------------------------------------------------------------


def test_fallback_warns_once_and_gives_torchs_result() -> None:
    net = _tiny()
    calls = []

    def broken(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        raise RuntimeError("ORT: out of arena\nsecond line")

    run = Fallback("onnxruntime", broken, net)
    x = torch.rand(1, 1, 12, 10)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        with torch.no_grad():
            y1, y2 = run(x), run(x)
    msgs = [str(w.message) for w in got if issubclass(w.category, SrucWarning)]
    assert msgs == ["onnxruntime failed (ORT: out of arena); running on torch instead"]
    assert len(calls) == 1  # never tried again
    with torch.no_grad():
        assert torch.equal(y1, net(x)) and torch.equal(y2, net(x))


def test_engine_failing_at_run_time_falls_back_through_prepare(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An engine that loads but fails on the first tile: one warning, torch's result."""
    _needs("onnxruntime")

    def failing(data: bytes):  # type: ignore[no-untyped-def]
        def run(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("injected failure")

        return run

    monkeypatch.setitem(runtimes._LOADERS, "onnxruntime", failing)
    lm = load_model(_tiny())
    pm = prepare_model(lm, device="cpu", precision="fp32", engine="onnxruntime", cache_dir=tmp_path)
    ref = prepare_model(lm, device="cpu", precision="fp32", engine="torch")
    assert pm.engine == "onnxruntime" and ref.engine == "torch"
    x = torch.rand(1, 1, 30, 26)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        with torch.inference_mode():
            y = run_tiled(pm.forward, x, radius=lm.radius, tile=16, device=CPU)
            want = run_tiled(ref.forward, x, radius=lm.radius, tile=16, device=CPU)
    assert [str(w.message) for w in got if issubclass(w.category, SrucWarning)] == [
        "onnxruntime failed (injected failure); running on torch instead"
    ]
    assert torch.allclose(y, want, atol=1e-5)


# --- the cached graph ----------------------------------------------------------------------


def test_graph_name_is_keyed_by_the_weights_hash() -> None:
    a, b, a2 = load_model(_tiny(0)), load_model(_tiny(1)), load_model(_tiny(0))
    name = runtimes.graph_name(a, "onnxruntime")
    assert runtimes.weights_sha256(a.module)[:32] in name
    assert name == runtimes.graph_name(a2, "onnxruntime")  # same weights, same file
    assert name != runtimes.graph_name(b, "onnxruntime")
    assert name != runtimes.graph_name(a, "openvino")
    assert "opset18" in name and name.endswith(".onnx")


def test_graph_is_cached_and_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from sruc.zoo import export

    lm = load_model(_tiny())
    data, path = runtimes.cached_graph(lm, "onnxruntime", tmp_path)
    assert path is not None and path.parent == tmp_path / "engines"
    assert path.read_bytes() == data
    sidecar = path.with_name(path.name + ".sha256").read_text().strip()
    assert sidecar == hashlib.sha256(data).hexdigest()

    def no_export(*a: object, **k: object) -> bytes:
        raise AssertionError("exported again although the cache is good")

    monkeypatch.setattr(export, "onnx_graph", no_export)
    assert runtimes.cached_graph(lm, "onnxruntime", tmp_path) == (data, path)


@pytest.mark.parametrize("damage", ["bytes", "hash-matching garbage"])
def test_corrupt_cached_graph_is_rebuilt(tmp_path: Path, damage: str) -> None:
    _needs("onnxruntime")
    lm = load_model(_tiny())
    good, path = runtimes.cached_graph(lm, "onnxruntime", tmp_path)
    assert path is not None
    bad = b"not an onnx graph" + good[:100]
    path.write_bytes(bad)
    if damage == "hash-matching garbage":  # the sidecar agrees: the engine must refuse it
        path.with_name(path.name + ".sha256").write_text(hashlib.sha256(bad).hexdigest())
    run = runtimes.engine_forward(lm, "onnxruntime", tmp_path)
    assert path.read_bytes() == good  # rebuilt in place
    x = torch.rand(1, 1, 9, 11)
    with torch.no_grad():
        assert torch.allclose(run(x), lm.module(x), atol=1e-4)


# --- the engines themselves ----------------------------------------------------------------


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_engine_matches_torch_and_tiles_exactly(engine: str, tmp_path: Path) -> None:
    _needs(engine)
    lm = load_model(_tiny(width=16))
    pm = prepare_model(lm, device="cpu", precision="fp32", engine=engine, cache_dir=tmp_path)
    assert pm.engine == engine and pm.precision == "fp32"
    x = torch.rand(1, 1, 37, 29, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        want = lm.module(x)
        whole = pm.forward(x)
        tiled = run_tiled(pm.forward, x, radius=lm.radius, tile=16, device=CPU)
    assert (whole - want).abs().max() <= 1e-4
    assert (tiled - whole).abs().max() <= 1e-5  # the engine's own rounding only

    def to8(t: torch.Tensor) -> torch.Tensor:
        return (t.clamp(0, 1) * 255).round()

    assert torch.equal(to8(tiled), to8(whole))


def test_upscaler_takes_an_engine(tmp_path: Path) -> None:
    _needs("onnxruntime")
    import sruc

    model = _tiny()
    pic = Image.fromarray(smooth_rgb(14, 18))
    a = sruc.Upscaler(model, device="cpu", engine="onnxruntime", cache_dir=tmp_path, tile=12)
    b = sruc.Upscaler(model, device="cpu", engine="torch", precision="fp32", tile=12)
    assert a.prepared(2).engine == "onnxruntime"
    diff = np.abs(
        np.asarray(a.upscale(pic, 2), dtype=int) - np.asarray(b.upscale(pic, 2), dtype=int)
    )
    assert diff.max() <= 1
    with pytest.raises(UsageError, match="unknown engine"):
        sruc.Upscaler(model, engine="tensorrt")
