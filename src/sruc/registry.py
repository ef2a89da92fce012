"""Model names users can type, and turning a ``--model`` value into a network.

A model is named by a registry name (``bicubic``, and the pretrained weights
once they are released) or by a path to a checkpoint file (see
:mod:`sruc.checkpoint`). The table of pretrained weights is data: entries exist
only for files that exist.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from sruc import checkpoint, models
from sruc.errors import ModelError, SrucWarning, UsageError

#: The largest upscaling factor accepted anywhere.
MAX_SCALE = 8.0

#: Names that need no weights file.
BUILTIN = ("bicubic",)

#: Pretrained weights: name -> entry. Empty until release weights are trained;
#: an entry is added only together with the file it describes.
PRETRAINED: dict[str, dict[str, object]] = {}

#: Architectures that work on the interpolated image for any scale with one
#: set of weights (VDSR); the others need weights trained for the exact scale.
MULTISCALE_ARCHS = frozenset({"vdsr", "bicubic"})


@dataclass
class LoadedModel:
    """A network ready to run, with what the pipeline needs to know about it.

    Attributes:
        name: what the user typed, for messages.
        module: the network, in eval mode.
        arch: architecture name.
        scales: scales the weights were trained for (empty: any).
        radius: receptive-field radius in pixels (tile overlap).
        meta: checkpoint metadata.
    """

    name: str
    module: nn.Module
    arch: str
    scales: list[float] = field(default_factory=list)
    radius: int = 0
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def multiscale(self) -> bool:
        return self.arch in MULTISCALE_ARCHS

    def check_scale(self, scale: float) -> None:
        """Raise if these weights cannot upscale by ``scale``; warn if untrained."""
        check_scale(scale)
        if self.multiscale:
            if self.scales and not (min(self.scales) <= scale <= max(self.scales)):
                warnings.warn(
                    f"{self.name} was trained for x{_fmt(self.scales)}; "
                    f"x{scale:g} is outside that range and may look worse",
                    SrucWarning,
                    stacklevel=2,
                )
            return
        if not any(math.isclose(scale, s) for s in self.scales):
            raise ModelError(
                f"{self.name} ({self.arch.upper()}) has weights for x{_fmt(self.scales)} only, "
                f"not x{scale:g}; use one of those scales or a multi-scale model such as VDSR"
            )


def check_scale(scale: float) -> None:
    """Validate an upscaling factor: a number in (1, MAX_SCALE]."""
    if not isinstance(scale, int | float) or not math.isfinite(scale):
        raise UsageError(f"scale must be a number, got {scale!r}")
    if scale <= 1:
        raise UsageError(f"scale must be greater than 1 (got {scale:g}); sruc only enlarges")
    if scale > MAX_SCALE:
        raise UsageError(f"scale {scale:g} is too large: at most {MAX_SCALE:g}")


def known_names() -> list[str]:
    """Every registry name, built-in ones first."""
    return [*BUILTIN, *sorted(PRETRAINED)]


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.endswith((".pt", ".pth")) or Path(spec).exists()


def load_model(spec: str | os.PathLike[str] | nn.Module = "bicubic") -> LoadedModel:
    """Resolve ``--model``: a registry name, a checkpoint path, or a module.

    Raises:
        ModelError: unknown name (the message lists the known ones), or a bad
            checkpoint.
    """
    if isinstance(spec, nn.Module):
        return LoadedModel(
            name=type(spec).__name__,
            module=spec.eval(),
            arch=next((n for n, c in models.ARCHITECTURES.items() if type(spec) is c), "custom"),
            radius=models.receptive_radius(spec),
        )
    text = os.fspath(spec)
    if text == "bicubic":
        return LoadedModel(name="bicubic", module=models.Bicubic(), arch="bicubic")
    if text in PRETRAINED:  # pragma: no cover - filled in by the weights release
        raise ModelError(f"pretrained weights for {text!r} are not downloadable yet")
    if _looks_like_path(text):
        ckpt = checkpoint.load(text)
        module = ckpt.build()
        return LoadedModel(
            name=text,
            module=module,
            arch=ckpt.arch,
            scales=ckpt.scales,
            radius=models.receptive_radius(module),
            meta=ckpt.meta,
        )
    known = ", ".join(known_names())
    if text in models.ARCHITECTURES:
        raise ModelError(
            f"no pretrained {text.upper()} weights are available yet; known models: {known}, "
            "or pass a checkpoint file with --model PATH"
        )
    raise ModelError(f"unknown model {text!r}; known models: {known}, or a checkpoint file path")


def _fmt(scales: list[float]) -> str:
    return "/".join(f"{s:g}" for s in scales) or "any"
