"""How ``sruc train`` optimises, as data: the recipes, the losses, the samplings.

A :class:`Recipe` names an optimiser, a learning-rate schedule, a loss and a
clipping; :data:`RECIPES` holds those ``--recipe`` chooses from and
:data:`DEFAULT_RECIPE` the one used when none is given. :func:`build_optimizer`
turns a recipe into the torch optimiser of a network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sruc import archs
from sruc.errors import UsageError


@dataclass(frozen=True)
class Recipe:
    """How to optimise: optimiser, learning-rate schedule, loss and clipping."""

    name: str
    optimizer: str  # "sgd" or "adam"
    lr: float  # base learning rate (--lr overrides it)
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    schedule: str = "constant"  # "step": x0.1 every `decay_every` of the run; "cosine": to 0
    decay_every: float = 0.25  # fraction of the run between decays
    clip: float | None = None  # the global gradient norm is clipped to this (--clip overrides)
    loss: str = "mse"  # see LOSSES
    last_layer_lr: float = 1.0  # lr multiplier of the last convolution (SRCNN: 0.1)
    identity_start: bool = False  # start at the identity (the arch's identity_start)
    batch_size: int | None = None  # None: the architecture's (ArchSpec.batch_size)
    model_config: tuple[tuple[str, Any], ...] = ()  # architecture defaults, e.g. no biases
    sampling: str = "random"  # see SAMPLINGS
    model: str | None = None  # the architecture this recipe is for (None: any)
    summary: str = ""

    def factor(self, step: int, steps: int) -> float:
        """The learning-rate multiplier at ``step`` of a ``steps``-long run."""
        if self.schedule == "step":
            every = max(1, math.ceil(steps * self.decay_every))
            return 0.1 ** (step // every)
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
        return 1.0


def loss_fn(name: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss ``name`` (a key of :data:`LOSSES`) of float32 ``(B, 1, P, P)`` tensors."""
    if name == "sum":
        return (out - target).pow(2).sum()
    if name == "euclidean":
        return 0.5 * (out - target).pow(2).sum() / out.shape[0]
    if name == "l1":
        return F.l1_loss(out, target)
    return F.mse_loss(out, target)


#: The training losses, by the name a recipe or ``--loss`` gives.
LOSSES = {
    "mse": "mean squared error per pixel",
    "l1": "mean absolute error per pixel (EDSR's choice)",
    "euclidean": "Caffe's Euclidean loss: 1/2 sum of squares over the batch / batch size",
    "sum": "sum of squares over the batch (PyTorch MSELoss(reduction='sum'))",
}
#: How patches are drawn (``--sampling``).
SAMPLINGS = {
    "random": "any position, weighted by each pair's positions, and a random flip/rotation",
    "grid": "epochs of every non-overlapping patch (stride = patch) x 8 flips/rotations, shuffled",
}


RECIPES: dict[str, Recipe] = {
    "adam": Recipe(
        "adam",
        "adam",
        lr=1e-3,
        schedule="cosine",
        identity_start=True,
        summary="Adam, lr 1e-3, cosine decay to 0, per-pixel MSE; the model starts at bicubic",
    ),
    # The paper clips each gradient element to [-theta/lr, theta/lr] without giving
    # theta. The public PyTorch port that reaches the paper's numbers
    # (twtygqyy/pytorch-vdsr, main_vdsr.py) does something else: it clips the global
    # gradient norm to a constant 0.4 at every step whatever the lr, with the plain
    # sum-of-squares loss, which is so large that the norm is nearly always clipped
    # (normalised SGD: every step is at most lr * 0.4 before momentum); its network
    # has no biases; batch 128; lr 0.1 x0.1 every 10 of 50 epochs; stride-41 patches
    # of the 291 images and their 0.7 and 0.5 downsizes. This recipe is that one.
    "vdsr-paper": Recipe(
        "vdsr-paper",
        "sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="step",
        decay_every=0.2,
        clip=0.4,
        loss="sum",
        batch_size=128,
        model_config=(("bias", False),),
        sampling="grid",
        model="vdsr",
        summary="VDSR paper (as its public PyTorch port trains it): SGD momentum 0.9, "
        "wd 1e-4, lr 0.1 x0.1 every fifth of the run, gradient norm clipped to 0.4, "
        "sum-of-squares loss, batch 128, no biases, stride-41 patches",
    ),
    "srcnn-paper": Recipe(
        "srcnn-paper",
        "sgd",
        lr=1e-4,
        loss="euclidean",
        last_layer_lr=0.1,
        model="srcnn",
        summary="SRCNN paper: plain SGD, lr 1e-4 (1e-5 for the last layer), constant",
    ),
}
#: The recipe used when none is given: the one that reached the highest validation
#: PSNR in the same wall time (benchmarks/train_recipes.py recipes, 3 min on T91, 2 CPU
#: cores): VDSR 10x32 +0.66/+1.40/+1.19 dB over bicubic, vdsr-paper +0.00 (collapsed
#: to bicubic); SRCNN -0.68 dB at x3 vs -4.55 for srcnn-paper. See README.
DEFAULT_RECIPE = "adam"


def resolve_recipe(name: str, model: str) -> Recipe:
    """A recipe by name; ``paper`` means the paper recipe of ``model``."""
    key = f"{model}-paper" if name == "paper" else name
    if key not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; choose one of paper, {', '.join(RECIPES)}")
    recipe = RECIPES[key]
    if recipe.model is not None and recipe.model != model:
        raise UsageError(
            f"--recipe {key} trains {recipe.model.upper()}, not {model.upper()}; "
            f"add --model {recipe.model} or use --recipe paper or adam"
        )
    return recipe


def build_optimizer(net: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimiser; the last convolution in its own group when its lr differs."""
    params: list[dict[str, Any]] = [{"params": list(net.parameters())}]
    if recipe.last_layer_lr != 1.0:
        last = archs.last_conv(net)
        tail = {id(p) for p in last.parameters()}
        params = [
            {"params": [p for p in net.parameters() if id(p) not in tail]},
            {"params": list(last.parameters()), "lr": lr * recipe.last_layer_lr},
        ]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        params, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
