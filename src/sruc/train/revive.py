"""Dormant ReLU channels: find them, and give them a second start (``--revive``).

A plain deep ReLU network trained with Adam at a high learning rate loses units
for good: a channel whose pre-activation is negative on every input passes no
gradient and never comes back. The shipped VDSR had 116 of its 1,216 hidden
channels never active on six Set14 images at x2/x3/x4, and 302 active on under
1% of the pixels, most of them in its first eight layers (the best public
PyTorch port, trained with clipped SGD and no biases: 4 and 67). Those channels
are capacity the network paid for and does not use.

:func:`revive` re-initialises each channel whose ReLU output is positive on
less than a given share of the pixels of some inputs: its incoming weights are
drawn again (the architecture's He initialisation, bias 0) and its outgoing
weights are set to zero, so the network computes exactly what it computed
before (the revived channel feeds nothing yet) while its new incoming weights
respond to the image again and training can grow its outgoing ones. This is
the "recycling of dormant neurons" of Sokar et al., ICML 2023 (ReDo), applied
once, at the start of a fine-tuning run.

It works on any network whose :class:`~sruc.archs.ArchSpec` gives a convolution
plan (a flat chain of convolutions, each optionally followed by a ReLU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sruc import archs


@dataclass(frozen=True)
class Revived:
    """What :func:`revive` did: revived channels per hidden layer, and the units seen."""

    per_layer: tuple[int, ...]
    units: int

    @property
    def count(self) -> int:
        return sum(self.per_layer)


def _relu_pairs(net: nn.Module) -> list[tuple[nn.Conv2d, nn.Conv2d]]:
    """(convolution followed by a ReLU, the next convolution) along the network's plan."""
    spec = archs.spec_of(net)
    if spec is None or spec.conv_plan is None:
        raise ValueError(f"{type(net).__name__} has no convolution plan; cannot revive it")
    layers, _ = spec.conv_plan(net)
    return [
        (conv, layers[i + 1][0])
        for i, (conv, relu) in enumerate(layers[:-1])
        if relu and isinstance(conv, nn.Conv2d)
    ]


@torch.no_grad()
def activity(net: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The share of pixels on which each hidden ReLU channel is positive, per layer.

    Args:
        net: the network (its convolution plan names the hidden layers).
        inputs: network inputs, each ``(N, C, H, W)``.

    Returns:
        One float tensor of ``out_channels`` shares in [0, 1] per ReLU layer.
    """
    pairs = _relu_pairs(net)
    on = [torch.zeros(conv.out_channels, dtype=torch.float64) for conv, _ in pairs]
    pixels = 0
    handles = []
    for i, (conv, _) in enumerate(pairs):

        def count(_m: nn.Module, _inp: object, out: torch.Tensor, i: int = i) -> None:
            on[i] += (out > 0).sum(dim=(0, 2, 3)).to(torch.float64).cpu()

        handles.append(conv.register_forward_hook(count))
    try:
        for x in inputs:
            net(x)
            pixels += x.shape[0] * x.shape[-2] * x.shape[-1]
    finally:
        for h in handles:
            h.remove()
    return [c / max(1, pixels) for c in on]


@torch.no_grad()
def revive(
    net: nn.Module,
    inputs: list[torch.Tensor],
    threshold: float,
    generator: torch.Generator | None = None,
) -> Revived:
    """Re-initialise the channels active on less than ``threshold`` of the pixels.

    The function of ``net`` is unchanged: every revived channel's outgoing weights
    are zero. Incoming weights are drawn from N(0, 2 / (k*k*out_channels)), as
    the architectures initialise them, from ``generator``.

    Args:
        net: the network, modified in place.
        inputs: inputs on which activity is measured (e.g. a few training batches).
        threshold: the share of pixels in (0, 1) below which a channel is revived.
        generator: the random numbers of the new weights (for a reproducible run).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    pairs = _relu_pairs(net)
    shares = activity(net, inputs)
    dormant = [torch.nonzero(s < threshold).flatten() for s in shares]
    # All incoming weights first, then all outgoing ones: a channel revived in two
    # consecutive layers must end with its link from the earlier one at zero.
    for (conv, _), idx in zip(pairs, dormant, strict=True):
        if idx.numel():
            k = conv.kernel_size[0] * conv.kernel_size[1]
            std = math.sqrt(2.0 / (k * conv.out_channels))
            shape = (idx.numel(), *conv.weight.shape[1:])
            fresh = torch.randn(shape, generator=generator, dtype=torch.float32) * std
            conv.weight[idx] = fresh.to(conv.weight.device, conv.weight.dtype)
            if conv.bias is not None:
                conv.bias[idx] = 0
    for (_, following), idx in zip(pairs, dormant, strict=True):
        if idx.numel():
            following.weight[:, idx] = 0
    return Revived(tuple(int(i.numel()) for i in dormant), sum(s.numel() for s in shares))
