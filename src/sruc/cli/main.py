"""The ``sruc`` command line: a thin click layer over the library.

Each command parses its arguments, calls one library function and prints:
results on stdout, messages and progress bars on stderr. Library errors
(:class:`sruc.errors.SrucError`) and click usage errors become one line on
stderr and exit code 1 (runtime) or 2 (usage); never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from sruc import __version__
from sruc.cli.options import (
    CONTEXT,
    SCALE,
    engine_option,
    load_model_for_cli,
    max_pixels_option,
    pixel_limits,
    size_options,
    target_for_cli,
    threads_option,
    tta_option,
    weights_options,
)
from sruc.cli.progress import Display
from sruc.engine.precision import PRECISIONS
from sruc.errors import SrucError, Stopped


def _say(message: str) -> None:
    click.echo(message, err=True)


def _show_warning(
    message: Any, category: Any, filename: Any, lineno: Any, file: Any = None, line: Any = None
) -> None:
    _say(f"warning: {message}")


class _Group(click.Group):
    """The ``sruc`` group: Ctrl-C (and SIGTERM, see :func:`main`) in any command ends as
    :class:`~sruc.errors.Stopped`, before click would print a blank line and "Aborted!"."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Stopped("interrupted") from None


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="sruc")
def cli() -> None:
    """Upscale images with SRCNN and VDSR, measured the way the papers measure.

    \b
    Examples:
      sruc up photo.jpg -s 3 -o photo_x3.png
      sruc psnr original.png upscaled.png --shave 3
    """


def _default_output(src: Path, target: Any) -> Path:
    """``photo_x3.jpg`` for a scale, ``photo_1920w.jpg`` for a TargetSize."""
    from sruc.files.images import FORMATS

    ext = src.suffix.lower() if src.suffix.lower() in FORMATS else ".png"
    label = f"x{target:g}" if isinstance(target, float) else target.label()
    return src.with_name(f"{src.stem}_{label}{ext}")


@cli.command(context_settings=CONTEXT)
@click.argument("input", type=click.Path(path_type=Path))
@click.option(
    "-s", "--scale", type=SCALE, default=None, help="Upscaling factor, in (1, 8]. [default: 2]"
)
@size_options
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=None,
    help="Output file; its extension picks the format. [default: INPUT_x{scale}.ext]",
)  # fmt: skip
@click.option(
    "-m", "--model", default="vdsr", show_default=True,
    help="A name from `sruc models` (vdsr, srcnn, bicubic) or a checkpoint file.",
)  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto",
    show_default=True, help="auto: bf16/fp16 where the device runs it natively and the "
    "weights keep their accuracy, else fp32.",
)  # fmt: skip
@click.option(
    "--tile", type=click.IntRange(min=0), default=None,
    help="Tile edge in pixels; 0 disables tiling. [default: chosen from free memory]",
)  # fmt: skip
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=None,
    help="JPEG/WebP/AVIF/HEIC quality. [default: 95]",
)
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@max_pixels_option
@engine_option
@tta_option
@weights_options
@threads_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def up(
    input: Path,
    scale: float | None,
    width: int | None,
    height: int | None,
    fit: str | None,
    output: Path | None,
    model: str,
    device: str,
    precision: str,
    tile: int | None,
    quality: int | None,
    overwrite: bool,
    max_pixels: int | None,
    engine: str,
    tta: bool,
    sha256: str | None,
    cache_dir: Path | None,
    offline: bool,
    threads: int | None,
    quiet: bool,
) -> None:
    """Upscale one image.

    \b
    Examples:
      sruc up photo.jpg -s 3 -o photo_x3.png
      sruc up scan.tif -s 2 --model runs/vdsr/best.pt --device cuda
      sruc up photo.jpg -s 3 --model https://host/best.pt --sha256 HEX
      sruc up photo.jpg --width 1920 -o photo_1920.png
      sruc up photo.jpg --fit 3840x2160
      sruc up IMG_0042.heic -s 2 -o IMG_0042_x2.avif   (HEIC needs: pip install 'sruc[heif]')
      sruc up anim.gif -s 2 -o anim_x2.gif             (every frame; also .webp, .png)
    """
    from sruc.engine.pipeline import upscale_file
    from sruc.files.images import check_output

    target = target_for_cli(scale, width, height, fit)
    dst = output if output is not None else _default_output(input, target)
    check_output(dst, overwrite=overwrite, inputs=(input,))  # before any download
    with Display(not quiet) as display:
        loaded = load_model_for_cli(model, target, cache_dir, offline, sha256, display)
        label = f"x{target:g}" if isinstance(target, float) else target.label()
        progress = display.bar(f"{input.name} {label}", unit="tiles")

        def on_start(pic: Any) -> None:  # an animation's bar counts frames
            if progress is not None and pic.frames > 1:
                progress(0, pic.frames, unit="frames")

        result = upscale_file(
            input,
            dst,
            target,
            model=loaded,
            device=device,
            tile=tile,
            quality=quality,
            overwrite=overwrite,
            max_pixels=pixel_limits(max_pixels)[0],
            progress=progress,
            precision=precision,
            tta=tta,
            on_start=on_start,
            max_output_pixels=pixel_limits(max_pixels)[1],
            engine=engine,
        )
    if not quiet:
        (w0, h0), (w1, h1) = result.input_size, result.output_size
        frames = f"{result.frames} frames, " if result.frames > 1 else ""
        _say(
            f"wrote {result.output} ({frames}{w0}x{h0} -> {w1}x{h1}, {result.model} "
            f"x{result.scale:.4g} on {result.device}, {result.precision}"
            f"{'' if result.engine == 'torch' else ' ' + result.engine}, "
            f"{result.seconds:.1f} s)"
        )


@cli.command(context_settings=CONTEXT)
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option(
    "--shave",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Border pixels to crop first (the papers use the scale).",
)
@click.option("--rgb", is_flag=True, help="Measure on RGB instead of the BT.601 Y channel.")
@click.option(
    "--ssim",
    "with_ssim",
    is_flag=True,
    help="Also print SSIM (Wang et al., 11x11 Gaussian window).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON object instead of bare numbers."
)
@click.option(
    "--max-pixels", type=click.IntRange(min=1), default=None,
    help="Largest image accepted, in pixels. [default: 89478485]",
)  # fmt: skip
def psnr(
    a: Path, b: Path, shave: int, rgb: bool, with_ssim: bool, as_json: bool, max_pixels: int | None
) -> None:
    """Print the PSNR in dB between two images of the same size.

    Measured as in the super-resolution papers: on the Y channel of BT.601
    studio-swing YCbCr, peak 255, after cropping --shave pixels from each
    border. Identical images print inf. With --ssim, PSNR and SSIM are printed
    on one line, separated by a space.

    \b
    Example:
      sruc psnr original.png upscaled.png --shave 3 --ssim
    """
    from sruc.measure.quality import compare

    limit = pixel_limits(max_pixels)[0]
    result = compare(a, b, shave=shave, y_only=not rgb, with_ssim=with_ssim, max_pixels=limit)
    if as_json:
        click.echo(json.dumps({"a": str(a), "b": str(b), **result.to_json()}))
        return
    values = [_fmt_db(result.psnr)]
    if result.ssim is not None:
        values.append(f"{result.ssim:.6f}")
    click.echo(" ".join(values))


def _fmt_db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4f}"


# Commands defined in their own modules (each a thin layer too), registered here.
# --- registered commands: one line each, keep sorted ---
from sruc.cli.batch import batch as _batch  # noqa: E402
from sruc.cli.bench import bench as _bench  # noqa: E402
from sruc.cli.compare import compare as _compare  # noqa: E402
from sruc.cli.export import export as _export  # noqa: E402
from sruc.cli.models import models as _models  # noqa: E402
from sruc.cli.train import train as _train  # noqa: E402

cli.add_command(_batch)
cli.add_command(_bench)
cli.add_command(_compare)
cli.add_command(_export)
cli.add_command(_models)
cli.add_command(_train)
# --- end of registered commands ---


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sruc`` console script and ``python -m sruc``.

    Returns the exit code: 0, 1 (runtime error), 2 (usage error) or 130
    (interrupted). Warnings print as ``warning: ...`` lines while it runs; the
    previous warning hook is restored afterwards, for in-process callers.
    """
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        with _sigterm_as_interrupt():
            return _run(argv)
    finally:
        warnings.showwarning = previous


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what ``timeout``, schedulers and container stops send) is handled as
    Ctrl-C: the current write is abandoned and its temporary file removed, batch
    reports what was done, training saves its state; exit 130. Python allows
    handlers on the main thread only; elsewhere SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(e: Stopped) -> int:
    """The one way a command ends after Ctrl-C or SIGTERM: one line, exit 130."""
    _say(str(e))
    return e.exit_code


def _run(argv: list[str] | None) -> int:
    try:
        # Without standalone mode click returns ctx.exit()'s code (or the
        # command's return value, None for ours) instead of exiting.
        rv = cli.main(args=argv, prog_name="sruc", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        return _stopped(Stopped("interrupted"))
    except click.ClickException as e:
        # Usage errors in one line; `--help` says the rest.
        _say(f"error: {e.format_message()}")
        return e.exit_code
    except Stopped as e:
        return _stopped(e)
    except SrucError as e:
        _say(f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        return _stopped(Stopped("interrupted"))
    except Exception as e:
        if os.environ.get("SRUC_DEBUG"):
            raise
        from sruc.engine.memory import out_of_memory

        if out_of_memory(e):  # an expected fault that no narrower handler named
            _say("error: out of memory: free some memory, or give sruc less work at once")
            return 1
        _say(
            f"error: unexpected {type(e).__name__}: {e} "
            "(set SRUC_DEBUG=1 for a traceback, and please report it)"
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
