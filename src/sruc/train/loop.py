"""Training SRCNN and VDSR on your own images: ``sruc.train.loop.train(config)``.

The recipes are in :mod:`sruc.train.recipes` and the configuration in
:mod:`sruc.train.config`. :func:`train` loads the data (:mod:`sruc.train.data`),
resumes or starts a run folder, builds the model, and runs the loop: a batch of
patches, a forward pass under autocast, the loss in float32, a step; every
``val_every`` steps the validation PSNR by the protocol (:mod:`sruc.core.protocol`),
keeping the best weights; every few minutes an atomic training state. Helpers
follow.

A run folder holds::

    config.json      the configuration, for people (state.pt is authoritative)
    state.pt         everything needed to continue (weights, their moving average
                     with --ema, optimiser, scheduler, step, RNG states, sampler
                     position); loads with weights_only=True
    best.pt          the weights with the best validation PSNR (a sruc checkpoint)
    last.pt          the latest weights (a sruc checkpoint)
    metrics.jsonl    one JSON object per log line and per validation
    val_psnr.png     validation PSNR per scale over the steps

With ``ema`` (e.g. 0.999) the weights validated and written to best.pt and
last.pt are an exponential moving average of the trained ones, which smooths
the step-to-step jitter of the validation PSNR.

Data parallelism: under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) every process
trains a DDP replica on its own disjoint slice of each global batch (NCCL on
CUDA, Gloo on the CPU); rank 0 validates, logs and writes files.

At the end of every data-parallel session the ranks compare a SHA-256 of
their weights; rank 0 records it in metrics.jsonl (``kind: "replicas"``), and
replicas that differ stop the run with an error instead of saving one of them.

The library never prints: progress goes to the ``progress`` callback as
:class:`TrainEvent` objects, skipped files to :mod:`warnings` as
:class:`~sruc.errors.SrucWarning`, failures raise :class:`~sruc.errors.SrucError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim import swa_utils

from sruc import __version__, archs
from sruc.core.protocol import evaluate_image
from sruc.engine.device import resolve_device, tune_cpu_allocator
from sruc.engine.fused import training_forward
from sruc.engine.launch import torchrun
from sruc.engine.precision import autocast_dtype, resolve_precision
from sruc.errors import InputError, ModelError, OutputError, SrucWarning, UsageError
from sruc.files import atomic as fsutil
from sruc.scales import check_protocol_scales
from sruc.train.config import (
    Progress,
    TrainConfig,
    TrainEvent,
    TrainResult,
    build_network,
    check_config,
    legacy_run_defaults,
)
from sruc.train.data import ImageSet, PatchCache, load_images, split_validation
from sruc.train.plot import line_chart
from sruc.train.recipes import build_optimizer, loss_fn, resolve_recipe
from sruc.zoo import checkpoint

STATE_FORMAT = "sruc-train-state/1"


# --------------------------------------------------------------------------- training


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
    start_weights = _load_init(cfg) if cfg.init is not None else None
    if start_weights is not None and not cfg.model_config:
        cfg = dataclasses.replace(cfg, model_config=dict(start_weights.config))
    ddp, device = _setup_distributed(cfg.device)
    try:
        with _Interrupt() as interrupt:
            return _train(cfg, ddp, device, progress, start_weights, interrupt)
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def _train(
    cfg: TrainConfig,
    ddp: _Dist,
    device: torch.device,
    progress: Progress | None,
    start_weights: _InitWeights | None = None,
    interrupt: _Interrupt | None = None,
) -> TrainResult:
    interrupt = interrupt or _Interrupt()
    t_start = time.monotonic()
    run = cfg.resolved()
    if start_weights is not None:
        run["init"] = start_weights.digest
    recipe = resolve_recipe(cfg.recipe, cfg.model)
    scales: list[int] = run["scales"]
    steps, batch, patch = run["steps"], run["batch_size"], run["patch_size"]
    if batch % ddp.world_size:
        raise UsageError(
            f"--batch-size {batch} is not a multiple of the {ddp.world_size} processes"
        )

    def emit(event: TrainEvent) -> None:
        if progress is not None and ddp.main:
            progress(event)

    def warn(message: str) -> None:
        if ddp.main:
            warnings.warn(message, SrucWarning, stacklevel=3)

    # Data: the training images, and validation images never trained on.
    out = Path(cfg.out)
    val_dir = Path(cfg.val) if cfg.val else None
    if out.resolve() in (Path(cfg.data).resolve(), val_dir and val_dir.resolve()):
        raise UsageError(f"--out {out} is an image folder; give a folder of its own for the run")
    images = load_images(
        cfg.data, patch + max(scales) - 1, [out, *([val_dir] if val_dir else [])], warn
    )
    skipped = len(images.skipped)
    if val_dir is not None:
        val_set = load_images(
            val_dir, 4 * max(scales), [out], warn, "give larger validation images"
        )
        skipped += len(val_set.skipped)
        images = _drop_overlap(images, val_set, warn)
    else:
        images, val_set = split_validation(images, run["val_split"])
    run["data_manifest"] = images.manifest_hash
    run["val_manifest"] = val_set.manifest_hash

    # The run folder: continue a matching run, refuse a different one.
    state = _check_out(out, run, cfg.resume)
    start = int(state["step"]) if state else 0

    cache = PatchCache(
        images.images,
        scales,
        run["downscales"],
        patch,
        cfg.seed,
        lambda i, n: emit(TrainEvent("data", i, n, message="building the patch cache")),
        sampling=run["sampling"],
    )
    if batch > cache.available:
        raise UsageError(
            f"--batch-size {batch} is larger than the {cache.available} "
            f"{patch}x{patch} patches the images give ({run['sampling']} sampling); "
            "use a smaller --batch-size or --patch-size, or more images"
        )
    if ddp.main:  # only now: a run refused above leaves the folder untouched
        _prepare_out(out, cfg, run, start)
    val_hr = [_center_crop(im, run["val_crop"]).to(torch.float64) for im in val_set.images]
    bicubic = {s: _mean(evaluate_image(hr, s).psnr for hr in val_hr) for s in scales}

    # The model, optimiser and schedule; then the saved state, if any.
    _seed_everything(cfg.seed)
    net = build_network(run["model"], run["model_config"])
    if start_weights is not None:
        net.load_state_dict(start_weights.state_dict)
    elif recipe.identity_start:
        _start_at_identity(net)
    amp = autocast_dtype(resolve_precision(cfg.precision, device))
    fmt = _memory_format(cfg.channels_last, device)
    net = net.to(device=device, memory_format=fmt)
    opt = build_optimizer(net, recipe, run["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: recipe.factor(s, steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    # --ema: validation, best.pt and last.pt use the exponential moving average of
    # the weights (it starts as a copy of the weights after the first step).
    avg = (
        swa_utils.AveragedModel(net, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(cfg.ema))
        if cfg.ema
        else None
    )
    kept: nn.Module = avg.module if avg is not None else net  # what is validated and saved
    best: dict[str, Any] = {"psnr": -math.inf, "step": 0, "scores": {}}
    history: list[list[Any]] = []  # [step, [psnr per scale]]
    wall_before = 0.0
    if state is not None:
        net.load_state_dict(state["model"])
        if avg is not None and state.get("ema_decay") == cfg.ema:
            avg.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        best, history = dict(state["best"]), [list(h) for h in state["history"]]
        wall_before = float(state["wall_seconds"])
    model: nn.Module = net
    if ddp.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    stop = min(steps, cfg.stop_after) if cfg.stop_after is not None else steps
    latest: dict[int, float] = {int(k): v for k, v in best.get("scores", {}).items()}

    def meta(done: int, scores: dict[int, float]) -> dict[str, Any]:
        return {
            "recipe": recipe.name,
            "steps": steps,
            "step": done,
            "data_manifest": run["data_manifest"],
            "val_manifest": run["val_manifest"],
            "val_psnr": {str(s): v for s, v in scores.items()},
            "val_psnr_bicubic": {str(s): v for s, v in bicubic.items()},
            "seed": cfg.seed,
            "sruc_version": __version__,
            "wall_seconds": wall_before + time.monotonic() - t_start,
            "device": str(device),
            "precision": _precision_name(amp),
            "world_size": ddp.world_size,
            "batch_size": batch,
            "patch_size": patch,
            "lr": run["lr"],
            **({"ema": cfg.ema} if cfg.ema else {}),  # the weights are this moving average
            "images": len(images),
            "val_images": len(val_set),
            # Fine-tuned: what it started from (SHA-256 of the starting tensors).
            **({"init": cfg.init, "init_weights": run["init"]} if "init" in run else {}),
        }

    def save_state(done: int) -> None:
        _write_checkpoint(kept, scales, meta(done, latest), out / "last.pt")
        blob = {
            "format": STATE_FORMAT,
            "run": run,
            "config": _jsonable(dataclasses.asdict(cfg)),
            "step": done,
            "model": net.state_dict(),
            **({"ema": avg.state_dict(), "ema_decay": cfg.ema} if avg is not None else {}),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(),
            "sampler": {"seed": cfg.seed, "step": done},  # the sampler is a function of these
            "best": best,
            "history": history,
            "wall_seconds": wall_before + time.monotonic() - t_start,
            "sruc_version": __version__,
        }
        _atomic_torch_save(blob, out / "state.pt")
        emit(TrainEvent("save", done, steps, message=f"saved {out / 'state.pt'}"))

    summary = (
        f"{len(images)} images ({skipped} skipped), {len(val_set)} for validation; "
        f"{len(cache)} pairs, {cache.nbytes / 2**20:.0f} MiB, "
        f"{cache.patches_per_epoch} patches per epoch; {recipe.name} on {device} "
        f"({_precision_name(amp)}, {ddp.world_size} process(es))"
    )
    if start:
        summary = f"resuming at step {start}; {summary}"
        if avg is not None and not int(avg.n_averaged):
            summary += f"; the moving average (--ema {cfg.ema:g}) starts here"
    emit(TrainEvent("start", start, steps, message=summary))

    # The loop. `done` counts finished steps: the state after step `done - 1`.
    model.train()
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
    # On one CPU process, the same forward with each convolution + ReLU fused
    # (same outputs and gradients, ~10% faster for VDSR); DDP needs its own forward.
    fused = training_forward(net, amp) if device.type == "cpu" and ddp.world_size == 1 else None
    t_loop = last_save = time.monotonic()
    win = _window(device, time.perf_counter())
    done = start
    for step in range(start, stop):
        t0 = time.perf_counter()
        x, y = cache.batch(step, batch, ddp.rank, ddp.world_size)  # (b, 1, P, P) each
        x = x.to(device, memory_format=fmt, non_blocking=True)
        y = y.to(device, memory_format=fmt, non_blocking=True)
        win["data"] += time.perf_counter() - t0
        if fused is not None:
            pred = fused(x)  # (b, 1, P, P)
        else:
            with autocast:
                pred = model(x)  # (b, 1, P, P)
        pred = pred.float()  # the loss is computed in float32 whatever the autocast dtype
        loss = loss_fn(run["loss"], pred, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if run["clip"] is not None:  # the global gradient norm, clipped to a constant
            scaler.unscale_(opt)
            win["grad_norm"] += nn.utils.clip_grad_norm_(net.parameters(), run["clip"]).detach()
        scaler.step(opt)
        scaler.update()
        sched.step()
        if avg is not None:
            avg.update_parameters(net)
        done = step + 1
        win["loss"] += F.mse_loss(pred.detach(), y)
        win["n"] += 1

        # Speed and ETA, from this session's pace.
        now = time.perf_counter()
        rate = win["n"] * batch / max(now - win["t"], 1e-9)
        eta = (time.monotonic() - t_loop) / (done - start) * (stop - done)
        emit(TrainEvent("step", done, steps, patches_per_s=rate, eta_s=eta))

        if done % cfg.log_every == 0 or done == stop:
            mse = win["loss"].detach().clone()
            if ddp.world_size > 1:
                dist.all_reduce(mse)
                mse /= ddp.world_size
            mse_v = float(mse) / win["n"]
            lr_now = sched.get_last_lr()[0]
            data_frac = win["data"] / max(now - win["t"], 1e-9)
            if ddp.main:
                _append_jsonl(
                    out / "metrics.jsonl",
                    {
                        "kind": "train",
                        "step": done,
                        "loss": mse_v,
                        "lr": lr_now,
                        "patches_per_s": rate,
                        "data_fraction": data_frac,
                        # the mean gradient norm before clipping, where it is clipped
                        **(
                            {"grad_norm": float(win["grad_norm"]) / win["n"]}
                            if run["clip"] is not None
                            else {}
                        ),
                        "wall_seconds": wall_before + time.monotonic() - t_start,
                    },
                )
            emit(
                TrainEvent(
                    "log",
                    done,
                    steps,
                    loss=mse_v,
                    lr=lr_now,
                    val_psnr=latest or None,
                    patches_per_s=rate,
                    eta_s=eta,
                )
            )
            win = _window(device, now)

        if done % run["val_every"] == 0 or done == steps:
            if ddp.main:
                t_val = time.perf_counter()
                latest = evaluate(kept, val_hr, scales, device, fmt)
                mean = _mean(latest.values())
                improved = mean > best["psnr"]
                history.append([done, [latest[s] for s in scales]])
                if improved:
                    scores = {str(s): v for s, v in latest.items()}
                    best = {"psnr": mean, "step": done, "scores": scores}
                    _write_checkpoint(kept, scales, meta(done, latest), out / "best.pt")
                _append_jsonl(
                    out / "metrics.jsonl",
                    {
                        "kind": "val",
                        "step": done,
                        "psnr": {str(s): v for s, v in latest.items()},
                        "psnr_mean": mean,
                        "bicubic": {str(s): v for s, v in bicubic.items()},
                        "best": improved,
                        "seconds": time.perf_counter() - t_val,
                    },
                )
                _write_plot(out / "val_psnr.png", history, scales, bicubic)
                emit(TrainEvent("val", done, steps, val_psnr=latest, best=improved))
            ddp.barrier()  # the other ranks wait for rank 0's validation
            win["t"] += time.perf_counter() - now  # patches/s counts training time only

        if ddp.main and time.monotonic() - last_save >= cfg.save_every_minutes * 60:
            t_save = time.perf_counter()
            save_state(done)
            last_save = time.monotonic()
            win["t"] += time.perf_counter() - t_save
        out_of_time = cfg.max_minutes is not None and (
            time.monotonic() - t_start >= cfg.max_minutes * 60
        )
        if (cfg.max_minutes is not None or interrupt.armed) and _agree(
            out_of_time or interrupt.requested, ddp, device
        ):
            break

    # The end of this session: the replicas must agree; the final state (rank 0).
    if ddp.world_size > 1:
        _check_replicas(net, ddp, out, done)
    if ddp.main and (state is None or done > start):
        save_state(done)
    ddp.barrier()
    total = wall_before + time.monotonic() - t_start
    result = TrainResult(
        out=out,
        best=out / "best.pt" if (out / "best.pt").exists() else None,
        last=out / "last.pt",
        step=done,
        steps=steps,
        completed=done >= steps,
        interrupted=interrupt.requested,
        resumed_from=start,
        best_step=int(best["step"]),
        best_psnr={int(k): v for k, v in best.get("scores", {}).items()},
        bicubic_psnr=bicubic,
        images=len(images),
        val_images=len(val_set),
        skipped=skipped,
        seconds=time.monotonic() - t_start,
        total_seconds=total,
        rank=ddp.rank,
        world_size=ddp.world_size,
    )
    emit(TrainEvent("done", done, steps, val_psnr=result.best_psnr or None))
    return result


def _window(device: torch.device, t: float) -> dict[str, Any]:
    """The running sums of one log interval."""
    zero = torch.zeros((), device=device)
    return {"loss": zero, "grad_norm": zero.clone(), "n": 0, "t": t, "data": 0.0}


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

        scores = {s: _mean(evaluate_image(hr, s, run).psnr for hr in images) for s in scales}
    net.train()
    return scores


@dataclass(frozen=True)
class _InitWeights:
    """Weights a run starts from (``--init``)."""

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    digest: str  # SHA-256 of the tensors, so a resumed run must start from the same ones


def _load_init(cfg: TrainConfig) -> _InitWeights:
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
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return _InitWeights(config, state, h.hexdigest())


def _check_out(out: Path, run: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The state to resume from (None: a fresh run); raise if ``out`` holds another run."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder for the run")
    path = out / "state.pt"
    if not path.exists():
        if resume:
            raise OutputError(f"nothing to resume: {path} does not exist")
        taken = [n for n in ("best.pt", "last.pt") if (out / n).exists()]
        if taken:
            raise OutputError(
                f"{out} holds {', '.join(taken)} but no state.pt: not a run sruc can continue; "
                "choose another --out"
            )
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise OutputError(
            f"{path} is damaged or not a sruc training state ({type(e).__name__}); "
            "choose another --out"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise OutputError(f"{path} is not a sruc training state; choose another --out")
    diff = _describe_diff(state["run"], run)
    if diff:
        raise OutputError(
            f"{out} holds a run with a different configuration ({diff}); "
            "choose another --out, or repeat the run's options to continue it"
        )
    return state


def _describe_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    def short(v: Any) -> str:
        return v[:12] if isinstance(v, str) and len(v) == 64 else json.dumps(v)

    old = {**legacy_run_defaults(old), **old}
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    parts = [f"{k} {short(old.get(k))} -> {short(new.get(k))}" for k in changed]
    if any(k.endswith("_manifest") for k in changed):
        parts.append("the images changed")
    return "; ".join(parts)


def _drop_overlap(train_set: ImageSet, val_set: ImageSet, warn: Callable[[str], None]) -> ImageSet:
    """Leave validation images out of the training set (by content)."""
    held = set(val_set.digests)
    keep = [i for i, d in enumerate(train_set.digests) if d not in held]
    if len(keep) < len(train_set):
        warn(f"left {len(train_set) - len(keep)} validation image(s) out of the training images")
    if not keep:
        raise InputError(f"every training image under {train_set.root} is also a validation image")
    return train_set.subset(keep)


# --------------------------------------------------------------------------- devices


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # this call initialised the process group and must destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _setup_distributed(spec: str) -> tuple[_Dist, torch.device]:
    """The process group under torchrun (RANK/WORLD_SIZE set) and this process's device."""
    device = resolve_device(spec)
    tune_cpu_allocator()  # a step's activations come back from the heap, not fresh pages
    launch = torchrun()
    if launch is None:
        return _Dist(), device
    rank, world = launch.rank, launch.world
    if device.type == "cuda":
        device = torch.device("cuda", launch.local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UsageError(f"data-parallel training runs on CUDA or the CPU, not {device.type}")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank, world, owns), device


def _agree(flag: bool, ddp: _Dist, device: torch.device) -> bool:
    """Rank 0's decision, on every rank (time-based stops must not diverge)."""
    if ddp.world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def _precision_name(amp: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32") if amp else "fp32"


def _memory_format(channels_last: bool | None, device: torch.device) -> torch.memory_format:
    use = device.type in ("cpu", "cuda") if channels_last is None else channels_last
    return torch.channels_last if use else torch.contiguous_format


class _Interrupt:
    """Turn the first Ctrl-C (SIGINT) or SIGTERM into a clean stop after the current step.

    The loop then saves a state and returns, so nothing since the last periodic
    save is lost; a second signal interrupts at once. Handlers are installed
    only on the main thread (Python allows no other), and restored on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self.armed = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # the second one: stop now
            self.__exit__()
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
            self.armed = True
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _start_at_identity(net: nn.Module) -> None:
    """Start ``net`` at the identity (its output is its bicubic input), as its spec says."""
    spec = archs.spec_of(net)
    if spec is not None and spec.identity_start is not None:
        spec.identity_start(net)


# --------------------------------------------------------------------------- state and files


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and lists, so the state loads with weights_only=True."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _prepare_out(out: Path, cfg: TrainConfig, run: dict[str, Any], start: int) -> None:
    """Create the run folder; a resumed run drops metrics logged after its state."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        # Temporary files of writes that a killed run left half-done.
        for leftover in [*out.glob(".*.pt.*.part"), *out.glob(".*.pt.*.tmp")]:
            leftover.unlink(missing_ok=True)
        metrics = out / "metrics.jsonl"
        if start == 0:
            text = json.dumps({"config": _jsonable(dataclasses.asdict(cfg)), "run": run}, indent=2)
            _atomic_write(out / "config.json", (text + "\n").encode())
            metrics.unlink(missing_ok=True)
        elif metrics.exists():
            lines = metrics.read_text().splitlines(keepends=True)
            kept = [line for line in lines if _line_step(line) <= start]
            _atomic_write(metrics, "".join(kept).encode())
    except OSError as e:
        raise OutputError(f"cannot write to {out}: {e.strerror or e}") from None


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def _atomic_write(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: tmp.write_bytes(data))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file beside ``path`` and rename: all or nothing.

    Raises:
        OutputError: the write failed (a full disk...); ``path`` is untouched.
    """
    try:
        fsutil.atomic_write(path, write)
    except OSError as e:
        raise OutputError(_cannot_write(path, e)) from None


def _cannot_write(path: Path, e: OSError) -> str:
    return (
        f"cannot write {path}: {e.strerror or e}; free some space and run the same "
        "command again to resume from the last saved state"
    )


def _write_checkpoint(net: nn.Module, scales: list[int], meta: dict[str, Any], path: Path) -> None:
    try:
        checkpoint.save(checkpoint.from_model(net, [float(s) for s in scales], meta), path)
    except OSError as e:
        raise OutputError(_cannot_write(path, e)) from None


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    try:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


def _write_plot(
    path: Path, history: list[list[Any]], scales: list[int], bicubic: dict[int, float]
) -> None:
    series = {
        f"x{s}": [(float(step), float(psnrs[i])) for step, psnrs in history]
        for i, s in enumerate(scales)
    }
    image = line_chart(
        series,
        title="Validation PSNR (Y, protocol)",
        xlabel="step",
        ylabel="PSNR (dB)",
        baselines={f"x{s}": v for s, v in bicubic.items()},
    )

    _atomic(path, lambda tmp: image.save(tmp, format="PNG"))


def _weights_hash(net: nn.Module) -> str:
    """The SHA-256 of the weights, in state_dict order."""
    h = hashlib.sha256()
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _check_replicas(net: nn.Module, ddp: _Dist, out: Path, step: int) -> None:
    """Every rank's weights are rank 0's (DDP keeps them so); rank 0 records the hash."""
    mine = _weights_hash(net)
    hashes: list[str] = [""] * ddp.world_size
    dist.all_gather_object(hashes, mine)
    if len(set(hashes)) > 1:
        raise ModelError(
            f"the {ddp.world_size} data-parallel replicas ended step {step} with different "
            "weights; the state is not saved (please report it)"
        )
    if ddp.main:
        record = {"kind": "replicas", "step": step, "world_size": ddp.world_size, "sha256": mine}
        _append_jsonl(out / "metrics.jsonl", record)


def _center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` part of ``(C, H, W)`` (all of it if smaller, or size 0)."""
    if size <= 0:
        return img
    h, w = img.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[..., top : top + size, left : left + size]


def _mean(values: Any) -> float:
    v = list(values)
    return sum(v) / len(v)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))
