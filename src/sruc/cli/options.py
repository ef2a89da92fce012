"""What several commands share, defined once: click settings, the weights options,
and loading ``--model`` with download bars."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from sruc.cli.progress import Display
    from sruc.zoo.registry import LoadedModel

#: click settings of every command.
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Scale(click.ParamType):
    """``-s``: text to an upscaling factor, checked once here (:func:`sruc.scales.check_scale`)."""

    name = "float"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        from sruc.scales import check_scale

        if isinstance(value, float):
            return check_scale(value)
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        return check_scale(number)


#: The ``-s/--scale`` type of ``sruc up`` and ``sruc batch``.
SCALE = Scale()


def cache_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--cache-dir`` and ``--offline``: where weights may come from."""
    f = click.option(
        "--offline", is_flag=True, help="Never use the network (also SRUC_OFFLINE=1)."
    )(f)
    return click.option(
        "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Weights cache folder. [default: SRUC_CACHE_DIR, else the user cache folder]",
    )(f)  # fmt: skip


def weights_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`cache_options` and ``--sha256``, for the commands that take ``--model``."""
    f = cache_options(f)
    return click.option(
        "--sha256", metavar="HEX", default=None,
        help="Expected SHA-256 of the --model file; required for a --model URL.",
    )(f)  # fmt: skip


def tta_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--tta``: the self-ensemble of :mod:`sruc.core.ensemble`."""
    return click.option(
        "--tta", is_flag=True,
        help="Self-ensemble: average the model over the 8 flips and rotations of the image "
        "(8x the time; +0.07 to +0.20 dB on Set5/Set14 for VDSR and SRCNN).",
    )(f)  # fmt: skip


def _apply_threads(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Check ``--threads`` and set it for the whole process at once (every command's
    models, resizes and metrics run on torch's one thread pool)."""
    if value is None:
        return None
    from sruc.engine.threads import use_threads
    from sruc.errors import UsageError

    try:
        return use_threads(value)  # type: ignore[arg-type]
    except UsageError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def threads_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads N``: torch's CPU threads (:mod:`sruc.engine.threads`)."""
    return click.option(
        "--threads", metavar="N", default=None, callback=_apply_threads,
        help="CPU threads. [default: the CPUs this process may use (affinity, cgroup quota), "
        "or OMP_NUM_THREADS; use 1 where other jobs keep a core busy]",
    )(f)  # fmt: skip


def engine_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--engine``: what runs the network (:mod:`sruc.engine.runtimes`)."""
    from sruc.engine.runtimes import ENGINES

    return click.option(
        "--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
        help="What runs the network. auto: torch, with VDSR's 3x3 layers as Winograd "
        "F(4x4,3x3) in fp32 on CPUs (winograd; the fastest fp32 route, equal to torch to "
        "fp32 rounding). torch: the direct convolution (tiles exact to the bit). nnpack: "
        "NNPACK's Winograd. onnxruntime and openvino run fp32 on CPUs and need pip "
        "install 'sruc[fast]'.",
    )(f)  # fmt: skip


def size_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--width``, ``--height`` and ``--fit``: an output size instead of ``-s``."""
    f = click.option(
        "--fit", metavar="WxH", default=None,
        help="Fit inside WxH pixels, aspect ratio kept, instead of -s.",
    )(f)  # fmt: skip
    f = click.option(
        "--height", type=click.IntRange(min=1), default=None,
        help="Output height in pixels (aspect ratio kept) instead of -s.",
    )(f)  # fmt: skip
    return click.option(
        "--width", type=click.IntRange(min=1), default=None,
        help="Output width in pixels (aspect ratio kept) instead of -s.",
    )(f)  # fmt: skip


def target_for_cli(
    scale: float | None, width: int | None, height: int | None, fit: str | None
) -> Any:
    """``-s`` or the size options as one target: a float scale (2 when none is given)
    or a :class:`sruc.scales.TargetSize`.

    Raises:
        click.UsageError: contradictory options (``-s`` with a size, ``--fit`` with
            ``--width``/``--height``).
    """
    from sruc.scales import TargetSize, parse_size

    if scale is not None and (width or height or fit):
        given = "--width" if width else "--height" if height else "--fit"
        raise click.UsageError(f"give -s or {given}, not both: the size decides the scale")
    if fit is not None and (width or height):
        raise click.UsageError("give --fit WxH, or --width and/or --height, not both")
    if fit is not None:
        return parse_size(fit)
    if width or height:
        return TargetSize(width, height)
    return 2.0 if scale is None else scale


def offline_flag(offline: bool) -> bool | None:
    """``--offline`` for the library: True, or None to let ``SRUC_OFFLINE`` decide."""
    return True if offline else None


def load_model_for_cli(
    model: str,
    scale: Any,
    cache_dir: Path | None,
    offline: bool,
    sha256: str | None,
    display: Display,
) -> LoadedModel | str:
    """Resolve ``--model`` with the weights options, with a download bar if one is needed.

    ``scale`` picks the file of a per-scale group (SRCNN); with a target size the
    scale is known only once the image is read, so such a group is returned by
    name, for the library to load the file it needs (its files are bundled)."""
    from sruc.zoo.registry import group_scales, load_model

    if not isinstance(scale, float):
        if group_scales(model):
            return model
        scale = None
    return load_model(
        model,
        scale=scale,
        cache_dir=cache_dir,
        offline=offline_flag(offline),
        sha256=sha256,
        progress=display.download(model),
    )


__all__ = [
    "CONTEXT",
    "SCALE",
    "cache_options",
    "engine_option",
    "load_model_for_cli",
    "offline_flag",
    "size_options",
    "target_for_cli",
    "threads_option",
    "tta_option",
    "weights_options",
]


def max_pixels_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--max-pixels``: the one definition; :func:`pixel_limits` says what it limits."""
    return click.option(
        "--max-pixels", type=click.IntRange(min=1), default=None,
        help="Largest image accepted, in pixels: inputs (checked from the header) and, "
        "where given, outputs (checked before any work). [default: inputs 89478485, "
        "Pillow's limit; outputs as memory allows]",
    )(f)  # fmt: skip


def pixel_limits(max_pixels: int | None) -> tuple[int, int | None]:
    """``--max-pixels`` as the (input, output) limits: given, it bounds both; not
    given, inputs get Pillow's decompression-bomb limit and outputs only the memory
    check (a 12-MP photo x3 is a 108-MP output, which the banded path handles)."""
    from sruc.files.images import DEFAULT_MAX_PIXELS

    return (max_pixels or DEFAULT_MAX_PIXELS), max_pixels
