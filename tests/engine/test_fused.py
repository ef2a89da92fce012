"""``sruc.engine.fused``: the fused convolution + ReLU gives autocast's numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import needs_cpu_bf16, train_briefly
from sruc import archs as models
from sruc.engine import fused
from sruc.engine.fused import conv_relu_op, training_forward

pytestmark = pytest.mark.skipif(conv_relu_op() is None, reason="no oneDNN fused convolution")

CL = torch.channels_last


def _grads(net: nn.Module, forward: object, x: torch.Tensor, y: torch.Tensor) -> tuple:
    net.zero_grad(set_to_none=True)
    pred = forward(x)  # type: ignore[operator]
    loss = F.mse_loss(pred.float(), y)
    loss.backward()
    return pred.detach().clone(), loss.item(), [p.grad.clone() for p in net.parameters()]


def _reference(net: nn.Module, dtype: torch.dtype | None):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if dtype is None:
            return net(x)
        with torch.autocast("cpu", dtype=dtype):
            return net(x)

    return forward


@pytest.mark.parametrize(
    "dtype", [None, pytest.param(torch.bfloat16, marks=needs_cpu_bf16)], ids=["fp32", "bf16"]
)
@pytest.mark.parametrize(
    ("arch", "config"),
    [
        ("vdsr", {"depth": 5, "width": 8}),
        ("srcnn", {"n1": 8, "n2": 6, "f1": 5, "f2": 3, "f3": 3}),
    ],
)
def test_outputs_and_gradients_equal_autocast(
    arch: str, config: dict, dtype: torch.dtype | None
) -> None:
    torch.manual_seed(0)
    net = models.build(arch, config).to(memory_format=CL)
    # Some biases negative so that the ReLUs clip somewhere.
    for p in net.parameters():
        if p.ndim == 1:
            nn.init.uniform_(p, -0.2, 0.2)
    x = torch.rand(3, 1, 17, 19).contiguous(memory_format=CL)
    y = torch.rand(3, 1, 17, 19).contiguous(memory_format=CL)
    fused = training_forward(net, dtype)
    assert fused is not None
    want = _grads(net, _reference(net, dtype), x, y)
    got = _grads(net, fused, x, y)
    assert got[0].dtype == want[0].dtype
    assert torch.equal(got[0], want[0])
    assert got[1] == want[1]
    for g, w in zip(got[2], want[2], strict=True):
        assert g.dtype == w.dtype == torch.float32
        # oneDNN may sum in another order for the fused call: equal to float32 rounding.
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


def test_parameters_train_through_it() -> None:
    torch.manual_seed(1)
    net = models.build("vdsr", {"depth": 4, "width": 8})
    fused = training_forward(net, None)
    assert fused is not None
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x = torch.rand(4, 1, 12, 12)
    losses = train_briefly(fused, net.parameters(), x, x.roll(1, dims=-1), 20, opt)
    assert losses[-1] < losses[0]
    # The module itself now computes what the fused forward computes.
    with torch.no_grad():
        torch.testing.assert_close(net(x), fused(x))


def test_not_used_where_it_does_not_apply() -> None:
    assert training_forward(models.build("bicubic"), None) is None
    assert training_forward(nn.Sequential(nn.Conv2d(1, 1, 3)), None) is None
    net = models.build("vdsr", {"depth": 3, "width": 4})
    assert training_forward(net, torch.float16) is None
    strided = models.build("srcnn", {"n1": 4, "n2": 4})
    strided.map.stride = (2, 2)
    assert training_forward(strided, None) is None
    if torch.cuda.is_available():
        assert training_forward(net.cuda(), None) is None


# --- NNPACK's Winograd path for fp32 3x3 layers --------------------------------------------


def _vdsr16() -> nn.Module:
    from sruc.archs.vdsr import VDSR

    torch.manual_seed(4)
    return VDSR(depth=5, width=16).eval()


def test_winograd_chain_is_exact_to_fp32_rounding() -> None:
    if not fused.winograd_available():
        pytest.skip("NNPACK does not initialise on this CPU")
    model = _vdsr16()
    cpu = torch.device("cpu")
    chain = fused.ConvChain.of(model, torch.float32, cpu, conv3x3="nnpack")
    assert chain is not None
    assert [c.nnpack for c in chain.convs] == [False, True, True, True, False]
    x = torch.rand(2, 1, 23, 31, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.double()(x.double())
        got = chain(x)
    # Winograd's own rounding: relative 1e-5 of the largest value, no more.
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


def test_winograd_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    off = fused.ConvChain.of(_vdsr16(), torch.float32, cpu, conv3x3="direct")
    assert off is not None and not any(c.nnpack for c in off.convs)
    bf16 = fused.ConvChain.of(_vdsr16(), torch.bfloat16, cpu, conv3x3="nnpack")
    assert bf16 is not None and not any(c.nnpack for c in bf16.convs)  # fp32 only
    default = fused.ConvChain.of(_vdsr16(), torch.float32, cpu)  # off unless asked for
    assert default is not None and not any(c.nnpack for c in default.convs)
    monkeypatch.setattr(fused, "winograd_available", lambda: False)
    plain = fused.ConvChain.of(_vdsr16(), torch.float32, cpu, conv3x3="nnpack")
    assert plain is not None and not any(c.nnpack for c in plain.convs)


def test_direct_fp32_tiles_equal_the_untiled_run_bit_for_bit() -> None:
    """The direct chain (``--engine torch``) is oneDNN's direct path, whose tiles are
    exact at VDSR's width of 64; Winograd (the fp32 default on CPUs, and --engine
    nnpack) differs by ~1e-6 near tile edges."""
    from sruc.archs.vdsr import VDSR
    from sruc.core.tiling import run_tiled

    cpu = torch.device("cpu")
    torch.manual_seed(4)
    chain = fused.ConvChain.of(VDSR(depth=5, width=64).eval(), torch.float32, cpu)
    assert chain is not None
    x = torch.rand(1, 1, 70, 90, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = chain(x)
        tiled = run_tiled(chain, x, radius=5, tile=24)
    assert torch.equal(tiled, whole)
