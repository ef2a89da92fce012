"""Validation: the PSNR of the model being trained, by the protocol, on held-out images.

:func:`validation_images` prepares the held-out images once (central crops of
``--val-crop`` pixels keep validation cheap); :func:`bicubic_psnr` is the
baseline a run must beat, and :func:`evaluate` scores a network as ``sruc up``
runs it (:mod:`sruc.core.protocol`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from sruc.core.protocol import evaluate_image


def validation_images(images: Sequence[torch.Tensor], crop: int) -> list[torch.Tensor]:
    """The HR ``(C, H, W)`` images validated on: central ``crop`` pixels (0: whole), float64."""
    return [_center_crop(im, crop).to(torch.float64) for im in images]


def bicubic_psnr(images: Sequence[torch.Tensor], scales: Sequence[int]) -> dict[int, float]:
    """Mean PSNR (dB) per scale of bicubic upscaling over HR ``images``."""
    return {s: mean(evaluate_image(hr, s).psnr for hr in images) for s in scales}


def evaluate(
    net: nn.Module,
    images: list[torch.Tensor],
    scales: list[int],
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[int, float]:
    """Mean PSNR (dB) per scale over HR ``images`` (``(C, H, W)`` on 0..255), by the protocol.

    Runs in float32 without autocast, as ``sruc up`` runs the model.
    """
    net.eval()
    with torch.inference_mode():

        def run(x: torch.Tensor) -> torch.Tensor:  # (1, 1, H, W) in [0, 1]
            return net(x.to(device, memory_format=memory_format)).float().cpu()

        scores = {s: mean(evaluate_image(hr, s, run).psnr for hr in images) for s in scales}
    net.train()
    return scores


def mean(values: Iterable[float]) -> float:
    """The mean of ``values`` (at least one)."""
    v = list(values)
    return sum(v) / len(v)


def _center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` part of ``(C, H, W)`` (all of it if smaller, or size 0)."""
    if size <= 0:
        return img
    h, w = img.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[..., top : top + size, left : left + size]
