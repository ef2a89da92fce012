"""The network architectures sruc knows, by the name stored in checkpoints."""

from __future__ import annotations

from typing import Any

from torch import nn

from sruc.archs.bicubic import Bicubic
from sruc.archs.srcnn import SRCNN
from sruc.archs.vdsr import VDSR
from sruc.errors import ModelError

#: Architecture name (as stored in a checkpoint's ``arch``) -> class.
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "srcnn": SRCNN,
    "vdsr": VDSR,
    "bicubic": Bicubic,
}


def build(arch: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Construct an architecture from its name and constructor arguments.

    Raises:
        ModelError: for an unknown architecture or arguments it does not take.
    """
    cls = ARCHITECTURES.get(arch)
    if cls is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelError(f"unknown architecture {arch!r}; known: {known}")
    try:
        return cls(**(config or {}))
    except (TypeError, ValueError) as e:
        raise ModelError(f"bad configuration for {arch}: {e}") from None


def receptive_radius(model: nn.Module) -> int:
    """A model's receptive-field radius in pixels (how far tiles must overlap)."""
    r = getattr(model, "receptive_radius", None)
    if not isinstance(r, int):
        raise ModelError(f"{type(model).__name__} does not declare its receptive_radius")
    return r


__all__ = ["ARCHITECTURES", "SRCNN", "VDSR", "Bicubic", "build", "receptive_radius"]
