"""The bicubic baseline as a model: the identity on the interpolated image.

The pipeline already bicubic-upscales with MATLAB's kernel before any model
runs, so "bicubic" needs no weights and no computation.
"""

from __future__ import annotations

import torch
from torch import nn

from sruc.archs import ArchSpec


class Bicubic(nn.Module):
    """Identity: returns the bicubic-upscaled input unchanged.

    Args:
        channels: accepted for symmetry with the other models; unused.
    """

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.config = {"channels": channels}

    @property
    def receptive_radius(self) -> int:
        """Zero: each output pixel depends on its input pixel alone."""
        return 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


SPEC = ArchSpec(
    name="bicubic",
    module=Bicubic,
    multiscale=True,
    identity=True,
    limits={"channels": 4},
    summary="MATLAB-exact bicubic interpolation, the baseline (no weights)",
)
