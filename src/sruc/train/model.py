"""What a run trains: the network, the weights it starts from, and what steps it.

:func:`load_init` reads ``--init`` (weights to start from); :func:`build_trainee`
builds the network at its start (those weights, the identity, or the
architecture's initialisation), places it on the device, and gives it the
recipe's optimiser and schedule, a gradient scaler for fp16 and, with
``--ema``, a moving average of its weights: a :class:`Trainee`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import swa_utils

from sruc import archs
from sruc.engine.precision import autocast_dtype, resolve_precision
from sruc.engine.wino_train import winograd_training
from sruc.errors import ModelError, UsageError
from sruc.train.config import TrainConfig, build_network
from sruc.train.recipes import Recipe, build_optimizer


@dataclass(frozen=True)
class InitWeights:
    """Weights a run starts from (``--init``)."""

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    digest: str  # SHA-256 of the tensors, so a resumed run must start from the same ones


def load_init(cfg: TrainConfig) -> InitWeights:
    """Load ``--init`` (a checkpoint or a registry name) and check it fits the run."""
    from sruc.zoo import registry  # the registry pulls in the download code; only needed here

    assert cfg.init is not None
    try:
        lm = registry.load_model(cfg.init, scale=float(cfg.scales[0]))
    except ModelError as e:
        raise UsageError(f"--init: {e}") from None
    if lm.arch != cfg.model:
        raise UsageError(
            f"--init {cfg.init} holds {lm.arch.upper()} weights but the run trains "
            f"{cfg.model.upper()}; add --model {lm.arch}"
        )
    config = dict(getattr(lm.module, "config", {}))
    built = build_network(cfg.model, cfg.model_config) if cfg.model_config else None
    if built is not None and getattr(built, "config", {}) != config:
        raise UsageError(
            f"--init {cfg.init} has the architecture {json.dumps(config)}, which differs from "
            f"--model-config {json.dumps(cfg.model_config)}; leave --model-config out"
        )
    state = {k: v.detach().to("cpu", torch.float32) for k, v in lm.module.state_dict().items()}
    return InitWeights(config, state, weights_sha256((k, state[k]) for k in sorted(state)))


def weights_sha256(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """The SHA-256 of named tensors, in the order given: each name, then its bytes."""
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def start_at_identity(net: nn.Module) -> None:
    """Start ``net`` at the identity (its output is its bicubic input), as its spec says."""
    spec = archs.spec_of(net)
    if spec is not None and spec.identity_start is not None:
        spec.identity_start(net)


def precision_name(amp: torch.dtype | None) -> str:
    """The ``--precision`` name of an autocast dtype (None: fp32)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32") if amp else "fp32"


def memory_format(channels_last: bool | None, device: torch.device) -> torch.memory_format:
    """``--channels-last`` (None: on CUDA and on the CPU, measured faster on both)."""
    use = device.type in ("cpu", "cuda") if channels_last is None else channels_last
    return torch.channels_last if use else torch.contiguous_format


@dataclass
class Trainee:
    """The network being trained and everything that steps it."""

    net: nn.Module  # the trained weights
    avg: swa_utils.AveragedModel | None  # their moving average (--ema), or None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp: torch.dtype | None  # the autocast dtype (None: fp32)
    fmt: torch.memory_format
    winograd: bool = False  # the step runs the compiled Winograd kernels (sruc.engine.wino_train)
    model: nn.Module = field(init=False)  # what the step runs: net, or its DDP wrapper

    def __post_init__(self) -> None:
        self.model = self.net

    @property
    def kept(self) -> nn.Module:
        """What is validated and saved: the moving average with --ema, else the weights."""
        return self.avg.module if self.avg is not None else self.net

    def distribute(self, world_size: int, device: torch.device) -> None:
        """Run the step through DDP over ``world_size`` processes (after any restore)."""
        if world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None
            )


def build_trainee(
    cfg: TrainConfig,
    run: dict[str, Any],
    recipe: Recipe,
    device: torch.device,
    start_weights: InitWeights | None,
    alone: bool = True,
) -> Trainee:
    """The network at its start, on ``device``, with the recipe's optimiser and schedule.
    ``alone``: one process trains (DDP steps through its own forward)."""
    net = build_network(run["model"], run["model_config"])
    if start_weights is not None:
        net.load_state_dict(start_weights.state_dict)
    elif recipe.identity_start:
        start_at_identity(net)
    fmt = memory_format(cfg.channels_last, device)
    net = net.to(device=device, memory_format=fmt)
    # The step's route and precision: compiled Winograd in float32 where it applies and
    # `auto` prefers it (resolve_precision), else autocast to what the device runs.
    winograd = alone and device.type == "cpu" and winograd_training(net) is not None
    amp = autocast_dtype(resolve_precision(cfg.precision, device, fast_fp32=winograd))
    winograd = winograd and amp is None
    opt = build_optimizer(net, recipe, run["lr"])
    steps = run["steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: recipe.factor(s, steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    # --ema: validation, best.pt and last.pt use the exponential moving average of
    # the weights (it starts as a copy of the weights after the first step).
    avg = (
        swa_utils.AveragedModel(net, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(cfg.ema))
        if cfg.ema
        else None
    )
    return Trainee(net, avg, opt, sched, scaler, amp, fmt, winograd)
