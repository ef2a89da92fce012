"""``sruc train``: a thin click layer over :func:`sruc.train.loop.train`.

Parses the options into a :class:`~sruc.train.loop.TrainConfig`, renders the
library's progress events on stderr (a rich display on a terminal, otherwise a
plain line per log interval), and prints the best checkpoint's path on stdout.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from sruc.cli.options import CONTEXT, threads_option
from sruc.cli.progress import Display
from sruc.engine.precision import PRECISIONS
from sruc.errors import Stopped

_Callback = Callable[[click.Context, click.Parameter, str], tuple[float, ...]]


def _number_list(example: str) -> _Callback:
    """A click callback parsing a comma-separated list of numbers, e.g. ``2,3,4``."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
        try:
            numbers = tuple(float(v) for v in value.split(",") if v.strip())
        except ValueError:
            message = f"{value!r} is not a comma-separated list of numbers"
            raise click.BadParameter(message) from None
        if not numbers:
            raise click.BadParameter(f"give at least one, e.g. {example}")
        return numbers

    return parse


def _scale_list(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    from sruc.scales import parse_scale_list

    return parse_scale_list(value)


def _parse_json(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not valid JSON ({e.msg}), e.g. '{{\"depth\": 10}}'") from None
    if not isinstance(obj, dict):
        raise click.BadParameter('must be a JSON object, e.g. \'{"depth": 10, "width": 32}\'')
    return obj


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def _fmt_psnr(scores: dict[int, float] | None) -> str:
    if not scores:
        return ""
    return " ".join(f"x{s} {v:.2f}" for s, v in sorted(scores.items()))


def _describe(event: Any) -> str:
    """One plain line for a log, validation, save or start event."""
    if event.kind == "log":
        parts = [
            f"step {event.step}/{event.steps}",
            f"loss {event.loss:.3g}",
            f"lr {event.lr:.3g}",
            f"{event.patches_per_s:.0f} patches/s",
            f"ETA {_fmt_time(event.eta_s)}",
        ]
        if event.val_psnr:
            parts.insert(2, f"val {_fmt_psnr(event.val_psnr)} dB")
        return "  ".join(parts)
    if event.kind == "val":
        mark = " (best)" if event.best else ""
        return f"step {event.step}/{event.steps}  validation {_fmt_psnr(event.val_psnr)} dB{mark}"
    return str(event.message)


@contextmanager
def _renderer(quiet: bool) -> Iterator[Any]:
    """The progress callback: bars on a terminal, plain lines otherwise, nothing if quiet."""
    if quiet:
        yield None
        return
    with Display() as display:
        bars: dict[str, Any] = {}
        info = {"loss": "", "val": "", "speed": "", "eta": ""}

        def render(event: Any) -> None:
            if event.kind == "data":
                if not display.live and event.step == 1:
                    display.say(f"building the patch cache from {event.steps} images")
                if display.live and "data" not in bars:
                    bars["data"] = display.bar("patch cache", unit="images")
                if "data" in bars:
                    bars["data"](event.step, event.steps)
                return
            if event.kind == "start":
                display.remove(bars.pop("data", None))
                bars["train"] = display.bar("train", unit="steps")
            if event.kind in ("start", "log", "val", "save"):
                display.say(_describe(event))
            if event.kind == "log":
                info["loss"] = f"loss {event.loss:.3g}"
            if event.kind == "val":
                info["val"] = f"val {_fmt_psnr(event.val_psnr)} dB"
            if event.kind in ("step", "log"):
                info["speed"] = f"{event.patches_per_s:.0f} patches/s"
                info["eta"] = f"ETA {_fmt_time(event.eta_s)}"
            if bars.get("train") is not None:
                text = "  ".join(v for v in info.values() if v)
                bars["train"](event.step, event.steps, info=text)

        yield render


@click.command(context_settings=CONTEXT)
@click.argument("images", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option(
    "--model", default="vdsr", show_default=True, metavar="ARCH",
    help="Architecture to train: vdsr or srcnn (any trainable one in sruc.archs).",
)  # fmt: skip
@click.option(
    "-s", "--scale", "scales", default="2,3,4", show_default=True, callback=_scale_list,
    help="Whole-number scales 2..8, comma-separated (SRCNN: one).",
)  # fmt: skip
@click.option(
    "--model-config", callback=_parse_json, default=None,
    help='Architecture sizes as JSON, e.g. \'{"depth": 10, "width": 32}\'.',
)  # fmt: skip
@click.option(
    "--recipe", default=None,
    help="adam, paper (the model's paper recipe), vdsr-paper or srcnn-paper. [default: adam]",
)  # fmt: skip
@click.option("--steps", type=int, default=10_000, show_default=True, help="Optimisation steps.")
@click.option(
    "--batch-size", type=int, default=None,
    help="Global batch (all processes). [default: 64 VDSR, 128 SRCNN and vdsr-paper]",
)  # fmt: skip
@click.option(
    "--patch-size", type=int, default=None, help="Patch edge. [default: 41 VDSR, 33 SRCNN]"
)
@click.option("--lr", type=float, default=None, help="Base learning rate. [default: the recipe's]")
@click.option(
    "--downscales", default="1,0.7,0.5", show_default=True,
    callback=_number_list("1 (no downscaling)"),
    help="HR downscale factors in (0, 1] for augmentation, comma-separated (1: as is).",
)  # fmt: skip
@click.option("--val", type=click.Path(path_type=Path), default=None, help="Validation images.")
@click.option(
    "--val-split", type=float, default=None,
    help="Fraction of the images held out for validation. [default: 0.05 without --val]",
)  # fmt: skip
@click.option(
    "--val-crop", type=int, default=96, show_default=True,
    help="Validate on central crops this big (0: whole images).",
)  # fmt: skip
@click.option(
    "--val-every", type=int, default=None, help="Steps between validations. [default: steps/10]"
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto",
    show_default=True,
    help="auto: on a CPU without AMX, VDSR in fp32 through sruc's compiled Winograd "
    "kernels (faster than bf16 there); else bf16 where the CPU or GPU has it.",
)  # fmt: skip
@click.option(
    "--channels-last/--no-channels-last", default=None,
    help="Memory layout. [default: channels-last on CPU and CUDA]",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out (error if there is none).")
@click.option(
    "--save-every-minutes", type=float, default=5.0, show_default=True,
    help="How often the training state is saved.",
)  # fmt: skip
@click.option("--log-every", type=int, default=50, show_default=True, help="Steps per log line.")
@click.option("--stop-after", type=int, default=None, help="Stop after this step (resume later).")
@click.option("--max-minutes", type=float, default=None, help="Stop after this much wall time.")
@click.option(
    "--init",
    default=None,
    metavar="MODEL",
    help="Start from these weights (a checkpoint file or a registered name such as vdsr) "
    "to fine-tune them on IMAGES.",
)
@click.option(
    "--ema", type=float, default=0.0, metavar="DECAY",
    help="Validate and save a moving average of the weights with this decay per step, "
    "e.g. 0.999 (0: off); may be switched on when resuming. [default: 0]",
)  # fmt: skip
@click.option(
    "--revive", type=float, default=0.0, metavar="SHARE",
    help="With --init: re-initialise the ReLU channels active on less than this share of "
    "the pixels (e.g. 0.01), their outgoing weights zeroed so the start is unchanged "
    "(0: off). [default: 0]",
)  # fmt: skip
@click.option(
    "--clip", type=float, default=None, metavar="NORM",
    help="Clip the global gradient norm to this at every step. [default: the recipe's; "
    "vdsr-paper 0.4, others none]",
)  # fmt: skip
@click.option(
    "--loss", type=click.Choice(["mse", "l1", "euclidean", "sum"]), default=None,
    help="Training loss. [default: the recipe's; adam mse, vdsr-paper sum, srcnn-paper euclidean]",
)  # fmt: skip
@click.option(
    "--sampling", type=click.Choice(["random", "grid"]), default=None,
    help="random positions, or grid: epochs of every non-overlapping patch, shuffled. "
    "[default: the recipe's; vdsr-paper grid, others random]",
)  # fmt: skip
@threads_option
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary.")
def train(images: Path, out: Path, quiet: bool, **options: Any) -> None:
    """Train SRCNN or VDSR on a folder of images (searched recursively).

    Training pairs are made by the papers' protocol (MATLAB bicubic, BT.601 Y,
    8-bit LR), with flips, rotations and downscaling as augmentation. The best
    weights on the validation images are kept as OUT/best.pt, usable with
    `sruc up --model OUT/best.pt`. Re-running into the same --out with the same
    options resumes; under torchrun, trains data-parallel.

    \b
    Examples:
      sruc train ./images --model vdsr --scale 2,3,4 --out runs/my-vdsr
      sruc train ./images --model srcnn --scale 3 --recipe paper --out runs/srcnn-x3
      sruc train ./images --recipe vdsr-paper --steps 20000 --out runs/vdsr-sgd
      sruc train ./images --init vdsr --steps 2000 --lr 1e-4 --out runs/vdsr-tuned
      torchrun --nproc_per_node=4 -m sruc train ./images --out runs/ddp
    """
    from sruc.train import DEFAULT_RECIPE, TrainConfig
    from sruc.train import train as run_training

    # Every other option is a TrainConfig field of the same name, typed by click.
    options["recipe"] = options["recipe"] or DEFAULT_RECIPE
    options["val"] = str(options["val"]) if options["val"] is not None else None
    config = TrainConfig(data=str(images), out=str(out), **options)
    with _renderer(quiet) as progress:
        result = run_training(config, progress=progress)
    _report(result, quiet)


def _report(result: Any, quiet: bool) -> None:
    """The summary on stderr, the best checkpoint's path on stdout (rank 0 only)."""
    if result.rank != 0:
        return
    if not quiet:
        done = "finished" if result.completed else "stopped"
        summary = (
            f"{done} at step {result.step}/{result.steps} "
            f"({_fmt_time(result.total_seconds)} in all)"
        )
        if not result.completed:
            summary += "; run the same command again to resume"
        if result.best_psnr:
            summary += (
                f"; best validation {_fmt_psnr(result.best_psnr)} dB at step {result.best_step} "
                f"(bicubic {_fmt_psnr(result.bicubic_psnr)})"
            )
        click.echo(summary, err=True)
    click.echo(str(result.best or result.last))
    if result.interrupted:
        raise Stopped(
            f"interrupted at step {result.step}/{result.steps}; the state is saved: run the "
            "same command again to resume"
        )
