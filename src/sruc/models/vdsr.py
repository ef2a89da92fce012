"""VDSR: Kim, Lee and Lee, "Accurate Image Super-Resolution Using Very Deep
Convolutional Networks", CVPR 2016 (arXiv:1511.04587).

``depth`` 3x3 convolutions (20 in the paper) with ``width`` filters (64) and
ReLU between them, predicting the residual between the bicubic-upscaled
luminance and the high-resolution one; the input is added back at the end
(global residual learning). One model serves every scale, because it works on
the already-interpolated image. Zero "same" padding keeps the size, as in the
paper.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class VDSR(nn.Module):
    """The very deep residual super-resolution network.

    Args:
        channels: image channels in and out (1: the Y channel).
        depth: number of convolution layers, input and output layers included.
        width: filters of each hidden layer.
        kernel: kernel size of every layer (odd).
    """

    def __init__(
        self, channels: int = 1, depth: int = 20, width: int = 64, kernel: int = 3
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, got {depth}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd size, got {kernel}")
        self.config = {"channels": channels, "depth": depth, "width": width, "kernel": kernel}
        pad = kernel // 2
        layers: list[nn.Module] = [nn.Conv2d(channels, width, kernel, padding=pad), nn.ReLU(True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, kernel, padding=pad), nn.ReLU(True)]
        layers.append(nn.Conv2d(width, channels, kernel, padding=pad))
        self.body = nn.Sequential(*layers)
        self._radius = depth * pad
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (MSRA) initialisation as in the paper, zero biases."""
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_out))
                assert m.bias is not None
                nn.init.zeros_(m.bias)

    @property
    def receptive_radius(self) -> int:
        """Pixels on each side that influence one output pixel (20 for 20 layers of 3x3)."""
        return self._radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) bicubic-upscaled image in [0, 1]
        return x + self.body(x)  # residual (N, C, H, W) added back
