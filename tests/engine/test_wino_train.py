"""Training through the compiled Winograd kernels: the gradients of the direct
float32 convolutions, the policy that picks it, and where it does not apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import kernels_without_openmp, train_briefly
from sruc import archs
from sruc.engine import native, precision
from sruc.engine.fused import training_forward
from sruc.engine.wino_train import ChainTrainer, winograd_training

CPU = torch.device("cpu")


@pytest.fixture
def kernels() -> native.Kernels:
    k = native.kernels()
    if k is None:
        pytest.skip(f"compiled Winograd kernels: {native.status()}")
    return k


def _net(depth: int, width: int, bias: bool, channels: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = archs.build("vdsr", {"depth": depth, "width": width, "bias": bias, "channels": channels})
    for p in net.parameters():
        if p.ndim == 1:  # some negative, so that the ReLUs clip somewhere
            nn.init.uniform_(p, -0.2, 0.2)
    return net


def _grads(net: nn.Module, forward, x: torch.Tensor, y: torch.Tensor):
    net.zero_grad(set_to_none=True)
    out = forward(x)
    F.mse_loss(out, y, reduction="sum").backward()
    return out.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    ("n", "h", "w", "width", "depth", "channels", "threads"),
    [
        (2, 13, 11, 16, 5, 1, 1),  # blocks that hang past the image on both sides
        (3, 7, 19, 32, 4, 3, 2),  # three image channels in and out
        (1, 12, 18, 16, 3, 1, 2),  # one middle layer; whole blocks
    ],
)
def test_outputs_and_gradients_are_the_direct_convolutions(
    kernels: native.Kernels,
    bias: bool,
    n: int,
    h: int,
    w: int,
    width: int,
    depth: int,
    channels: int,
    threads: int,
) -> None:
    net = _net(depth, width, bias, channels)
    trainer = winograd_training(net)
    assert trainer is not None
    x = torch.rand(n, channels, h, w)
    y = torch.rand(n, channels, h, w)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got_out, got = _grads(net, trainer, x, y)
    finally:
        torch.set_num_threads(before)
    with torch.no_grad():  # the reference in float64
        ref = archs.build("vdsr", {"depth": depth, "width": width, "bias": bias,
                                   "channels": channels}).double()  # fmt: skip
        ref.load_state_dict(net.state_dict())
    want_out, want = _grads(ref, ref, x.double(), y.double())
    assert len(got) == len(want) == (2 if bias else 1) * depth
    torch.testing.assert_close(got_out.double(), want_out, rtol=0, atol=1e-5 * want_out.abs().max())
    for g, ww in zip(got, want, strict=True):
        assert g.dtype == torch.float32 and g.shape == ww.shape
        torch.testing.assert_close(g.double(), ww, rtol=0, atol=1e-5 * ww.abs().max())


def test_a_step_gives_the_same_gradients_every_time(kernels: native.Kernels) -> None:
    """The weight gradients are sums over fixed runs of blocks, added in order: no
    run-to-run jitter, whichever thread took which run."""
    net = _net(4, 16, True)
    trainer = winograd_training(net)
    assert trainer is not None
    x, y = torch.rand(4, 1, 23, 17), torch.rand(4, 1, 23, 17)
    first = _grads(net, trainer, x, y)[1]
    for _ in range(3):
        again = _grads(net, trainer, x, y)[1]
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_a_build_without_openmp_gives_the_same_gradients(
    kernels: native.Kernels, tmp_path: Path
) -> None:
    """Apple's clang has no OpenMP: ranges of blocks then run on Python threads."""
    plain = kernels_without_openmp(tmp_path)
    net = _net(4, 16, True)
    x, y = torch.rand(3, 1, 19, 14), torch.rand(3, 1, 19, 14)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, want = _grads(net, ChainTrainer(convs, True, kernels), x, y)
        _, got = _grads(net, ChainTrainer(convs, True, plain), x, y)
    finally:
        torch.set_num_threads(before)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * w.abs().max())


def test_trains_and_refuses_an_input_that_wants_a_gradient(kernels: native.Kernels) -> None:
    net = _net(4, 16, True, seed=1)
    forward = training_forward(net, None)
    assert isinstance(forward, ChainTrainer)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(4, 1, 12, 12)
    losses = train_briefly(forward, net.parameters(), x, x.roll(1, dims=-1), 15, opt)
    assert losses[-1] < losses[0]
    with torch.no_grad():  # the module computes what the trainer computes
        torch.testing.assert_close(net(x), forward(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="no gradient for its input"):
        forward(x.requires_grad_())


def test_a_backward_must_follow_its_own_forward(kernels: native.Kernels) -> None:
    net = _net(3, 16, True)
    trainer = winograd_training(net)
    assert trainer is not None
    x = torch.rand(2, 1, 9, 9)
    first = trainer(x).sum()
    trainer(x)  # a second forward reuses the buffers the first one's backward needs
    with pytest.raises(RuntimeError, match="must follow its own forward"):
        first.backward()


def test_not_used_where_it_does_not_apply(
    kernels: native.Kernels, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert winograd_training(_net(4, 8, True)) is None  # 8 channels: not a multiple of 16
    assert winograd_training(_net(2, 16, True)) is None  # no middle layer
    assert winograd_training(archs.build("srcnn", {})) is None  # 9-5-5 kernels
    assert winograd_training(archs.build("bicubic")) is None
    strided = _net(4, 16, True)
    [m for m in strided.modules() if isinstance(m, nn.Conv2d)][1].dilation = (2, 2)
    assert winograd_training(strided) is None
    # bf16 keeps oneDNN's fused direct convolutions
    assert not isinstance(training_forward(_net(4, 16, True), torch.bfloat16), ChainTrainer)
    monkeypatch.setattr(native, "kernels", lambda: None)  # no compiler
    assert winograd_training(_net(4, 16, True)) is None


@pytest.mark.parametrize(
    ("native_bf16", "amx", "fast", "want"),
    [
        (True, False, True, "fp32"),  # AVX512-BF16 on the vector units: Winograd is faster
        (True, True, True, "bf16"),  # AMX: bf16 on the matrix units
        (True, False, False, "bf16"),  # no fast float32 route for this work
        (False, False, True, "fp32"),
    ],
)
def test_auto_prefers_the_fast_float32_route_on_cpus_without_amx(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool, amx: bool, fast: bool, want: str
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda env=None: native_bf16)
    monkeypatch.setattr(precision, "cpu_has_amx", lambda env=None: amx)
    assert precision.resolve_precision("auto", CPU, fast_fp32=fast) == want
    assert precision.resolve_precision("fp32", CPU, fast_fp32=fast) == "fp32"
