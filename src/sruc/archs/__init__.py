"""The network architectures sruc knows: one module per network, read from here only.

Each module of this package (``vdsr.py``, ``srcnn.py``, ``bicubic.py``)
defines its ``nn.Module`` and a module-level ``SPEC``, an :class:`ArchSpec`
that says everything the rest of sruc needs to know about it: its name (as
stored in a checkpoint's ``arch``), whether one set of weights serves every
scale, the patch and batch size it trains with, how to start it at the
identity, and which convolutions the fast paths may fuse. Nothing outside this
package names an architecture, so adding one is one new file here (and its
test); :func:`register` adds one from elsewhere (a plugin, a test).

Every module must also expose ``config`` (its constructor arguments, stored in
checkpoints) and ``receptive_radius`` (how far tiles must overlap).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from sruc.errors import ModelError

#: ``(convolution, followed by a ReLU)`` in order, and whether the input is added back.
ConvPlan = tuple[list[tuple[nn.Conv2d, bool]], bool]


@dataclass(frozen=True)
class ArchSpec:
    """What sruc knows about one architecture.

    Attributes:
        name: the name in checkpoints and on the command line.
        module: the ``nn.Module`` class; its constructor takes the checkpoint ``config``.
        multiscale: one set of weights for every scale (it works on the interpolated
            image, as VDSR does); otherwise weights are per scale (SRCNN).
        patch_size, batch_size: training defaults (``None``: not trainable).
        identity: the network is the identity on its input (bicubic): nothing runs.
        conv_plan: the flat chain of convolutions (+ ReLU) the module computes, for
            the fused CPU kernels and the conv-chain inference path; ``None``: the
            module runs as it is.
        identity_start: initialise a fresh module so that it returns its input
            (the ``adam`` recipe's start); ``None``: the module's own init.
        limits: the largest value of each integer constructor argument that
            :func:`build` accepts, so a damaged or hostile config (width 100000)
            is refused before anything is allocated.
        summary: one line for people.
    """

    name: str
    module: type[nn.Module]
    multiscale: bool
    patch_size: int | None = None
    batch_size: int | None = None
    identity: bool = False
    conv_plan: Callable[[nn.Module], ConvPlan] | None = None
    identity_start: Callable[[nn.Module], None] | None = None
    limits: Mapping[str, int] = field(default_factory=dict)
    summary: str = ""

    @property
    def trainable(self) -> bool:
        return self.patch_size is not None and self.batch_size is not None


_SPECS: dict[str, ArchSpec] = {}
_DISCOVERED = False


def _discover() -> dict[str, ArchSpec]:
    """Every ``SPEC`` of this package's modules (imported once), plus registered ones."""
    global _DISCOVERED
    if not _DISCOVERED:
        for info in pkgutil.iter_modules(__path__):
            if info.name.startswith("_"):
                continue
            spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
            if isinstance(spec, ArchSpec):
                _SPECS.setdefault(spec.name, spec)
        _DISCOVERED = True
    return _SPECS


def register(spec: ArchSpec) -> Callable[[], None]:
    """Make ``spec`` known (as this package's modules are); returns its removal."""
    specs = _discover()
    if spec.name in specs and specs[spec.name] is not spec:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    specs[spec.name] = spec
    return lambda: specs.pop(spec.name, None) and None


def names(*, trainable: bool = False) -> list[str]:
    """The known architecture names, sorted (only trainable ones if asked)."""
    return sorted(n for n, s in _discover().items() if s.trainable or not trainable)


def get(name: str) -> ArchSpec:
    """The spec of ``name``.

    Raises:
        ModelError: an unknown architecture (the message lists the known ones).
    """
    spec = _discover().get(name)
    if spec is None:
        raise ModelError(f"unknown architecture {name!r}; known: {', '.join(names())}")
    return spec


def spec_of(module: nn.Module) -> ArchSpec | None:
    """The spec whose class ``module`` is exactly (None for any other module)."""
    return next((s for s in _discover().values() if type(module) is s.module), None)


def build(arch: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Construct an architecture from its name and constructor arguments.

    Raises:
        ModelError: for an unknown architecture or arguments it does not take.
    """
    spec = get(arch)
    check_limits(spec, config or {})
    try:
        return spec.module(**(config or {}))
    except (TypeError, ValueError) as e:
        raise ModelError(f"bad configuration for {arch}: {e}") from None


def check_limits(spec: ArchSpec, config: Mapping[str, Any]) -> None:
    """Refuse a config outside the spec's limits (or with a non-integer size).

    Raises:
        ModelError: a value above its limit, or below 1.
    """
    for key, most in spec.limits.items():
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ModelError(
                f"bad configuration for {spec.name}: {key} must be a whole number from 1 to "
                f"{most}, got {value!r}"
            )


def build_meta(arch: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """The architecture on PyTorch's meta device: shapes without memory, for checking
    a checkpoint's tensors against its config before anything is allocated."""
    import torch

    with torch.device("meta"):
        return build(arch, dict(config or {}))


def receptive_radius(model: nn.Module) -> int:
    """A model's receptive-field radius in pixels (how far tiles must overlap)."""
    r = getattr(model, "receptive_radius", None)
    if not isinstance(r, int):
        raise ModelError(f"{type(model).__name__} does not declare its receptive_radius")
    return r


def conv_plan(module: nn.Module) -> ConvPlan | None:
    """The module's chain of convolutions, if its spec gives one (else None)."""
    spec = spec_of(module)
    return spec.conv_plan(module) if spec is not None and spec.conv_plan is not None else None


def last_conv(module: nn.Module) -> nn.Conv2d:
    """The module's last convolution (its reconstruction layer)."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]


__all__ = [
    "ArchSpec",
    "ConvPlan",
    "build",
    "build_meta",
    "check_limits",
    "conv_plan",
    "get",
    "last_conv",
    "names",
    "receptive_radius",
    "register",
    "spec_of",
]
