"""Training SRCNN and VDSR on your own images: :func:`train`.

One call is one session of the run in ``out``, in these steps: load the
images (:mod:`sruc.train.data`), resume or start the run folder
(:mod:`sruc.train.state`), cut the patches, build or restore the model and its
optimiser (:mod:`sruc.train.model`), then the loop: a batch of patches, a
forward pass under autocast, the loss in float32, a step; a log line every
``log_every`` steps; every ``val_every`` steps the validation PSNR by the
protocol (:mod:`sruc.train.validate`), keeping the best weights; every few
minutes an atomic training state. It stops at the end of the schedule, after
``stop_after`` steps, or early (:mod:`sruc.train.stopping`) with a saved state.

With ``ema`` (e.g. 0.999) the weights validated and written to best.pt and
last.pt are an exponential moving average of the trained ones, which smooths
the step-to-step jitter of the validation PSNR. Under ``torchrun`` the
processes train data-parallel (:mod:`sruc.train.distributed`).

The library never prints: progress goes to the ``progress`` callback as
:class:`TrainEvent` objects, skipped files to :mod:`warnings` as
:class:`~sruc.errors.SrucWarning`, failures raise :class:`~sruc.errors.SrucError`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sruc.engine.fused import training_forward
from sruc.engine.memory import out_of_memory_as
from sruc.engine.precision import cpu_can_run_bf16
from sruc.engine.threads import use_threads
from sruc.errors import UsageError
from sruc.scales import check_protocol_scales
from sruc.train.config import Progress, TrainConfig, TrainEvent, TrainResult, check_config
from sruc.train.data import ImageSet, PatchCache, drop_overlap, load_images, split_validation
from sruc.train.distributed import check_replicas, end_distributed, setup_distributed
from sruc.train.model import InitWeights, Trainee, build_trainee, load_init
from sruc.train.recipes import loss_fn
from sruc.train.revive import revive
from sruc.train.session import Session, SessionData, checkpoint_meta, start_message, train_result
from sruc.train.state import (
    RunRecord,
    append_jsonl,
    check_out,
    prepare_out,
    restore,
    save_state,
    seed_everything,
    write_checkpoint,
    write_plot,
)
from sruc.train.stopping import Interrupt, time_to_stop
from sruc.train.validate import bicubic_psnr, evaluate, mean, validation_images

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "evaluate", "train"]

#: --revive measures which channels are dormant on this many of the run's first batches.
REVIVE_BATCHES = 4


def train(config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Train (or continue training) a model as ``config`` says.

    Raises:
        UsageError: an option value that cannot work (scale 2.5, SRCNN on
            several scales, unknown recipe).
        InputError: no usable training or validation images.
        OutputError: ``out`` holds a different run, or cannot be written.
    """
    scales = tuple(sorted(check_protocol_scales(config.scales, "training")))
    cfg = dataclasses.replace(config, scales=scales)
    check_config(cfg)
    use_threads(cfg.threads)  # per process: under torchrun, this machine's CPUs shared out
    start_weights = load_init(cfg) if cfg.init is not None else None
    if start_weights is not None and not cfg.model_config:
        cfg = dataclasses.replace(cfg, model_config=dict(start_weights.config))
    ddp, device = setup_distributed(cfg.device)
    try:
        with Interrupt() as interrupt:
            s = Session.open(cfg, ddp, device, progress, start_weights, interrupt)
            return _train(s, start_weights)
    finally:
        end_distributed(ddp)


def _train(s: Session, start_weights: InitWeights | None) -> TrainResult:
    """The session's steps: the data, the run folder, the model, the loop, the end."""
    images, val_set, skipped = _load_images(s)
    # The run folder: continue a matching run, refuse a different one.
    state = check_out(s.out, s.run, s.cfg.resume)
    start = int(state["step"]) if state else 0
    cache = _patch_cache(s, images)
    if s.ddp.main:  # only now: a run refused above leaves the folder untouched
        prepare_out(s.out, s.cfg, s.run, start)
    val_hr = validation_images(val_set.images, s.run["val_crop"])
    bicubic = bicubic_psnr(val_hr, s.run["scales"])
    data = SessionData(images, val_set, skipped, cache, val_hr, bicubic)

    # The model, optimiser and schedule; then the saved state, if any.
    seed_everything(s.cfg.seed)
    alone = s.ddp.world_size == 1
    trainee = build_trainee(s.cfg, s.run, s.recipe, s.device, start_weights, alone)
    revived = _revive(s, cache, trainee) if state is None and s.run["revive"] else ""
    record = restore(state, trainee, s.cfg.ema) if state is not None else RunRecord()
    trainee.distribute(s.ddp.world_size, s.device)
    message = start_message(s, data, trainee, start) + revived
    s.emit(TrainEvent("start", start, s.steps, message=message))

    with out_of_memory_as(lambda: _out_of_memory_message(s, trainee)):
        done = _loop(s, data, trainee, record, start)

    # The end of this session: the replicas must agree; the final state (rank 0).
    if s.ddp.world_size > 1:
        check_replicas(trainee.net, s.ddp, s.out, done)
    if s.ddp.main and (state is None or done > start):
        _save(s, data, trainee, record, done)
    s.ddp.barrier()
    result = train_result(s, data, record, start, done)
    s.emit(TrainEvent("done", done, s.steps, val_psnr=result.best_psnr or None))
    return result


def _out_of_memory_message(s: Session, t: Trainee) -> str:
    """What to do when a step or a validation did not fit in memory."""
    run = s.run
    what = f"{run['batch_size']} patches of {run['patch_size']}x{run['patch_size']}"
    ways = "a smaller --batch-size or --patch-size (a new run)"
    if t.winograd and cpu_can_run_bf16():  # autocast keeps bf16 activations: half as many bytes
        ways = f"--precision bf16 (about half the memory), or {ways}"
    saved = s.out / "state.pt"
    kept = f"; the run's last saved state is in {saved}" if saved.is_file() else ""
    return (
        f"out of memory training on {s.device} with {what}: free some memory, or use {ways}{kept}"
    )


def _revive(s: Session, cache: PatchCache, t: Trainee) -> str:
    """--revive: give the dormant channels of the starting weights a second start,
    measured on the run's first batches (the same on every rank: the run stays
    reproducible and the replicas equal)."""
    inputs = [
        cache.batch(step, s.run["batch_size"])[0].to(s.device, memory_format=t.fmt)
        for step in range(REVIVE_BATCHES)
    ]
    gen = torch.Generator().manual_seed(s.cfg.seed)
    done = revive(t.net, inputs, s.run["revive"], gen)
    if s.ddp.main:
        line = {"kind": "revive", "step": 0, "per_layer": list(done.per_layer), "units": done.units}
        append_jsonl(s.out / "metrics.jsonl", line)
    return (
        f"; revived {done.count} of {done.units} channels (active on under "
        f"{s.run['revive']:.2%} of the pixels of the first {REVIVE_BATCHES} batches)"
    )


def _load_images(s: Session) -> tuple[ImageSet, ImageSet, int]:
    """The training images and validation images never trained on; files skipped."""
    cfg, run, out = s.cfg, s.run, s.out
    scales, patch = run["scales"], run["patch_size"]
    val_dir = Path(cfg.val) if cfg.val else None
    if out.resolve() in (Path(cfg.data).resolve(), val_dir and val_dir.resolve()):
        raise UsageError(f"--out {out} is an image folder; give a folder of its own for the run")
    images = load_images(
        cfg.data, patch + max(scales) - 1, [out, *([val_dir] if val_dir else [])], s.warn
    )
    skipped = len(images.skipped)
    if val_dir is not None:
        val_set = load_images(
            val_dir, 4 * max(scales), [out], s.warn, "give larger validation images"
        )
        skipped += len(val_set.skipped)
        images = drop_overlap(images, val_set, s.warn)
    else:
        images, val_set = split_validation(images, run["val_split"])
    run["data_manifest"] = images.manifest_hash
    run["val_manifest"] = val_set.manifest_hash
    return images, val_set, skipped


def _patch_cache(s: Session, images: ImageSet) -> PatchCache:
    """The training pairs of ``images``, which must give at least one batch of patches."""
    run = s.run
    batch, patch = run["batch_size"], run["patch_size"]
    with out_of_memory_as(
        lambda: (
            f"out of memory building the patch cache from {len(images)} images "
            f"(x{', x'.join(str(k) for k in run['scales'])} at {len(run['downscales'])} "
            "downscales): free some memory, or use fewer or smaller images, fewer --scales "
            "or --downscales"
        )
    ):
        cache = PatchCache(
            images.images,
            run["scales"],
            run["downscales"],
            patch,
            s.cfg.seed,
            lambda i, n: s.emit(TrainEvent("data", i, n, message="building the patch cache")),
            sampling=run["sampling"],
        )
    if batch > cache.available:
        raise UsageError(
            f"--batch-size {batch} is larger than the {cache.available} "
            f"{patch}x{patch} patches the images give ({run['sampling']} sampling); "
            "use a smaller --batch-size or --patch-size, or more images"
        )
    return cache


def _loop(s: Session, data: SessionData, t: Trainee, record: RunRecord, start: int) -> int:
    """Steps from ``start`` until the schedule, ``stop_after`` or a stop ends; steps done."""
    cfg, steps = s.cfg, s.steps
    stop = min(steps, cfg.stop_after) if cfg.stop_after is not None else steps
    t.model.train()
    # On one CPU process, the same forward with each convolution + ReLU fused
    # (same outputs and gradients, ~10% faster for VDSR), or in float32 VDSR through
    # the compiled Winograd kernels (gradients within ~1e-4 of float32's, fastest on
    # CPUs without AMX); DDP needs its own forward.
    cpu_alone = s.device.type == "cpu" and s.ddp.world_size == 1
    fused = training_forward(t.net, t.amp) if cpu_alone else None
    forward = fused if fused is not None else _autocast_forward(t.model, t.amp, s.device)
    t_loop = last_save = time.monotonic()
    win = _Window.start(s.device, time.perf_counter())
    # `done` counts finished steps: the state after step `done - 1`.
    done = start
    for step in range(start, stop):
        _step(s, data.cache, t, step, win, forward)
        done = step + 1

        # Speed and ETA, from this session's pace.
        now = time.perf_counter()
        rate = win.n * s.run["batch_size"] / max(now - win.t, 1e-9)
        eta = (time.monotonic() - t_loop) / (done - start) * (stop - done)
        s.emit(TrainEvent("step", done, steps, patches_per_s=rate, eta_s=eta))

        if done % cfg.log_every == 0 or done == stop:
            _log(s, t, record, done, win, now, rate, eta)
            win = _Window.start(s.device, now)
        if done % s.run["val_every"] == 0 or done == steps:
            _validate(s, data, t, record, done)
            win.t += time.perf_counter() - now  # patches/s counts training time only
        if s.ddp.main and time.monotonic() - last_save >= cfg.save_every_minutes * 60:
            t_save = time.perf_counter()
            _save(s, data, t, record, done)
            last_save = time.monotonic()
            win.t += time.perf_counter() - t_save
        if time_to_stop(s.interrupt, cfg.max_minutes, s.t_start, s.ddp, s.device):
            break
    return done


@dataclass
class _Window:
    """The running sums of one log interval."""

    loss: torch.Tensor  # the sum of the steps' per-pixel MSE (on the device: no sync)
    grad_norm: torch.Tensor  # the sum of the gradient norms before clipping
    t: float  # time.perf_counter() at its start, moved on by validations and saves
    n: int = 0  # steps
    data: float = 0.0  # seconds spent getting batches

    @classmethod
    def start(cls, device: torch.device, t: float) -> _Window:
        zero = torch.zeros((), device=device)
        return cls(zero, zero.clone(), t)


def _step(
    s: Session,
    cache: PatchCache,
    t: Trainee,
    step: int,
    win: _Window,
    forward: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """Optimisation step ``step`` on this process's slice of its global batch."""
    run, ddp = s.run, s.ddp
    t0 = time.perf_counter()
    x, y = cache.batch(step, run["batch_size"], ddp.rank, ddp.world_size)  # (b, 1, P, P) each
    x = x.to(s.device, memory_format=t.fmt, non_blocking=True)
    y = y.to(s.device, memory_format=t.fmt, non_blocking=True)
    win.data += time.perf_counter() - t0
    pred = forward(x).float()  # (b, 1, P, P); the loss in float32 whatever autocast gives
    loss = loss_fn(run["loss"], pred, y)
    t.opt.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    if run["clip"] is not None:  # the global gradient norm, clipped to a constant
        t.scaler.unscale_(t.opt)
        win.grad_norm += nn.utils.clip_grad_norm_(t.net.parameters(), run["clip"]).detach()
    t.scaler.step(t.opt)
    t.scaler.update()
    t.sched.step()
    if t.avg is not None:
        t.avg.update_parameters(t.net)
    win.loss += F.mse_loss(pred.detach(), y)
    win.n += 1


def _autocast_forward(
    model: nn.Module, amp: torch.dtype | None, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model(x)`` under autocast to ``amp`` (None: in float32)."""
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return model(x)

    return forward


def _log(
    s: Session,
    t: Trainee,
    record: RunRecord,
    done: int,
    win: _Window,
    now: float,
    rate: float,
    eta: float,
) -> None:
    """The log line of the interval ``win`` ends: metrics.jsonl and a "log" event."""
    mse = win.loss.detach().clone()
    if s.ddp.world_size > 1:
        dist.all_reduce(mse)
        mse /= s.ddp.world_size
    mse_v = float(mse) / win.n
    lr_now = t.sched.get_last_lr()[0]
    data_frac = win.data / max(now - win.t, 1e-9)
    if s.ddp.main:
        clipped = s.run["clip"] is not None
        line = {
            "kind": "train",
            "step": done,
            "loss": mse_v,
            "lr": lr_now,
            "patches_per_s": rate,
            "data_fraction": data_frac,
            # the mean gradient norm before clipping, where it is clipped
            **({"grad_norm": float(win.grad_norm) / win.n} if clipped else {}),
            "wall_seconds": s.wall_seconds(record),
        }
        append_jsonl(s.out / "metrics.jsonl", line)
    s.emit(
        TrainEvent(
            "log",
            done,
            s.steps,
            loss=mse_v,
            lr=lr_now,
            val_psnr=record.latest or None,
            patches_per_s=rate,
            eta_s=eta,
        )
    )


def _validate(s: Session, data: SessionData, t: Trainee, record: RunRecord, done: int) -> None:
    """Rank 0 validates, keeps the best weights, logs and plots; the others wait."""
    if s.ddp.main:
        t_val = time.perf_counter()
        scales = s.run["scales"]
        latest = record.latest = evaluate(t.kept, data.val_hr, scales, s.device, t.fmt)
        psnr = mean(latest.values())
        improved = psnr > record.best["psnr"]
        record.history.append([done, [latest[scale] for scale in scales]])
        by_scale = {str(scale): v for scale, v in latest.items()}
        if improved:
            record.best = {"psnr": psnr, "step": done, "scores": by_scale}
            meta = checkpoint_meta(s, data, t, record, done, latest)
            write_checkpoint(t.kept, scales, meta, s.out / "best.pt")
        line = {
            "kind": "val",
            "step": done,
            "psnr": by_scale,
            "psnr_mean": psnr,
            "bicubic": {str(scale): v for scale, v in data.bicubic.items()},
            "best": improved,
            "seconds": time.perf_counter() - t_val,
        }
        append_jsonl(s.out / "metrics.jsonl", line)
        write_plot(s.out / "val_psnr.png", record.history, scales, data.bicubic)
        s.emit(TrainEvent("val", done, s.steps, val_psnr=latest, best=improved))
    s.ddp.barrier()  # the other ranks wait for rank 0's validation


def _save(s: Session, data: SessionData, t: Trainee, record: RunRecord, done: int) -> None:
    """last.pt and state.pt after ``done`` steps (rank 0)."""
    meta = checkpoint_meta(s, data, t, record, done, record.latest)
    write_checkpoint(t.kept, s.run["scales"], meta, s.out / "last.pt")
    save_state(s.out / "state.pt", s.cfg, s.run, done, t, record, s.wall_seconds(record))
    s.emit(TrainEvent("save", done, s.steps, message=f"saved {s.out / 'state.pt'}"))
