"""SRCNN: Dong, Loy, He and Tang, "Image Super-Resolution Using Deep
Convolutional Networks", TPAMI 2016 (arXiv:1501.00092).

Three convolutions on the bicubic-upscaled luminance: patch extraction
(``f1 x f1``, ``n1`` filters), non-linear mapping (``f2 x f2``, ``n2`` filters)
and reconstruction (``f3 x f3``, one output channel). The paper's best
published configuration is 9-5-5 with n1=64, n2=32; the original 9-1-5 is
selectable with ``f2=1``.

Unlike the paper, which trains on valid convolutions and crops the target,
every layer here uses "same" zero padding, so the output has the input's size
and tiles can be stitched exactly (see :mod:`sruc.core.tiling`).
"""

from __future__ import annotations

import torch
from torch import nn

from sruc.archs import ArchSpec, ConvPlan


class SRCNN(nn.Module):
    """The three-layer SRCNN.

    Args:
        channels: image channels in and out (1: the Y channel).
        n1: filters of the patch-extraction layer.
        n2: filters of the non-linear mapping layer.
        f1: kernel size of the patch-extraction layer (odd).
        f2: kernel size of the mapping layer (odd; 5 for 9-5-5, 1 for 9-1-5).
        f3: kernel size of the reconstruction layer (odd).
    """

    def __init__(
        self,
        channels: int = 1,
        n1: int = 64,
        n2: int = 32,
        f1: int = 9,
        f2: int = 5,
        f3: int = 5,
    ) -> None:
        super().__init__()
        for name, f in (("f1", f1), ("f2", f2), ("f3", f3)):
            if f < 1 or f % 2 == 0:
                raise ValueError(f"{name} must be a positive odd kernel size, got {f}")
        self.config = {"channels": channels, "n1": n1, "n2": n2, "f1": f1, "f2": f2, "f3": f3}
        self.extract = nn.Conv2d(channels, n1, f1, padding=f1 // 2)
        self.map = nn.Conv2d(n1, n2, f2, padding=f2 // 2)
        self.reconstruct = nn.Conv2d(n2, channels, f3, padding=f3 // 2)
        self.relu = nn.ReLU(inplace=True)
        self._radius = f1 // 2 + f2 // 2 + f3 // 2
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian init with std 1e-3 as in the paper, zero biases."""
        for conv in (self.extract, self.map, self.reconstruct):
            nn.init.normal_(conv.weight, std=1e-3)
            assert conv.bias is not None
            nn.init.zeros_(conv.bias)

    @property
    def receptive_radius(self) -> int:
        """Pixels on each side that influence one output pixel (8 for 9-5-5)."""
        return self._radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) bicubic-upscaled image in [0, 1]
        x = self.relu(self.extract(x))  # (N, n1, H, W)
        x = self.relu(self.map(x))  # (N, n2, H, W)
        return self.reconstruct(x)  # (N, C, H, W)


def _conv_plan(module: nn.Module) -> ConvPlan:
    assert isinstance(module, SRCNN)
    return [(module.extract, True), (module.map, True), (module.reconstruct, False)], False


def _start_at_identity(module: nn.Module) -> None:
    """Start at the identity while keeping the published architecture.

    One filter of each layer starts as a centred unit impulse reading the previous
    identity channel (inputs are >= 0, so the ReLUs pass them), the other filters of
    the first two layers get He init instead of the paper's std 1e-3 (which leaves
    the three-layer product near a saddle), and the other reconstruction weights
    start at zero: the output is the input, and training learns the correction
    instead of first having to rediscover the image from noise.
    """
    assert isinstance(module, SRCNN)
    with torch.no_grad():
        nn.init.zeros_(module.reconstruct.weight)
        for conv in (module.extract, module.map):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        for conv in (module.extract, module.map, module.reconstruct):
            k = conv.kernel_size[0] // 2
            conv.weight[0].zero_()
            conv.weight[0, 0, k, k] = 1.0
            assert conv.bias is not None
            conv.bias[0] = 0.0
        assert module.reconstruct.bias is not None
        nn.init.zeros_(module.reconstruct.bias)


SPEC = ArchSpec(
    name="srcnn",
    module=SRCNN,
    multiscale=False,
    patch_size=33,  # as in the paper
    batch_size=128,
    conv_plan=_conv_plan,
    identity_start=_start_at_identity,
    limits={"channels": 4, "n1": 1024, "n2": 1024, "f1": 31, "f2": 31, "f3": 31},
    summary="SRCNN (Dong et al. 2016): 3 convolutions, 9-5-5, one model per scale",
)
