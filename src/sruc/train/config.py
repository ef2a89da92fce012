"""What a training run is: its configuration, the events it reports, its result.

:class:`TrainConfig` holds every option of ``sruc train``; :meth:`TrainConfig.resolved`
fills in the defaults that define the trajectory (what ``state.pt`` records as
the run and a resumed run must repeat), and :func:`check_config` rejects values
that can never work before any work is done. :class:`TrainEvent` is one report
to the ``progress`` callback and :class:`TrainResult` what :func:`~sruc.train.train`
returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from sruc import archs
from sruc.engine.device import resolve_device
from sruc.engine.precision import resolve_precision
from sruc.errors import ModelError, UsageError
from sruc.train.recipes import DEFAULT_RECIPE, LOSSES, SAMPLINGS, resolve_recipe


@dataclass
class TrainConfig:
    """Everything that defines a training run (see ``sruc train --help``)."""

    data: str  # folder of training images, searched recursively
    out: str  # run folder: checkpoints, state, metrics, plot
    model: str = "vdsr"  # "vdsr" or "srcnn"
    model_config: dict[str, Any] = field(default_factory=dict)  # e.g. {"depth": 10, "width": 32}
    scales: tuple[int, ...] = (2, 3, 4)  # VDSR mixes them in one model; SRCNN takes one
    recipe: str = DEFAULT_RECIPE  # a key of RECIPES, or "paper"
    steps: int = 10_000  # optimisation steps; the schedule is scaled to them
    batch_size: int | None = None  # global (all processes together); None: 64 VDSR, 128 SRCNN
    patch_size: int | None = None  # patch edge in pixels; None: 41 VDSR, 33 SRCNN
    lr: float | None = None  # None: the recipe's
    downscales: tuple[float, ...] = (1.0, 0.7, 0.5)  # HR scale augmentation, as in VDSR
    val: str | None = None  # folder of validation images; None: carve val_split off `data`
    val_split: float | None = None  # fraction of the images held out; None: 0.05 without val
    val_crop: int = 96  # validate on central crops this big (0: whole images) to stay cheap
    val_every: int | None = None  # steps between validations; None: steps // 10
    seed: int = 0  # weights init and patch sampling
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps (one GPU per process under torchrun)
    precision: str = "auto"  # auto (bf16 where the hardware has it), fp32, bf16, fp16 (CUDA)
    channels_last: bool | None = None  # None: on CUDA and on the CPU (measured faster on both)
    save_every_minutes: float = 5.0  # how often the training state is written
    log_every: int = 50  # steps between log lines in metrics.jsonl and the progress log
    resume: bool = False  # insist on continuing a run (a matching run resumes anyway)
    stop_after: int | None = None  # stop (with a saved state) after this step; resume later
    max_minutes: float | None = None  # stop (with a saved state) after this much wall time
    init: str | None = None  # start from these weights: a checkpoint file or a registry name
    clip: float | None = None  # clip the global gradient norm to this; None: the recipe's
    loss: str | None = None  # a key of LOSSES; None: the recipe's
    sampling: str | None = None  # a key of SAMPLINGS; None: the recipe's
    ema: float = 0.0  # decay of a moving average of the weights, validated and saved (0: off)
    revive: float = 0.0  # with init: re-initialise ReLU channels active on < this share (0: off)
    # (switched on or changed when resuming, the average starts at that step's weights)
    threads: int | None = None  # CPU threads for torch; None: sruc.engine.threads' policy

    def resolved(self) -> dict[str, Any]:
        """The fields that define the trajectory, defaults filled in (JSON-like)."""
        spec = archs.get(self.model)
        recipe = resolve_recipe(self.recipe, self.model)
        return {
            "model": self.model,
            # The recipe's architecture defaults (no biases for vdsr-paper), unless the
            # run starts from weights, whose architecture it keeps.
            "model_config": {
                **(dict(recipe.model_config) if self.init is None else {}),
                **self.model_config,
            },
            "scales": sorted({int(s) for s in self.scales}),
            "recipe": recipe.name,
            "steps": self.steps,
            "batch_size": self.batch_size or recipe.batch_size or spec.batch_size,
            "patch_size": self.patch_size or spec.patch_size,
            "lr": self.lr if self.lr is not None else recipe.lr,
            "downscales": [float(f) for f in self.downscales],
            "val_split": None if self.val else (self.val_split or 0.05),
            "val_crop": self.val_crop,
            "val_every": self.val_every or max(1, self.steps // 10),
            "seed": self.seed,
            "clip": self.clip if self.clip is not None else recipe.clip,
            "loss": self.loss or recipe.loss,
            "sampling": self.sampling or recipe.sampling,
            "revive": self.revive,
        }  # not `ema`: the average never steers training, so it may change on resume


@dataclass
class TrainEvent:
    """One progress report to the ``progress`` callback.

    ``kind`` is ``"data"`` (building the patch cache: ``step`` of ``steps``
    images done), ``"start"``, ``"step"`` (after every step), ``"log"`` (every
    ``log_every`` steps, with ``loss``), ``"val"`` (with ``val_psnr``),
    ``"save"`` or ``"done"``.
    """

    kind: str
    step: int = 0
    steps: int = 0
    loss: float | None = None  # mean per-pixel MSE on [0, 1] since the previous log
    lr: float | None = None
    val_psnr: dict[int, float] | None = None  # dB per scale, latest validation
    best: bool = False  # this validation is the best so far
    patches_per_s: float | None = None
    eta_s: float | None = None
    message: str = ""


Progress = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    """What a call to :func:`~sruc.train.train` did.

    Attributes:
        out: the run folder.
        best: ``best.pt``, or None if no validation ran yet.
        last: ``last.pt``.
        step: steps done so far; ``steps``: steps of the schedule.
        completed: the schedule is finished (False after stop_after/max_minutes).
        interrupted: stopped by Ctrl-C (SIGINT) or SIGTERM, with a saved state.
        resumed_from: the step this call started from (0: a fresh run).
        best_step, best_psnr: the best validation and its PSNR per scale (dB).
        bicubic_psnr: the bicubic baseline on the same validation images.
        images, val_images, skipped: image counts (skipped: files not used).
        seconds: wall time of this call; ``total_seconds`` over all sessions.
        rank, world_size: this process in data-parallel training.
    """

    out: Path
    best: Path | None
    last: Path
    step: int
    steps: int
    completed: bool
    resumed_from: int
    best_step: int
    best_psnr: dict[int, float]
    bicubic_psnr: dict[int, float]
    images: int
    val_images: int
    skipped: int
    seconds: float
    total_seconds: float
    rank: int = 0
    world_size: int = 1
    interrupted: bool = False


def check_config(cfg: TrainConfig) -> None:
    """Reject option values that can never work, before any work is done."""
    if cfg.model not in archs.names(trainable=True):
        known = ", ".join(archs.names(trainable=True))
        raise UsageError(f"cannot train {cfg.model!r}; choose one of {known}")
    if not cfg.scales:
        raise UsageError("give at least one scale")
    if not archs.get(cfg.model).multiscale and len(cfg.scales) > 1:
        listed = ",".join(str(s) for s in cfg.scales)
        multi = [n for n in archs.names(trainable=True) if archs.get(n).multiscale]
        raise UsageError(
            f"{cfg.model.upper()} learns one scale per model, got {listed}: train one run per "
            f"scale (e.g. --scale {cfg.scales[0]} --out OUT/x{cfg.scales[0]}), or use "
            f"--model {' or '.join(multi)}"
        )
    resolve_recipe(cfg.recipe, cfg.model)
    positive = {"steps": cfg.steps, "log-every": cfg.log_every}
    positive.update(
        {
            k: v
            for k, v in (
                ("batch-size", cfg.batch_size),
                ("val-every", cfg.val_every),
                ("stop-after", cfg.stop_after),
            )
            if v is not None
        }
    )
    for name, value in positive.items():
        if value < 1:
            raise UsageError(f"--{name} must be at least 1, got {value}")
    if cfg.patch_size is not None and cfg.patch_size < 8:
        raise UsageError(f"--patch-size must be at least 8 pixels, got {cfg.patch_size}")
    if cfg.lr is not None and not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise UsageError(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.val and cfg.val_split is not None:
        raise UsageError("give --val DIR or --val-split FRACTION, not both")
    if cfg.val_split is not None and not 0 < cfg.val_split <= 0.5:
        raise UsageError(f"--val-split must be in (0, 0.5], got {cfg.val_split}")
    if cfg.val_crop < 0:
        raise UsageError(f"--val-crop must be 0 (whole images) or a size, got {cfg.val_crop}")
    if not cfg.downscales or not all(0 < f <= 1 for f in cfg.downscales):
        given = ",".join(f"{f:g}" for f in cfg.downscales)
        raise UsageError(f"--downscales must be in (0, 1], e.g. 1,0.7,0.5; got {given}")
    resolve_precision(cfg.precision, resolve_device(cfg.device))  # what the device can run
    if not 0 <= cfg.ema < 1:
        raise UsageError(f"--ema must be in [0, 1), e.g. 0.999 (0: off), got {cfg.ema}")
    if not cfg.save_every_minutes > 0:
        raise UsageError(f"--save-every-minutes must be positive, got {cfg.save_every_minutes}")
    if not (math.isfinite(cfg.revive) and 0 <= cfg.revive < 1):
        raise UsageError(
            f"--revive must be a share of pixels in [0, 1), e.g. 0.01 (0: off); got {cfg.revive:g}"
        )
    if cfg.revive and cfg.init is None:
        raise UsageError(
            "--revive re-initialises the dormant channels of --init weights; add --init"
        )
    if cfg.clip is not None and not (math.isfinite(cfg.clip) and cfg.clip > 0):
        raise UsageError(f"--clip must be a positive gradient norm, e.g. 0.4; got {cfg.clip:g}")
    if cfg.loss is not None and cfg.loss not in LOSSES:
        raise UsageError(f"unknown loss {cfg.loss!r}; use {', '.join(LOSSES)}")
    if cfg.sampling is not None and cfg.sampling not in SAMPLINGS:
        raise UsageError(f"unknown sampling {cfg.sampling!r}; use {', '.join(SAMPLINGS)}")
    build_network(cfg.model, cfg.resolved()["model_config"])  # a bad --model-config fails here


def build_network(arch: str, config: dict[str, Any]) -> nn.Module:
    """``arch`` built with ``config``; a config it rejects is a bad ``--model-config``."""
    try:
        return archs.build(arch, config)
    except ModelError as e:
        raise UsageError(f"--model-config: {e}") from None


def legacy_run_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """What a run recorded before these keys existed meant (runs of older sruc versions)."""
    paper = old.get("recipe") in ("vdsr-paper", "srcnn-paper")
    return {
        "clip": None,
        "loss": "euclidean" if paper else "mse",
        "sampling": "random",
        "revive": 0.0,
    }
