"""VDSR: Kim, Lee and Lee, "Accurate Image Super-Resolution Using Very Deep
Convolutional Networks", CVPR 2016 (arXiv:1511.04587).

``depth`` 3x3 convolutions (20 in the paper) with ``width`` filters (64) and
ReLU between them, predicting the residual between the bicubic-upscaled
luminance and the high-resolution one; the input is added back at the end
(global residual learning). One model serves every scale, because it works on
the already-interpolated image. Zero "same" padding keeps the size, as in the
paper.

``bias=False`` builds every convolution without a bias, as the best-known
public port (twtygqyy/pytorch-vdsr) does; the paper recipe trains that variant
(with biases, its clipped SGD steps went into the last layer's bias and the
output drifted off the image). Checkpoints record ``"bias": false`` only when it
is off, so files written before the option load as they did.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sruc.archs import ArchSpec, ConvPlan, last_conv


class VDSR(nn.Module):
    """The very deep residual super-resolution network.

    Args:
        channels: image channels in and out (1: the Y channel).
        depth: number of convolution layers, input and output layers included.
        width: filters of each hidden layer.
        kernel: kernel size of every layer (odd).
        bias: give every convolution a bias (the paper's network has them).
    """

    def __init__(
        self,
        channels: int = 1,
        depth: int = 20,
        width: int = 64,
        kernel: int = 3,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, got {depth}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd size, got {kernel}")
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be true or false, got {bias!r}")
        self.config: dict[str, int | bool] = {
            "channels": channels,
            "depth": depth,
            "width": width,
            "kernel": kernel,
        }
        if not bias:
            self.config["bias"] = False
        pad = kernel // 2

        def conv(c_in: int, c_out: int) -> nn.Conv2d:
            return nn.Conv2d(c_in, c_out, kernel, padding=pad, bias=bias)

        layers: list[nn.Module] = [conv(channels, width), nn.ReLU(True)]
        for _ in range(depth - 2):
            layers += [conv(width, width), nn.ReLU(True)]
        layers.append(conv(width, channels))
        self.body = nn.Sequential(*layers)
        self._radius = depth * pad
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (MSRA) initialisation as in the paper, zero biases (where there are any)."""
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def receptive_radius(self) -> int:
        """Pixels on each side that influence one output pixel (20 for 20 layers of 3x3)."""
        return self._radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) bicubic-upscaled image in [0, 1]
        return x + self.body(x)  # residual (N, C, H, W) added back


def _conv_plan(module: nn.Module) -> ConvPlan:
    seq = list(module.body)  # type: ignore[arg-type]
    layers = [
        (m, i + 1 < len(seq) and isinstance(seq[i + 1], nn.ReLU))
        for i, m in enumerate(seq)
        if isinstance(m, nn.Conv2d)
    ]
    return layers, True  # the input is added back


def _start_at_identity(module: nn.Module) -> None:
    """The last convolution at zero: the residual starts at zero, the output at the
    input (the paper's init starts the residual at about +-0.5)."""
    last = last_conv(module)
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


SPEC = ArchSpec(
    name="vdsr",
    module=VDSR,
    multiscale=True,
    patch_size=41,  # as in the paper
    batch_size=64,
    conv_plan=_conv_plan,
    identity_start=_start_at_identity,
    limits={"channels": 4, "depth": 200, "width": 1024, "kernel": 15},
    summary="VDSR (Kim et al. 2016): 20 3x3 convolutions, global residual, all scales in one",
)
