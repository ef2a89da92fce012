"""Winograd F(4x4, 3x3) (``--engine winograd``): exact to fp32 rounding, every geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from helpers import needs_cpu_bf16, smooth_rgb
from sruc.engine import fused, native, winograd
from sruc.engine.runtimes import EngineError, choose_engine
from sruc.engine.winograd import WinogradStack, transform_weights

CPU = torch.device("cpu")


@pytest.fixture(params=["torch", "compiled"])
def kernels(request: pytest.FixtureRequest) -> native.Kernels | None:
    """Both ways to run the transforms: PyTorch additions, and winograd.c compiled."""
    if request.param == "torch":
        return None
    k = native.kernels()
    if k is None:
        pytest.skip(f"compiled Winograd transforms: {native.status()}")
    return k


def _layers(count: int, channels: int, seed: int, bias: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    std = (2 / (9 * channels)) ** 0.5
    return [
        (
            torch.randn(channels, channels, 3, 3, generator=g) * std,
            None if bias == 0 else torch.randn(channels, generator=g) * bias + bias,
            i < count - 1,
        )
        for i in range(count)
    ]


def _reference(x: torch.Tensor, layers) -> torch.Tensor:
    h = x.double()
    for w, b, relu in layers:
        h = F.conv2d(h, w.double(), None if b is None else b.double(), padding=1)
        if relu:
            h = torch.relu(h)
    return h


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    # F(4x4, 3x3)'s rounding: its transforms scale by up to 8 and 1/24.
    err = (got.double() - want).abs().max().item()
    assert err <= 1e-5 * max(1.0, want.abs().max().item()), err


@pytest.mark.parametrize(
    ("n", "h", "w"), [(1, 1, 1), (1, 3, 5), (1, 4, 4), (2, 23, 31), (1, 40, 9), (3, 17, 16)]
)
def test_layers_equal_the_convolution_for_any_size(
    n: int, h: int, w: int, kernels: native.Kernels | None
) -> None:
    layers = _layers(3, 16, seed=h * 100 + w)
    x = torch.rand(n, 16, h, w, generator=torch.Generator().manual_seed(1))
    _close(WinogradStack(layers, kernels)(x), _reference(x, layers))


def test_many_strips_and_a_short_last_one(
    monkeypatch: pytest.MonkeyPatch, kernels: native.Kernels | None
) -> None:
    """A strip (PyTorch transforms) or a group (compiled F(6x6, 3x3)) of blocks at a
    time: several of them, the last one shorter, give the same as one (and as the
    convolution)."""
    layers = _layers(2, 16, seed=3)
    x = torch.rand(2, 16, 37, 21, generator=torch.Generator().manual_seed(2))
    whole = WinogradStack(layers, kernels)(x).clone()
    if kernels is None:  # 6 blocks a row x 2 images: one block row a strip
        monkeypatch.setattr(winograd, "_STRIP_BLOCKS", 12)
        assert len(winograd.Plan(2, 37, 21, 16).strips[0]) == -(-37 // 4)
    else:  # 2 x 7 x 4 = 56 blocks in groups of 5: not a multiple of any micro-kernel's rows
        monkeypatch.setattr(winograd, "_GROUP_BLOCKS", 5)
    parts = WinogradStack(layers, kernels)(x)
    _close(parts, _reference(x, layers))
    assert torch.equal(parts, whole)


def test_padding_past_the_image_is_zero_again_between_layers(
    kernels: native.Kernels | None,
) -> None:
    """The 4x4 blocks overhang an image whose size is not a multiple of 4; with a large
    positive bias the overhang would hold non-zero values that the next layer must not
    see as image."""
    layers = _layers(4, 16, seed=5, bias=2.0)
    x = torch.rand(1, 16, 10, 7, generator=torch.Generator().manual_seed(3))
    _close(WinogradStack(layers, kernels)(x), _reference(x, layers))


def test_no_bias_and_no_relu(kernels: native.Kernels | None) -> None:
    layers = [(w, None, False) for w, _, _ in _layers(2, 16, seed=7)]
    x = torch.randn(1, 16, 12, 13, generator=torch.Generator().manual_seed(4))
    _close(WinogradStack(layers, kernels)(x), _reference(x, layers))


def test_a_stack_serves_one_geometry_after_another(
    monkeypatch: pytest.MonkeyPatch, kernels: native.Kernels | None
) -> None:
    layers = _layers(2, 16, seed=8)
    stack = WinogradStack(layers, kernels)
    g = torch.Generator().manual_seed(5)
    for shape in [(1, 16, 20, 20), (1, 16, 9, 30), (1, 16, 20, 20), (2, 16, 20, 20)]:
        x = torch.rand(*shape, generator=g)
        _close(stack(x), _reference(x, layers))
        assert stack._plan is not None  # small: kept for the next tile
    monkeypatch.setattr(winograd, "KEEP_PLAN_BYTES", 1000)
    x = torch.rand(1, 16, 20, 20, generator=g)
    _close(stack(x), _reference(x, layers))
    assert stack._plan is None  # large: its buffers leave with the result


def test_weights_transform_in_float64() -> None:
    w = torch.randn(8, 16, 3, 3, generator=torch.Generator().manual_seed(6))
    u = transform_weights(w)
    assert u.shape == (36, 16, 8) and u.dtype == torch.float32
    # G g G^T of a kernel that is one at the centre: the middle column of G, squared.
    one = torch.zeros(1, 1, 3, 3)
    one[0, 0, 1, 1] = 1
    g_mid = torch.tensor([0, -1 / 6, 1 / 6, 1 / 12, -1 / 12, 0], dtype=torch.float64)
    want = torch.outer(g_mid, g_mid).reshape(36).float()
    assert torch.equal(transform_weights(one)[:, 0, 0], want)


def _vdsr16() -> nn.Module:
    from sruc.archs.vdsr import VDSR

    torch.manual_seed(4)
    return VDSR(depth=6, width=16).eval()


def test_chain_runs_the_middle_layers_through_winograd() -> None:
    model = _vdsr16()
    chain = fused.ConvChain.of(model, torch.float32, CPU, conv3x3="winograd")
    assert chain is not None
    assert [c.winograd for c in chain.convs] == [False, True, True, True, True, False]
    assert list(chain.stacks) == [1] and chain.stacks[1][0] == 5
    # the transforms compiled where they can be
    assert chain.stacks[1][1].kernels is native.kernels()
    x = torch.rand(2, 1, 29, 35, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.double()(x.double())
        got = chain(x)
        again = chain(x)
    _close(got, want)
    assert torch.equal(got, again)  # the output is the chain's own, not a buffer's view
    # bf16: the products in bf16 where the transforms are compiled; fp16: none
    bf16 = fused.ConvChain.of(model.float(), torch.bfloat16, CPU, conv3x3="winograd")
    assert bf16 is not None and bool(bf16.stacks) == (native.kernels() is not None)
    assert all(st.products == torch.bfloat16 for _, st in bf16.stacks.values())
    half = fused.ConvChain.of(model.float(), torch.float16, CPU, conv3x3="winograd")
    assert half is not None and not half.stacks


@pytest.mark.parametrize("colours", [1, 3])
def test_compiled_chain_runs_whole_first_and_last_layers_included(
    colours: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the compiled kernels VDSR runs as one stack whose first and last layers read
    and write its buffers (winograd.c's sruc_conv_head/_tail): same results, any size,
    image channels not padded, biases or none."""
    if native.kernels() is None:
        pytest.skip(f"compiled Winograd transforms: {native.status()}")
    from sruc.archs.vdsr import VDSR

    torch.manual_seed(colours)
    model = VDSR(depth=5, width=16, channels=colours, bias=colours == 1).eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.05)  # biases off zero, ReLUs both ways
    chain = fused.ConvChain.of(model, torch.float32, CPU, conv3x3="winograd")
    assert chain is not None and chain.whole is not None
    assert chain.whole.head is not None and chain.whole.head.weight.shape == (9 * colours, 16)
    for n, h, w in [(1, 1, 1), (2, 13, 7), (1, 29, 35)]:
        x = torch.rand(n, colours, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            want = model.double()(x.double())
            model.float()
            got = chain(x)
        _close(got, want)
    # without compiled kernels: the stack alone, the ends on oneDNN
    monkeypatch.setattr(native, "kernels", lambda: None)
    plain = fused.ConvChain.of(model, torch.float32, CPU, conv3x3="winograd")
    assert plain is not None and plain.whole is None and list(plain.stacks) == [1]
    with pytest.raises(ValueError, match="compiled"):
        WinogradStack(_layers(1, 16, seed=0), None, head=_layers(1, 16, seed=1)[0])
    with pytest.raises(ValueError, match="cannot read"):  # an input of other channels
        chain.whole(torch.rand(1, colours + 1, 8, 8))


def test_bf16_products_stay_close_to_the_convolution() -> None:
    """bf16 products (the transforms and the activations between layers float32): the
    error of bf16 inputs to each product, as a direct bf16 convolution has."""
    k = native.kernels()
    if k is None:
        pytest.skip(f"compiled Winograd transforms: {native.status()}")
    layers = _layers(3, 32, seed=11)
    x = torch.rand(2, 32, 21, 18, generator=torch.Generator().manual_seed(8))
    want = _reference(x, layers)
    got = WinogradStack(layers, k, torch.bfloat16)(x).double()
    fp32 = WinogradStack(layers, k)(x).double()
    scale = want.abs().max().item()

    def rms(y: torch.Tensor) -> float:
        return ((y.double() - want) ** 2).mean().sqrt().item() / scale

    assert rms(fp32) < 1e-6
    # bf16's 8-bit mantissa, amplified by the transforms (up to 5x and 8x, with
    # cancellation): measured 0.7% of the largest value here, 6x a direct bf16 stack
    # (whose activations are bf16 too), and under 8% at the worst pixel.
    assert 1e-4 < rms(got) < 1.5e-2, rms(got)
    assert (got - want).abs().max().item() / scale < 0.1
    direct = x.bfloat16()
    for w, b, relu in layers:
        direct = F.conv2d(direct, w.bfloat16(), None if b is None else b.bfloat16(), padding=1)
        direct = torch.relu(direct) if relu else direct
    assert rms(got) < 10 * rms(direct)


@needs_cpu_bf16
def test_bf16_upscale_runs_winograd_and_keeps_the_psnr() -> None:
    """bf16 on a CPU that has it: Winograd with bf16 products where the transforms are
    compiled; tiled or not, within a few 8-bit levels of exact fp32 and the PSNR
    against the original within 0.01 dB (Set5: README "Speed")."""
    from sruc import Upscaler
    from sruc.core.metrics import psnr

    want = "winograd" if native.kernels() is not None else "torch"
    hr = smooth_rgb(96, 120, seed=4)
    lr = Image.fromarray(hr).resize((40, 32), Image.Resampling.BICUBIC)
    outs = {}
    for precision, tile in (("bf16", 0), ("bf16", 48), ("fp32", 0)):
        up = Upscaler("vdsr", device="cpu", precision=precision, engine="auto", tile=tile)
        if precision == "bf16":
            assert up.prepared(3).engine == want
        outs[(precision, tile)] = np.asarray(up.upscale(lr, 3), dtype=np.int16)

    def db(a: np.ndarray) -> float:
        chw = torch.from_numpy(a).permute(2, 0, 1)
        return psnr(chw, torch.from_numpy(hr.astype(np.int16)).permute(2, 0, 1), shave=3)

    for key in (("bf16", 0), ("bf16", 48)):
        diff = np.abs(outs[key] - outs[("fp32", 0)])
        assert diff.max() <= 4 and (diff > 1).mean() < 0.01, key
        assert abs(db(outs[key]) - db(outs[("fp32", 0)])) < 0.01, key


def test_threads_sharing_one_stack_get_their_own_results(
    kernels: native.Kernels | None,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    layers = _layers(3, 16, seed=9)
    stack = WinogradStack(layers, kernels)
    g = torch.Generator().manual_seed(7)
    xs = [torch.rand(1, 16, 24 + 4 * (i % 3), 20, generator=g) for i in range(12)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(stack, xs))
    for x, y in zip(xs, outs, strict=True):
        _close(y, _reference(x, layers))


def test_srcnn_has_no_eligible_layer() -> None:
    from sruc.archs.srcnn import SRCNN

    chain = fused.ConvChain.of(SRCNN().eval(), torch.float32, CPU, conv3x3="winograd")
    assert chain is not None and not chain.stacks


def test_engine_policy() -> None:
    assert choose_engine("winograd", CPU, "fp32") == "winograd"
    assert choose_engine("auto", CPU, "fp32") == "winograd"  # the fp32 default on CPUs
    assert choose_engine("torch", CPU, "fp32") == "torch"  # exact tiles, asked for
    with pytest.raises(EngineError, match="runs fp32"):
        choose_engine("winograd", CPU, "fp16")
    with pytest.raises(EngineError, match="runs on the CPU"):
        choose_engine("winograd", torch.device("cuda"), "fp32")


def test_upscaler_with_winograd_is_within_rounding_of_torch() -> None:
    from sruc import Upscaler

    rgb = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    exact = Upscaler("vdsr", device="cpu", precision="fp32", tile=0).upscale(img, 3)
    fast = Upscaler("vdsr", device="cpu", precision="fp32", engine="winograd", tile=0)
    assert fast.prepared(3).engine == "winograd"
    diff = np.abs(np.asarray(fast.upscale(img, 3), np.int16) - np.asarray(exact, np.int16))
    assert diff.max() <= 1


def test_cli_up_with_engine_winograd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sruc.cli import main

    src = tmp_path / "a.png"
    rgb = np.random.default_rng(1).integers(0, 256, (30, 26, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(src)
    outs = {}
    for engine in ("torch", "winograd"):
        out = tmp_path / f"{engine}.png"
        args = ["up", str(src), "-s", "2", "--precision", "fp32", "--engine", engine]
        assert main([*args, "-o", str(out), "-q"]) == 0
        outs[engine] = np.asarray(Image.open(out), dtype=np.int16)
    assert np.abs(outs["torch"] - outs["winograd"]).max() <= 1
    capsys.readouterr()
    # The summary says what ran: the engine where it is not plain PyTorch.
    args = ["up", str(src), "-s", "2", "--precision", "fp32", "-o", str(tmp_path / "c.png")]
    assert main(args) == 0
    assert "on cpu, fp32 winograd," in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "d.png"), "--engine", "torch"]) == 0
    assert "on cpu, fp32," in capsys.readouterr().err
    # bf16 Winograd needs a CPU with bf16 and the compiled transforms
    monkeypatch.setenv(native.ENV_NATIVE, "0")
    native.reset()
    try:
        bad = ["up", str(src), "-s", "2", "--precision", "bf16", "--engine", "winograd"]
        assert main([*bad, "-o", str(tmp_path / "b.png"), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "only with its compiled transforms (off" in err or "lacks" in err, err
        assert not (tmp_path / "b.png").exists()
    finally:
        monkeypatch.delenv(native.ENV_NATIVE)
        native.reset()


def test_default_fp32_tiles_have_no_seams_and_keep_the_psnr() -> None:
    """fp32 on a CPU runs Winograd by default: tiled or not, and against the exact
    direct path, the 8-bit outputs differ by at most one level in a few pixels, and
    the PSNR against the original by under a thousandth of a dB."""
    from sruc import Upscaler
    from sruc.core.metrics import psnr

    hr = smooth_rgb(96, 120, seed=3)
    lr = Image.fromarray(hr).resize((40, 32), Image.Resampling.BICUBIC)
    outs = {}
    for engine, tile in (("auto", 0), ("auto", 48), ("torch", 0)):
        up = Upscaler("vdsr", device="cpu", precision="fp32", engine=engine, tile=tile)
        outs[(engine, tile)] = np.asarray(up.upscale(lr, 3), dtype=np.int16)
    assert Upscaler("vdsr", device="cpu", precision="fp32").prepared(3).engine == "winograd"
    for key in (("auto", 48), ("torch", 0)):
        diff = np.abs(outs[key] - outs[("auto", 0)])
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, key

    def db(a: np.ndarray) -> float:
        chw = torch.from_numpy(a).permute(2, 0, 1)
        return psnr(chw, torch.from_numpy(hr.astype(np.int16)).permute(2, 0, 1), shave=3)

    assert abs(db(outs[("auto", 48)]) - db(outs[("torch", 0)])) < 1e-3


def test_batch_reports_the_engine(tmp_path: Path) -> None:
    from sruc.batch.run import run_batch

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(smooth_rgb(20, 24, seed=i)).save(folder / f"p{i}.png")
    for engine, want in (("auto", "winograd"), ("torch", "torch")):
        out = tmp_path / f"out-{engine}"
        report = run_batch([folder], out, 2, model="vdsr", precision="fp32", engine=engine)
        doc = report.to_json()
        assert report.exit_code == 0 and doc["engine"] == want, doc
        assert [item["engine"] for item in doc["files"]] == [want, want]


def test_winograd_runs_larger_cpu_tiles() -> None:
    """Winograd's strips keep its transforms in cache whatever the tile, so on CPUs it
    takes larger tiles (less paid for their margins); the direct path keeps its own."""
    from sruc import Upscaler
    from sruc.core.tiling import CPU_TILE, WINOGRAD_CPU_TILE

    for engine, want in (("auto", WINOGRAD_CPU_TILE), ("torch", CPU_TILE)):
        prepared = Upscaler("vdsr", device="cpu", precision="fp32", engine=engine).prepared(3)
        assert prepared.tiling(2000, 2000, 8, None)[0] == want, engine
        assert prepared.tiling(2000, 2000, 8, 100)[0] == 100  # asked for: kept
