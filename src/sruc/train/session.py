"""One session of a run: its context, and what it says about itself.

A :class:`Session` is one call of :func:`~sruc.train.train`: the run (the
resolved configuration), the recipe, this process, the clock, and the
``progress`` callback, which only rank 0 reports to. :class:`SessionData` is what
it trains and validates on. The rest says what the session did: the message
that starts it, the metadata of the checkpoints it writes, its result.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sruc import __version__
from sruc.errors import SrucWarning, UsageError
from sruc.train.config import Progress, TrainConfig, TrainEvent, TrainResult
from sruc.train.data import ImageSet, PatchCache
from sruc.train.distributed import Dist
from sruc.train.model import InitWeights, Trainee, precision_name
from sruc.train.recipes import Recipe, resolve_recipe
from sruc.train.state import RunRecord
from sruc.train.stopping import Interrupt


@dataclass
class Session:
    """One call of :func:`~sruc.train.train`: the run, this process, and whom it reports to."""

    cfg: TrainConfig
    run: dict[str, Any]  # cfg.resolved(), the --init digest and the images' manifests
    recipe: Recipe
    ddp: Dist
    device: torch.device
    progress: Progress | None
    interrupt: Interrupt
    t_start: float  # time.monotonic() when the session began

    @classmethod
    def open(
        cls,
        cfg: TrainConfig,
        ddp: Dist,
        device: torch.device,
        progress: Progress | None,
        start_weights: InitWeights | None,
        interrupt: Interrupt,
    ) -> Session:
        """Begin a session: the run it continues or starts, on ``ddp.world_size`` processes."""
        t_start = time.monotonic()
        run = cfg.resolved()
        if start_weights is not None:
            run["init"] = start_weights.digest
        recipe = resolve_recipe(cfg.recipe, cfg.model)
        batch = run["batch_size"]
        if batch % ddp.world_size:
            raise UsageError(
                f"--batch-size {batch} is not a multiple of the {ddp.world_size} processes"
            )
        return cls(cfg, run, recipe, ddp, device, progress, interrupt, t_start)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def steps(self) -> int:
        return int(self.run["steps"])

    def emit(self, event: TrainEvent) -> None:
        if self.progress is not None and self.ddp.main:
            self.progress(event)

    def warn(self, message: str) -> None:
        if self.ddp.main:
            warnings.warn(message, SrucWarning, stacklevel=3)

    def wall_seconds(self, record: RunRecord) -> float:
        """Seconds trained over all sessions, this one until now."""
        return record.wall_before + time.monotonic() - self.t_start


@dataclass(frozen=True)
class SessionData:
    """What the session trains and validates on."""

    images: ImageSet  # the training images
    val_set: ImageSet  # the validation images, never trained on
    skipped: int  # image files found but not used
    cache: PatchCache  # the training pairs, and the batches drawn from them
    val_hr: list[torch.Tensor]  # the validation images as validated (central crops)
    bicubic: dict[int, float]  # the bicubic PSNR per scale on them


def start_message(s: Session, data: SessionData, t: Trainee, start: int) -> str:
    """The message of the "start" event."""
    summary = (
        f"{len(data.images)} images ({data.skipped} skipped), {len(data.val_set)} for "
        f"validation; {len(data.cache)} pairs, {data.cache.nbytes / 2**20:.0f} MiB, "
        f"{data.cache.patches_per_epoch} patches per epoch; {s.recipe.name} on {s.device} "
        f"({precision_name(t.amp)}{' Winograd' if t.winograd else ''}, "
        f"{s.ddp.world_size} process(es))"
    )
    if start:
        summary = f"resuming at step {start}; {summary}"
        if t.avg is not None and not int(t.avg.n_averaged):
            summary += f"; the moving average (--ema {s.cfg.ema:g}) starts here"
    return summary


def checkpoint_meta(
    s: Session,
    data: SessionData,
    t: Trainee,
    record: RunRecord,
    done: int,
    scores: dict[int, float],
) -> dict[str, Any]:
    """The metadata of best.pt and last.pt: how the weights were made."""
    cfg, run = s.cfg, s.run
    return {
        "recipe": s.recipe.name,
        "steps": s.steps,
        "step": done,
        "data_manifest": run["data_manifest"],
        "val_manifest": run["val_manifest"],
        "val_psnr": {str(scale): v for scale, v in scores.items()},
        "val_psnr_bicubic": {str(scale): v for scale, v in data.bicubic.items()},
        "seed": cfg.seed,
        "sruc_version": __version__,
        "wall_seconds": s.wall_seconds(record),
        "device": str(s.device),
        "precision": precision_name(t.amp),
        "world_size": s.ddp.world_size,
        "batch_size": run["batch_size"],
        "patch_size": run["patch_size"],
        "lr": run["lr"],
        **({"ema": cfg.ema} if cfg.ema else {}),  # the weights are this moving average
        "images": len(data.images),
        "val_images": len(data.val_set),
        # Fine-tuned: what it started from (SHA-256 of the starting tensors).
        **({"init": cfg.init, "init_weights": run["init"]} if "init" in run else {}),
    }


def train_result(
    s: Session, data: SessionData, record: RunRecord, start: int, done: int
) -> TrainResult:
    """What this session did, from step ``start`` to ``done``."""
    out, best = s.out, record.best
    return TrainResult(
        out=out,
        best=out / "best.pt" if (out / "best.pt").exists() else None,
        last=out / "last.pt",
        step=done,
        steps=s.steps,
        completed=done >= s.steps,
        interrupted=s.interrupt.requested,
        resumed_from=start,
        best_step=int(best["step"]),
        best_psnr={int(k): v for k, v in best.get("scores", {}).items()},
        bicubic_psnr=data.bicubic,
        images=len(data.images),
        val_images=len(data.val_set),
        skipped=data.skipped,
        seconds=time.monotonic() - s.t_start,
        total_seconds=s.wall_seconds(record),
        rank=s.ddp.rank,
        world_size=s.ddp.world_size,
    )
