"""The run folder: what ``sruc train`` writes, and what it resumes from.

A run folder holds::

    config.json      the configuration, for people (state.pt is authoritative)
    state.pt         everything needed to continue (weights, their moving average
                     with --ema, optimiser, scheduler, step, RNG states, sampler
                     position); loads with weights_only=True
    best.pt          the weights with the best validation PSNR (a sruc checkpoint)
    last.pt          the latest weights (a sruc checkpoint)
    metrics.jsonl    one JSON object per log line and per validation
    val_psnr.png     validation PSNR per scale over the steps

:func:`check_out` decides whether a folder continues (a state whose run matches),
starts afresh, or is refused; :func:`prepare_out` makes it ready for the session;
:func:`save_state` and :func:`restore` write and read ``state.pt``
(format :data:`STATE_FORMAT`). Every write is atomic: a full disk or a kill
leaves the previous file whole.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sruc import __version__
from sruc.errors import OutputError
from sruc.files import atomic as fsutil
from sruc.train.config import TrainConfig, legacy_run_defaults
from sruc.train.model import Trainee
from sruc.train.plot import line_chart
from sruc.zoo import checkpoint

STATE_FORMAT = "sruc-train-state/1"


def check_out(out: Path, run: dict[str, Any], resume: bool) -> dict[str, Any] | None:
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


def prepare_out(out: Path, cfg: TrainConfig, run: dict[str, Any], start: int) -> None:
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


def write_checkpoint(net: nn.Module, scales: list[int], meta: dict[str, Any], path: Path) -> None:
    """``best.pt`` or ``last.pt``: ``net`` as a sruc checkpoint (``sruc up --model``)."""
    try:
        checkpoint.save(checkpoint.from_model(net, [float(s) for s in scales], meta), path)
    except OSError as e:
        raise OutputError(_cannot_write(path, e)) from None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One line of ``metrics.jsonl``."""
    try:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


def write_plot(
    path: Path, history: list[list[Any]], scales: list[int], bicubic: dict[int, float]
) -> None:
    """``val_psnr.png``: the validation history per scale, with the bicubic baselines."""
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


@dataclass
class RunRecord:
    """What the run has measured over its sessions so far (state.pt keeps it)."""

    best: dict[str, Any] = field(
        default_factory=lambda: {"psnr": -math.inf, "step": 0, "scores": {}}
    )  # the best validation: mean PSNR, step, PSNR per scale
    history: list[list[Any]] = field(default_factory=list)  # [step, [psnr per scale]]
    wall_before: float = 0.0  # seconds trained by the sessions before this one
    latest: dict[int, float] = field(init=False)  # the latest validation, dB per scale

    def __post_init__(self) -> None:
        self.latest = {int(k): v for k, v in self.best.get("scores", {}).items()}


def save_state(
    path: Path,
    cfg: TrainConfig,
    run: dict[str, Any],
    step: int,
    trainee: Trainee,
    record: RunRecord,
    wall_seconds: float,
) -> None:
    """Write ``state.pt``: everything needed to continue after ``step`` steps."""
    t = trainee
    blob = {
        "format": STATE_FORMAT,
        "run": run,
        "config": _jsonable(dataclasses.asdict(cfg)),
        "step": step,
        "model": t.net.state_dict(),
        **({"ema": t.avg.state_dict(), "ema_decay": cfg.ema} if t.avg is not None else {}),
        "optimizer": t.opt.state_dict(),
        "scheduler": t.sched.state_dict(),
        "scaler": t.scaler.state_dict(),
        "rng": _rng_state(),
        "sampler": {"seed": cfg.seed, "step": step},  # the sampler is a function of these
        "best": record.best,
        "history": record.history,
        "wall_seconds": wall_seconds,
        "sruc_version": __version__,
    }
    _atomic_torch_save(blob, path)


def restore(state: dict[str, Any], trainee: Trainee, ema: float) -> RunRecord:
    """Continue from a state :func:`check_out` returned: weights, optimiser, RNGs, record.

    The moving average continues only if ``ema`` is the decay it was made with.
    """
    t = trainee
    t.net.load_state_dict(state["model"])
    if t.avg is not None and state.get("ema_decay") == ema:
        t.avg.load_state_dict(state["ema"])
    t.opt.load_state_dict(state["optimizer"])
    t.sched.load_state_dict(state["scheduler"])
    t.scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    history = [list(h) for h in state["history"]]
    return RunRecord(dict(state["best"]), history, float(state["wall_seconds"]))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (a fresh run's weights follow)."""
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


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))
